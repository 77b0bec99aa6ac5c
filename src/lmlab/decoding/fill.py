"""What an encoder-only (masked) language model generates: the tokens of masked positions.

Each test line is masked by BERT's rule (``lmlab.model.loss.mask_tokens``) from a generator seeded
by the line's index, so every run and every strategy fills the same positions. The strategy picks
each filled token from the model's distribution at that position: ``greedy`` and ``beam`` take the
most likely token (the positions are predicted independently, so a beam search over them is the
argmax), the sampling strategies draw one after temperature and top-k / top-p / min-p truncation.
``<pad>``, ``<unk>``, ``<s>`` and ``<mask>`` are never filled in.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from lmlab.config import Config
from lmlab.data.batching import pad_batch
from lmlab.data.tokenizer import EOS, PAD, decode
from lmlab.decoding import Sampling, build_policy
from lmlab.decoding.search import first_argmax
from lmlab.model.loss import N_SPECIAL, MaskRule, eval_generator, mask_tokens


def fill_masks(model, tokenizer, lines: list[list[int]], cfg: Config, progress: bool = True) -> list[dict]:
    """Mask every token-id line (cut to ``model.cfg.max_len``) and fill its masked positions with
    ``cfg.decoding``'s strategy; one record per line, in input order."""
    d, rule = cfg.decoding, MaskRule.of(cfg.trainer)
    policy, _ = build_policy(d, seed=cfg.seed)
    lines = [list(line[: model.cfg.max_len]) for line in lines]
    masked = [mask_tokens(torch.tensor([line]), rule, model.mask_id, eval_generator(i), PAD)
              for i, line in enumerate(lines)]
    never = torch.tensor([i for i in range(N_SPECIAL) if i != EOS] + [model.mask_id])
    results: list[dict | None] = [None] * len(lines)
    order = sorted(range(len(lines)), key=lambda i: len(lines[i]))
    bar = tqdm(total=len(lines), desc=f"fill masks ({d.strategy})", unit="line", disable=not progress)
    with torch.inference_mode():
        for start in range(0, len(order), d.batch_size):
            idx = order[start:start + d.batch_size]
            inputs, pad = pad_batch([masked[i][0][0].tolist() for i in idx])
            labels, _ = pad_batch([masked[i][1][0].tolist() for i in idx])
            chosen = labels.ne(PAD)  # (B, T)
            lprobs = model.mlm(inputs, pad if pad.any() else None, chosen).float().log_softmax(-1)  # (N, V), line by line
            lprobs[:, never] = -float("inf")
            if isinstance(policy, Sampling):
                _, picked, _ = policy.step(0, lprobs[:, None], lprobs.new_zeros(len(lprobs), 1))
                picked = picked[:, 0]
            else:
                picked = first_argmax(lprobs)
            counts = chosen.sum(1).tolist()
            for i, row, fills in zip(idx, range(len(idx)), picked.split(counts)):
                answers = labels[row][chosen[row]].tolist()
                results[i] = fill_record(tokenizer, chosen[row].nonzero()[:, 0].tolist(), answers,
                                         fills.tolist())
            bar.update(len(idx))
    bar.close()
    return results


def fill_record(tokenizer, positions: list[int], answers: list[int], fills: list[int]) -> dict:
    """A generations record of one line's fills: the masked ``positions`` (token indices), the
    tokens they hid (``reference``) and those filled in (``hypothesis``), each as text joined by
    `` | `` and as a list, and how many fills are right."""
    one = [decode(tokenizer, [t], side="text") for t in answers]
    mine = [decode(tokenizer, [t], side="text") for t in fills]
    return {"reference": " | ".join(one), "hypothesis": " | ".join(mine), "masked_positions": positions,
            "reference_tokens": one, "hypothesis_tokens": mine,
            "correct": sum(a == f for a, f in zip(answers, fills)), "hyp_tokens": len(fills),
            "hit_max_len": False}
