"""Starting a model from another one's weights (``init_from``): pre-train, then fine-tune.

``init_from`` names an lmlab model file (``model.pt``), a training checkpoint (``*.ckpt``), or a
Hugging Face ``GPT2LMHeadModel``/``BertForMaskedLM`` folder (``lmlab.model.interop.read_hf``). The new
model takes every tensor whose name and shape match one there; the rest of its tensors keep their
fresh initialisation, and the file's other tensors are left out. A name found in both with another
shape is an error naming the tensor (a checkpoint of another width cannot be loaded in part). The
tokenizer comes with the weights: the prepare stage encodes the data with the file's tokenizer
(``tokenizer_from``), and training refuses data prepared with any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmlab.model.checkpoint import load_model
from lmlab.model.interop import HFImportError, is_hf_dir, read_hf


class InitError(ValueError):
    """An ``init_from`` that cannot start this model: one line naming the file and the cause."""


@dataclass
class InitReport:
    """Which tensors of the new model came from ``source`` (``loaded``), kept their fresh values
    (``new``), and which of the file's were left out (``dropped``)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)  # trainer.freeze's parameters
    lora: dict | None = None  # trainer.lora_rank's adapters (lmlab.model.lora.add_lora)

    def to_dict(self) -> dict:
        return {"init_from": self.source, "loaded": self.loaded, "new": self.new, "dropped": self.dropped,
                "frozen": self.frozen, **({"lora": self.lora} if self.lora else {})}

    def lines(self) -> list[str]:
        """What a run prints: the counts, then each new and dropped tensor by name."""
        out = [f"init_from {self.source}: loaded {len(self.loaded)} tensors, {len(self.new)} new, "
               f"{len(self.dropped)} dropped"]
        out += [f"  new: {name}" for name in self.new] + [f"  dropped: {name}" for name in self.dropped]
        out += [f"  frozen: {len(self.frozen)} parameters ({', '.join(self.frozen[:3])}, ...)"] if self.frozen else []
        if self.lora:
            out.append(f"  LoRA rank {self.lora['rank']} (alpha {self.lora['alpha']}) on {len(self.lora['adapted'])} "
                       f"layers: {self.lora['trainable']:,} trainable parameters, the rest frozen")
        return out


def read_init(path: str | Path):
    """(weights, model config, tokenizer JSON, payload) of an ``init_from`` file or Hugging Face
    folder; one line (``InitError``) for a missing path or one that is not a model lmlab reads."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InitError(f"init_from={str(path)!r} not found: give an lmlab model.pt, a training checkpoint "
                        "or a Hugging Face model folder")
    if path.is_dir():
        if not is_hf_dir(path):
            raise InitError(f"init_from={str(path)!r} is a folder without config.json: give an lmlab model.pt, "
                            "a training checkpoint, or a Hugging Face model folder (save_pretrained)")
        try:
            return read_hf(path)
        except HFImportError as err:
            raise InitError(str(err)) from None
    try:
        model, _, payload = load_model(path)
    except (ValueError, FileNotFoundError) as err:
        raise InitError(f"init_from={str(path)!r}: {err}") from None
    return model.state_dict(), payload["model_config"], payload["tokenizer"], payload


# model settings that change what loaded tensors compute without changing their shapes (or, for
# the widths, that a named error says better than a tensor's shape)
SAME_AS_INIT = ("n_embd", "n_head", "d_ff", "norm_first", "positions", "activation", "scale_embeddings",
                "embed_norm", "norm_eps")


def check_architecture(model: dict, theirs: dict, source: str) -> None:
    """Refuse, naming the key, a ``model`` setting of ``SAME_AS_INIT`` that differs from the
    pre-trained model's (``theirs``, its ``ModelConfig`` fields; a field a file predates takes the
    default). Layer counts, dropout and the architecture may differ: extra layers start fresh."""
    from dataclasses import fields

    from lmlab.model.architecture import Architecture

    defaults = {f.name: f.default for f in fields(Architecture)}
    for key in SAME_AS_INIT:
        want = theirs.get(key, defaults[key])
        if model[key] != want:
            raise InitError(f"model.{key}={model[key]!r} but init_from={source!r} was built with "
                            f"model.{key}={want!r}: set model.{key}={want!r} so its tensors compute what they learned")


def warm_start(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> InitReport:
    """Copy into ``model`` every tensor of ``weights`` whose name and shape match; returns the
    report. A name in both with different shapes raises ``InitError`` before anything is copied."""
    own = model.state_dict()
    for name, tensor in weights.items():
        if name in own and own[name].shape != tensor.shape:
            raise InitError(f"init_from={source!r}: {name} is {tuple(tensor.shape)} there but "
                            f"{tuple(own[name].shape)} in this model (model.n_embd, d_ff, max_len "
                            "or the vocabulary differ): match the pre-trained model's dimensions")
    report = InitReport(source)
    report.loaded = [name for name in own if name in weights]
    report.new = [name for name in own if name not in weights]
    report.dropped = [name for name in weights if name not in own]
    model.load_state_dict({name: weights[name] for name in report.loaded}, strict=False)
    return report


# what trainer.freeze's words stand for: parameter-name prefixes of lmlab's Transformer
FREEZE_PARTS = {"embeddings": ("embed.", "pos_embed.", "embed_ln."), "encoder": ("encoder.", "enc_ln."),
                "decoder": ("decoder.", "dec_ln.")}


def freeze(model: torch.nn.Module, parts: tuple[str, ...] | list[str]) -> list[str]:
    """Stop the parameters of ``parts`` (``FREEZE_PARTS`` words or name prefixes such as
    ``decoder.0``) from training; returns the frozen names. The output layer shares the token
    embedding when ``tie_embeddings`` is on, so freezing ``embeddings`` freezes both. A part that
    names no parameter is a ``ValueError`` naming it."""
    from lmlab.config import ConfigError

    names = [name for name, _ in model.named_parameters()]
    frozen = []
    for part in parts:
        prefixes = FREEZE_PARTS.get(part, (part if part.endswith(".") else part + ".",))
        hits = [n for n in names if n.startswith(prefixes)]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"trainer.freeze: {part!r} names no parameter of this model (say "
                              f"{', '.join(FREEZE_PARTS)}, or a prefix of: {', '.join(tops)})")
        frozen += [n for n in hits if n not in frozen]
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def record_init(init_from: str | None, out_dir: str | Path) -> dict:
    """The ``init`` stage: write ``out_dir/init.json`` naming the ``init_from`` file and the
    SHA-256 of its bytes (``{"init_from": null}`` without one), after checking that the file is an
    lmlab model. The prepare and train stages depend on ``out_dir``, so DVC reruns them exactly
    when the pre-trained model's content changes (the stage itself runs on every ``dvc repro``:
    hashing a file is all it does). Returns what it wrote."""
    import hashlib

    from lmlab.files import atomic_dir, write_json

    info: dict = {"init_from": init_from}
    if init_from:
        path = Path(init_from).expanduser()
        read_init(path)  # a missing or foreign file fails here, with one line
        # a folder (Hugging Face's): its files' names and bytes, in name order
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        digest = hashlib.sha256()
        for file in files:
            if path.is_dir():
                digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        info |= {"sha256": digest.hexdigest(), "bytes": sum(f.stat().st_size for f in files)}
    with atomic_dir(out_dir) as tmp:
        write_json(Path(tmp) / "init.json", info)
    return info
