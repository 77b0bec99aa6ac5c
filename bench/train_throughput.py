"""Training throughput of lmlab's real training run against a bare PyTorch loop doing the same work.

Both paths train the same ``Transformer`` (a ``conf/model`` preset, the same seed, so the same
initial weights) on the same batches in the same order: lmlab's built-in corpus (``data=synthetic``,
downloaded and prepared once per invocation with the prepare stage's own calls), read through
``TokenDataModule.loader``, the DataLoader training itself uses. Every other setting is what
``dvc repro`` uses (``params.yaml``; on ``--device cuda`` with ``trainer=gpu``: bf16-mixed).

* lmlab: ``lmlab.train.fit.train``, the train stage's own function, with everything it sets up:
  the W&B logger (offline, into a temporary folder; the network is never touched), the best and
  last ``ModelCheckpoint`` (``last.ckpt`` every ``trainer.checkpoint_every_n_steps``) through the
  atomic checkpoint IO, the curve writer, the progress bar, the final validation, ``state.json``
  and the export. A ``StepTimer`` callback marks the start of every step from ``--warmup`` on and
  the end of the last step, so the window holds all the periodic work that falls in it (with the
  defaults, logging at steps 25, 50, 75, 100 and ``last.ckpt`` at step 100) but neither the set-up
  before the first step nor the validation and export after the last. The whole ``train()`` call
  is timed too, for information.
* bare: the same work by hand, as ``fit.train`` builds it (seed, ``TokenDataModule``,
  ``TransformerLitModule`` and its ``configure_optimizers()``): forward, label-smoothed loss,
  backward, gradient clipping over the optimiser's parameters in its order, optimiser step,
  scheduler step, zero_grad; bf16 autocast on CUDA. No logging, checkpoints or progress bar.
  The window is the same: from the start of step ``--warmup`` to the end of the last step.

With dropout 0 the two end with identical weights (tests/test_bench_smoke.py checks it).

A run's figure is its tokens/s: the input tokens of the timed steps (non-pad source + decoder input
tokens; decoder-only: the non-pad ids) ÷ the window's total time, so a slow step (a checkpoint
write) counts in full. Runs come in pairs, and the pairs alternate which path goes first: (bare,
lmlab), (lmlab, bare), ... ``--repeats`` pairs per preset. ``<preset>_ratio`` is the median over the
pairs of lmlab tokens/s ÷ bare tokens/s (1.0: lmlab's set-up costs nothing; 0.9: 10% slower);
``<preset>_tokens_per_s`` and ``<preset>_bare_tokens_per_s`` are the medians of each path's runs. On
CUDA, also the peak memory of each path (``torch.cuda.max_memory_allocated`` over its training
steps, reset before every run) and the model FLOPs utilisation (MFU, formula in
``flops_per_step``). On CPU there is no memory column: the process's RSS is shared by both paths.

    python bench/train_throughput.py [--presets tiny,small,gpt-tiny,gpt-small] [--steps 100]
        [--warmup 5] [--repeats 3] [--threads N] [--device cpu|cuda] [--n-train N]
        [--override KEY=VALUE ...] [--seed 1234] [--peak-tflops 989] [--tmp-dir DIR] [--record PATH]

Every run (both paths, every pair) and the summary go to the record, by default
``reports/bench/train_throughput_<device>.json`` (``--record ''``: none). The last line printed is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import benchlib
import numpy as np
import pytorch_lightning as pl
import torch

from lmlab.config import build_config, compose
from lmlab.data.batching import input_tokens
from lmlab.data.download import download
from lmlab.data.prepare import prepare
from lmlab.data.tokenizer import PAD, load_tokenizer
from lmlab.model.loss import loss_sums
from lmlab.model.transformer import ModelConfig
from lmlab.train.data import TokenDataModule
from lmlab.train.fit import train
from lmlab.train.module import TransformerLitModule

PATHS = ("bare", "lmlab")
# the bench sets these itself (the timed window, the corpus, the seed, the W&B folder and mode)
RESERVED = ("trainer.max_steps", "logger.save_dir", "logger.mode", "seed", "data.n_train")
# what the bench (and train() inside it) changes in the environment; restored when main() returns
ENV_KEYS = ("WANDB_MODE", "WANDB_SILENT", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")
QUIET = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


# --- the workload -------------------------------------------------------------------------------

def prepare_data(root: Path, n_train: int | None, overrides=(), data: str = "synthetic") -> Path:
    """lmlab's built-in corpus (``data=synthetic`` or another built-in preset, ``n_train`` training
    pairs or the config's), downloaded and prepared as the prepare stage does it, into
    ``root/prepared``."""
    cfg = build_config(compose([*data_overrides(n_train, data), *overrides]))
    download(cfg, root / "raw")
    prepare(cfg, root / "raw", root / "prepared")
    return root / "prepared"


def data_overrides(n_train: int | None, data: str = "synthetic") -> list[str]:
    return [f"data={data}"] + ([f"data.n_train={n_train}"] if n_train else [])


def run_config(preset: str, device: str, max_steps: int, save_dir: Path, n_train: int | None = None,
               seed: int | None = None, overrides=(), data: str = "synthetic"):
    """The configuration ``dvc repro`` would train ``preset`` with, for ``max_steps`` steps, its W&B
    logger writing (offline) into ``save_dir``; ``trainer=gpu`` on CUDA, ``trainer=cpu`` otherwise
    (the machine's default, ``auto``, would take a GPU it finds for a CPU bench)."""
    return build_config(compose([
        f"model={preset}", "trainer=gpu" if device == "cuda" else "trainer=cpu", *data_overrides(n_train, data),
        *overrides, f"trainer.max_steps={max_steps}", f"logger.save_dir={save_dir}", "logger.mode=offline",
        *([f"seed={seed}"] if seed is not None else []),
    ]))


def step_counts(batch) -> tuple[int, torch.Tensor]:
    """(rows, [non-pad source tokens, non-pad decoder-input tokens]) of a batch, the tensor on the
    batch's device and not read yet (reading it on CUDA would wait for the step); decoder-only:
    (rows, [0, non-pad ids])."""
    if len(batch) == 4:
        src, _, tgt_in, _ = batch
        return src.size(0), torch.stack([src.ne(PAD).sum(), tgt_in.ne(PAD).sum()])
    ids = batch[0]
    return ids.size(0), torch.stack([ids.new_zeros(()), ids.ne(PAD).sum()])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_mem_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def window(marks: list[float], counts: list[tuple[int, torch.Tensor]], padded: int) -> dict:
    """A run's figures from its step marks (start of every timed step, end of the last one) and the
    ``step_counts`` of its timed steps (read now, after the window)."""
    read = torch.stack([t for _, t in counts]).cpu().tolist() if counts else []
    counts = [[rows, s, t] for (rows, _), (s, t) in zip(counts, read)]
    seconds = marks[-1] - marks[0]
    tokens = sum(s + t for _, s, t in counts)
    return {"timed_steps": len(marks) - 1, "window_s": seconds, "tokens": tokens, "padded_tokens": padded,
            "tokens_per_s": tokens / seconds, "step_s": [round(x, 6) for x in np.diff(marks)],
            "counts": counts}


# --- the two paths ------------------------------------------------------------------------------

def build_like_fit(cfg, prepared: Path) -> tuple[TransformerLitModule, TokenDataModule]:
    """The module and data that ``fit.train`` builds for ``cfg``, in its order (the seed, then the
    data, then the model: the same initial weights)."""
    vocab_size = load_tokenizer((Path(prepared) / "tokenizer.json").read_text()).get_vocab_size()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    tc = cfg.trainer
    mcfg = ModelConfig.of(cfg, vocab_size, PAD)
    block = tc.block_size if cfg.data.task == "language_modeling" else None
    data = TokenDataModule(prepared, tc.batch_size, cfg.seed, mcfg.max_len, mcfg.arch == "decoder-only",
                           tc.max_tokens, tc.num_workers, tc.accumulate_grad_batches, block)
    data.setup()
    module = TransformerLitModule(mcfg.to_dict(), tc.__dict__ | {"betas": list(tc.betas)})
    return module, data


def run_bare(cfg, prepared: Path, warmup: int, device: str) -> tuple[dict, torch.nn.Module]:
    """Train ``cfg.trainer.max_steps`` steps by hand; returns the run's figures and the model."""
    tc = cfg.trainer
    module, data = build_like_fit(cfg, prepared)
    module.to(device).train()
    model = torch.compile(module.model) if tc.compile else module.model
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    # clipped over the optimiser's parameters in its order, as Lightning does: the norm's float sum
    # then matches bit for bit (Adam magnifies last-bit noise into visible weight differences)
    params = [p for group in opt.param_groups for p in group["params"]]
    clip, smoothing = tc.gradient_clip_val, tc.label_smoothing
    # what Lightning's bf16-mixed plugin does: autocast around the training step, fp32 weights
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=tc.precision == "bf16-mixed")
    loader = data.loader(data.train_set, shuffle=True)  # the DataLoader training reads
    marks, counts, padded, step = [], [], 0, 0
    while step < tc.max_steps:  # epochs: each pass over the loader is the sampler's next epoch
        for batch in loader:
            batch = [t.to(device, non_blocking=True) for t in batch]
            if step >= warmup:
                sync(device)
                marks.append(time.perf_counter())
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss_sum, n_tok = loss_sums(model, batch, smoothing)
                loss = loss_sum / n_tok
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            if step >= warmup:
                counts.append(step_counts(batch))
                padded += input_tokens(batch)
            step += 1
            if step == tc.max_steps:
                break
    sync(device)
    marks.append(time.perf_counter())
    fig = window(marks, counts, padded)
    if device == "cuda":  # on CPU the process's memory is both paths' at once: no figure
        fig["peak_mem_mb"] = peak_mem_mb(device)
    return fig, module.model


class StepTimer(pl.Callback):
    """Marks the start of every step from ``warmup`` on and the end of the last step (before the
    checkpoint callbacks of that step, which Lightning runs last, and before the final validation
    and the export); counts the tokens of the timed steps; keeps the trained module."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device = warmup, device
        self.marks, self.counts, self.padded = [], [], 0
        self.peak_mem_mb = None
        self.module = None

    def _mark(self):
        sync(self.device)
        self.marks.append(time.perf_counter())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.warmup:
            self._mark()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > self.warmup:  # global_step counts this step already
            self.counts.append(step_counts(batch))
            self.padded += input_tokens(batch)
        if trainer.global_step == trainer.max_steps:
            self._mark()
            self.peak_mem_mb = peak_mem_mb(self.device)
            self.module = pl_module


def run_lmlab(cfg, prepared: Path, run_dir: Path, warmup: int, device: str) -> tuple[dict, torch.nn.Module]:
    """Train through ``fit.train`` into ``run_dir``; returns the run's figures and the model."""
    timer = StepTimer(warmup, device)
    start = time.perf_counter()
    summary = train(cfg, prepared, run_dir / "model", run_dir / "curves", run_dir / "checkpoints",
                    run_name=run_dir.name, callbacks=[timer])
    train_s = time.perf_counter() - start
    if summary.get("global_step") != cfg.trainer.max_steps or timer.module is None:
        raise RuntimeError(f"train() took {summary.get('global_step')} steps, expected {cfg.trainer.max_steps}")
    fig = window(timer.marks, timer.counts, timer.padded)
    fig["train_s"] = train_s
    if device == "cuda":
        fig["peak_mem_mb"] = timer.peak_mem_mb
    return fig, timer.module.model


# --- figures ------------------------------------------------------------------------------------

def flops_per_step(model, batch_size: float, src_len: float, tgt_len: float) -> float:
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


def mean_flops_per_step(model, counts: list[list[int]]) -> float:
    """``flops_per_step`` of the timed steps, averaged: each step from its own rows and its mean
    non-pad tokens per row (source and decoder input), so padding is not counted as work."""
    return float(np.mean([flops_per_step(model, rows, src / rows, tgt / rows) for rows, src, tgt in counts]))


def bench_preset(preset: str, prepared: Path, root: Path, args) -> tuple[dict, list[dict]]:
    """``--repeats`` pairs of runs of ``preset``, alternating which path goes first. Returns the
    preset's figures and its runs."""
    max_steps = args.warmup + args.steps
    runs, ratios, model = [], [], None
    for pair in range(args.repeats):
        order = PATHS if pair % 2 == 0 else PATHS[::-1]
        pair_runs = {}
        for position, path in enumerate(order, 1):  # position 1 went first
            run_dir = root / f"{preset}-{pair}-{path}"
            cfg = run_config(preset, args.device, max_steps, run_dir / "logs", args.n_train, args.seed,
                             args.override)
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            if path == "bare":
                fig, trained = run_bare(cfg, prepared, args.warmup, args.device)
            else:
                fig, trained = run_lmlab(cfg, prepared, run_dir, args.warmup, args.device)
            if model is None:
                model = trained.cpu()
            del trained
            shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints and logs: the disk is not the bench's
            pair_runs[path] = dict({"preset": preset, "path": path, "pair": pair, "order": position,
                                    "first": order[0]}, **fig)
        if pair_runs["bare"].pop("counts") != pair_runs["lmlab"]["counts"]:
            raise RuntimeError(f"{preset}, pair {pair}: the two paths read different batches")
        counts = pair_runs["lmlab"].pop("counts")
        ratio = pair_runs["lmlab"]["tokens_per_s"] / pair_runs["bare"]["tokens_per_s"]
        ratios.append(ratio)
        for path in order:
            pair_runs[path]["pair_ratio"] = ratio
            runs.append(pair_runs[path])
    fig = {"n_parameters": model.num_parameters(), "decoder_only": model.cfg.arch == "decoder-only",
           "ratios": ratios, "tokens_per_step": float(np.mean([s + t for _, s, t in counts])),
           "rows_per_step": float(np.mean([r for r, _, _ in counts]))}
    if args.device == "cuda":
        fig["flops_per_step"] = mean_flops_per_step(model, counts)
    for path in PATHS:
        mine = [r for r in runs if r["path"] == path]
        if args.device == "cuda":
            for r in mine:
                r["mfu"] = fig["flops_per_step"] * r["timed_steps"] / r["window_s"] / (args.peak_tflops * 1e12)
        fig[path] = {
            "tokens_per_s": benchlib.median(r["tokens_per_s"] for r in mine),
            "ms_per_step": 1000 * benchlib.median(r["window_s"] / r["timed_steps"] for r in mine),
        }
        if path == "lmlab":
            fig[path]["train_s"] = benchlib.median(r["train_s"] for r in mine)
        if args.device == "cuda":
            fig[path]["peak_mem_mb"] = max(r["peak_mem_mb"] for r in mine)
            fig[path]["mfu"] = benchlib.median(r["mfu"] for r in mine)
    return fig, runs


def print_table(preset: str, fig: dict, args) -> None:
    cuda = args.device == "cuda"
    print(f"\n{preset}: {fig['n_parameters'] / 1e6:.2f}M params, {fig['rows_per_step']:.0f} rows and "
          f"{fig['tokens_per_step']:,.0f} input tokens per step, {args.steps} timed steps after "
          f"{args.warmup}, median of {args.repeats} runs per path, {args.device} ({args.precision}, "
          f"{args.threads_used} threads)")
    header = f"  {'path':<6} {'tokens/s':>12} {'ms/step':>10} {'train() s':>10}"
    if cuda:
        header += f" {'peak MiB':>9} {'MFU':>7}"
    print(header)
    for path in PATHS:
        r = fig[path]
        train_s = f"{r['train_s']:.1f}" if "train_s" in r else "-"
        line = f"  {path:<6} {r['tokens_per_s']:>12,.0f} {r['ms_per_step']:>10.2f} {train_s:>10}"
        if cuda:
            line += f" {r['peak_mem_mb']:>9.0f} {100 * r['mfu']:>6.1f}%"
        print(line)
    ratios = fig["ratios"]
    print(f"  lmlab ÷ bare tokens/s: median {benchlib.median(ratios):.3f} of {len(ratios)} pairs "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    if cuda:
        print(f"  model FLOPs/step {fig['flops_per_step'] / 1e9:.2f} G, peak {args.peak_tflops} TFLOP/s")


def print_overview(record: dict, args) -> None:
    """All presets in one table, after the runs (the lmlab runs' progress bars are above)."""
    print(f"\nlmlab (fit.train) vs bare loop, {args.device} ({record['precision']}, {record['threads']} threads), "
          f"{args.steps} timed steps after {args.warmup}, {args.repeats} pairs per preset, medians:")
    print(f"  {'preset':<10} {'lmlab tok/s':>12} {'bare tok/s':>11} {'ratio':>7}  (min-max of pairs)")
    for preset in args.presets:
        print(f"  {preset:<10} {record[f'{preset}_tokens_per_s']:>12,.0f} {record[f'{preset}_bare_tokens_per_s']:>11,.0f} "
              f"{record[f'{preset}_ratio']:>7.3f}  ({record[f'{preset}_ratio_min']:.3f}-{record[f'{preset}_ratio_max']:.3f})")


def summary(results: dict, args, vocab: int, batch_size: int) -> dict:
    """The flat JSON figures: ``<preset>_<figure>`` for lmlab, ``<preset>_bare_<figure>`` for the
    baseline, ``<preset>_ratio`` = the median over pairs of lmlab ÷ bare tokens/s."""
    out = {"device": args.device, "precision": args.precision, "threads": args.threads_used,
           "batch_size": batch_size, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
           "n_train": args.n_train_used, "vocab": vocab, "seed": args.seed_used}
    for preset, fig in results.items():
        for path, prefix in (("lmlab", preset), ("bare", f"{preset}_bare")):
            r = fig[path]
            out[f"{prefix}_tokens_per_s"] = round(r["tokens_per_s"], 1)
            out[f"{prefix}_ms_per_step"] = round(r["ms_per_step"], 3)
            if "peak_mem_mb" in r:
                out[f"{prefix}_peak_mem_mb"] = round(r["peak_mem_mb"], 1)
                out[f"{prefix}_mfu"] = round(r["mfu"], 4)
        out[f"{preset}_ratio"] = round(benchlib.median(fig["ratios"]), 4)
        out[f"{preset}_ratio_min"] = round(min(fig["ratios"]), 4)
        out[f"{preset}_ratio_max"] = round(max(fig["ratios"]), 4)
        out[f"{preset}_train_s"] = round(fig["lmlab"]["train_s"], 2)
        out[f"{preset}_tokens_per_step"] = round(fig["tokens_per_step"], 1)
        out[f"{preset}_n_parameters"] = fig["n_parameters"]
        if "flops_per_step" in fig:
            out[f"{preset}_flops_per_step"] = fig["flops_per_step"]
    return out


# --- CLI ----------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small,gpt-tiny,gpt-small",
                        help="comma-separated conf/model presets")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per run (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs per preset (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu; cuda trains with trainer=gpu")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training pairs of the corpus (default: the config's data.n_train)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both paths (repeatable), e.g. model.dropout=0.0")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="peak dense bf16 TFLOP/s for MFU (default 989, H100 SXM)")
    parser.add_argument("--seed", type=int, default=None, help="run seed (default: the config's)")
    parser.add_argument("--tmp-dir", default=None, metavar="DIR",
                        help="where the corpus and the runs (checkpoints, W&B files) go, deleted after; "
                             "default: the system's temporary folder")
    benchlib.add_record_option(parser, "train_throughput")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    for key in ("steps", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key}={getattr(args, key)} must be >= 1")
    if args.warmup < 0:
        parser.error(f"--warmup={args.warmup} must be >= 0")
    if args.n_train is not None and args.n_train < 1:
        parser.error(f"--n-train={args.n_train} must be >= 1")
    for item in args.override:
        key = item.split("=", 1)[0].lstrip("+~")
        if "=" not in item:
            parser.error(f"--override {item!r}: expected KEY=VALUE")
        if key in RESERVED:
            parser.error(f"--override {item!r}: the bench sets {key} itself (see --steps, --warmup, "
                         "--seed, --n-train)")
    args.presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    args.record = benchlib.record_path(args.record, "train_throughput", args.device)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    meta = benchlib.meta(argv, ("torch", "pytorch-lightning", "wandb", "lmlab"))
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    results, runs = {}, []
    try:
        with benchlib.training_session(args.threads, QUIET, ENV_KEYS):
            with tempfile.TemporaryDirectory(prefix="train_throughput.", dir=args.tmp_dir) as tmp, warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*LeafSpec.*")  # a deprecation inside Lightning
                warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")  # small --n-train
                root = Path(tmp)
                prepared = prepare_data(root / "data", args.n_train, args.override)
                probe = run_config(args.presets[0], args.device, args.warmup + args.steps, root, args.n_train,
                                   args.seed, args.override)
                tc = probe.trainer
                if tc.accumulate_grad_batches != 1:
                    raise SystemExit("trainer.accumulate_grad_batches must be 1: the bare loop steps every batch")
                if args.warmup + args.steps > tc.val_check_interval:
                    print(f"note: {args.warmup + args.steps} steps pass trainer.val_check_interval="
                          f"{tc.val_check_interval}: lmlab's window holds validation passes the bare loop "
                          "does not make")
                args.precision, args.n_train_used, args.seed_used = tc.precision, probe.data.n_train, probe.seed
                args.threads_used = torch.get_num_threads()
                vocab = load_tokenizer((prepared / "tokenizer.json").read_text()).get_vocab_size()
                for preset in args.presets:
                    results[preset], preset_runs = bench_preset(preset, prepared, root / "runs", args)
                    runs += preset_runs
                    print_table(preset, results[preset], args)
    finally:
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
    record = summary(results, args, vocab, tc.batch_size)
    print_overview(record, args)
    return benchlib.finish(args.record, record, runs, meta)


if __name__ == "__main__":
    main()
