"""The model file and lmlab's training checkpoints: writing, reading and the weights inside.

A model file (``model.pt``, what the train stage exports) is self-contained: the architecture, the
weights, the tokenizer and the config that made it, so generation needs no training config. A
Lightning checkpoint of lmlab's training (``last.ckpt``, ``best.ckpt``) carries the same
architecture and tokenizer, so it loads the same way. Nothing here imports Lightning: generate,
evaluate and translate load a model without the training framework.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from lmlab.config import first_line
from lmlab.data.tokenizer import load_tokenizer, tokenizer_hash
from lmlab.files import atomic_path
from lmlab.model.transformer import ModelConfig, Transformer

MODEL_FORMAT = "lmlab-model-v1"
CKPT_TOKENIZER = "lmlab_tokenizer"  # the tokenizer's JSON inside a Lightning checkpoint
CKPT_TASK = "lmlab_task"  # and the data.task the run trained for


def save_model(model_cfg: dict, state_dict: dict, tokenizer_json: str, config: dict, path: str | Path,
               extra: dict | None = None) -> None:
    """Write a model file: ``model_cfg`` (``ModelConfig`` fields), weights, tokenizer JSON, the
    resolved run config and any ``extra`` entries (the training summary)."""
    payload = {
        "format": MODEL_FORMAT,
        "model_config": model_cfg,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "tokenizer": tokenizer_json,
        "tokenizer_sha256": tokenizer_hash(tokenizer_json),
        "config": config,
        **(extra or {}),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # to a file object: torch names the records inside after a path's stem (here a temporary,
        # different each time), so two saves of the same payload give the same bytes only this way
        torch.save(payload, f)


LFS_POINTER = b"version https://git-lfs"


def safe_load(path: str | Path, map_location: str = "cpu", mmap: bool = False):
    """``torch.load`` of a model file, training checkpoint or snapshot with ``weights_only=True``:
    tensors and plain data only, so a file that tries to run code when unpickled is refused before
    any of it runs. Every way the file can be unreadable (missing, a Git LFS pointer, truncated,
    not a PyTorch file, a pickle of objects) is a one-line ``ValueError`` (``FileNotFoundError``
    for a missing file) naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with open(path, "rb") as f:
        head = f.read(len(LFS_POINTER))
    if head == LFS_POINTER:
        raise ValueError(f"{path} is a Git LFS pointer, not the file itself: fetch it with `git lfs pull`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # weights_only refuses any global it does not know before calling it; the message is long
        found = re.search(r"GLOBAL ([\w.]+)|Unsupported global: (?:GLOBAL )?([\w.]+)|global '([\w.]+)'", str(err))
        if found is None:  # not a pickle at all
            raise ValueError(f"{path} is not a readable PyTorch file (truncated or corrupt?)") from None
        what = next(g for g in found.groups() if g)
        raise ValueError(f"{path} holds Python objects ({what}), not only tensors and plain data: refused "
                         "to load it (a file from an untrusted source can run code when unpickled)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a readable PyTorch file (truncated or corrupt?): {first_line(err)}") from None


def load_model(path: str | Path, device: str = "cpu"):
    """(model in eval mode, tokenizer, payload) from a model file written by ``save_model`` or a
    Lightning checkpoint of lmlab's training; no training config is needed. A file that is not
    one of these, or whose weights are not finite (a run that diverged), is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage (`dvc repro train`)")
    payload = safe_load(path, map_location=device)
    if isinstance(payload, dict) and CKPT_TOKENIZER in payload and "model_cfg" in (payload.get("hyper_parameters") or {}):
        payload = {"format": MODEL_FORMAT, "model_config": payload["hyper_parameters"]["model_cfg"],
                   "state_dict": module_weights(payload["state_dict"]),
                   "tokenizer": payload[CKPT_TOKENIZER], "checkpoint_step": payload.get("global_step"),
                   CKPT_TASK: payload.get(CKPT_TASK)}
    elif isinstance(payload, dict) and "hyper_parameters" in payload:
        raise ValueError(f"{path} is a training checkpoint without its tokenizer (written before "
                         "checkpoints carried it): use the exported model.pt")
    elif not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is neither an lmlab model file nor an lmlab training checkpoint")
    try:
        model = Transformer(ModelConfig(**payload["model_config"])).to(device)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} does not hold a model lmlab can build: {first_line(err)}") from None
    bad = next((k for k, v in payload["state_dict"].items() if v.is_floating_point() and not v.isfinite().all()), None)
    if bad is not None:
        raise ValueError(f"{path} has non-finite weights ({bad}): the training diverged; "
                         "retrain with a lower trainer.lr or from an earlier checkpoint")
    model.eval()
    return model, load_tokenizer(payload["tokenizer"]), payload


def model_task(payload: dict) -> str | None:
    """What the model of a loaded file was trained for (``data.task``): ``translation``,
    ``summarization`` or ``language_modeling``; None when the file does not say."""
    return (payload.get("config") or {}).get("data", {}).get("task") or payload.get(CKPT_TASK)


def check_data_tokenizer(payload: dict, model_path: str | Path, prepared_dir: str | Path) -> None:
    """Refuse to decode or score ``prepared_dir`` with a model trained on data of another tokenizer:
    its token ids would mean other words (garbage, or an index error with a larger vocabulary)."""
    tok_path = Path(prepared_dir) / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(f"{tok_path} not found: run the prepare stage (`dvc repro prepare`)")
    if tokenizer_hash(tok_path.read_text(encoding="utf-8")) != tokenizer_hash(payload["tokenizer"]):
        raise ValueError(f"{model_path} was trained with another tokenizer than {tok_path}: give the "
                         "--prepared-dir its training read, or retrain the model on this one")


# what a training summary holds that differs between two runs of the same inputs: kept out of the
# model file (so its bytes, and DVC's hash of it, depend on the inputs alone) and in run.json beside it
RUN_SPECIFIC = ("train_seconds", "train_tokens_per_second", "wandb")


def stable_summary(summary: dict) -> dict:
    """``summary`` without its ``RUN_SPECIFIC`` entries: what the model file keeps."""
    return {k: v for k, v in summary.items() if k not in RUN_SPECIFIC}


def read_summary(path: str | Path) -> dict:
    """The training summary of a model file: what the file holds, and the run's ``run.json``
    beside it (timing, the W&B run) when that is there; ``{}`` for a Lightning checkpoint or no
    file (a sweep strategy is scored without the model). The weights are memory-mapped, not read."""
    import json

    path = Path(path)
    if not path.is_file():
        return {}
    payload = safe_load(path, mmap=True)
    summary = payload.get("summary", {}) if isinstance(payload, dict) else {}
    run_json = path.with_name("run.json")
    if summary and run_json.is_file():
        summary = summary | json.loads(run_json.read_text(encoding="utf-8"))
    return summary


def checkpoint_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The plain model's weights from a Lightning checkpoint (full state dict, any strategy)."""
    return module_weights(safe_load(path)["state_dict"])


def module_weights(module_state: dict) -> dict[str, torch.Tensor]:
    """The ``Transformer``'s entries of the training module's state dict, under their own names
    (the LightningModule holds the model as its ``model`` attribute)."""
    return {k.removeprefix("model."): v for k, v in module_state.items() if k.startswith("model.")}


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point tensors of several state dicts (others from the
    last): fairseq's ``average_checkpoints``."""
    if not paths:
        raise ValueError("no checkpoints to average")
    total, last = None, None
    for path in paths:
        last = safe_load(path)
        if total is None:
            total = {k: v.double() if v.is_floating_point() else v for k, v in last.items()}
        else:
            for k, v in last.items():
                if v.is_floating_point():
                    total[k] += v.double()
    return {k: (v / len(paths)).to(last[k].dtype) if v.is_floating_point() else last[k]
            for k, v in total.items()}
