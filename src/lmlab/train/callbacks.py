"""The Lightning callbacks and the checkpoint-IO plugin of lmlab's training."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lmlab.data.batching import input_tokens
from lmlab.files import atomic_path
from lmlab.model.checkpoint import module_weights

CURVES = {"train_loss.tsv": "train/loss", "val_loss.tsv": "val/loss", "lr.tsv": "lr"}


class CurveWriter(pl.Callback):
    """Collects the training curves for ``dvc plots`` and counts the input tokens for the run's
    throughput. Nothing is written during training: the export writes the curves (:meth:`write`)
    into the curves folder it publishes with the model, so that folder is never half a run. The
    rows travel in every checkpoint (``state_dict``), so a resumed run continues them from its
    checkpoint's step, whichever checkpoint it resumes from. (Lightning runs the checkpoint
    callbacks after the others, so a checkpoint's rows include its own step.)"""

    def __init__(self, log_every: int):
        self.log_every = log_every
        self.rows: dict[str, list[tuple[int, float]]] = {name: [] for name in CURVES.values()}
        self.tokens = 0

    def state_dict(self) -> dict:
        return {"rows": {name: [list(row) for row in rows] for name, rows in self.rows.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = {name: [(int(s), float(v)) for s, v in state["rows"].get(name, [])] for name in CURVES.values()}

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

    def write(self, directory: Path) -> None:
        """The curves as TSV files (a ``step`` column and the value) in ``directory``."""
        for fname, name in CURVES.items():
            lines = [f"step\t{name}"] + [f"{s}\t{v:.6g}" for s, v in self.rows[name]]
            (Path(directory) / fname).write_text("\n".join(lines) + "\n")


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
        trainer.lightning_module.check_saveable()  # no snapshot of weights a non-finite loss updated
        state = trainer.strategy.lightning_module_state_dict()  # collective under FSDP
        if trainer.global_rank != 0:
            return
        weights = {k: v.detach().cpu() for k, v in module_weights(state).items()}
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically, off the training thread.

    ``save_checkpoint`` takes a point-in-time copy of every tensor on the CPU (training then goes
    on changing the weights in place) and hands it to one writer thread, which writes it to a
    temporary file and renames it, in the order the saves came: a process killed mid-save leaves
    the previous ``last.ckpt`` intact for ``ckpt_path=last``, and training does not wait for the
    disk (writing ``last.ckpt`` took about 2% of a 100-step window of ``tiny`` on the CPU).
    ``teardown`` (Lightning calls it at the end of ``fit``) waits for every write and raises the
    first error any of them met."""

    def __init__(self):
        super().__init__()
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmlab-checkpoint")
        self._raise_failed()
        self._pending.append(self._writer.submit(self._write, snapshot, Path(path), storage_options))

    def _write(self, checkpoint, path: Path, storage_options) -> None:
        with atomic_path(path) as tmp:  # makes the folder too
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def remove_checkpoint(self, path) -> None:
        self.wait()  # never remove a file a pending write is about to replace
        super().remove_checkpoint(path)

    def wait(self) -> None:
        """Block until every checkpoint handed over so far is on disk."""
        for future in self._pending:
            future.exception()
        self._raise_failed()

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            if future.exception() is not None:
                raise future.exception()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
