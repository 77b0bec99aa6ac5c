"""The decoding loop: encode once, decode one step at a time with the KV cache, let the policy
rank the candidates, and turn the ones that end in EOS (or hit the length cap) into hypotheses.

Layout: the live rows of every tensor (cache, memory, history) are ``example * beam + j`` for the
examples still being decoded, in input order. An example leaves the batch as soon as its n-best
list is complete, so late steps only pay for the long sentences; one ``cache.reorder`` per step both
follows the surviving beams and drops the finished examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, without BOS and EOS
    score: float  # logprob / length ** length_penalty, the value n-best lists are sorted by
    logprob: float  # sum of token log-probs, EOS included when emitted
    token_logprobs: list[float] = field(default_factory=list)
    finished: bool = True  # False: cut by max_new_tokens before EOS


def normalised(logprob: float, length: int, length_penalty: float) -> float:
    """fairseq's length normalisation; ``length`` counts generated tokens including EOS."""
    return logprob / (length ** length_penalty) if length_penalty else logprob


def generate(model, src: torch.Tensor, src_pad: torch.Tensor, policy, *, bos_id: int | torch.Tensor,
             eos_id: int, pad_id: int, max_new_tokens: int, min_new_tokens: int = 0,
             processors: Sequence[Callable] = ()) -> list[list[Hypothesis]]:
    """Decode a batch of sources; returns one n-best list per example, in input order, best first.

    ``src`` (B, S) and ``src_pad`` (B, S, True at padding) as for ``model.encode``; the model should
    be in eval mode. At most ``max_new_tokens`` tokens are generated, EOS included; a beam still
    open then becomes a hypothesis with ``finished=False``, scored like the others. EOS is
    forbidden before ``min_new_tokens`` tokens, PAD always. ``bos_id`` is the first token fed to
    the decoder: one id, or a (B,) tensor of one per example (a language model continuing its
    prompts is fed each prompt's last token, the rest of the prompt being ``src``). ``processors`` (``processors.py``)
    rewrite each step's log-probs from the tokens generated so far. A list holds ``policy.n_best``
    hypotheses, fewer only if the model gave every other continuation probability zero.

    Stopping (``policy.early_stopping``): ``"fairseq"`` ends an example as soon as it has
    ``beam_size`` finished hypotheses; ``"never"`` goes on while a live beam could still beat the
    worst of them, bounding its best reachable score as Hugging Face's ``early_stopping="never"``
    does (exact search within the beam, at the price of more steps).
    """
    if max_new_tokens < 1:
        raise ValueError(f"decoding.max_new_tokens={max_new_tokens!r} must be >= 1")
    if min_new_tokens < 0:
        raise ValueError(f"decoding.min_new_tokens={min_new_tokens!r} must be >= 0")
    with torch.inference_mode():
        return _generate(model, src, src_pad, policy, bos_id, eos_id, pad_id, max_new_tokens,
                         min_new_tokens, list(processors))


def _generate(model, src, src_pad, policy, bos_id, eos_id, pad_id, max_new_tokens, min_new_tokens,
              processors):
    B, beam, lp = src.size(0), policy.beam_size, policy.length_penalty
    exhaustive = policy.early_stopping == "never"
    device = src.device
    hyps: list[list[Hypothesis]] = [[] for _ in range(B)]
    n_finished = torch.zeros(B, dtype=torch.long, device=device)

    memory = model.encode(src, src_pad)  # (B, S, C)
    pad = src_pad if src_pad.any() else None  # no padding: the decoder needs no source mask
    cache = model.new_cache()
    active = torch.arange(B, device=device)  # input index of each live example, (A,)
    scores = torch.zeros(B, beam, device=device)  # running log-prob sums of the live beams
    tokens = torch.empty(B, 0, dtype=torch.long, device=device)  # (rows, t) history without BOS
    token_lps = torch.empty(B, 0, device=device)  # (rows, t)
    if torch.is_tensor(bos_id):  # one first token per example
        last = bos_id.to(device=device, dtype=torch.long).view(B, 1)
    else:
        last = torch.full((B, 1), bos_id, dtype=torch.long, device=device)
    # Step 0 decodes one row per example (all beams hold the same BOS prefix, so the cross-attention
    # keys are computed once); the first reorder then fans each row out into `beam` rows.
    rows_per_ex = 1

    for step in range(max_new_tokens):
        A = active.numel()
        logits = model.decode(last, memory, pad, cache, step)[:, -1]  # (A*rows_per_ex, V)
        lprobs = F.log_softmax(logits.float(), dim=-1)
        lprobs[:, pad_id] = -math.inf
        if step < min_new_tokens:
            lprobs[:, eos_id] = -math.inf
        for process in processors:
            lprobs = process(lprobs, tokens)
        V = lprobs.size(-1)
        cand_scores, cand_tokens, cand_beams = policy.step(
            step, lprobs.view(A, rows_per_ex, V).expand(A, beam, V), scores)  # (A, K)
        K = cand_scores.size(1)
        ex_offset = torch.arange(A, device=device)[:, None] * rows_per_ex
        beam_rows = cand_beams if rows_per_ex == beam else torch.zeros_like(cand_beams)
        cand_rows = ex_offset + beam_rows  # (A, K) row of lprobs (and of the history) per candidate
        cand_lps = lprobs[cand_rows, cand_tokens]  # (A, K) log-prob of the candidate token itself
        is_eos = cand_tokens.eq(eos_id)

        # An EOS candidate ranked among the top `beam` finishes a hypothesis (fairseq's rule); one
        # ranked lower is dropped, as a non-EOS candidate ranked there would not survive either.
        finishing = is_eos[:, :beam] & cand_scores[:, :beam].isfinite()
        if finishing.any():
            for a, k in finishing.nonzero().tolist():  # row-major: best candidate first per example
                ex = int(active[a])
                logprob = float(cand_scores[a, k])
                row = int(cand_rows[a, k])
                seq = tokens[row].tolist()
                score = normalised(logprob, len(seq) + 1, lp)
                if len(hyps[ex]) >= beam:
                    worst = min(range(beam), key=lambda i: hyps[ex][i].score)
                    if not exhaustive or score <= hyps[ex][worst].score:
                        continue
                    del hyps[ex][worst]  # "never": a better late finisher replaces the worst
                hyps[ex].append(Hypothesis(seq, score, logprob,
                                           token_lps[row].tolist() + [float(cand_lps[a, k])], True))
                n_finished[ex] = len(hyps[ex])

        # The live beams for the next step: the best `beam` non-EOS candidates (policies propose
        # enough, see search.py; with one beam an EOS candidate ends the example, and the row kept
        # for it here is dropped below). Sort key: rank, pushed behind all non-EOS.
        key = torch.arange(K, device=device) + is_eos * K  # (A, K)
        keep_k = key.topk(beam, dim=1, largest=False).indices  # (A, beam), in rank order
        scores = cand_scores.gather(1, keep_k)  # (A, beam)
        rows = cand_rows.gather(1, keep_k)
        new_tokens = cand_tokens.gather(1, keep_k)
        new_lps = cand_lps.gather(1, keep_k)

        done = n_finished[active].ge(beam)  # (A,)
        if exhaustive and done.any():
            done &= _cannot_improve(scores, [hyps[ex] for ex in active.tolist()], lp, step,
                                    max_new_tokens)
        done |= ~scores.isfinite().any(dim=1)
        if step == max_new_tokens - 1:
            break
        dropped = bool(done.any())
        if dropped:
            keep = (~done).nonzero().squeeze(1)  # (A',)
            if keep.numel() == 0:
                return _nbest(hyps, policy.n_best)
            active, scores = active[keep], scores[keep]
            rows, new_tokens, new_lps = rows[keep], new_tokens[keep], new_lps[keep]
        else:
            keep = None
        if dropped or rows_per_ex != beam:
            # every row of an example shares its source: take the first, repeat it `beam` times
            first = (keep if keep is not None else torch.arange(A, device=device)) * rows_per_ex
            src_rows = first.repeat_interleave(beam)  # (A' * beam,)
            memory = memory.index_select(0, src_rows)
            pad = None if pad is None else pad.index_select(0, src_rows)
        order = rows.reshape(-1)  # (A' * beam,) old row of each new row
        if beam > 1 or dropped or rows_per_ex != beam:  # greedy with nobody finished: identity
            cache.reorder(order)
            tokens, token_lps = tokens.index_select(0, order), token_lps.index_select(0, order)
        tokens = torch.cat([tokens, new_tokens.reshape(-1, 1)], dim=1)
        token_lps = torch.cat([token_lps, new_lps.reshape(-1, 1)], dim=1)
        last = new_tokens.reshape(-1, 1)
        rows_per_ex = beam

    # The length cap: the live beams of the examples not yet done join their n-best lists unfinished.
    rows_list, tok_list, lp_list = rows.tolist(), new_tokens.tolist(), new_lps.tolist()
    sc_list, done_list = scores.tolist(), done.tolist()
    for a, ex in enumerate(active.tolist()):
        if done_list[a]:
            continue
        for j in range(beam):
            if not math.isfinite(sc_list[a][j]):
                continue
            row = rows_list[a][j]
            seq = tokens[row].tolist() + [tok_list[a][j]]
            hyps[ex].append(Hypothesis(seq, normalised(sc_list[a][j], len(seq), lp), sc_list[a][j],
                                       token_lps[row].tolist() + [lp_list[a][j]], False))
    return _nbest(hyps, policy.n_best)


def _cannot_improve(scores: torch.Tensor, finished: list[list[Hypothesis]], lp: float, step: int,
                    max_new_tokens: int) -> torch.Tensor:
    """(A,) True where no live beam can end above the worst finished hypothesis. Log-prob sums only
    fall, so a live beam's best reachable score is its sum now over the most favourable length:
    the longest allowed when ``lp > 0``, the shortest otherwise (one more token, EOS; at the last
    step the beam ends unfinished at its current length)."""
    length = max_new_tokens if lp > 0 else min(step + 2, max_new_tokens)
    best = scores.max(dim=1).values / (length ** lp)  # (A,)
    worst = torch.tensor([min((h.score for h in f), default=math.inf) for f in finished],
                         device=scores.device)
    return best <= worst


def _nbest(hyps: list[list[Hypothesis]], n_best: int) -> list[list[Hypothesis]]:
    return [sorted(h, key=lambda x: x.score, reverse=True)[:n_best] for h in hyps]
