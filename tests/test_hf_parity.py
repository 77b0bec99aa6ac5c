"""Parity with Hugging Face: lmlab's GPT-2-layout decoder copied tensor for tensor into
``transformers.GPT2LMHeadModel`` gives the same logits, and lmlab's greedy and beam search give
the same tokens as ``generate()`` on random prompts. ``transformers`` is a test-only dependency."""

import pytest
import torch

from lmlab.decoding import BeamSearch, Greedy, generate
from lmlab.model.interop import check_gpt2_layout, gpt2_state_dict, to_gpt2
from lmlab.model.transformer import ModelConfig, Transformer

transformers = pytest.importorskip("transformers")

PAD, BOS, EOS = 0, 1, 2
V, MAX_LEN, N_PROMPTS, MAX_NEW = 64, 64, 50, 16


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, pad_id=PAD, arch="decoder-only", n_embd=32, n_head=4,
                      n_encoder_layer=0, n_decoder_layer=2, d_ff=128, dropout=0.0, max_len=MAX_LEN,
                      norm_first=True, positions="learned", activation="gelu_tanh",
                      scale_embeddings=False, tie_embeddings=True)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # GPT-2's small init gives near-uniform logits (near-ties): sharpen them
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
        model.embed.weight[EOS] *= 1.5  # and make EOS likely enough that outputs end at different steps
    hf = to_gpt2(model, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert torch.equal(hf.lm_head.weight, model.lm_head.weight)  # tied, as in GPT-2
    return model, hf


def prompts():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, V, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(N_PROMPTS)]


def test_same_logits(models):
    model, hf = models
    ids = torch.randint(3, V, (3, 20))
    with torch.inference_mode():
        torch.testing.assert_close(model.lm(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)


def _ours(model, prompt, policy):
    src = torch.tensor([prompt + [EOS]])  # lmlab's decoder-only input: source EOS, then BOS starts
    [nbest] = generate(model, src, src.eq(PAD), policy, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                       max_new_tokens=MAX_NEW)
    return nbest[0].tokens + ([EOS] if nbest[0].finished else [])


def _theirs(hf, prompt, **kw):
    ids = torch.tensor([prompt + [EOS, BOS]])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False,
                      eos_token_id=EOS, pad_token_id=PAD, **kw)
    return out[0, ids.size(1):].tolist()


@pytest.mark.parametrize("name, ours, theirs", [
    ("greedy", Greedy(), dict(num_beams=1)),
    ("beam4", BeamSearch(4, length_penalty=1.0), dict(num_beams=4, length_penalty=1.0, early_stopping=True)),
    ("beam4-never", BeamSearch(4, length_penalty=1.0, early_stopping="never"),
     dict(num_beams=4, length_penalty=1.0, early_stopping="never")),
])
def test_generate_matches_hugging_face(models, name, ours, theirs):
    model, hf = models
    lengths = set()
    for prompt in prompts():
        got, want = _ours(model, prompt, ours), _theirs(hf, prompt, **theirs)
        assert got == want, f"{name}, prompt {prompt}"
        lengths.add((len(got), got[-1] == EOS))
    # the outputs end at different steps, some at EOS
    assert len({n for n, _ in lengths}) >= 3 and any(eos for _, eos in lengths)


def test_gpt2_layout_is_checked():
    cfg = ModelConfig(vocab_size=V, pad_id=PAD, arch="decoder-only", n_embd=32, n_head=4, n_encoder_layer=0,
                      n_decoder_layer=1, d_ff=64, dropout=0.0, max_len=16, positions="rotary")
    with pytest.raises(ValueError, match="model.positions='rotary': GPT-2's layout needs 'learned'"):
        check_gpt2_layout(Transformer(cfg))


def test_the_gpt2_124m_preset_fills_every_gpt2_tensor():
    from lmlab.config import build_config, compose

    cfg = build_config(compose(["model=gpt2-124m"]))
    with torch.device("meta"):
        ours = gpt2_state_dict(Transformer(ModelConfig.of(cfg, 50257)))
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())  # GPT-2 small's defaults
    theirs = {k: v.shape for k, v in hf.state_dict().items() if not k.endswith(".attn.bias")}
    assert {k: v.shape for k, v in ours.items()} == {k: s for k, s in theirs.items() if k != "lm_head.weight"}
    assert sum(v.numel() for v in ours.values()) == 124_439_808
