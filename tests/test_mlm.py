"""Masked language modelling: BERT's masking rule, exactly; the loss on the chosen positions only;
the encoder-only model; its fills; and the configs that cannot work."""

import pytest
import torch
import torch.nn.functional as F

from lmlab.config import ConfigError, build_config, compose
from lmlab.data.tokenizer import EOS, PAD, decode, train_tokenizer
from lmlab.decoding.fill import fill_masks
from lmlab.model.loss import N_SPECIAL, MaskRule, eval_generator, loss_sums, mask_tokens
from lmlab.model.transformer import ModelConfig, Transformer

MASK = 50_000  # a vocabulary this large makes a random draw equal to the original token (almost) impossible


def seeded_batch():
    """Four rows of 100 ordinary tokens; the last has 60 real ones, then padding."""
    ids = torch.randint(N_SPECIAL, MASK, (4, 100), generator=torch.Generator().manual_seed(1))
    ids[3, 60:] = PAD
    return ids


def test_bert_masking_counts_are_exact_in_every_row():
    ids = seeded_batch()
    inputs, labels = mask_tokens(ids, MaskRule(), MASK, torch.Generator().manual_seed(7))
    # per row: k = round(0.15 n) chosen; round(0.8 k) <mask>, round(0.1 k) random, the rest unchanged
    for row, (n, k, n_mask, n_random) in enumerate([(100, 15, 12, 2)] * 3 + [(60, 9, 7, 1)]):
        chosen = labels[row].ne(PAD)
        assert int(ids[row].ne(PAD).sum()) == n and int(chosen.sum()) == k
        assert torch.equal(labels[row][chosen], ids[row][chosen])  # the labels are the originals
        assert int(inputs[row].eq(MASK).sum()) == n_mask and bool(inputs[row][inputs[row].eq(MASK)].eq(MASK).all())
        replaced = chosen & inputs[row].ne(ids[row]) & inputs[row].ne(MASK)
        assert int(replaced.sum()) == n_random
        assert int((chosen & inputs[row].eq(ids[row])).sum()) == k - n_mask - n_random
        assert torch.equal(inputs[row][~chosen], ids[row][~chosen])  # nothing else changes
        assert bool(((inputs[row][replaced] >= N_SPECIAL) & (inputs[row][replaced] < MASK)).all())
    assert not labels[3, 60:].ne(PAD).any() and inputs[3, 60:].eq(PAD).all()  # padding is never chosen


def test_the_rule_is_configurable_and_the_draws_seeded():
    ids = seeded_batch()
    rule = MaskRule(mlm_probability=0.5, mask_replace_prob=0.0, random_replace_prob=1.0)
    inputs, labels = mask_tokens(ids, rule, MASK, torch.Generator().manual_seed(7))
    assert labels[0].ne(PAD).sum() == 50 and not inputs.eq(MASK).any()
    assert int((labels[0].ne(PAD) & inputs[0].ne(ids[0])).sum()) == 50
    again = mask_tokens(ids, rule, MASK, torch.Generator().manual_seed(7))
    other = mask_tokens(ids, rule, MASK, torch.Generator().manual_seed(8))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)
    assert not torch.equal(other[1], labels)
    # the chosen positions are uniform: over many draws every position is chosen about as often
    counts = sum(mask_tokens(ids[:1], MaskRule(), MASK, torch.Generator().manual_seed(s))[1].ne(PAD).int()
                 for s in range(2000))
    assert counts.sum() == 2000 * 15 and 200 < int(counts.min()) and int(counts.max()) < 400  # mean 300


def model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=41, arch="encoder-only", n_embd=32, n_head=4, n_encoder_layer=2,
                      n_decoder_layer=0, d_ff=64, dropout=0.0, max_len=40, norm_first=False,
                      positions="learned", activation="gelu", scale_embeddings=False, **kw)
    return Transformer(cfg).eval()


def test_the_loss_counts_the_chosen_positions_only():
    m = model()
    ids = torch.randint(N_SPECIAL, m.mask_id, (3, 20), generator=torch.Generator().manual_seed(2))
    inputs, labels = mask_tokens(ids, MaskRule(), m.mask_id, torch.Generator().manual_seed(3))
    loss, n = loss_sums(m, (inputs, labels))
    chosen = labels.ne(PAD)
    full = m.mlm(inputs)  # (B, T, V): every position, computed the long way
    assert int(n) == int(chosen.sum()) == 9  # round(0.15 × 20) = 3 per row
    expected = F.cross_entropy(full[chosen], ids[chosen], reduction="sum")
    torch.testing.assert_close(loss, expected)
    # the logits of the positions asked for are those of the full computation
    torch.testing.assert_close(m.mlm(inputs, where=chosen), full[chosen])
    # a change to an unchosen position's token changes the context, not what is scored
    assert torch.isclose(loss_sums(m, (inputs, labels))[0], expected)


def test_the_encoder_sees_both_directions_and_ignores_padding():
    m = model()
    ids = torch.randint(N_SPECIAL, m.mask_id, (1, 10), generator=torch.Generator().manual_seed(4))
    later = ids.clone()
    later[0, 9] = N_SPECIAL + (int(ids[0, 9]) - N_SPECIAL + 1) % (m.mask_id - N_SPECIAL)
    assert not torch.allclose(m.mlm(ids)[0, 0], m.mlm(later)[0, 0])  # position 0 reads position 9
    padded = torch.cat([ids, torch.full((1, 5), PAD)], dim=1)
    torch.testing.assert_close(m.mlm(padded, padded.eq(PAD))[0, :10], m.mlm(ids)[0], atol=1e-5, rtol=1e-5)


def test_the_mask_id_is_the_row_after_the_tokenizer():
    m = model()
    assert m.mask_id == 40 and m.embed.weight.shape == (41, 32) and m.lm_head.weight is m.embed.weight
    with pytest.raises(ValueError, match="a decoder-only model has no <mask> token"):
        _ = Transformer(ModelConfig(vocab_size=41, arch="decoder-only", n_embd=32, n_head=4, n_encoder_layer=0,
                                    n_decoder_layer=1, d_ff=64, max_len=40)).mask_id


def test_fills_are_the_same_positions_for_every_strategy_and_greedy_is_the_argmax(tmp_path):
    m = model()
    tokenizer = train_tokenizer(["abcdefghijklmnopqrstuvwxyz ."] * 3, kind="char", vocab_size=40, min_frequency=1)
    lines = [torch.randint(N_SPECIAL, 30, (n,), generator=torch.Generator().manual_seed(n)).tolist()
             for n in (7, 20, 33)]
    cfg = build_config(compose(["data=lm_text", "model=bert-tiny"]))
    greedy = fill_masks(m, tokenizer, lines, cfg, progress=False)
    topp = fill_masks(m, tokenizer, lines, cfg.with_strategy("topp"), progress=False)
    for i, line in enumerate(lines):
        inputs, labels = mask_tokens(torch.tensor([line]), MaskRule(), m.mask_id, eval_generator(i))
        positions = labels[0].ne(PAD).nonzero()[:, 0].tolist()
        assert greedy[i]["masked_positions"] == topp[i]["masked_positions"] == positions
        logits = m.mlm(inputs)[0, positions]
        logits[:, [t for t in range(N_SPECIAL) if t != EOS] + [m.mask_id]] = -float("inf")
        best = [decode(tokenizer, [t], "text") for t in logits.argmax(-1).tolist()]
        assert greedy[i]["hypothesis_tokens"] == best
        answers = labels[0][labels[0].ne(PAD)].tolist()
        assert greedy[i]["correct"] == sum(a == b for a, b in zip(answers, logits.argmax(-1).tolist()))
        assert greedy[i]["reference_tokens"] == [decode(tokenizer, [t], "text") for t in answers]


@pytest.mark.parametrize("overrides, message", [
    (["model=bert-tiny"], "data.task=translation needs a model that generates, but model.arch=encoder-only "
                          "(model=bert-tiny) only fills in masked tokens"),
    (["data=lm_text", "model=bert-tiny", "model.n_decoder_layer=2"],
     "model.n_decoder_layer=2 must be 0 when model.arch=encoder-only"),
    (["data=lm_text", "model=bert-tiny", "trainer.mask_replace_prob=0.8", "trainer.random_replace_prob=0.3"],
     "trainer.random_replace_prob=0.3 must be <= 1 - trainer.mask_replace_prob=0.8"),
    (["data=lm_text", "model=bert-tiny", "trainer.mlm_probability=0"], "trainer.mlm_probability=0.0 must be in (0, 1)"),
])
def test_configs_that_cannot_work_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_config(compose(overrides))
    assert message in str(err.value)
