"""Which checkpoint a training run continues: a run's fingerprint, the state file beside its
checkpoints, the plan for ``ckpt_path`` (``null``, ``last``, ``auto`` or a file), the check of a
checkpoint against the run before anything is written, and the folder where a fresh start puts an
earlier run's checkpoints (lmlab moves them aside, it never deletes them)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from pathlib import Path

from lmlab.config import Config, ConfigError
from lmlab.files import atomic_write_json
from lmlab.model.checkpoint import CKPT_TOKENIZER, MODEL_FORMAT, safe_load, tokenizer_hash
from lmlab.train.callbacks import snapshot_files

WANDB_ID_ENV = "LMLAB_WANDB_ID"
RESUME_ENV = "LMLAB_RESUME_FROM"  # rank 0's checkpoint to resume ("": none), for the DDP ranks it starts
STATE_FILE = "state.json"  # in the checkpoint directory: what run the checkpoints belong to
SUPERSEDED = "superseded"  # in the checkpoint directory: earlier runs' files, one folder per fresh start
# trainer keys that do not change the numbers a run computes
_NEUTRAL_TRAINER_KEYS = ("num_workers", "log_every_n_steps", "checkpoint_every_n_steps")


def fingerprint(cfg: Config, tokenizer_json: str, n_train: int) -> dict:
    """What must be equal for a checkpoint to continue this run: seed, model, trainer, data."""
    trainer = {k: v for k, v in cfg.to_dict()["trainer"].items() if k not in _NEUTRAL_TRAINER_KEYS}
    return {"seed": cfg.seed, "model": cfg.to_dict()["model"], "trainer": trainer,
            "data": {"tokenizer_sha256": tokenizer_hash(tokenizer_json), "train_pairs": n_train}}


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


def _read_state(path: Path) -> tuple[dict | None, str | None]:
    """(the state file's content, None), or (None, what is wrong with it)."""
    if not path.is_file():
        return None, f"{path} not found"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{path} is not readable JSON ({err})"
    if not isinstance(state, dict) or not isinstance(state.get("fingerprint"), dict):
        return None, f"{path} has no fingerprint"
    return state, None


def resume_plan(ckpt_path: str | None, ckpt_dir: Path, fp: dict) -> tuple[str | None, str | None, str]:
    """(checkpoint to resume from or None, W&B run id to continue or None, why) for ``ckpt_path``:

    * None: start afresh;
    * ``last``: ``<ckpt_dir>/last.ckpt`` of the same configuration; never a fresh start: no
      ``last.ckpt``, no readable state file beside it, or another configuration's (the error
      names the key that differs) is an error;
    * ``auto``: as ``last`` when the checkpoints there belong to this configuration and did not
      finish, afresh otherwise, a broken state file included (what the DVC train stage uses
      after a crash);
    * a file path: that checkpoint (``check_resume_file`` then checks it against the run).

    A fresh start moves the directory's files aside (``move_aside``): the caller does that.
    """
    if ckpt_path is None:
        return None, None, "fresh start"
    if ckpt_path not in ("last", "auto"):
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} not found")
        return ckpt_path, None, f"resuming from {ckpt_path}"
    last = Path(ckpt_dir) / "last.ckpt"
    if not last.is_file():
        if ckpt_path == "last":
            raise ConfigError(f"ckpt_path=last: no last.ckpt in {ckpt_dir} to resume; use ckpt_path=null for "
                              "a fresh start, or ckpt_path=auto (resumes when there is one)")
        return None, None, "fresh start (no checkpoint to resume)"
    state, problem = _read_state(Path(ckpt_dir) / STATE_FILE)
    if problem and ckpt_path == "last":
        if problem.endswith("not found"):
            problem += f", so whose run {last} is can't be told"
        raise ConfigError(f"ckpt_path=last: {problem}; use ckpt_path={last} to resume it anyway (its model and "
                          "tokenizer are checked), or ckpt_path=null for a fresh start (the old files are moved aside)")
    if problem:
        return None, None, f"fresh start ({problem}: another run's files, moved aside)"
    diff = _first_difference(state["fingerprint"], fp)
    if diff and ckpt_path == "last":
        raise ConfigError(f"ckpt_path=last: {last} belongs to another configuration ({diff}); use the old "
                          "configuration, or ckpt_path=null for a fresh start (the old files are moved aside)")
    if diff:
        return None, None, f"fresh start ({last} is from another configuration: {diff})"
    if state.get("finished") and ckpt_path == "auto":
        return None, None, f"fresh start ({last} is of a finished run)"
    return str(last), state.get("wandb_id"), f"resuming from {last}"


def check_resume_file(path: str | Path, model_cfg: dict, tokenizer_json: str, tokenizer_file: Path) -> None:
    """Refuse, with one line, a checkpoint that cannot continue this run: one that does not load
    with ``weights_only=True`` (corrupt, or a pickle that would run code), one that is not a
    training checkpoint of lmlab's, or whose tokenizer or model (``ModelConfig`` fields, the
    module's ``model_cfg``) differs from this run's. The tensors are memory-mapped, not read."""
    try:
        payload = safe_load(path, mmap=True)
    except ValueError as err:
        raise ConfigError(f"ckpt_path={path}: {err}; start afresh with ckpt_path=null") from None
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        raise ConfigError(f"ckpt_path={path} is an exported model file, not a training checkpoint (no optimizer "
                          "state to continue): give a last.ckpt or best.ckpt of lmlab's training")
    hparams = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model_cfg"), dict):
        raise ConfigError(f"ckpt_path={path} is not an lmlab training checkpoint (no hyper_parameters.model_cfg): "
                          "give a last.ckpt or best.ckpt of lmlab's training")
    if not isinstance(payload.get(CKPT_TOKENIZER), str):
        raise ConfigError(f"ckpt_path={path} holds no tokenizer (written before checkpoints carried one), so it "
                          f"cannot be checked against {tokenizer_file}: start afresh with ckpt_path=null")
    theirs, ours = tokenizer_hash(payload[CKPT_TOKENIZER]), tokenizer_hash(tokenizer_json)
    if theirs != ours:
        raise ConfigError(f"ckpt_path={path}: its tokenizer ({theirs}) is not the prepared data's ({tokenizer_file}: "
                          f"{ours}); resume on the data it was trained on, or start afresh with ckpt_path=null")
    diff = _first_difference(hparams["model_cfg"], model_cfg, "model.")
    if diff:
        raise ConfigError(f"ckpt_path={path}: {diff}; a checkpoint only continues its own model")


def write_state(ckpt_dir: Path, fp: dict, run_id: str | None, finished: bool) -> None:
    """The state file that tells a later run whose checkpoints these are, and whether it ended."""
    atomic_write_json(Path(ckpt_dir) / STATE_FILE, {"fingerprint": fp, "wandb_id": run_id, "finished": finished})


def earlier_files(ckpt_dir: Path) -> list[Path]:
    """An earlier run's files in ``ckpt_dir``: its checkpoints, snapshot folder and state file."""
    ckpt_dir = Path(ckpt_dir)
    found = sorted(p for p in ckpt_dir.glob("*.ckpt") if p.is_file())
    if snapshot_files(ckpt_dir / "snapshots"):
        found.append(ckpt_dir / "snapshots")
    if (ckpt_dir / STATE_FILE).exists():
        found.append(ckpt_dir / STATE_FILE)
    return found


def move_aside(ckpt_dir: Path, now: datetime | None = None, files: list[Path] | None = None) -> Path | None:
    """Move ``files`` (by default ``earlier_files(ckpt_dir)``) into a new
    ``<ckpt_dir>/superseded/<UTC time>`` folder (``-1``, ``-2``, ... after the time when that folder
    exists: no set ever replaces another). Returns the folder, or None when there was nothing to move."""
    files = earlier_files(ckpt_dir) if files is None else files
    if not files:
        return None
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H-%M-%SZ")
    for n in itertools.count():
        dest = Path(ckpt_dir) / SUPERSEDED / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            dest.mkdir(parents=True)  # fails when it exists: atomic, so two runs never share one
            break
        except FileExistsError:
            continue
    for path in files:
        path.rename(dest / path.name)  # the same file system: a rename, never a copy
    return dest


def supersede(ckpt_dir: Path, resume_from: str | None) -> str | None:
    """Unless the run continues ``<ckpt_dir>/last.ckpt``, move the directory's earlier files
    aside (they would mix with this run's, or be overwritten by them) and say where. Returns
    where ``resume_from`` is now: a checkpoint of the directory moves with the rest."""
    ckpt_dir = Path(ckpt_dir)
    if resume_from is not None and Path(resume_from).resolve() == (ckpt_dir / "last.ckpt").resolve():
        return resume_from
    files = earlier_files(ckpt_dir)
    names = [p.name + ("/" if p.is_dir() else "") for p in files]
    moved = move_aside(ckpt_dir, files=files)
    if moved is None:
        return resume_from
    print(f"train: moved the earlier checkpoints ({', '.join(names)}) to {moved}", flush=True)
    if resume_from is not None and Path(resume_from).resolve().parent == ckpt_dir.resolve():
        return str(moved / Path(resume_from).name)
    return resume_from


def last_good_checkpoint(ckpt_dir: Path, resume_from: str | None) -> str:
    """The end of a divergence's error line: the checkpoint to go back to, and what to do.
    Every checkpoint of the run is good (none is saved after a non-finite loss); without one of
    its own, the one it resumed from."""
    fix = "lower trainer.lr (or raise trainer.warmup_steps) and train again"
    last = Path(ckpt_dir) / "last.ckpt"
    good = last if last.is_file() else Path(resume_from) if resume_from else None
    if good is None:
        return f", before any checkpoint was written; {fix}"
    step = safe_load(good, mmap=True).get("global_step")
    return f"; the last good checkpoint is {good} (step {step}); {fix}: ckpt_path=auto moves these checkpoints aside"
