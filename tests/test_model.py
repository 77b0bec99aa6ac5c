import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.config import CONF_DIR
from lmlab.model.presets import GPT2_VOCAB, count_parameters, preset_config, preset_names, table
from lmlab.model.transformer import ModelConfig, Transformer, apply_rotary, left_align, rotary_tables

VARIANTS = [
    dict(),
    dict(norm_first=False),
    dict(positions="learned", activation="gelu_tanh", scale_embeddings=False),
    dict(positions="rotary", activation="swiglu"),
    dict(positions="sinusoidal", activation="gelu", tie_embeddings=False),
    dict(positions="learned", activation="gelu", norm_first=False, embed_norm=True, norm_eps=1e-12),
]


def formula(cfg: ModelConfig) -> int:
    """Parameter count by hand, for either architecture and every option."""
    d, f, V = cfg.n_embd, cfg.d_ff, cfg.vocab_size
    ln = 2 * d
    attn = 4 * d * d + 4 * d                                   # q, k, v, out projections with biases
    up = 2 * f if cfg.activation == "swiglu" else f            # swiglu: gate and value halves
    ff = d * up + up + f * d + d
    embed = V * d * (1 if cfg.tie_embeddings else 2) + (cfg.max_len * d if cfg.positions == "learned" else 0)
    embed += ln if cfg.embed_norm else 0
    final = ln if cfg.norm_first else 0
    if cfg.arch == "decoder-only":
        return embed + cfg.n_decoder_layer * (attn + ff + 2 * ln) + final
    if cfg.arch == "encoder-only":  # BERT's head: dense, LayerNorm, and the output layer's bias
        return embed + cfg.n_encoder_layer * (attn + ff + 2 * ln) + final + d * d + d + ln + V
    enc = attn + ff + 2 * ln
    dec = 2 * attn + ff + 3 * ln                               # self + cross attention, three norms
    return embed + cfg.n_encoder_layer * enc + cfg.n_decoder_layer * dec + 2 * final


def make(arch="encoder-decoder", **kw):
    torch.manual_seed(0)
    layers = {"decoder-only": dict(n_encoder_layer=0, n_decoder_layer=2),
              "encoder-only": dict(n_encoder_layer=2, n_decoder_layer=0)}.get(arch, dict(n_encoder_layer=2, n_decoder_layer=2))
    cfg = ModelConfig(vocab_size=50, arch=arch, n_embd=32, n_head=4, d_ff=64,
                      dropout=0.0, max_len=40, **layers, **kw)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder-only", "encoder-only"])
@pytest.mark.parametrize("kw", VARIANTS)
def test_parameter_count_matches_formula(arch, kw):
    model = make(arch, **kw)
    assert model.num_parameters() == formula(model.cfg)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_instantiates_with_the_formula_count(name):
    cfg = preset_config(name)
    for vocab in (6000, GPT2_VOCAB):  # an encoder-only model adds <mask> to the tokenizer's ids
        assert count_parameters(name, vocab) == formula(ModelConfig.of(cfg, vocab))
        assert ModelConfig.of(cfg, vocab).vocab_size == vocab + (cfg.model.arch == "encoder-only")


def test_bert_base_preset_is_bert_base_less_what_it_leaves_out():
    # Hugging Face's BertForMaskedLM with BERT-base's config (30,522 ids, [MASK] among them) has
    # token-type embeddings (2 × 768) that lmlab's encoder lacks (an import folds type 0 into the
    # positions); lmlab adds a <mask> row to the embedding and the output bias (768 + 1)
    from transformers import BertConfig, BertForMaskedLM

    with torch.device("meta"):
        hf = sum(p.numel() for p in BertForMaskedLM(BertConfig()).parameters())
    assert count_parameters("bert-base", 30522) == hf - 2 * 768 + 769 == 109_513_531


def test_gpt2_preset_has_gpt2_small_parameter_count():
    # GPT-2 small (Hugging Face `gpt2`): 124,439,808 parameters, output tied to the embedding
    assert count_parameters("gpt2-124m", GPT2_VOCAB) == 124_439_808


def test_readme_table_is_the_code_output():
    readme = (CONF_DIR.parent / "README.md").read_text()
    assert table() in readme, "README's preset table is stale: paste `python -m lmlab.model.presets`"


def test_output_projection_is_tied_to_the_embedding():
    m = make()
    assert m.lm_head.weight.data_ptr() == m.embed.weight.data_ptr()


def test_padding_does_not_change_the_result():
    m = make()
    src = torch.tensor([[5, 6, 7, 3]])
    tgt = torch.tensor([[2, 9, 10]])
    alone = m(src, src.eq(0), tgt)
    padded = torch.tensor([[5, 6, 7, 3, 0, 0, 0]])
    batched = m(padded, padded.eq(0), tgt)
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder-only"])
def test_decoder_is_causal(arch):
    m = make(arch, positions="rotary")
    src = torch.tensor([[5, 6, 7, 3]])
    a = m(src, src.eq(0), torch.tensor([[2, 9, 10, 11]]))
    b = m(src, src.eq(0), torch.tensor([[2, 9, 10, 40]]))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


@pytest.mark.parametrize("kw", VARIANTS)
def test_decoder_only_prompted_forward_equals_plain_lm_over_the_joined_sequence(kw):
    """Two code paths: `forward` left-aligns padded prompts and masks them; `lm` reads one unpadded
    sequence. Every row of a padded batch must get the logits of its own unpadded sequence."""
    m = make("decoder-only", **kw)
    prompts = [[5, 6, 7, 3], [8, 3], [9, 10, 11, 12, 13, 3]]
    tgt = torch.tensor([[2, 14, 15], [2, 16, 17], [2, 18, 19]])
    src = torch.zeros(3, 6, dtype=torch.long)
    for i, p in enumerate(prompts):
        src[i, :len(p)] = torch.tensor(p)
    batched = m(src, src.eq(0), tgt)  # (3, 3, V)
    for i, p in enumerate(prompts):
        alone = m.lm(torch.tensor([p + tgt[i].tolist()]))[:, len(p):]
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-5)


def test_left_align_moves_padding_to_the_front():
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 11], [12, 0, 0, 0, 0]])
    assert left_align(ids, ids.eq(0)).tolist() == [[0, 0, 4, 5, 6], [7, 8, 9, 10, 11], [0, 0, 0, 0, 12]]


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = rotary_tables(32, 8)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        rq = apply_rotary(q.view(1, 1, 1, 8), cos[m].view(1, 1, 1, 8), sin[m].view(1, 1, 1, 8))
        rk = apply_rotary(k.view(1, 1, 1, 8), cos[n].view(1, 1, 1, 8), sin[n].view(1, 1, 1, 8))
        return float((rq * rk).sum())

    assert score(7, 3) == pytest.approx(score(20, 16), abs=1e-5)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


def test_feed_forward_activations_match_their_definitions():
    x = torch.randn(2, 3, 32)
    for act in ("relu", "gelu", "gelu_tanh", "swiglu"):
        ff = make(activation=act).decoder[0].ff
        h = x @ ff.up.weight.T + ff.up.bias
        if act == "swiglu":
            a, b = h.chunk(2, dim=-1)
            h = a * torch.sigmoid(a) * b
        elif act == "relu":
            h = h.clamp(min=0)
        elif act == "gelu":
            h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        else:  # GPT-2's tanh approximation
            h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
        torch.testing.assert_close(ff(x), h @ ff.down.weight.T + ff.down.bias, atol=1e-5, rtol=1e-5)


def test_sequence_beyond_max_len_is_refused():
    m = make("decoder-only")
    with pytest.raises(ValueError, match="exceeds model.max_len=40"):
        m.lm(torch.ones(1, 41, dtype=torch.long))


@pytest.mark.parametrize("arch,kw", [("encoder-decoder", dict(norm_first=False)),
                                     ("decoder-only", dict(positions="rotary", activation="swiglu"))])
def test_variant_learns_one_batch(arch, kw):
    m = make(arch, **kw).train()
    src = torch.randint(4, 50, (4, 6))
    tgt = torch.randint(4, 50, (4, 5))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits = m(src, src.eq(0), tgt[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
