"""Training with PyTorch Lightning: the LightningModule around the plain ``Transformer``, the
loggers, checkpoints, curves for DVC plots, and the exported model file that generation loads."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO
import torch
import torch.nn.functional as F

from .batching import (BucketBatchSampler, PairDataset, TextDataset, collate_blocks, collate_for,
                       input_tokens)
from .config import Config
from .files import atomic_path, atomic_write_json
from .model import ModelConfig, Transformer
from .tokenization import PAD, load_tokenizer
from .tracking import define_step_axis, display_name, run_group, run_tags, wandb_dir

MODEL_FORMAT = "lmlab-model-v1"
CKPT_TOKENIZER = "lmlab_tokenizer"  # the tokenizer's JSON inside a Lightning checkpoint
CURVES = {"train_loss.tsv": "train/loss", "val_loss.tsv": "val/loss", "lr.tsv": "lr"}


def model_config(cfg: Config, vocab_size: int) -> ModelConfig:
    arch = {k: v for k, v in cfg.model.__dict__.items() if k != "name"}
    return ModelConfig(vocab_size=vocab_size, pad_id=PAD, **arch)


def lr_lambda(warmup_steps: int, max_steps: int, floor: float = 0.1, schedule: str = "cosine"):
    """The learning-rate factor of a step: linear warmup over ``warmup_steps``, then

    * ``cosine``: cosine decay to ``floor`` × peak at ``max_steps``;
    * ``inverse_sqrt``: peak × sqrt(warmup / step), the 2017 Transformer's schedule (fairseq's
      ``inverse_sqrt``), never below ``floor`` × peak;
    * ``constant``: the peak.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "inverse_sqrt":
            return max(floor, math.sqrt(max(warmup_steps, 1) / (step + 1)))
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def loss_sums(model: Transformer, batch, smoothing: float = 0.0):
    """(summed token cross-entropy, number of scored tokens) of a batch made by ``collate_for``."""
    if len(batch) == 4:  # encoder-decoder
        src, src_pad, tgt_in, labels = batch
        logits = model(src, src_pad, tgt_in)  # (B, T, V)
    else:  # decoder-only: source and target in one sequence
        ids, labels = batch
        logits = model.lm(ids)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=PAD,
                           label_smoothing=smoothing, reduction="sum")
    return loss, labels.ne(PAD).sum()


class TranslationModule(pl.LightningModule):
    """Training of either architecture on sentence pairs; the model itself is a plain ``Transformer``."""

    def __init__(self, model_cfg: dict, trainer_cfg: dict):
        super().__init__()
        self.save_hyperparameters()
        self.model = Transformer(ModelConfig(**model_cfg))
        self.tcfg = trainer_cfg
        self._val_sums = torch.zeros(2)
        self._compiled = None
        self.tokenizer_json: str | None = None  # saved in checkpoints, so they decode on their own

    def configure_model(self):
        # Compiled lazily, on the device, and kept out of the registered submodules so the
        # state dict keeps the plain model's keys.
        if self.tcfg.get("compile") and self._compiled is None:
            object.__setattr__(self, "_compiled", torch.compile(self.model))

    def _loss(self, batch, smoothing: float):
        return loss_sums(self._compiled or self.model, batch, smoothing)

    def training_step(self, batch, batch_idx):
        loss_sum, n_tok = self._loss(batch, self.tcfg["label_smoothing"])
        loss = loss_sum / n_tok
        self.log("train/loss", loss, prog_bar=True, batch_size=int(n_tok))
        return loss

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        loss_sum, n_tok = loss_sums(self.model, batch)  # true NLL: perplexity is comparable across runs
        self._val_sums += torch.stack([loss_sum.double(), n_tok.double()])

    def on_validation_epoch_end(self):
        sums = self.all_gather(self._val_sums)
        sums = sums.sum(0) if sums.dim() > 1 else sums
        loss = (sums[0] / sums[1].clamp(min=1)).float()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)  # same value on every rank
        self.log("val/ppl", loss.exp(), sync_dist=True)

    # The RNG state travels with the checkpoint, so dropout after a resume draws the same masks
    # as the uninterrupted run would have.
    def on_save_checkpoint(self, checkpoint):
        checkpoint["rng_state"] = torch.get_rng_state()
        if self.tokenizer_json is not None:
            checkpoint[CKPT_TOKENIZER] = self.tokenizer_json

    def on_load_checkpoint(self, checkpoint):
        if "rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["rng_state"])

    def configure_optimizers(self):
        tc = self.tcfg
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        # The fused CUDA kernel updates every tensor in one launch (PyTorch >= 2.0).
        fused = bool(tc.get("fused_adamw", True)) and self.device.type == "cuda"
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tc["weight_decay"]},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=tc["lr"], betas=tuple(tc["betas"]), fused=fused or None,
        )
        factor = lr_lambda(tc["warmup_steps"], tc["max_steps"], tc.get("min_lr_ratio", 0.1),
                           tc.get("lr_schedule", "cosine"))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class CurveWriter(pl.Callback):
    """Writes the training curves as TSV files for ``dvc plots`` (rank 0 only)."""

    def __init__(self, out_dir: Path, log_every: int):
        self.out_dir, self.log_every = Path(out_dir), log_every
        self.rows: dict[str, list[tuple[int, float]]] = {name: [] for name in CURVES.values()}
        self.started = None
        self.tokens = 0

    def on_train_start(self, trainer, module):
        self.started = time.perf_counter()
        if trainer.global_step > 0:  # resumed: keep the curves up to the checkpoint
            for fname, name in CURVES.items():
                path = self.out_dir / fname
                if path.is_file():
                    rows = (line.split("\t") for line in path.read_text().splitlines()[1:])
                    self.rows[name] = [(int(s), float(v)) for s, v in rows if int(s) <= trainer.global_step]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.tokens += input_tokens(batch)
        step = trainer.global_step
        rows = self.rows["train/loss"]
        if step % self.log_every == 0 and outputs is not None and not (rows and rows[-1][0] == step):
            self.rows["train/loss"].append((step, float(outputs["loss"])))
            self.rows["lr"].append((step, trainer.optimizers[0].param_groups[0]["lr"]))

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        self.rows["val/loss"].append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))
        self.write(trainer)

    def on_train_end(self, trainer, module):
        self.write(trainer)

    def on_save_checkpoint(self, trainer, module, checkpoint):
        self.write(trainer)  # a resumed run finds the curves up to its checkpoint

    def write(self, trainer):
        if trainer.global_rank != 0:
            return
        for fname, name in CURVES.items():
            lines = [f"step\t{name}"] + [f"{s}\t{v:.6g}" for s, v in self.rows[name]]
            with atomic_path(self.out_dir / fname) as tmp:
                Path(tmp).write_text("\n".join(lines) + "\n")


class FinalValidation(pl.Callback):
    """Validate after the last step too when ``max_steps`` is no multiple of the validation
    interval: the best checkpoint (the exported model) must be able to be the final weights.
    Lightning validates on a stop request at the end of a step, so the last step asks for one."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step >= trainer.max_steps and step % self.every:
            trainer.should_stop = True


class Snapshots(pl.Callback):
    """Weights every ``every`` steps, the newest ``keep`` of them, for checkpoint averaging
    (fairseq's ``average_checkpoints``: the mean of the last few checkpoints usually beats each)."""

    def __init__(self, directory: Path, every: int, keep: int):
        self.dir, self.every, self.keep = Path(directory), every, keep
        self.saved_step = -1

    def _save(self, trainer):
        step = trainer.global_step
        if step == self.saved_step or step == 0:
            return
        self.saved_step = step
        state = trainer.strategy.lightning_module_state_dict()  # collective under FSDP
        if trainer.global_rank != 0:
            return
        weights = {k.removeprefix("model."): v.detach().cpu() for k, v in state.items() if k.startswith("model.")}
        with atomic_path(self.dir / f"step-{step:08d}.pt") as tmp:
            torch.save(weights, tmp)
        for old in snapshot_files(self.dir)[:-self.keep]:
            old.unlink()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer, module):
        self._save(trainer)  # the final weights are always among those averaged


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("step-*.pt"))


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point tensors of several state dicts (others from the last)."""
    if not paths:
        raise ValueError("no checkpoints to average")
    total, last = None, None
    for path in paths:
        last = torch.load(path, map_location="cpu", weights_only=True)
        if total is None:
            total = {k: v.double() if v.is_floating_point() else v for k, v in last.items()}
        else:
            for k, v in last.items():
                if v.is_floating_point():
                    total[k] += v.double()
    return {k: (v / len(paths)).to(last[k].dtype) if v.is_floating_point() else last[k]
            for k, v in total.items()}


class PairData(pl.LightningDataModule):
    """Training and validation pairs in length-bucketed batches, or with ``block`` (language
    modelling) blocks of the text stream. The samplers are built once the trainer knows this
    process's rank, so under DDP each rank reads its own share of batches."""

    def __init__(self, prepared_dir, batch_size: int | None, seed: int, max_len: int,
                 decoder_only: bool = False, max_tokens: int | None = None, num_workers: int = 0,
                 accumulate: int = 1, block: int | None = None):
        super().__init__()
        self.prepared_dir, self.batch_size, self.seed = Path(prepared_dir), batch_size, seed
        self.max_len, self.decoder_only, self.max_tokens = max_len, decoder_only, max_tokens
        self.num_workers, self.accumulate, self.block = num_workers, accumulate, block
        self.collate = collate_blocks if block else collate_for(decoder_only, max_len)

    def dataset(self, split: str):
        if self.block:
            return TextDataset(self.prepared_dir, split, self.block)
        # a decoder-only model reads source and target together: half the length for the source
        max_src = self.max_len // 2 if self.decoder_only else self.max_len
        return PairDataset(self.prepared_dir, split, max_src, self.decoder_only)

    def setup(self, stage=None):
        # once: train() reads the training set's size before fit, and a language-modelling set
        # builds its whole token stream
        if getattr(self, "train_set", None) is None:
            self.train_set, self.val_set = self.dataset("train"), self.dataset("validation")

    def _loader(self, data: PairDataset, shuffle: bool):
        from torch.utils.data import DataLoader

        # On resume the trainer has restored global_step (optimizer steps) by now.
        consumed = self.trainer.global_step * self.accumulate if shuffle else 0
        lengths = np.minimum(data.lengths(), self.max_len + 1)
        sampler = BucketBatchSampler(lengths, self.batch_size, seed=self.seed, shuffle=shuffle,
                                     rank=self.trainer.global_rank, world_size=self.trainer.world_size,
                                     start_batch=consumed, max_tokens=self.max_tokens)
        # A generator of its own: each iter() of a DataLoader draws a seed from the generator it
        # is given, which must not be the global one that dropout uses (resume would drift).
        return DataLoader(data, batch_sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)


def make_logger(cfg: Config, run_name: str, run_id: str | None = None):
    """The experiment logger for ``cfg.logger`` (``False`` for none). ``run_id`` continues an
    existing W&B run (a resumed training); its group and tags are ``tracking``'s."""
    lc = cfg.logger
    if lc.kind == "none":
        return False
    if lc.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=lc.save_dir, name="csv", version=run_name)
    from pytorch_lightning.loggers import WandbLogger

    # Chosen before wandb.init: offline never touches the network.
    os.environ.setdefault("WANDB_SILENT", "true")
    save_dir = wandb_dir(lc.save_dir)
    return WandbLogger(project=lc.project, entity=lc.entity, mode=lc.mode, save_dir=save_dir,
                       name=run_name, job_type="train", config=cfg.to_dict(), id=run_id,
                       resume="allow" if run_id else None, group=run_group(cfg), tags=run_tags(cfg))


def export_model(model_cfg: dict, state_dict: dict, tokenizer_json: str, cfg: Config, path: Path,
                 extra: dict):
    """A self-contained model file: architecture, weights, tokenizer and the config that made it."""
    payload = {
        "format": MODEL_FORMAT,
        "model_config": model_cfg,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "tokenizer": tokenizer_json,
        "config": cfg.to_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path, device: str = "cpu"):
    """(model in eval mode, tokenizer, payload) from a model file written by ``export_model`` or
    a Lightning checkpoint of lmlab's training (``last.ckpt``, ``best.ckpt``): both carry the
    model's architecture and tokenizer, so no training config is needed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage (`dvc repro train`)")
    payload = torch.load(path, map_location=device, weights_only=False)
    if isinstance(payload, dict) and CKPT_TOKENIZER in payload and "hyper_parameters" in payload:
        payload = {"format": MODEL_FORMAT, "model_config": payload["hyper_parameters"]["model_cfg"],
                   "state_dict": _model_weights(payload["state_dict"]),
                   "tokenizer": payload[CKPT_TOKENIZER], "checkpoint_step": payload.get("global_step")}
    elif isinstance(payload, dict) and "hyper_parameters" in payload:
        raise ValueError(f"{path} is a training checkpoint without its tokenizer (written before "
                         "checkpoints carried it): use the exported model.pt")
    elif not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is neither an lmlab model file nor an lmlab training checkpoint")
    model = Transformer(ModelConfig(**payload["model_config"])).to(device)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, load_tokenizer(payload["tokenizer"]), payload


def checkpoint_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The plain model's weights from a Lightning checkpoint (full state dict, any strategy)."""
    return _model_weights(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])


def _model_weights(module_state: dict) -> dict[str, torch.Tensor]:
    """The ``Transformer``'s entries of a ``TranslationModule`` state dict, under their own names."""
    return {k.removeprefix("model."): v for k, v in module_state.items() if k.startswith("model.")}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed, so a process killed mid-save
    leaves the previous last.ckpt intact for ``ckpt_path=last``."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


# -- resume ----------------------------------------------------------------------------------------

WANDB_ID_ENV = "LMLAB_WANDB_ID"
STATE_FILE = "state.json"  # in the checkpoint directory: what run the checkpoints belong to
# trainer keys that do not change the numbers a run computes
_NEUTRAL_TRAINER_KEYS = ("num_workers", "log_every_n_steps", "checkpoint_every_n_steps")


def fingerprint(cfg: Config, tokenizer_json: str, n_train: int) -> dict:
    """What must be equal for a checkpoint to continue this run: seed, model, trainer, data."""
    trainer = {k: v for k, v in cfg.to_dict()["trainer"].items() if k not in _NEUTRAL_TRAINER_KEYS}
    tok = hashlib.sha256(tokenizer_json.encode()).hexdigest()[:16]
    return {"seed": cfg.seed, "model": cfg.to_dict()["model"], "trainer": trainer,
            "data": {"tokenizer_sha256": tok, "train_pairs": n_train}}


def _first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} was {a!r}, now {b!r}"
    return None


def resume_plan(ckpt_path: str | None, ckpt_dir: Path, fp: dict) -> tuple[str | None, str | None, str]:
    """(checkpoint to resume from or None, W&B run id to continue or None, why) for ``ckpt_path``:

    * None: start afresh;
    * ``last``: ``<ckpt_dir>/last.ckpt`` of the same configuration (an error names the key that
      differs); nothing there yet: start afresh;
    * ``auto``: as ``last`` when the checkpoints there belong to this configuration and did not
      finish, afresh otherwise (what the DVC train stage uses after a crash);
    * a file path: that checkpoint.
    """
    if ckpt_path is None:
        return None, None, "fresh start"
    if ckpt_path not in ("last", "auto"):
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} not found")
        return ckpt_path, None, f"resuming from {ckpt_path}"
    last = ckpt_dir / "last.ckpt"
    state_path = ckpt_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    if not last.is_file() or state is None:
        return None, None, "fresh start (no checkpoint to resume)"
    diff = _first_difference(state["fingerprint"], fp)
    if diff and ckpt_path == "last":
        raise ValueError(f"ckpt_path=last: {last} belongs to another configuration ({diff}); "
                         "use a new output directory or the old configuration")
    if diff:
        return None, None, f"fresh start ({last} is from another configuration: {diff})"
    if state.get("finished") and ckpt_path == "auto":
        return None, None, f"fresh start ({last} is of a finished run)"
    return str(last), state.get("wandb_id"), f"resuming from {last}"


def _clear_checkpoints(ckpt_dir: Path) -> None:
    for path in [*ckpt_dir.glob("*.ckpt"), *snapshot_files(ckpt_dir / "snapshots"), ckpt_dir / STATE_FILE]:
        path.unlink(missing_ok=True)


def train(cfg: Config, prepared_dir: str | Path, out_dir: str | Path, curves_dir: str | Path,
          ckpt_dir: str | Path | None = None, run_name: str | None = None) -> dict:
    """Train on ``prepared_dir``; write ``model.pt`` and ``run.json`` to ``out_dir``, checkpoints to
    ``ckpt_dir`` (default ``out_dir/checkpoints``) and the curves to ``curves_dir``. Returns the
    run summary (empty on ranks other than 0)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else out_dir / "checkpoints"
    tok_path = prepared_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(f"{tok_path} not found: run the prepare stage (`dvc repro prepare`)")
    tokenizer_json = tok_path.read_text()
    vocab_size = load_tokenizer(tokenizer_json).get_vocab_size()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    tc = cfg.trainer
    mcfg = model_config(cfg, vocab_size)
    decoder_only = mcfg.arch == "decoder-only"
    block = tc.block_size if cfg.data.task == "language_modeling" else None
    data = PairData(prepared_dir, tc.batch_size, cfg.seed, mcfg.max_len, decoder_only, tc.max_tokens,
                    tc.num_workers, tc.accumulate_grad_batches, block)

    data.setup()
    fp = fingerprint(cfg, tokenizer_json, len(data.train_set))
    resume_from, run_id, why = resume_plan(cfg.ckpt_path, ckpt_dir, fp)
    is_rank_zero = rank_zero_only.rank == 0
    if is_rank_zero:
        print(f"train: {why}", flush=True)
    if resume_from is None and is_rank_zero:
        _clear_checkpoints(ckpt_dir)  # stale checkpoints of another run must not mix with this one's
    inherited_id = os.environ.get(WANDB_ID_ENV)
    if run_id is None and cfg.logger.kind == "wandb":
        run_id = inherited_id or secrets.token_hex(4)  # W&B's own ids are 8 characters too
    if run_id is not None:
        os.environ[WANDB_ID_ENV] = run_id  # DDP ranks that Lightning starts later agree on it
    try:
        return _fit(cfg, tc, mcfg, data, fp, tokenizer_json, resume_from, run_id, prepared_dir,
                    out_dir, ckpt_dir, curves_dir, run_name, is_rank_zero)
    finally:
        if inherited_id is None:
            os.environ.pop(WANDB_ID_ENV, None)


def _fit(cfg, tc, mcfg, data, fp, tokenizer_json, resume_from, run_id, prepared_dir, out_dir,
         ckpt_dir, curves_dir, run_name, is_rank_zero) -> dict:
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    if is_rank_zero:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(ckpt_dir / STATE_FILE, {"fingerprint": fp, "wandb_id": run_id, "finished": False})

    module = TranslationModule(mcfg.to_dict(), tc.__dict__ | {"betas": list(tc.betas)})
    module.tokenizer_json = tokenizer_json
    logger = make_logger(cfg, run_name or display_name(out_dir), run_id)
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss",
                           mode="min", save_top_k=1, auto_insert_metric_name=False)
    # last.ckpt every N steps, what `ckpt_path=last` resumes from after a crash
    last = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True,
                           every_n_train_steps=tc.checkpoint_every_n_steps)
    curves = CurveWriter(Path(curves_dir), tc.log_every_n_steps)
    callbacks = [ckpt, last, curves, TQDMProgressBar(refresh_rate=tc.log_every_n_steps)]
    if tc.average_last > 1:
        callbacks.append(Snapshots(ckpt_dir / "snapshots", tc.checkpoint_every_n_steps, tc.average_last))
    # Validation every N steps whatever the epoch length, and once more at the very end.
    val_every = min(tc.val_check_interval, tc.max_steps)
    callbacks.append(FinalValidation(val_every))
    trainer = pl.Trainer(
        accelerator=tc.accelerator, devices=tc.devices, strategy=make_strategy(tc.strategy),
        num_nodes=tc.num_nodes, precision=tc.precision, max_steps=tc.max_steps, max_epochs=-1,
        val_check_interval=val_every * tc.accumulate_grad_batches, check_val_every_n_epoch=None,
        accumulate_grad_batches=tc.accumulate_grad_batches,
        limit_val_batches=tc.limit_val_batches, gradient_clip_val=tc.gradient_clip_val or None,
        log_every_n_steps=tc.log_every_n_steps, logger=logger, callbacks=callbacks,
        default_root_dir=str(out_dir), deterministic=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, enable_model_summary=True, plugins=[AtomicCheckpointIO()],
    )
    if logger:
        logger.log_hyperparams({"n_parameters": module.model.num_parameters()})
        if cfg.logger.kind == "wandb":
            define_step_axis(logger.experiment)  # a no-op stand-in on ranks other than 0
    with warnings.catch_warnings():
        # our batch sampler is deliberate; the data loader needs no worker processes on CPU
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*batch_size.*could not be inferred.*")
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")  # it holds our state.json
        start = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        train_seconds = time.perf_counter() - start
    if trainer.global_step < tc.max_steps and trainer.interrupted:
        raise RuntimeError("training was interrupted")

    summary = {}
    if trainer.is_global_zero:
        best = ckpt.best_model_score
        summary = {
            "arch": mcfg.arch,
            "global_step": trainer.global_step,
            "best_val_loss": float(best) if best is not None else None,
            "n_parameters": module.model.num_parameters(),
            "world_size": trainer.world_size,
            "train_seconds": round(train_seconds, 2),
            # every rank reads batches of the same size on average
            "train_tokens_per_second": round(curves.tokens * trainer.world_size / max(train_seconds, 1e-9), 1),
        }
        if tc.average_last > 1:
            paths = snapshot_files(ckpt_dir / "snapshots")
            weights = average_state_dicts(paths)
            summary["averaged_checkpoints"] = [p.name for p in paths]
            summary["averaged_val_loss"] = _val_loss(mcfg, weights, data)
        else:
            weights = checkpoint_weights(ckpt.best_model_path) if ckpt.best_model_path else \
                module.model.state_dict()
        if logger and cfg.logger.kind == "wandb":
            exp = logger.experiment
            summary["wandb"] = {"id": exp.id, "project": cfg.logger.project, "entity": cfg.logger.entity,
                                "dir": str(exp.dir), "mode": cfg.logger.mode}
            exp.summary.update({k: v for k, v in summary.items() if k != "wandb"})
        export_model(mcfg.to_dict(), weights, tokenizer_json, cfg, out_dir / "model.pt", {"summary": summary})
        atomic_write_json(out_dir / "run.json", summary)
        atomic_write_json(ckpt_dir / STATE_FILE, {"fingerprint": fp, "wandb_id": run_id, "finished": True})
        if logger and cfg.logger.kind == "wandb":
            import wandb

            wandb.finish()
    return summary


def _val_loss(mcfg: ModelConfig, weights: dict, data: PairData) -> float:
    """Validation loss of ``weights`` on this process (the averaged model is not in the trainer)."""
    from torch.utils.data import DataLoader

    model = Transformer(mcfg)
    model.load_state_dict(weights)
    model.eval()
    lengths = np.minimum(data.val_set.lengths(), data.max_len + 1)
    sampler = BucketBatchSampler(lengths, data.batch_size, seed=0, shuffle=False, max_tokens=data.max_tokens)
    total, n = 0.0, 0
    with torch.inference_mode():
        for batch in DataLoader(data.val_set, batch_sampler=sampler, collate_fn=data.collate):
            loss, count = loss_sums(model, batch)
            total, n = total + float(loss), n + int(count)
    return round(total / max(n, 1), 6)


def make_strategy(name: str):
    """Lightning strategy for ``trainer.strategy``. ``fsdp`` shards every Transformer block (and
    saves full, unsharded checkpoints, which export and averaging read)."""
    if name != "fsdp":
        return name
    from pytorch_lightning.strategies import FSDPStrategy

    from .model import Block

    return FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full")
