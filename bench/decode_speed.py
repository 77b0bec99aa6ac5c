"""Decoding speed of lmlab's loop against Hugging Face ``generate()``, in the same run.

Decoder-only: both decode the same model, a ``Transformer`` of a ``conf/model`` preset's
dimensions (``--preset``) in GPT-2's layout, copied tensor for tensor into
``transformers.GPT2LMHeadModel`` (``lmlab.model.interop``; tests/test_hf_parity.py shows the two produce
identical tokens). Encoder-decoder: lmlab's ``--encdec-preset`` against a ``MarianMTModel`` of the
same dimensions (width, heads, layers, feed-forward, vocabulary, sinusoidal positions, ReLU;
random weights on both sides, as the token count is fixed). Every prompt
has ``--prompt-len`` tokens, and both sides must generate exactly ``--new-tokens`` tokens per
output (min = max new tokens), so tokens/s = batch × new tokens ÷ seconds on both. Strategies:
greedy; beam 5 (length penalty 1, stop at 5 finished); top-p 0.9 sampling. Each (strategy, batch)
runs ``--repeats`` times per side, alternating, the sides taking turns to go first, and each
side keeps its median time.

    python bench/decode_speed.py [--archs decoder-only,encoder-decoder] [--preset gpt-tiny]
        [--encdec-preset tiny] [--batches 1,64] [--new-tokens 32] [--prompt-len 16]
        [--vocab 6000] [--repeats 3] [--threads N] [--record PATH]

The last line printed is one JSON object: ``<strategy>_b<batch>_ratio`` = lmlab tokens/s ÷ Hugging
Face tokens/s for the decoder-only pair (e.g. ``greedy_b64_ratio``, ``beam5_b64_ratio``,
``topp_b1_ratio``), ``encdec_<strategy>_b<batch>_ratio`` for the encoder-decoder pair, plus the
tokens/s of each side. Every run (the two-token warm-up of each side included, flagged
``warmup``) goes to the record, by default ``reports/bench/decode_speed_cpu.json`` (``--record
''``: none).
"""

from __future__ import annotations

import argparse
import json
import time

import benchlib
import torch

from lmlab.config import build_config, compose
from lmlab.decoding import BeamSearch, Greedy, Sampling, generate
from lmlab.model.interop import to_gpt2
from lmlab.model.transformer import ModelConfig, Transformer

PAD, BOS, EOS = 0, 2, 3
STRATEGIES = {  # name: (lmlab policy, Hugging Face generate() arguments)
    "greedy": (lambda: Greedy(), dict(do_sample=False, num_beams=1)),
    "beam5": (lambda: BeamSearch(5, length_penalty=1.0),
              dict(do_sample=False, num_beams=5, length_penalty=1.0, early_stopping=True)),
    "topp": (lambda: Sampling(top_p=0.9, seed=0), dict(do_sample=True, top_p=0.9, top_k=0, temperature=1.0)),
}


def build_models(preset: str, vocab: int, seed: int):
    """The lmlab model of ``preset``'s dimensions in GPT-2's layout, and its Hugging Face copy."""
    overrides = [f"model={preset}", "model.arch=decoder-only", "model.n_encoder_layer=0",
                 "model.positions=learned", "model.activation=gelu_tanh", "model.norm_first=true",
                 "model.scale_embeddings=false", "model.tie_embeddings=true", "model.dropout=0.0"]
    cfg = build_config(compose(overrides))
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.of(cfg, vocab)).eval()
    return model, to_gpt2(model, bos_id=BOS, eos_id=EOS, pad_id=PAD)


def build_encdec(preset: str, vocab: int, seed: int):
    """lmlab's encoder-decoder ``preset`` and a ``MarianMTModel`` of the same dimensions."""
    import transformers

    cfg = build_config(compose([f"model={preset}", "model.dropout=0.0"]))
    if cfg.model.arch != "encoder-decoder":
        raise SystemExit(f"--encdec-preset {preset} is {cfg.model.arch}, not encoder-decoder")
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.of(cfg, vocab)).eval()
    m = cfg.model
    hf_cfg = transformers.MarianConfig(
        vocab_size=vocab, d_model=m.n_embd, encoder_layers=m.n_encoder_layer,
        decoder_layers=m.n_decoder_layer, encoder_attention_heads=m.n_head,
        decoder_attention_heads=m.n_head, encoder_ffn_dim=m.d_ff, decoder_ffn_dim=m.d_ff,
        activation_function="relu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        max_position_embeddings=m.max_len, scale_embedding=m.scale_embeddings, pad_token_id=PAD,
        eos_token_id=EOS, decoder_start_token_id=BOS, forced_eos_token_id=None,
        share_encoder_decoder_embeddings=True)
    return model, transformers.MarianMTModel(hf_cfg).eval()


def run_lmlab(model, prompts: torch.Tensor, strategy: str, new_tokens: int) -> float:
    src = torch.cat([prompts, torch.full((prompts.size(0), 1), EOS)], dim=1)  # source EOS, then BOS
    policy = STRATEGIES[strategy][0]()
    start = time.perf_counter()
    out = generate(model, src, src.eq(PAD), policy, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                   max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    seconds = time.perf_counter() - start
    assert all(len(n[0].tokens) == new_tokens for n in out), "lmlab stopped early"
    return seconds


def run_hf(hf, prompts: torch.Tensor, strategy: str, new_tokens: int) -> float:
    tail = [EOS] if hf.config.is_encoder_decoder else [EOS, BOS]  # Marian starts its decoder at BOS
    ids = torch.cat([prompts, torch.tensor(tail).expand(prompts.size(0), -1)], dim=1)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, eos_token_id=EOS, pad_token_id=PAD,
                          **STRATEGIES[strategy][1])
    seconds = time.perf_counter() - start
    prefix = 1 if hf.config.is_encoder_decoder else ids.size(1)  # decoder start token, or the prompt
    assert out.size(1) == prefix + new_tokens, "Hugging Face stopped early"
    return seconds


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="decoder-only,encoder-decoder", help="comma-separated")
    parser.add_argument("--preset", default="gpt-tiny", help="decoder-only: conf/model preset for the dimensions")
    parser.add_argument("--encdec-preset", default="tiny", help="encoder-decoder: conf/model preset")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1234)
    benchlib.add_record_option(parser, "decode_speed")
    args = parser.parse_args(argv)
    args.record = benchlib.record_path(args.record, "decode_speed", "cpu")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if not set(args.archs) <= {"decoder-only", "encoder-decoder"}:
        parser.error(f"--archs={','.join(args.archs)}: choose from decoder-only, encoder-decoder")
    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"--strategies: unknown {unknown[0]!r} (known: {', '.join(STRATEGIES)})")
    for key in ("new_tokens", "prompt_len", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    meta = benchlib.meta(argv, ("torch", "transformers", "lmlab"))
    if args.threads:
        torch.set_num_threads(args.threads)
    record = {"new_tokens": args.new_tokens, "prompt_len": args.prompt_len,
              "threads": torch.get_num_threads(), "device": "cpu",
              "transformers": __import__("transformers").__version__}
    runs: list[dict] = []
    for arch in args.archs:
        if arch == "decoder-only":
            model, hf = build_models(args.preset, args.vocab, args.seed)
            prefix, label = "", f"{args.preset} in GPT-2's layout vs GPT2LMHeadModel"
            record.update(preset=args.preset, n_parameters=model.num_parameters(),
                          hf_n_parameters=hf.num_parameters())
        else:
            model, hf = build_encdec(args.encdec_preset, args.vocab, args.seed)
            prefix, label = "encdec_", f"{args.encdec_preset} (encoder-decoder) vs MarianMTModel"
            record.update(encdec_preset=args.encdec_preset, encdec_n_parameters=model.num_parameters(),
                          encdec_hf_n_parameters=hf.num_parameters())
        bench_pair(model, hf, prefix, label, args, record, runs)
    written = benchlib.write_record(args.record, record, runs, meta)
    if written:
        print(f"record of all {len(runs)} runs: {written}")
    print(json.dumps(record))
    return record


def run_entry(what: dict, side: str, repeat: int | None, seconds: float, new_tokens: int) -> dict:
    """One run for the record: ``repeat`` None is the two-token warm-up before the timed repeats."""
    tokens = what["batch"] * new_tokens
    return dict(what, side=side, repeat=repeat, warmup=repeat is None, seconds=seconds, tokens=tokens,
                tokens_per_s=tokens / seconds)


def bench_pair(model, hf, prefix: str, label: str, args, record: dict, runs: list[dict]) -> None:
    g = torch.Generator().manual_seed(args.seed)
    print(f"{label} ({model.num_parameters() / 1e6:.2f}M vs {hf.num_parameters() / 1e6:.2f}M parameters), "
          f"prompts of {args.prompt_len} "
          f"tokens, {args.new_tokens} new tokens each, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    print(f"  {'strategy':<8} {'batch':>5} {'lmlab tok/s':>12} {'HF tok/s':>10} {'ratio':>7}")
    for strategy in args.strategies:
        for batch in args.batches:
            prompts = torch.randint(4, args.vocab, (batch, args.prompt_len), generator=g)
            key = f"{prefix}{strategy}_b{batch}"
            what = {"key": key, "arch": "encoder-decoder" if prefix else "decoder-only", "strategy": strategy,
                    "batch": batch}
            sides = (("lmlab", run_lmlab, model), ("hf", run_hf, hf))
            for side, fn, m in sides:  # warm-up of both paths
                runs.append(run_entry(what, side, None, fn(m, prompts, strategy, 2), 2))
            times = {"lmlab": [], "hf": []}
            for i in range(args.repeats):
                # the sides take turns to go first, so neither always runs on a warmer machine
                for side, fn, m in sides if i % 2 == 0 else sides[::-1]:
                    runs.append(run_entry(what, side, i, fn(m, prompts, strategy, args.new_tokens), args.new_tokens))
                    times[side].append(runs[-1]["seconds"])
            tps = {k: batch * args.new_tokens / benchlib.median(v) for k, v in times.items()}
            record[f"{key}_tokens_per_s"] = round(tps["lmlab"], 1)
            record[f"{key}_hf_tokens_per_s"] = round(tps["hf"], 1)
            record[f"{key}_ratio"] = round(tps["lmlab"] / tps["hf"], 4)
            print(f"  {strategy:<8} {batch:>5} {tps['lmlab']:>12,.0f} {tps['hf']:>10,.0f} "
                  f"{tps['lmlab'] / tps['hf']:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
