"""Training throughput of lmlab's Lightning path against a bare PyTorch loop, in the same run.

Both paths train the same ``Transformer`` (same preset from ``conf/model/``, same initial weights)
on the same list of synthetic batches with the same optimiser, learning-rate schedule, label-smoothed
loss and gradient clipping:

* lmlab: ``pytorch_lightning.Trainer`` fitting ``TranslationModule`` (logging, hooks and all);
* bare:  the module's own ``model`` driven by hand — forward, loss, backward, clip, step,
  scheduler step, zero_grad — with the optimiser and scheduler from the module's
  ``configure_optimizers()``, so the two cannot drift apart.

Only the steps after ``--warmup`` are timed, each one from the start of a step to the start of the
next (so everything Lightning does between steps counts). A path's step time is the median of its
steps over all its runs: on a shared CPU, slow phases lasting seconds move a run's mean by ±5%
while the median barely moves. The paths run alternately (bare, lmlab, bare, lmlab, ...
``--repeats`` times each), so drift hits both.

    python bench/train_throughput.py [--presets tiny,small] [--steps 30] [--warmup 5]
        [--batch-size 64] [--seq-len 16] [--vocab 6000] [--threads N] [--device cpu|cuda]
        [--precision 32-true|bf16-mixed] [--repeats 3] [--peak-tflops 989]

Figures per preset: tokens/s (non-pad source + decoder-input tokens of a step ÷ the median step
time; every timed batch has the same tokens), ms/step (median), memory (on CUDA the
peak ``torch.cuda.max_memory_allocated`` of the run; on CPU only the process's current RSS after the
run, which is process-wide and never shrinks much, so it is an upper bound, not a per-path peak),
and on CUDA the model FLOPs utilisation (MFU, formula in ``flops_per_step``). ``<preset>_ratio`` is
lmlab tokens/s ÷ bare tokens/s: 1.0 means Lightning costs nothing, 0.9 means 10% slower.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from lmlab.config import build_config, compose  # noqa: E402
from lmlab.data.batching import collate_pairs  # noqa: E402  (needs the sys.path line above)
from lmlab.data.tokenizer import EOS, PAD  # noqa: E402
from lmlab.train.fit import TranslationModule, model_config  # noqa: E402

FIRST_ID = 4  # ids below are <pad> <unk> <s> </s>; random sentences use ordinary tokens only


# --- the workload -------------------------------------------------------------------------------

def make_batches(n: int, batch_size: int, seq_len: int, vocab: int, seed: int,
                 decoder_only: bool = False) -> list[tuple]:
    """``n`` batches of random tokens.

    Encoder-decoder: laid out exactly as training lays them out (``collate_pairs``): sources of
    ``seq_len - 1`` ids + </s>, targets of ``seq_len - 1`` ids, so src, tgt_in and tgt_out are all
    (batch_size, seq_len). Decoder-only: language-model batches (ids, labels) of (batch_size,
    seq_len), every position scored, as nanoGPT and llm.c train GPT-2.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        if decoder_only:
            seq = torch.as_tensor(rng.integers(FIRST_ID, vocab, (batch_size, seq_len + 1)))
            batches.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
            continue
        items = [(np.append(rng.integers(FIRST_ID, vocab, seq_len - 1), EOS),
                  rng.integers(FIRST_ID, vocab, seq_len - 1)) for _ in range(batch_size)]
        batches.append(collate_pairs(items))
    return batches


def count_tokens(batch) -> int:
    """Non-pad tokens the model reads: source + decoder input, or the decoder-only sequence."""
    if len(batch) == 2:
        return int(batch[0].ne(PAD).sum())
    src, _, tgt_in, _ = batch
    return int(src.ne(PAD).sum() + tgt_in.ne(PAD).sum())


class PremadeBatches(Dataset):
    """Hands out finished batches; used with ``batch_size=None`` so the DataLoader adds nothing."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def new_module(preset: str, vocab: int, seed: int, overrides=()) -> tuple[TranslationModule, float]:
    """A fresh ``TranslationModule`` for ``preset`` (same seed → same weights every time) and the
    trainer's gradient-clip value, both read through the config door so they follow ``conf/``."""
    cfg = build_config(compose([f"model={preset}", *overrides]))
    tc = cfg.trainer
    torch.manual_seed(seed)
    module = TranslationModule(model_config(cfg, vocab).__dict__,
                               tc.__dict__ | {"betas": list(tc.betas)})
    return module, tc.gradient_clip_val


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- the two paths ------------------------------------------------------------------------------

def run_bare(make_module, batches, warmup, device, precision) -> tuple[list[float], TranslationModule]:
    """Seconds of each step after ``warmup`` (and the trained module), training by hand what
    Lightning would train. ``make_module()`` returns a fresh (module, gradient_clip_val)."""
    module, clip = make_module()
    module.to(device).train()
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    params = [p for group in opt.param_groups for p in group["params"]]
    smoothing = module.tcfg["label_smoothing"]
    # what Lightning's bf16-mixed plugin does: autocast around the training step, fp32 weights
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    marks = []
    for i, batch in enumerate(batches):
        if i >= warmup:
            sync(device)
            marks.append(time.perf_counter())
        batch = [t.to(device, non_blocking=True) for t in batch]
        with autocast:
            loss_sum, n_tok = module._loss(batch, smoothing)
            loss = loss_sum / n_tok
        loss.backward()
        if clip:
            # over the optimiser's parameters in its order, as Lightning does: the norm's float
            # sum then matches bit for bit (Adam magnifies the last-bit noise on the zero-
            # gradient key biases into visible weight differences)
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    marks.append(time.perf_counter())
    return list(np.diff(marks)), module


class StepTimer(pl.Callback):
    """Marks the start of every step from ``warmup`` on, and the end of training."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device = warmup, device
        self.marks = []

    def _mark(self):
        sync(self.device)
        self.marks.append(time.perf_counter())

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step >= self.warmup:
            self._mark()

    def on_train_end(self, trainer, module):
        self._mark()


def run_lmlab(make_module, batches, warmup, device, precision) -> tuple[list[float], TranslationModule]:
    """Seconds of each step after ``warmup`` (and the trained module) through
    ``Trainer.fit(TranslationModule)``."""
    module, clip = make_module()
    timer = StepTimer(warmup, device)
    trainer = pl.Trainer(
        max_steps=len(batches), logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=clip or None, precision=precision,
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, callbacks=[timer],
        num_sanity_val_steps=0, limit_val_batches=0,
    )
    loader = DataLoader(PremadeBatches(batches), batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    if trainer.global_step != len(batches):
        raise RuntimeError(f"Lightning took {trainer.global_step} steps, expected {len(batches)}")
    return list(np.diff(timer.marks)), module


# --- figures ------------------------------------------------------------------------------------

def flops_per_step(model, batch_size: int, src_len: int, tgt_len: int) -> float:
    """Model FLOPs of one training step (forward + backward), the PaLM appendix B / nanoGPT
    ``estimate_mfu`` estimate adapted to an encoder-decoder:

        6 × (params a token passes through) per token, for the matmuls (2 forward, 4 backward)
        + 12 × n_layer × C × (length attended over) per token, for QKᵀ and AV

    A source token passes through the encoder and the decoder's cross-attention key/value
    projections; a target token through the rest of the decoder and the output projection
    (C × V: the tied embedding matrix counts here, the lookup itself is free; positions are a
    fixed table, not parameters). Causal self-attention is counted in full, as nanoGPT does.
    Worked example, tiny (C 128, 3+3 layers, V 6000) at B 64, S = T 16: ≈ 0.7M params per source
    token, ≈ 1.5M per target token (0.77M of them the output projection), so
    6 × 1024 × 2.2M ≈ 13.5 GFLOP per step; attention adds only 0.07 G at this length.
    """
    count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    C = model.cfg.n_embd
    if model.cfg.arch == "decoder-only":  # one sequence of tgt_len tokens: nanoGPT's estimate_mfu
        params = count([model.decoder, model.dec_ln]) + model.lm_head.weight.numel()
        return float(6 * batch_size * tgt_len * params
                     + 12 * len(model.decoder) * C * batch_size * tgt_len * tgt_len)
    cross_kv = count([b.cross_attn.kv for b in model.decoder])
    enc = count([model.encoder, model.enc_ln]) + cross_kv
    dec = count([model.decoder, model.dec_ln]) - cross_kv + model.lm_head.weight.numel()
    matmul = 6 * batch_size * (src_len * enc + tgt_len * dec)
    L_enc, L_dec = len(model.encoder), len(model.decoder)
    attention = 12 * C * batch_size * (L_enc * src_len * src_len            # encoder self
                                       + L_dec * tgt_len * tgt_len          # decoder self
                                       + L_dec * tgt_len * src_len)         # cross
    return float(matmul + attention)


def rss_mb() -> float | None:
    """This process's resident set size now (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(path_fn, preset, batches, args) -> dict:
    """One run of one path: its step times and memory."""
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps, _ = path_fn(lambda: new_module(preset, args.vocab, args.seed), batches, args.warmup,
                       args.device, args.precision)
    memory = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else rss_mb()
    return {"steps": steps, "mem_mb": memory}


def figures_of(runs: list[dict], tokens_per_step: float) -> dict:
    """A path's figures over all its runs: median step time, tokens/s from it, and the highest
    memory of any run."""
    steps = [t for r in runs for t in r["steps"]]
    median, mean = float(np.median(steps)), float(np.mean(steps))
    memories = [r["mem_mb"] for r in runs if r["mem_mb"] is not None]
    return {"tokens_per_s": tokens_per_step / median, "ms_per_step": 1000 * median,
            "mean_tokens_per_s": tokens_per_step / mean, "mem_mb": max(memories) if memories else None}


def bench_preset(preset: str, args) -> dict:
    decoder_only = build_config(compose([f"model={preset}"])).model.arch == "decoder-only"
    batches = make_batches(args.warmup + args.steps, args.batch_size, args.seq_len, args.vocab, args.seed,
                           decoder_only)
    tokens_per_step = float(np.mean([count_tokens(b) for b in batches[args.warmup:]]))
    runs = {"bare": [], "lmlab": []}
    for _ in range(args.repeats):  # alternate, so slow phases of a shared machine hit both paths
        for name, fn in (("bare", run_bare), ("lmlab", run_lmlab)):
            runs[name].append(measure(fn, preset, batches, args))
    figures = {name: figures_of(r, tokens_per_step) for name, r in runs.items()}
    model = new_module(preset, args.vocab, args.seed)[0].model
    figures["n_parameters"] = model.num_parameters()
    figures["decoder_only"] = decoder_only
    if args.device == "cuda":
        flops = flops_per_step(model, args.batch_size, args.seq_len, args.seq_len)  # (dec-only: one sequence)
        figures["flops_per_step"] = flops
        for name in ("bare", "lmlab"):
            achieved = flops / (figures[name]["ms_per_step"] / 1000)
            figures[name]["mfu"] = achieved / (args.peak_tflops * 1e12)
    return figures


def print_table(preset: str, fig: dict, args) -> None:
    mem_label = "peak alloc MiB" if args.device == "cuda" else "RSS after MiB"
    shape = f"{args.seq_len}" if fig["decoder_only"] else f"{args.seq_len}+{args.seq_len}"
    print(f"\n{preset}: {fig['n_parameters'] / 1e6:.2f}M params, batch {args.batch_size} × "
          f"{shape} tokens, {args.steps} timed steps after {args.warmup}, "
          f"median step of {args.repeats} runs each, {args.device} ({args.precision}, {torch.get_num_threads()} threads)")
    header = f"  {'path':<6} {'tokens/s':>12} {'ms/step':>10} {mem_label:>15}"
    if args.device == "cuda":
        header += f" {'MFU':>7}"
    print(header)
    for name in ("bare", "lmlab"):
        r = fig[name]
        mem = f"{r['mem_mb']:.0f}" if r["mem_mb"] is not None else "n/a"
        line = f"  {name:<6} {r['tokens_per_s']:>12,.0f} {r['ms_per_step']:>10.2f} {mem:>15}"
        if args.device == "cuda":
            line += f" {100 * r['mfu']:>6.1f}%"
        print(line)
    print(f"  lmlab ÷ bare tokens/s: {fig['lmlab']['tokens_per_s'] / fig['bare']['tokens_per_s']:.3f} "
          f"(from mean step times: {fig['lmlab']['mean_tokens_per_s'] / fig['bare']['mean_tokens_per_s']:.3f})")
    if args.device == "cuda":
        print(f"  model FLOPs/step {fig['flops_per_step'] / 1e9:.2f} G, peak {args.peak_tflops} TFLOP/s")


def summary(results: dict, args) -> dict:
    """The flat JSON record: ``<preset>_<figure>`` for lmlab, ``<preset>_bare_<figure>`` for the
    baseline, ``<preset>_ratio`` = lmlab ÷ bare tokens/s (median steps), ``<preset>_mean_ratio`` the
    same from mean step times."""
    out = {"device": args.device, "precision": args.precision, "threads": torch.get_num_threads(),
           "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
           "warmup": args.warmup, "vocab": args.vocab}
    mem_key = "peak_mem_mb" if args.device == "cuda" else "rss_mb"
    for preset, fig in results.items():
        for name, prefix in (("lmlab", preset), ("bare", f"{preset}_bare")):
            r = fig[name]
            out[f"{prefix}_tokens_per_s"] = round(r["tokens_per_s"], 1)
            out[f"{prefix}_ms_per_step"] = round(r["ms_per_step"], 3)
            out[f"{prefix}_{mem_key}"] = round(r["mem_mb"], 1) if r["mem_mb"] is not None else None
            if "mfu" in r:
                out[f"{prefix}_mfu"] = round(r["mfu"], 4)
        out[f"{preset}_ratio"] = round(fig["lmlab"]["tokens_per_s"] / fig["bare"]["tokens_per_s"], 4)
        # the same from mean step times: every slow phase of the machine included
        out[f"{preset}_mean_ratio"] = round(fig["lmlab"]["mean_tokens_per_s"] / fig["bare"]["mean_tokens_per_s"], 4)
    return out


# --- CLI ----------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small,gpt-tiny,gpt-small",
                        help="comma-separated conf/model presets")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentence pairs per batch")
    parser.add_argument("--seq-len", type=int, default=16,
                        help="source and target tokens per pair (encoder-decoder), sequence length "
                             "(decoder-only)")
    parser.add_argument("--vocab", type=int, default=6000, help="vocabulary size (default 6000)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default=None,
                        help="default: as conf/trainer — 32-true on cpu, bf16-mixed on cuda")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path (default 3)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="peak dense bf16 TFLOP/s for MFU (default 989, H100 SXM)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    for key in ("steps", "batch_size", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    if args.warmup < 0:
        parser.error(f"--warmup={args.warmup} must be >= 0")
    if args.seq_len < 2:
        parser.error(f"--seq-len={args.seq_len} must be >= 2 (one token plus </s>)")
    if args.vocab <= FIRST_ID:
        parser.error(f"--vocab={args.vocab} must be > {FIRST_ID} (ids below are special tokens)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # Lightning's start-up banners would bury the table; warnings about our deliberate choices
    # (no workers: batches are pre-made; no val loader) are noise here. Both are restored after,
    # so calling main() in-process (tests) leaves no trace.
    pl_logger = logging.getLogger("pytorch_lightning")
    level = pl_logger.level
    pl_logger.setLevel(logging.WARNING)
    results = {}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*validation_step.*")
            warnings.filterwarnings("ignore", ".*val_dataloader.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")  # a deprecation inside Lightning
            for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
                results[preset] = bench_preset(preset, args)
                print_table(preset, results[preset], args)
    finally:
        pl_logger.setLevel(level)
    record = summary(results, args)
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
