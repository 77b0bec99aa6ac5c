import torch

from lmlab.model import ModelConfig, Transformer


def formula(cfg: ModelConfig) -> int:
    """Parameter count by hand: tied embedding, encoder and decoder layers, final norms."""
    d, f, V = cfg.n_embd, cfg.d_ff, cfg.vocab_size
    attn = 4 * d * d + 4 * d              # q, k, v, out projections with biases
    ff = 2 * d * f + f + d
    enc = attn + ff + 2 * 2 * d            # two LayerNorms
    dec = 2 * attn + ff + 3 * 2 * d        # self + cross attention, three LayerNorms
    return V * d + cfg.n_encoder_layer * enc + cfg.n_decoder_layer * dec + 2 * 2 * d


def small_model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, n_embd=32, n_head=4, n_encoder_layer=2, n_decoder_layer=2,
                      d_ff=64, dropout=0.0, max_len=40, **kw)
    return Transformer(cfg).eval()


def test_parameter_count_matches_formula():
    for cfg in [ModelConfig(vocab_size=6000), ModelConfig(vocab_size=123, n_embd=64, n_head=8,
                                                          n_encoder_layer=1, n_decoder_layer=5, d_ff=100)]:
        assert Transformer(cfg).num_parameters() == formula(cfg)


def test_output_projection_is_tied_to_the_embedding():
    m = small_model()
    assert m.lm_head.weight.data_ptr() == m.embed.weight.data_ptr()


def test_padding_does_not_change_the_result():
    m = small_model()
    src = torch.tensor([[5, 6, 7, 3]])
    tgt = torch.tensor([[2, 9, 10]])
    alone = m(src, src.eq(0), tgt)
    padded = torch.tensor([[5, 6, 7, 3, 0, 0, 0]])
    batched = m(padded, padded.eq(0), tgt)
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    m = small_model()
    src = torch.tensor([[5, 6, 7, 3]])
    a = m(src, src.eq(0), torch.tensor([[2, 9, 10, 11]]))
    b = m(src, src.eq(0), torch.tensor([[2, 9, 10, 40]]))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_post_layernorm_variant_runs_and_learns_one_batch():
    m = small_model(norm_first=False).train()
    src = torch.randint(4, 50, (4, 6))
    tgt = torch.randint(4, 50, (4, 5))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = m(src, src.eq(0), tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
