"""Training with PyTorch Lightning: the LightningModule around the plain ``Transformer``, the
loggers, checkpoints, curves for DVC plots, and the exported model file that generation loads."""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO
import torch
import torch.nn.functional as F

from .batching import BucketBatchSampler, PairDataset, collate_pairs
from .config import Config
from .files import atomic_path, atomic_write_json
from .model import ModelConfig, Transformer
from .tokenization import PAD, load_tokenizer

MODEL_FORMAT = "lmlab-model-v1"
CURVES = {"train_loss.tsv": "train/loss", "val_loss.tsv": "val/loss", "lr.tsv": "lr"}


def model_config(cfg: Config, vocab_size: int) -> ModelConfig:
    arch = {k: v for k, v in cfg.model.__dict__.items() if k != "name"}
    return ModelConfig(vocab_size=vocab_size, pad_id=PAD, **arch)


def lr_lambda(warmup_steps: int, max_steps: int, floor: float = 0.1):
    """Linear warmup, then cosine decay to ``floor`` × peak at ``max_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor




class TranslationModule(pl.LightningModule):
    def __init__(self, model_cfg: dict, trainer_cfg: dict):
        super().__init__()
        self.save_hyperparameters()
        self.model = Transformer(ModelConfig(**model_cfg))
        self.tcfg = trainer_cfg
        self._val_sums = torch.zeros(2)

    def _loss(self, batch, smoothing: float):
        src, src_pad, tgt_in, tgt_out = batch
        logits = self.model(src, src_pad, tgt_in)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,
                               label_smoothing=smoothing, reduction="sum"), tgt_out.ne(PAD).sum()

    def training_step(self, batch, batch_idx):
        loss_sum, n_tok = self._loss(batch, self.tcfg["label_smoothing"])
        loss = loss_sum / n_tok
        self.log("train/loss", loss, prog_bar=True, batch_size=int(n_tok))
        return loss

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        loss_sum, n_tok = self._loss(batch, 0.0)  # true NLL: perplexity is comparable across runs
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

    def on_load_checkpoint(self, checkpoint):
        if "rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["rng_state"])

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.tcfg["weight_decay"]},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.tcfg["lr"], betas=tuple(self.tcfg["betas"]),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(self.tcfg["warmup_steps"], self.tcfg["max_steps"]))
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

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.tokens += int(batch[0].numel() + batch[2].numel())
        step = trainer.global_step
        if step % self.log_every == 0 and outputs is not None:
            self.rows["train/loss"].append((step, float(outputs["loss"])))
            self.rows["lr"].append((step, trainer.optimizers[0].param_groups[0]["lr"]))

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        self.rows["val/loss"].append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))
        self.write(trainer)

    def on_train_end(self, trainer, module):
        self.write(trainer)

    def write(self, trainer):
        if trainer.global_rank != 0:
            return
        for fname, name in CURVES.items():
            lines = [f"step\t{name}"] + [f"{s}\t{v:.6g}" for s, v in self.rows[name]]
            with atomic_path(self.out_dir / fname) as tmp:
                Path(tmp).write_text("\n".join(lines) + "\n")


class PairData(pl.LightningDataModule):
    """Training and validation pairs in length-bucketed batches. The samplers are built once the
    trainer knows this process's rank, so under DDP each rank reads its own share of batches."""

    def __init__(self, prepared_dir, batch_size: int, seed: int, max_len: int, num_workers: int = 0):
        super().__init__()
        self.prepared_dir, self.batch_size, self.seed = Path(prepared_dir), batch_size, seed
        self.max_len, self.num_workers = max_len, num_workers

    def setup(self, stage=None):
        self.train_set = PairDataset(self.prepared_dir, "train", self.max_len)
        self.val_set = PairDataset(self.prepared_dir, "validation", self.max_len)

    def _loader(self, data: PairDataset, shuffle: bool):
        from torch.utils.data import DataLoader

        # On resume the trainer has restored global_step (= batches this rank consumed) by now.
        sampler = BucketBatchSampler(data.lengths(), self.batch_size, seed=self.seed, shuffle=shuffle,
                                     rank=self.trainer.global_rank, world_size=self.trainer.world_size,
                                     start_batch=self.trainer.global_step if shuffle else 0)
        # A generator of its own: each iter() of a DataLoader draws a seed from the generator it
        # is given, which must not be the global one that dropout uses (resume would drift).
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate_pairs,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)


def make_logger(cfg: Config, run_name: str):
    """The experiment logger for ``cfg.logger`` (``False`` for none)."""
    lc = cfg.logger
    if lc.kind == "none":
        return False
    if lc.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=lc.save_dir, name="csv", version=run_name)
    from pytorch_lightning.loggers import WandbLogger

    # Chosen before wandb.init: offline never touches the network.
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(lc.save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=lc.project, entity=lc.entity, mode=lc.mode, save_dir=lc.save_dir,
                       name=run_name, job_type="train", config=cfg.to_dict(),
                       tags=[f"model={cfg.model.name}"])


def export_model(module: TranslationModule, tokenizer_json: str, cfg: Config, path: Path, extra: dict):
    """A self-contained model file: architecture, weights, tokenizer and the config that made it."""
    payload = {
        "format": MODEL_FORMAT,
        "model_config": module.hparams["model_cfg"],
        "state_dict": {k: v.detach().cpu() for k, v in module.model.state_dict().items()},
        "tokenizer": tokenizer_json,
        "config": cfg.to_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path, device: str = "cpu"):
    """(model in eval mode, tokenizer, payload) from a file written by ``export_model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage (`dvc repro train`)")
    payload = torch.load(path, map_location=device, weights_only=False)
    if payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not an lmlab model file (format {payload.get('format')!r})")
    model = Transformer(ModelConfig(**payload["model_config"])).to(device)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, load_tokenizer(payload["tokenizer"]), payload


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed, so a process killed mid-save
    leaves the previous last.ckpt intact for ``ckpt_path=last``."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def resume_path(ckpt_path: str | None, out_dir: Path) -> str | None:
    """``ckpt_path=last`` means ``<out_dir>/checkpoints/last.ckpt`` (nothing to resume from yet:
    start afresh); any other value is a checkpoint file that must exist."""
    if ckpt_path is None:
        return None
    path = out_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if path.is_file():
        return str(path)
    if ckpt_path == "last":
        return None
    raise FileNotFoundError(f"ckpt_path={ckpt_path} not found")


def train(cfg: Config, prepared_dir: str | Path, out_dir: str | Path, curves_dir: str | Path,
          run_name: str | None = None) -> dict:
    """Train on ``prepared_dir``; write checkpoints and ``model.pt`` to ``out_dir`` and the curves
    to ``curves_dir``. Returns the run summary (also written to ``out_dir/run.json``)."""
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    tok_path = prepared_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(f"{tok_path} not found: run the prepare stage (`dvc repro prepare`)")
    tokenizer_json = tok_path.read_text()
    vocab_size = load_tokenizer(tokenizer_json).get_vocab_size()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    tc = cfg.trainer
    mcfg = model_config(cfg, vocab_size)

    data = PairData(prepared_dir, tc.batch_size, cfg.seed, mcfg.max_len, tc.num_workers)

    module = TranslationModule(mcfg.__dict__, tc.__dict__ | {"betas": list(tc.betas)})
    run_name = run_name or out_dir.name
    logger = make_logger(cfg, run_name)
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor="val/loss",
                           mode="min", save_top_k=1, auto_insert_metric_name=False)
    # last.ckpt every N steps, what `ckpt_path=last` resumes from after a crash
    last = ModelCheckpoint(dirpath=out_dir / "checkpoints", save_top_k=0, save_last=True,
                           every_n_train_steps=tc.checkpoint_every_n_steps)
    curves = CurveWriter(Path(curves_dir), tc.log_every_n_steps)
    # Validation every N steps whatever the epoch length, and once more at the very end.
    val_every = min(tc.val_check_interval, tc.max_steps)
    trainer = pl.Trainer(
        accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy, num_nodes=tc.num_nodes,
        precision=tc.precision, max_steps=tc.max_steps, max_epochs=-1,
        val_check_interval=val_every, check_val_every_n_epoch=None,
        limit_val_batches=tc.limit_val_batches, gradient_clip_val=tc.gradient_clip_val or None,
        log_every_n_steps=tc.log_every_n_steps, logger=logger, callbacks=[ckpt, last, curves, TQDMProgressBar(refresh_rate=tc.log_every_n_steps)],
        default_root_dir=str(out_dir), deterministic=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, enable_model_summary=True, plugins=[AtomicCheckpointIO()],
    )
    if logger:
        logger.log_hyperparams({"n_parameters": module.model.num_parameters()})
    with warnings.catch_warnings():
        # our batch sampler is deliberate; the data loader needs no worker processes on CPU
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*batch_size.*could not be inferred.*")
        start = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=resume_path(cfg.ckpt_path, out_dir))
        train_seconds = time.perf_counter() - start
    if trainer.global_step < tc.max_steps and trainer.interrupted:
        raise RuntimeError("training was interrupted")

    summary = {}
    if trainer.is_global_zero:
        best_path = ckpt.best_model_path
        if best_path:
            state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
            module.load_state_dict(state)
        best = ckpt.best_model_score
        summary = {
            "global_step": trainer.global_step,
            "best_val_loss": float(best) if best is not None else None,
            "n_parameters": module.model.num_parameters(),
            "world_size": trainer.world_size,
            "train_seconds": round(train_seconds, 2),
            # every rank reads batches of the same size on average
            "train_tokens_per_second": round(curves.tokens * trainer.world_size / max(train_seconds, 1e-9), 1),
        }
        if logger and cfg.logger.kind == "wandb":
            exp = logger.experiment
            summary["wandb"] = {"id": exp.id, "project": cfg.logger.project, "dir": str(exp.dir),
                                "mode": cfg.logger.mode}
            exp.summary.update({k: v for k, v in summary.items() if k != "wandb"})
        export_model(module.cpu(), tokenizer_json, cfg, out_dir / "model.pt", {"summary": summary})
        atomic_write_json(out_dir / "run.json", summary)
        if logger and cfg.logger.kind == "wandb":
            import wandb

            wandb.finish()
    return summary
