"""Which checkpoint a training run continues: a run's fingerprint, the state file beside its
checkpoints, and the plan for ``ckpt_path`` (``null``, ``last``, ``auto`` or a file)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lmlab.config import Config
from lmlab.files import atomic_write_json
from lmlab.train.callbacks import snapshot_files

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


def write_state(ckpt_dir: Path, fp: dict, run_id: str | None, finished: bool) -> None:
    """The state file that tells a later run whose checkpoints these are, and whether it ended."""
    atomic_write_json(Path(ckpt_dir) / STATE_FILE, {"fingerprint": fp, "wandb_id": run_id, "finished": finished})


def clear_checkpoints(ckpt_dir: Path) -> None:
    """Remove an earlier run's checkpoints, snapshots and state file (a fresh start)."""
    ckpt_dir = Path(ckpt_dir)
    for path in [*ckpt_dir.glob("*.ckpt"), *snapshot_files(ckpt_dir / "snapshots"), ckpt_dir / STATE_FILE]:
        path.unlink(missing_ok=True)
