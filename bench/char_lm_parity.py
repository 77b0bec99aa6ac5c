"""Does lmlab's character model learn as well as nanoGPT's recipe does, on the same machine?

Trains ``experiment=shakespeare_char`` (nanoGPT's CPU model: 4 layers, 4 heads, 128 wide, block 64,
batch 12, 2,000 iterations) through lmlab's real training run (``lmlab.train.fit.train``, with the
logger, checkpoints and callbacks ``dvc repro`` uses), and beside it a reference written here from
nanoGPT's description: a bias-free GPT with nanoGPT's initialisation, AdamW groups and learning-rate
schedule, fed batches of windows at random offsets of the training text. Both read the same text,
split as nanoGPT's ``prepare.py`` splits it (the first 90% to train on, the rest to validate), with
the same seeds, and both are scored on the same blocks of the validation text.

    python bench/char_lm_parity.py --text input.txt                  # three seeds, 2,000 steps
    python bench/char_lm_parity.py --text input.txt --seeds 1 --steps 500

``--text`` is nanoGPT's ``data/shakespeare_char/input.txt`` (Tiny Shakespeare, 1,115,394
characters) or any plain text. The last line is a JSON object: ``val_loss_ratio`` is lmlab's
validation loss ÷ the reference's (median over seeds; 1 means parity) and ``train_seconds_ratio``
the same for the time of the 2,000 steps and the one validation. ``quick_estimate_sd`` is the
standard deviation of a validation loss estimated as nanoGPT's CPU run prints it (20 batches of 12
windows at random offsets; 100 draws per trained reference model, outside the clock) around that
model's loss on the whole validation text, and ``quick_estimate_range`` the lowest and highest
difference. Every run is in the record (``reports/bench/char_lm_parity_cpu.json``).

The two losses are over the same predictions: lmlab ends each line with ``<eos>`` where the text has
a newline, and keeps blank lines (``data.keep_blank_lines``), so its token stream is the text's
characters one for one. What it cannot show: how either would do at another size, budget or
learning rate; and the reference is this file's reading of nanoGPT, not nanoGPT's own code.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import benchlib
import torch
import torch.nn.functional as F
from torch import nn
from train_throughput import QUIET

from lmlab.config import build_config, compose
from lmlab.data.download import download
from lmlab.data.prepare import prepare
from lmlab.train.fit import train

RECIPE = "shakespeare_char"
TRAIN_SHARE = 0.9  # nanoGPT's prepare.py: the first 90% of the characters train, the rest validate


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, type=Path, help="the plain text (nanoGPT's input.txt)")
    p.add_argument("--steps", type=int, default=2000, help="training steps of every run (default 2000)")
    p.add_argument("--seeds", default="1234,1235,1236", help="comma-separated seeds (default 1234,1235,1236)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for both sides (model, trainer keys; repeatable)")
    benchlib.add_record_option(p, "char_lm_parity")
    args = p.parse_args(argv)
    if not args.text.is_file():
        p.error(f"--text {args.text}: no such file")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def split_text(text: str, folder: Path) -> tuple[str, str]:
    """nanoGPT's split of ``text``, written as lmlab's local text format (``{split}.txt``; the test
    split is the validation text again); returns (train, validation)."""
    cut = int(len(text) * TRAIN_SHARE)
    train_text, val_text = text[:cut], text[cut:]
    folder.mkdir(parents=True)
    for split, part in (("train", train_text), ("validation", val_text), ("test", val_text)):
        (folder / f"{split}.txt").write_text(part, encoding="utf-8")
    return train_text, val_text


def lmlab_config(data_dir: Path, steps: int, seed: int, log_dir: Path, overrides=()):
    """The recipe on the local text, as ``dvc exp run -S experiment=shakespeare_char`` would train
    it, validating once, at the end (the reference does the same work)."""
    return build_config(compose([
        f"experiment={RECIPE}", "data=local", "data.task=language_modeling", f"data.path={data_dir}",
        "data.text_field=txt", *overrides, f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
        f"seed={seed}", f"logger.save_dir={log_dir}", "logger.mode=offline"]))


# --- the reference: a GPT as nanoGPT's model.py describes it, bias-free ---------------------------

class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width, bias=False), nn.LayerNorm(width, bias=False)
        self.qkv, self.out = nn.Linear(width, 3 * width, bias=False), nn.Linear(width, width, bias=False)
        self.up, self.down = nn.Linear(width, 4 * width, bias=False), nn.Linear(4 * width, width, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(self.norm1(x)).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, c))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab: int, block: int, width: int, heads: int, layers: int):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:  # the projections into the residual stream, scaled by depth
            for proj in (block.out, block.down):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.size(1)))
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.tokens.weight.T  # the output layer shares the embedding


def nanogpt_lr(step: int, peak: float, floor: float, warmup: int, steps: int) -> float:
    """nanoGPT's schedule: linear warm-up over ``warmup`` steps, then cosine from ``peak`` to
    ``floor`` at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    ratio = min(1.0, (step - warmup) / max(1, steps - warmup))
    return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (peak - floor)


def val_blocks(ids: torch.Tensor, block: int) -> torch.Tensor:
    """The validation stream cut as lmlab cuts it: blocks of ``block + 1`` tokens every ``block``."""
    n = (len(ids) - 1) // block
    return torch.stack([ids[i * block: i * block + block + 1] for i in range(n)])


@torch.no_grad()
def mean_loss(model: nn.Module, blocks: torch.Tensor, batch: int = 64) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(blocks), batch):
        chunk = blocks[i:i + batch]
        logits = model(chunk[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
    return total / blocks[:, 1:].numel()


def run_reference(cfg, train_text: str, val_text: str, seed: int) -> tuple[float, nn.Module, torch.Tensor]:
    """Train the reference with ``cfg``'s model and trainer settings; its validation loss, the
    model and the validation ids."""
    m, tc = cfg.model, cfg.trainer
    chars = sorted(set(train_text) | set(val_text))
    index = {ch: i for i, ch in enumerate(chars)}
    train_ids = torch.tensor([index[ch] for ch in train_text])
    val_ids = torch.tensor([index[ch] for ch in val_text])
    torch.manual_seed(seed)
    model = ReferenceGPT(len(chars), tc.block_size, m.n_embd, m.n_head, m.n_decoder_layer)
    params = list(model.parameters())
    optim = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
                               {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                              lr=tc.lr, betas=tuple(tc.betas))
    draw = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(tc.max_steps):
        for group in optim.param_groups:
            group["lr"] = nanogpt_lr(step, tc.lr, tc.lr * tc.min_lr_ratio, tc.warmup_steps, tc.max_steps)
        starts = torch.randint(len(train_ids) - tc.block_size, (tc.batch_size,), generator=draw)
        windows = torch.stack([train_ids[s: s + tc.block_size + 1] for s in starts.tolist()])
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(params, tc.gradient_clip_val)
        optim.step()
        optim.zero_grad(set_to_none=True)
    return mean_loss(model, val_blocks(val_ids, tc.block_size)), model, val_ids


@torch.no_grad()
def quick_estimates(model: nn.Module, val_ids: torch.Tensor, block: int, batch: int, seed: int,
                    draws: int = 100, eval_iters: int = 20) -> list[float]:
    """``draws`` validation losses estimated as nanoGPT's CPU run reports them (``estimate_loss``
    with ``--eval_iters=20``: the mean over 20 batches of windows at random offsets), to show how
    far such a figure strays from the loss over the whole validation text."""
    model.eval()
    draw = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(draws):
        starts = torch.randint(len(val_ids) - block, (eval_iters * batch,), generator=draw)
        windows = torch.stack([val_ids[s: s + block + 1] for s in starts.tolist()])
        estimates.append(mean_loss(model, windows, batch=len(windows)))
    return estimates


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    meta = benchlib.meta(argv, ("torch", "pytorch-lightning", "lmlab"))
    text = args.text.read_text(encoding="utf-8")
    runs = []
    with benchlib.training_session(args.threads, QUIET, ()), warnings.catch_warnings(), \
            tempfile.TemporaryDirectory(prefix="char_lm_parity.") as tmp:
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        root = Path(tmp)
        train_text, val_text = split_text(text, root / "text")
        cfg = lmlab_config(root / "text", args.steps, args.seeds[0], root / "logs", args.override)
        download(cfg, root / "raw")
        prepare(cfg, root / "raw", root / "prepared")
        for i, seed in enumerate(args.seeds):
            cfg = lmlab_config(root / "text", args.steps, seed, root / "logs", args.override)
            for side in ("lmlab", "reference") if i % 2 == 0 else ("reference", "lmlab"):
                start = time.perf_counter()
                if side == "lmlab":
                    out = root / "runs" / str(seed)
                    loss = train(cfg, root / "prepared", out, out / "curves", out / "checkpoints")["best_val_loss"]
                else:
                    loss, model, val_ids = run_reference(cfg, train_text, val_text, seed)
                run = {"side": side, "seed": seed, "steps": args.steps, "val_loss": round(loss, 5),
                       "seconds": round(time.perf_counter() - start, 3)}
                if side == "reference":  # after the clock: not part of the work compared
                    run["quick_estimates"] = [round(e, 4) for e in quick_estimates(
                        model, val_ids, cfg.trainer.block_size, cfg.trainer.batch_size, seed)]
                runs.append(run)
                print(f"{side} seed {seed}: validation loss {loss:.4f} after {args.steps} steps "
                      f"({run['seconds']:.0f} s)", flush=True)
    by = {(r["side"], r["seed"]): r for r in runs}
    median = {key: {side: benchlib.median(by[side, s][key] for s in args.seeds) for side in ("lmlab", "reference")}
              for key in ("val_loss", "seconds")}
    result = {"recipe": RECIPE, "steps": args.steps, "seeds": args.seeds, "val_characters": len(val_text),
              "lmlab_val_loss": round(median["val_loss"]["lmlab"], 4),
              "reference_val_loss": round(median["val_loss"]["reference"], 4),
              "val_loss_ratio": round(benchlib.median(by["lmlab", s]["val_loss"] / by["reference", s]["val_loss"]
                                                      for s in args.seeds), 4),
              "train_seconds_ratio": round(benchlib.median(by["lmlab", s]["seconds"] / by["reference", s]["seconds"]
                                                           for s in args.seeds), 4)}
    # how nanoGPT's 20-batch figure scatters around the reference's whole-text loss
    spread = [e - by["reference", s]["val_loss"] for s in args.seeds for e in by["reference", s]["quick_estimates"]]
    result |= {"quick_estimate_sd": round(statistics.pstdev(spread), 4),
               "quick_estimate_range": [round(min(spread), 4), round(max(spread), 4)]}
    return benchlib.finish(benchlib.record_path(args.record, "char_lm_parity", "cpu"), result, runs, meta)


if __name__ == "__main__":
    main()
