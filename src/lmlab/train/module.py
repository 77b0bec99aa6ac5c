"""The LightningModule: the optimisation of a plain ``Transformer`` (either architecture, any task)."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from lmlab.model.checkpoint import CKPT_TASK, CKPT_TOKENIZER
from lmlab.model.loss import MaskRule, eval_generator, loss_sums, masked_batch
from lmlab.model.transformer import ModelConfig, Transformer


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


class TrainingDiverged(ValueError):
    """A non-finite training loss: one line naming the step, the loss and the learning rate (a
    ``ValueError``, so a stage script prints it as ``error: ...`` with exit status 2)."""


class TransformerLitModule(pl.LightningModule):
    """Training of a ``Transformer`` on the batches of ``data.TokenDataModule`` (sentence pairs or
    blocks of a text stream); the model itself is a plain ``nn.Module`` under ``self.model``."""

    def __init__(self, model_cfg: dict, trainer_cfg: dict):
        super().__init__()
        self.save_hyperparameters()
        self.model = Transformer(ModelConfig(**model_cfg))
        self.tcfg = trainer_cfg
        # BERT's masking of an encoder-only model's batches (lmlab.model.loss), read once
        self.mask_rule = MaskRule.of(trainer_cfg) if self.model.encoder_only else None
        self._val_sums = torch.zeros(2)
        self._compiled = None
        # saved in checkpoints, so they decode on their own (translate.py needs the task too)
        self.tokenizer_json: str | None = None
        self.task: str | None = None
        # (step, loss on the device, lr) of each batch since the last check_finite
        self._unchecked: list[tuple[int, torch.Tensor, float]] = []
        # names of the parameters init_from loaded (their own learning rate; lmlab.model.warmstart)
        self.init_loaded: set[str] = set()

    def configure_model(self):
        # Compiled lazily, on the device, and kept out of the registered submodules so the
        # state dict keeps the plain model's keys.
        if self.tcfg.get("compile") and self._compiled is None:
            object.__setattr__(self, "_compiled", torch.compile(self.model))

    def _loss(self, batch, smoothing: float):
        return loss_sums(self._compiled or self.model, batch, smoothing)

    def _train_generator(self, batch_idx: int) -> torch.Generator:
        # (seed, step, micro-batch, rank): a resumed run draws the masks the uninterrupted one did
        micro = batch_idx % self.tcfg.get("accumulate_grad_batches", 1)
        key = ((self.tcfg.get("seed", 0) * 1_000_003 + self.trainer.global_step) * 64 + micro) * 1024 \
            + self.trainer.global_rank
        return torch.Generator(device=self.device).manual_seed(key % 2**63)

    def training_step(self, batch, batch_idx):
        if self.model.encoder_only:  # new masks every step (the same after a resume)
            batch = masked_batch(self.model, batch, self.mask_rule, self._train_generator(batch_idx))
        loss_sum, n_tok = self._loss(batch, self.tcfg["label_smoothing"])
        loss = loss_sum / n_tok
        # logged per step only, so Lightning needs no batch size to weight an epoch mean: none
        # is passed, as int(n_tok) would wait for the GPU every step
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        # the step as the curves count it: the optimizer step this batch is part of
        self._unchecked.append((self.trainer.global_step + 1, loss.detach(),
                                self.trainer.optimizers[0].param_groups[0]["lr"]))
        return loss

    # Divergence. Testing the loss every step would make the host wait for the GPU every step
    # (as int(n_tok) would, above), so the losses queue up on the device and check_finite reads
    # them in one copy: before every checkpoint (Lightning's through on_save_checkpoint, the
    # snapshots through Snapshots), every log step (Lightning's logging waits there anyway),
    # before validation and at the end. No checkpoint or exported model can then hold weights
    # that a non-finite loss updated, and a run stops at most log_every_n_steps steps after it.
    def check_finite(self) -> None:
        """Raise ``TrainingDiverged`` for the first non-finite training loss since the last check
        (the same on every rank: under DDP the ranks agree on the first one)."""
        pending, self._unchecked = self._unchecked, []
        first = (math.inf, 0.0, 0.0)  # (step, loss, lr)
        if pending:
            losses = torch.stack([loss for _, loss, _ in pending]).double().tolist()  # one wait for the device
            first = next(((step, loss, lr) for (step, _, lr), loss in zip(pending, losses)
                          if not math.isfinite(loss)), first)
        if self.trainer.world_size > 1:  # every rank checks at the same points, so this gather is safe
            rows = self.all_gather(torch.tensor(first, dtype=torch.float64, device=self.device))
            first = min(tuple(row) for row in rows.tolist())
        if math.isfinite(first[0]):
            step, loss, lr = first
            raise TrainingDiverged(f"training diverged at step {int(step)}: loss {loss} (lr {lr:.1e})")

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.trainer.global_step % self.tcfg["log_every_n_steps"] == 0:
            self.check_finite()

    def on_validation_start(self):
        self.check_finite()  # weights a non-finite loss updated are not worth validating

    def on_train_end(self):
        self.check_finite()

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        if self.model.encoder_only:  # the same masks in every run
            batch = masked_batch(self.model, batch, self.mask_rule, eval_generator(batch_idx))
        loss_sum, n_tok = loss_sums(self.model, batch)  # true NLL: perplexity is comparable across runs
        self._val_sums += torch.stack([loss_sum.double(), n_tok.double()])

    def on_validation_epoch_end(self):
        sums = self.all_gather(self._val_sums)
        sums = sums.sum(0) if sums.dim() > 1 else sums
        loss = (sums[0] / sums[1].clamp(min=1)).float()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)  # same value on every rank
        self.log("val/ppl", loss.exp(), sync_dist=True)

    def check_finite_weights(self) -> None:
        """Raise ``TrainingDiverged`` when a weight is not finite although every loss was (an
        update that overflowed): such weights must not be saved either."""
        bad = torch.stack([~p.detach().isfinite().all() for p in self.model.parameters()]).any().float()
        if self.trainer.world_size > 1:  # FSDP shards differ: every rank must stop with the others
            bad = self.all_gather(bad).max()
        if bad.item():
            raise TrainingDiverged(f"training diverged by step {self.trainer.global_step}: the losses were finite "
                                   "but some weights no longer are (an update overflowed)")

    def check_saveable(self) -> None:
        """Raise ``TrainingDiverged`` before weights are saved (a checkpoint, a snapshot) that a
        non-finite loss updated or that are no longer finite: the last good save stays."""
        self.check_finite()
        self.check_finite_weights()

    # The RNG state travels with the checkpoint, so dropout after a resume draws the same masks
    # as the uninterrupted run would have.
    def on_save_checkpoint(self, checkpoint):
        self.check_saveable()  # raised before anything is written: the last good checkpoint stays
        checkpoint["rng_state"] = torch.get_rng_state()
        if self.tokenizer_json is not None:
            checkpoint[CKPT_TOKENIZER] = self.tokenizer_json
        if self.task is not None:
            checkpoint[CKPT_TASK] = self.task

    def on_load_checkpoint(self, checkpoint):
        if "rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["rng_state"])

    def configure_optimizers(self):
        tc = self.tcfg
        # (weight decay, from init_from) -> parameters: decay on matrices only; the tensors a
        # fine-tuning loaded train at lr × init_lr_scale. Frozen parameters are left out. The groups
        # are the same on every start of a run (the optimizer state of a resume must fit them).
        groups: dict[tuple[bool, bool], list] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                groups.setdefault((p.dim() >= 2, name in self.init_loaded), []).append(p)
        scale = tc.get("init_lr_scale", 1.0)
        # The fused CUDA kernel updates every tensor in one launch (PyTorch >= 2.0).
        fused = bool(tc.get("fused_adamw", True)) and self.device.type == "cuda"
        opt = torch.optim.AdamW(
            [{"params": params, "weight_decay": tc["weight_decay"] if decay else 0.0,
              "lr": tc["lr"] * (scale if loaded else 1.0)}
             for (decay, loaded), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))],
            lr=tc["lr"], betas=tuple(tc["betas"]), fused=fused or None,
        )
        factor = lr_lambda(tc["warmup_steps"], tc["max_steps"], tc.get("min_lr_ratio", 0.1),
                           tc.get("lr_schedule", "cosine"))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
