"""Decoding: exact tokens and scores on a fake model with hand-written probability tables, then
the real Transformer (cache parity with the full forward pass, batched == one at a time)."""

import math
import re

import pytest  # noqa: E402
import torch  # noqa: E402

from lmlab.config import ConfigError, DecodingConfig  # noqa: E402
from lmlab.decoding import (  # noqa: E402
    BeamSearch,
    Greedy,
    NoRepeatNgram,
    RepetitionPenalty,
    Sampling,
    build_policy,
    generate,
    truncate,
)
from lmlab.model.transformer import ModelConfig, Transformer  # noqa: E402

PAD, BOS, EOS = 0, 1, 2
a, b, c, d = 3, 4, 5, 6
V = 7
log = math.log

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads only add synchronisation, which costs 10-100x on
    a shared, loaded CPU (measured: 29 s for this file with 2 threads under load, 3 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# tables[source key][generated prefix] = {next token: probability}; the key is the source's first token
BEAM_BEATS_GREEDY = {
    (): {a: .6, b: .4},
    (a,): {c: .4, d: .35, EOS: .25},  # greedy takes a (0.6), but every continuation of it is weak
    (b,): {EOS: .9, c: .1},           # b EOS = 0.36 > a c EOS = 0.24
    (a, c): {EOS: 1.0}, (a, d): {EOS: 1.0}, (b, c): {EOS: 1.0},
}
LONG = {
    (): {a: .5, b: .3, EOS: .2},
    (a,): {a: .7, EOS: .3}, (b,): {EOS: .6, b: .4},
    (a, a): {a: .8, EOS: .2}, (b, b): {b: 1.0},
    (a, a, a): {EOS: 1.0}, (b, b, b): {EOS: 1.0},
}
EOS_FIRST = {(): {EOS: .6, a: .4}, (a,): {EOS: .9, a: .1}}
TABLES = {10: BEAM_BEATS_GREEDY, 11: LONG, 12: EOS_FIRST}


class TableCache:
    def __init__(self):
        self.prefixes: list[tuple] | None = None  # one per row, BOS included
        self.keys: list[int] | None = None

    def reorder(self, index):
        self.prefixes = [self.prefixes[i] for i in index.tolist()]
        self.keys = [self.keys[i] for i in index.tolist()]


class TableModel:
    """encode/decode/new_cache over ``TABLES``; checks on every call that memory, padding and cache
    rows stay aligned and that ``start`` is the prefix length. Unlisted prefixes are uniform."""

    def __init__(self):
        self.rows_per_step: list[int] = []

    def encode(self, src, src_pad):
        return src.float()[:, :, None]  # (B, S, 1): row r's table key is memory[r, 0, 0]

    def new_cache(self):
        return TableCache()

    def decode(self, tgt, memory, src_pad, cache=None, start=0):
        B, T = tgt.shape
        keys = memory[:, 0, 0].long().tolist()
        assert memory.size(0) == B and (src_pad is None or src_pad.size(0) == B)
        if cache is None:
            assert start == 0
            full = [tuple(r) for r in tgt.tolist()]
        else:
            if cache.prefixes is None:
                cache.prefixes, cache.keys = [()] * B, keys
            assert cache.keys == keys, "memory rows do not follow the cache rows"
            assert all(len(p) == start for p in cache.prefixes)
            cache.prefixes = [p + tuple(r) for p, r in zip(cache.prefixes, tgt.tolist())]
            full = cache.prefixes
        self.rows_per_step.append(B)
        out = torch.full((B, T, V), -math.inf)
        for r in range(B):
            for j in range(T):
                prefix = full[r][: start + j + 1]
                assert prefix[0] == BOS
                dist = TABLES[keys[r]].get(prefix[1:])
                if dist is None:
                    out[r, j] = 0.0
                else:
                    for tok, p in dist.items():
                        out[r, j, tok] = log(p)
        return out  # (B, T, V) logits = log-probs


def sources(*keys):
    """Right-padded sources of different lengths, each starting with its table key."""
    seqs = [[k] + [d] * (i % 3) + [EOS] for i, k in enumerate(keys)]
    width = max(map(len, seqs))
    src = torch.tensor([s + [PAD] * (width - len(s)) for s in seqs])
    return src, src.eq(PAD)


def run(policy, *keys, model=None, max_new_tokens=6, **kw):
    src, src_pad = sources(*keys)
    return generate(model or TableModel(), src, src_pad, policy, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                    max_new_tokens=max_new_tokens, **kw)


def summary(nbest):
    return [(h.tokens, round(h.score, 5), round(h.logprob, 5), h.finished) for h in nbest]


def test_beam_beats_greedy():
    [[g]] = run(Greedy(length_penalty=0), 10)
    assert (g.tokens, g.finished) == ([a, c], True)
    assert g.logprob == pytest.approx(log(.6 * .4)) and g.score == pytest.approx(log(.24))
    assert g.token_logprobs == pytest.approx([log(.6), log(.4), log(1.0)])
    [[best]] = run(BeamSearch(beam_size=2, length_penalty=0), 10)
    assert (best.tokens, best.finished) == ([b], True)
    assert best.score == pytest.approx(log(.4 * .9)) and best.score > g.score
    assert best.token_logprobs == pytest.approx([log(.4), log(.9)])


def test_length_penalty_flips_the_winner():
    # finished: "b EOS" (p = 0.36, 2 tokens) and "a c EOS" (p = 0.24, 3 tokens); then the example has
    # beam_size=2 finished hypotheses and stops ("a d EOS", p = 0.21, is never finalised)
    short, long_ = log(.36), log(.24)
    [raw] = run(BeamSearch(2, length_penalty=0, n_best=2), 10)
    assert summary(raw) == [([b], round(short, 5), round(short, 5), True),
                            ([a, c], round(long_, 5), round(long_, 5), True)]
    [avg] = run(BeamSearch(2, length_penalty=1.0, n_best=2), 10)  # -0.5108 vs -0.4757
    assert summary(avg) == [([a, c], round(long_ / 3, 5), round(long_, 5), True),
                            ([b], round(short / 2, 5), round(short, 5), True)]
    [strong] = run(BeamSearch(2, length_penalty=2.0, n_best=2), 10)
    assert [h.score for h in strong] == pytest.approx([long_ / 9, short / 4])


def test_max_new_tokens_cuts_unfinished_beams():
    [[g]] = run(Greedy(), 11, max_new_tokens=3)
    assert (g.tokens, g.finished) == ([a, a, a], False)
    assert g.logprob == pytest.approx(log(.5 * .7 * .8)) and g.score == pytest.approx(log(.28) / 3)
    [[g]] = run(Greedy(), 11, max_new_tokens=4)  # one more step and it finishes
    assert (g.tokens, g.finished, g.score) == ([a, a, a], True, pytest.approx(log(.28) / 4))
    # beam 2: "b EOS" finishes at step 1 (score log .18 / 2 = -0.857); at the cap the live beams
    # "a a a" (log .28 / 3 = -0.424) and "b b b" (log .12 / 3 = -0.707) both beat it
    [nbest] = run(BeamSearch(2, n_best=2), 11, max_new_tokens=3)
    assert summary(nbest) == [([a, a, a], round(log(.28) / 3, 5), round(log(.28), 5), False),
                              ([b, b, b], round(log(.12) / 3, 5), round(log(.12), 5), False)]


def test_min_new_tokens_forbids_early_eos():
    [[h]] = run(Greedy(), 12)
    assert (h.tokens, h.finished, h.score) == ([], True, pytest.approx(log(.6)))
    [[h]] = run(Greedy(), 12, min_new_tokens=1)
    assert (h.tokens, h.finished) == ([a], True)
    assert h.token_logprobs == pytest.approx([log(.4), log(.9)])  # masked, not renormalised


@pytest.mark.parametrize("policy", [Greedy(), BeamSearch(2, n_best=2), BeamSearch(3, n_best=2)])
def test_batch_with_eos_at_different_steps_matches_one_at_a_time(policy):
    keys = (10, 11, 12, 11, 10)
    alone = [run(policy, k, max_new_tokens=4)[0] for k in keys]
    model = TableModel()
    together = run(policy, *keys, model=model, max_new_tokens=4)
    assert [summary(n) for n in together] == [summary(n) for n in alone]
    assert [len(n) for n in together] == [policy.n_best] * len(keys)
    if isinstance(policy, Greedy):
        # EOS_FIRST stops at step 0, BEAM_BEATS_GREEDY at step 2, LONG at step 3: rows are dropped
        assert model.rows_per_step == [5, 4, 4, 2]
        assert [n[0].tokens for n in together] == [[a, c], [a, a, a], [], [a, a, a], [a, c]]
    else:
        assert model.rows_per_step[0] == len(keys)  # step 0 decodes one row per example
        assert model.rows_per_step[-1] < len(keys) * policy.beam_size


def test_beam_size_one_is_greedy():
    for key in TABLES:
        for lp in (0.0, 1.0):
            assert summary(run(BeamSearch(1, lp), key)[0]) == summary(run(Greedy(lp), key)[0])


def test_nbest_lists_are_sorted_and_consistent():
    for key in TABLES:
        for lp in (0.0, 0.6, 1.0):
            [nbest] = run(BeamSearch(3, length_penalty=lp, n_best=3), key, max_new_tokens=4)
            assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
            for h in nbest:
                length = len(h.tokens) + h.finished
                assert h.score == pytest.approx(h.logprob / length ** lp)
                assert sum(h.token_logprobs) == pytest.approx(h.logprob)
                assert len(h.token_logprobs) == length and EOS not in h.tokens


def test_build_policy_follows_the_checked_config():
    greedy, procs = build_policy(DecodingConfig())
    assert isinstance(greedy, Greedy) and procs == []
    beam, _ = build_policy(DecodingConfig(strategy="beam", beam_size=4, length_penalty=0.6, n_best=2,
                                          early_stopping="never"))
    assert (beam.beam_size, beam.length_penalty, beam.n_best, beam.early_stopping) == (4, 0.6, 2, "never")
    sample, procs = build_policy(DecodingConfig(strategy="sample", top_p=0.9, temperature=0.7,
                                                repetition_penalty=1.2, no_repeat_ngram_size=3), seed=7)
    assert (sample.top_p, sample.temperature, sample.seed) == (0.9, 0.7, 7)
    assert [type(p).__name__ for p in procs] == ["RepetitionPenalty", "NoRepeatNgram"]
    assert build_policy(DecodingConfig(strategy="sample", seed=3), seed=7)[0].seed == 3
    for kw, msg in [({"strategy": "beam", "beam_size": 0}, "decoding.beam_size=0 must be"),
                    ({"strategy": "beam", "beam_size": 2, "n_best": 3}, "decoding.n_best=3 must be between 1 and"),
                    ({"length_penalty": float("nan")}, "decoding.length_penalty=nan"),
                    ({"beam_size": 4}, "decoding.beam_size=4 needs decoding.strategy=beam"),
                    ({"strategy": "sample", "beam_size": 4}, "decoding.beam_size=4 needs decoding.strategy=beam"),
                    ({"top_p": 0.9}, "decoding.top_p=0.9 needs decoding.strategy=sample"),
                    ({"strategy": "beam", "beam_size": 4, "temperature": 0.5},
                     "decoding.temperature=0.5 needs decoding.strategy=sample"),
                    ({"strategy": "sample", "top_p": 0.0}, "decoding.top_p=0.0 must be in (0, 1]"),
                    ({"strategy": "sample", "min_p": 1.0}, "decoding.min_p=1.0 must be in [0, 1)"),
                    ({"strategy": "sample", "temperature": 0.0}, "decoding.temperature=0.0 must be > 0"),
                    ({"strategy": "sample", "top_k": -1}, "decoding.top_k=-1 must be >= 0"),
                    ({"repetition_penalty": 0.0}, "decoding.repetition_penalty=0.0 must be > 0"),
                    ({"no_repeat_ngram_size": -2}, "decoding.no_repeat_ngram_size=-2 must be >= 0"),
                    ({"min_new_tokens": 65}, "decoding.min_new_tokens=65 must be between 0 and decoding.max_new_tokens=64"),
                    ({"early_stopping": "yes"}, "decoding.early_stopping='yes' must be one of fairseq, never"),
                    ({"early_stopping": "never"}, "decoding.early_stopping=never needs decoding.strategy=beam"),
                    ({"strategy": "sampling"}, "decoding.strategy='sampling' must be one of greedy, beam, sample")]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            build_policy(DecodingConfig(**kw))
    with pytest.raises(ValueError, match="decoding.max_new_tokens=0"):
        run(Greedy(), 10, max_new_tokens=0)


# ---------------------------------------------------------------- sampling and processors

def test_truncation_keeps_exactly_the_documented_sets():
    logits = torch.tensor([[.5, .3, .15, .05]]).log()
    kept = lambda **kw: truncate(logits, **kw).isfinite()[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(top_k=2) == [0, 1] and kept(top_k=0) == [0, 1, 2, 3] and kept(top_k=9) == [0, 1, 2, 3]
    assert kept(top_p=0.5) == [0]        # the first token alone reaches 0.5
    assert kept(top_p=0.79) == [0, 1]    # 0.5 + 0.3 reaches 0.79
    assert kept(top_p=0.81) == [0, 1, 2]
    assert kept(top_p=1e-9) == [0]       # never empty: the most likely token always stays
    assert kept(min_p=0.3) == [0, 1, 2]  # p >= 0.3 x 0.5
    assert kept(min_p=0.61) == [0]
    assert kept(top_k=3, top_p=0.9, min_p=0.35) == [0, 1]  # in turn: top-k, top-p, then min-p
    shuffled = logits[:, [2, 0, 3, 1]]   # sets follow the tokens, not the positions
    assert truncate(shuffled, top_p=0.79).isfinite()[0].tolist() == [False, True, False, True]


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])  # flat (sorted) to peaked (topk pool), and mixed rows
def test_nucleus_from_the_topk_pool_equals_the_full_sort(scale, monkeypatch):
    import lmlab.decoding.search as search

    logits = torch.randn(32, 500, generator=torch.Generator().manual_seed(int(scale * 10))) * scale
    logits[::4] *= 8.0  # every fourth row peaked: some rows take the pool, others the sort
    for top_p in (0.3, 0.9, 0.99):
        fast = truncate(logits, top_p=top_p).isfinite()
        monkeypatch.setattr(search, "NUCLEUS_POOL", 10**9)  # always the full sort
        full = truncate(logits, top_p=top_p).isfinite()
        monkeypatch.undo()
        assert torch.equal(fast, full), (scale, top_p)


@pytest.mark.parametrize("width", [5, 256, 300, 6000, 50257])
def test_first_argmax_equals_argmax_ties_included(width):
    from lmlab.decoding.search import first_argmax

    g = torch.Generator().manual_seed(width)
    x = torch.randn(16, width, generator=g)
    x[1] = -math.inf  # a row with no possible token: index 0, like argmax
    x[2, -1] = x[2, 0] = 50.0  # a tie between the first column and the tail: the first wins
    x[3, width // 2] = x[3, width - 1] = 50.0
    x[4] = x[4].round()  # many ties everywhere
    x[5, 128:] = 7.0  # a tie across whole blocks
    assert torch.equal(first_argmax(x), x.argmax(dim=1))
    assert first_argmax(x)[2] == 0


def test_top_k_one_and_a_tiny_nucleus_are_greedy():
    want = [summary(n) for n in run(Greedy(), 10, 11, 12)]
    for policy in (Sampling(top_k=1, seed=5), Sampling(top_p=1e-6, seed=5), Sampling(min_p=0.99, seed=5)):
        assert [summary(n) for n in run(policy, 10, 11, 12)] == want


def test_sampling_draws_from_the_tempered_distribution_and_scores_with_the_model():
    n = 4000
    for temperature, p_a in ((1.0, 0.6), (0.5, 0.36 / 0.52)):  # p^(1/T), renormalised
        out = run(Sampling(temperature=temperature, seed=0), *([10] * n), max_new_tokens=1)
        share = sum(h[0].tokens == [a] for h in out) / n
        assert share == pytest.approx(p_a, abs=0.025)  # 3+ standard errors
    for [h] in run(Sampling(seed=1), *([11] * 50)):  # score: the table's log-probs of the draws
        table, prefix, want = TABLES[11], (), 0.0
        for tok in h.tokens + ([EOS] if h.finished else []):
            want += log(table[prefix][tok])
            prefix += (tok,)
        assert h.logprob == pytest.approx(want) and sum(h.token_logprobs) == pytest.approx(want)


def test_sampling_survives_a_tiny_temperature_and_rows_with_no_possible_token():
    lprobs = torch.tensor([[0.6, 0.3, 0.1]]).log().expand(2, 3).clone()
    lprobs[1] = -math.inf  # e.g. every token banned by no_repeat_ngram_size
    scores, tokens, _ = Sampling(temperature=1e-40, seed=0).step(1, lprobs[:, None], torch.zeros(2, 1))
    assert tokens[0, 0] == 0 and scores[0, 0] == pytest.approx(log(0.6))  # the argmax, not a crash
    assert scores[1, 0] == -math.inf  # a dead row: the loop ends the example


def test_fixed_seed_sampling_is_reproducible():
    keys = [10, 11] * 40
    first = [summary(n) for n in run(Sampling(top_p=0.95, seed=3), *keys)]
    assert first == [summary(n) for n in run(Sampling(top_p=0.95, seed=3), *keys)]
    assert first != [summary(n) for n in run(Sampling(top_p=0.95, seed=4), *keys)]


def test_repetition_penalty_and_no_repeat_ngram():
    # LONG after "a": a 0.7 vs EOS 0.3. Penalty 2: 2 log .7 = -0.71 > log .3, a again; 4: -1.43, EOS
    [[h]] = run(Greedy(), 11, processors=[RepetitionPenalty(2.0)])
    assert h.tokens[:2] == [a, a]
    [[h]] = run(Greedy(), 11, processors=[RepetitionPenalty(4.0)])
    assert (h.tokens, h.finished) == ([a], True) and h.logprob == pytest.approx(log(.5) + log(.3))
    [[h]] = run(Greedy(), 11, processors=[NoRepeatNgram(1)])  # a may not come twice
    assert h.tokens == [a] and h.logprob == pytest.approx(log(.5) + log(.3))
    [[h]] = run(Greedy(), 11, processors=[NoRepeatNgram(2)])  # "a a" once, then no second "a a"
    assert h.tokens == [a, a] and h.logprob == pytest.approx(log(.5) + log(.7) + log(.2))
    hist = torch.tensor([[a, b, a, c, a]])
    banned = NoRepeatNgram(2)(torch.zeros(1, V), hist)[0].isinf().nonzero().flatten().tolist()
    assert banned == [b, c]  # "a b" and "a c" were seen, and the last token is "a"
    assert not NoRepeatNgram(3)(torch.zeros(1, V), hist).isinf().any()  # no trigram starts "c a"
    hist = torch.tensor([[a, b, c, a, b]])
    assert NoRepeatNgram(3)(torch.zeros(1, V), hist)[0].isinf().nonzero().flatten().tolist() == [c]


LATE = {(): {EOS: .5, a: .5}, (a,): {EOS: .4, a: .6}, (a, a): {EOS: 1.0}}
TABLES[13] = LATE


def test_early_stopping_never_waits_for_a_better_late_finisher():
    # beam 2, per-token average: "" (-0.693) and "a" (-0.805) finish by step 1, where fairseq stops;
    # the live "a a" can still reach -1.204 / 3 = -0.401, and does
    [fair] = run(BeamSearch(2, length_penalty=1.0, n_best=2), 13)
    assert [(h.tokens, round(h.score, 4)) for h in fair] == [([], -0.6931), ([a], -0.8047)]
    [never] = run(BeamSearch(2, length_penalty=1.0, n_best=2, early_stopping="never"), 13)
    assert [(h.tokens, round(h.score, 4)) for h in never] == [([a, a], -0.4013), ([], -0.6931)]


# ---------------------------------------------------------------- the real Transformer

@pytest.fixture(scope="module", params=["encoder-decoder", "decoder-only"])
def tiny(request):
    torch.manual_seed(0)
    arch = {"arch": request.param}
    if request.param == "decoder-only":  # the GPT-2 layout, with room for prompt and continuation
        arch.update(n_encoder_layer=0, positions="learned", activation="gelu_tanh",
                    scale_embeddings=False, max_len=40)
    else:
        arch.update(n_encoder_layer=2, max_len=24)
    cfg = ModelConfig(vocab_size=40, n_embd=32, n_head=4, n_decoder_layer=2,
                      d_ff=64, dropout=0.0, pad_id=PAD, tie_embeddings=False, **arch)
    model = Transformer(cfg).eval()
    # Random weights rarely pick EOS (tied ones keep repeating the last token): untie, and raise the
    # EOS logit by 2 through the final norm's bias, so that outputs end at different steps.
    with torch.no_grad():
        if request.param == "decoder-only":  # GPT-2's small init gives near-uniform logits
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(10.0)
        w = model.lm_head.weight[EOS]
        model.dec_ln.bias += 2.0 * w / w.norm() ** 2
    lengths = [7, 3, 9, 1, 5, 9]
    src = torch.full((len(lengths), max(lengths)), PAD)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, 40, (n,))
    return model, src, src.eq(PAD)


def test_cached_steps_match_the_full_forward_pass(tiny):
    model, src, src_pad = tiny
    B, T = src.size(0), 10
    tgt = torch.cat([torch.full((B, 1), BOS), torch.randint(3, 40, (B, T - 1))], dim=1)
    with torch.inference_mode():
        full = model(src, src_pad, tgt)  # (B, T, V)
        memory, cache = model.encode(src, src_pad), model.new_cache()
        steps = [model.decode(tgt[:, t:t + 1], memory, src_pad, cache, t) for t in range(T)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
        # beam-style reorder (rows duplicated and permuted), then two more steps at once
        index = torch.tensor([2, 2, 0, 5, 1, 3])
        cache.reorder(index)
        extra = torch.randint(3, 40, (B, 2))
        got = model.decode(extra, memory[index], src_pad[index], cache, T)
        want = model(src[index], src_pad[index], torch.cat([tgt[index], extra], dim=1))[:, T:]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("policy, processors", [
    (Greedy(), []),
    (BeamSearch(3, length_penalty=1.0, n_best=3), []),
    (BeamSearch(3, length_penalty=1.0, n_best=3, early_stopping="never"), []),
    (BeamSearch(2, length_penalty=0.6, n_best=2), [RepetitionPenalty(1.5), NoRepeatNgram(2)]),
], ids=["greedy", "beam3", "beam3-never", "beam2-processors"])
def test_real_model_batched_equals_one_at_a_time(tiny, policy, processors):
    model, src, src_pad = tiny
    kw = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new_tokens=12, processors=processors)
    together = generate(model, src, src_pad, policy, **kw)
    for i in range(src.size(0)):
        n = int((~src_pad[i]).sum())
        [alone] = generate(model, src[i:i + 1, :n], src_pad[i:i + 1, :n], policy, **kw)
        assert [h.tokens for h in together[i]] == [h.tokens for h in alone]
        assert [h.finished for h in together[i]] == [h.finished for h in alone]
        assert [h.score for h in together[i]] == pytest.approx([h.score for h in alone], abs=1e-5)
    lengths = {len(n[0].tokens) for n in together}
    assert len(lengths) > 1 and any(n[0].finished for n in together)  # EOS at different steps


def test_real_model_beam_one_is_greedy_and_beam_is_no_worse(tiny):
    model, src, src_pad = tiny
    kw = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new_tokens=12)
    greedy = generate(model, src, src_pad, Greedy(length_penalty=0), **kw)
    beam1 = generate(model, src, src_pad, BeamSearch(1, length_penalty=0), **kw)
    assert [summary(n) for n in greedy] == [summary(n) for n in beam1]
    beam4 = generate(model, src, src_pad, BeamSearch(4, length_penalty=0), **kw)
    for g, bm in zip(greedy, beam4):
        if g[0].finished and bm[0].finished:
            assert bm[0].score >= g[0].score - 1e-6


def test_real_model_top_k_one_sampling_is_greedy(tiny):
    model, src, src_pad = tiny
    kw = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new_tokens=12)
    greedy = generate(model, src, src_pad, Greedy(), **kw)
    sampled = generate(model, src, src_pad, Sampling(top_k=1, temperature=0.7, seed=11), **kw)
    assert [summary(n) for n in sampled] == [summary(n) for n in greedy]


def test_language_model_continues_each_prompt_from_its_last_token():
    """``bos_id`` per example: a (B,) tensor of first tokens, the rest of each prompt as the source.
    Greedy continuations of prompts of different lengths, batched, equal the argmax of the full
    forward pass (``model.lm``) over ``EOS prompt continuation``, step by step."""
    from lmlab.data.batching import pad_batch

    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=40, n_embd=32, n_head=4, n_encoder_layer=0, n_decoder_layer=2, d_ff=64,
                      dropout=0.0, arch="decoder-only", positions="learned", activation="gelu_tanh",
                      scale_embeddings=False, max_len=40, pad_id=PAD)
    model = Transformer(cfg).eval()
    prompts = [[7, 8, 9, 10, 11], [12, 13], [14, 15, 16]]
    src, src_pad = pad_batch([[EOS] + p[:-1] for p in prompts])
    out = generate(model, src, src_pad, Greedy(), bos_id=torch.tensor([p[-1] for p in prompts]),
                   eos_id=EOS, pad_id=PAD, max_new_tokens=6)
    for prompt, [hyp] in zip(prompts, out):
        seq, want = [EOS] + prompt, []
        with torch.inference_mode():
            for _ in range(6):
                logits = model.lm(torch.tensor([seq]))[0, -1].log_softmax(-1)
                logits[PAD] = -math.inf
                token = int(logits.argmax())
                want.append(token)
                if token == EOS:
                    break
                seq.append(token)
        assert hyp.tokens == [t for t in want if t != EOS], prompt
        assert hyp.finished == (want[-1] == EOS)
