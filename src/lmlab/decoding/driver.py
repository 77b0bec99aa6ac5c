"""Stage `generate`: batched decoding of a split (or of raw prompts) with the configured strategy.

The loop (``loop.generate``) decodes one batch; this module batches a whole split by length,
decodes the results back to text and writes the generations file that the evaluate stage reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lmlab.config import Config
from lmlab.data.batching import pad_batch
from lmlab.data.rawfiles import raw_path, read_lines
from lmlab.data.tokenizer import BOS, EOS, PAD, TokenArray, decode, encode_lines
from lmlab.decoding import build_policy, generate
from lmlab.files import atomic_path
from lmlab.model.checkpoint import check_data_tokenizer, load_model


def translate(model, tokenizer, sources: list[list[int]], cfg: Config, progress: bool = True) -> list[dict]:
    """Decode token-id sources with ``cfg.decoding``, in batches of similar length; results come
    back in input order. Each output starts from BOS after the source (and its EOS)."""
    max_src = _max_prompt(model)

    def batch(seqs):
        src, src_pad = pad_batch([list(s[: max_src - 1]) + [EOS] for s in seqs])
        return src, src_pad, BOS

    return _decode_all(model, tokenizer, sources, cfg, batch, side="target", progress=progress)


def continue_text(model, tokenizer, prompts: list[list[int]], cfg: Config, progress: bool = True) -> list[dict]:
    """Language modelling (a decoder-only model trained on the text stream): continue each
    token-id prompt, the start of a line, up to the line's EOS. The model reads ``EOS`` (the end of
    the line before, as in training) and the prompt, then generates what follows."""
    max_src = _max_prompt(model)

    def batch(seqs):
        # the prompt's last token is the first one fed, the rest is the "source"
        src, src_pad = pad_batch([[EOS] + list(s[-(max_src - 1):])[:-1] for s in seqs])
        return src, src_pad, torch.tensor([s[-1] for s in seqs])

    return _decode_all(model, tokenizer, prompts, cfg, batch, side="text", progress=progress)


def _max_prompt(model) -> int:
    # a decoder-only model holds prompt and continuation in max_len positions, as in training
    return model.cfg.max_len // 2 if model.cfg.arch == "decoder-only" else model.cfg.max_len


def _decode_all(model, tokenizer, inputs: list[list[int]], cfg: Config, make_batch, side: str,
                progress: bool) -> list[dict]:
    """The batching both tasks share: ``make_batch(seqs) -> (src, src_pad, first token(s))``."""
    d = cfg.decoding
    policy, processors = build_policy(d, seed=cfg.seed)
    decoder_only = model.cfg.arch == "decoder-only"
    max_new = min(d.max_new_tokens, model.cfg.max_len - 1)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    results: list[dict | None] = [None] * len(inputs)
    bar = tqdm(total=len(inputs), desc=f"generate ({d.strategy})", unit="sent", disable=not progress)
    with torch.inference_mode():
        for start in range(0, len(order), d.batch_size):
            idx = order[start:start + d.batch_size]
            src, src_pad, first = make_batch([inputs[i] for i in idx])
            n_new = min(max_new, model.cfg.max_len - src.size(1)) if decoder_only else max_new
            nbest_lists = generate(model, src, src_pad, policy, bos_id=first, eos_id=EOS, pad_id=PAD,
                                   max_new_tokens=n_new, min_new_tokens=min(d.min_new_tokens, n_new),
                                   processors=processors)
            for i, nbest in zip(idx, nbest_lists):
                best = nbest[0]
                results[i] = {
                    "hypothesis": decode(tokenizer, best.tokens, side=side),
                    "hyp_tokens": len(best.tokens),
                    "hit_max_len": not best.finished,
                    "score": round(float(best.score), 6),
                }
                if d.n_best > 1:
                    results[i]["nbest"] = [decode(tokenizer, h.tokens, side=side) for h in nbest]
                    results[i]["nbest_scores"] = [round(float(h.score), 6) for h in nbest]
            bar.update(len(idx))
    bar.close()
    return results


def translate_texts(model, tokenizer, texts: list[str], cfg: Config) -> list[dict]:
    """Decode raw source strings (encoded with the model's own tokenizer); results in input order."""
    sources = list(encode_lines(tokenizer, texts, side="source"))
    return translate(model, tokenizer, sources, cfg, progress=False)


def continue_texts(model, tokenizer, texts: list[str], cfg: Config) -> list[dict]:
    """Continue raw text prompts with a language model; results in input order. A prompt must
    encode to at least one token (there is nothing to continue otherwise)."""
    prompts = list(encode_lines(tokenizer, texts, side="text"))
    empty = next((i for i, p in enumerate(prompts) if not p), None)
    if empty is not None:
        raise ValueError(f"prompt {empty + 1} is empty: a language model continues text, so give it "
                         "the start of one")
    return continue_text(model, tokenizer, prompts, cfg, progress=False)


def generate_split(cfg: Config, model_path: str | Path, prepared_dir: str | Path, raw_dir: str | Path,
                   out_path: str | Path, split: str = "test") -> dict:
    """Decode ``split`` and write one JSONL record per example, in input order."""
    torch.manual_seed(cfg.seed)
    model, tokenizer, payload = load_model(model_path)
    check_data_tokenizer(payload, model_path, prepared_dir)
    if model.encoder_only:
        return _write_generations(out_path, *fill_split(cfg, model, tokenizer, prepared_dir, split))
    if cfg.data.task == "language_modeling":
        return _write_generations(out_path, *continue_split(cfg, model, tokenizer, prepared_dir, split))
    sources = TokenArray(Path(prepared_dir) / f"{split}.source")
    src_text = read_lines(raw_path(raw_dir, split, "source"))
    ref_text = read_lines(raw_path(raw_dir, split, "target"))
    if not len(sources) == len(src_text) == len(ref_text):
        raise ValueError(f"{prepared_dir}/{split} has {len(sources)} sentences but {raw_dir} has "
                         f"{len(src_text)}: rerun the prepare stage")
    start = time.perf_counter()
    out = translate(model, tokenizer, [sources[i].tolist() for i in range(len(sources))], cfg)
    return _write_generations(out_path, src_text, ref_text, out, time.perf_counter() - start)


def continue_split(cfg: Config, model, tokenizer, prepared_dir: str | Path, split: str = "test"):
    """Language modelling: continue every line of ``split`` longer than ``decoding.prompt_tokens``
    tokens from its first ``prompt_tokens``; returns (prompts, true continuations, results, seconds)
    as text for ``_write_generations``."""
    text, n = TokenArray(Path(prepared_dir) / f"{split}.text"), cfg.decoding.prompt_tokens
    lines = [line for line in map(text.__getitem__, range(len(text))) if len(line) > n]
    if not lines:
        raise ValueError(f"{prepared_dir}/{split}.text has no line longer than decoding.prompt_tokens={n}")
    prompts = [line[:n].tolist() for line in lines]
    start = time.perf_counter()
    out = continue_text(model, tokenizer, prompts, cfg)
    seconds = time.perf_counter() - start
    return ([decode(tokenizer, p, side="text") for p in prompts],
            [decode(tokenizer, line[n:], side="text") for line in lines], out, seconds)


def fill_split(cfg: Config, model, tokenizer, prepared_dir: str | Path, split: str = "test"):
    """Masked language modelling: fill in the masked positions of every non-empty line of
    ``split`` (``lmlab.decoding.fill``); returns (lines, their texts again, results, seconds)."""
    from lmlab.decoding.fill import fill_masks

    text = TokenArray(Path(prepared_dir) / f"{split}.text")
    lines = [line.tolist() for line in map(text.__getitem__, range(len(text))) if len(line)]
    if not lines:
        raise ValueError(f"{prepared_dir}/{split}.text has no line with a token in it")
    start = time.perf_counter()
    out = fill_masks(model, tokenizer, lines, cfg)
    texts = [decode(tokenizer, line, side="text") for line in lines]
    return texts, texts, out, time.perf_counter() - start


def _write_generations(out_path, src_text: list[str], ref_text: list[str], out: list[dict],
                       seconds: float) -> dict:
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i, rec in enumerate(out):
            f.write(json.dumps({"id": i, "source": src_text[i], "reference": ref_text[i], **rec},
                               ensure_ascii=False) + "\n")
    n_tok = sum(r["hyp_tokens"] for r in out)
    return {"sentences": len(out), "seconds": round(seconds, 2),
            "sentences_per_second": round(len(out) / seconds, 2),
            "tokens_per_second": round(n_tok / seconds, 1)}


