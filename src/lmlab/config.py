"""lmlab's validated configuration, and the one function both doors go through.

Two doors lead to a run:

* Hydra: ``python src/train.py model=small trainer.max_steps=200`` composes ``conf/`` with the
  overrides (``compose``);
* DVC: a stage reads ``params.yaml``, which DVC itself composed from ``conf/`` for
  ``dvc exp run -S ...`` (``load_params``).

Both hand a plain mapping to ``build_config``, which checks every key and value and returns frozen
dataclasses. Errors are ``ConfigError`` with the dotted key in the message.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmlab.data.builtin import BUILTIN_CORPORA
from lmlab.model.architecture import ACTIVATIONS, ARCHS, POSITIONS, Architecture

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"


TASKS = ("translation", "summarization", "language_modeling")
DATA_LOADERS = ("builtin", "hub", "local")
LOCAL_FORMATS = ("text", "tsv", "jsonl", "parquet")
# the keys only one loader reads; the others must leave them null
_LOADER_KEYS = {"builtin": ("corpus", "seed"), "hub": ("repo", "revision", "subset", "data_dir"),
                "local": ("path", "format")}


class ConfigError(ValueError):
    """A bad key or value; the message names it."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (the type's name when it has none): what a
    one-line error quotes of a library's multi-line one."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@dataclass(frozen=True)
class DataConfig:
    """Where the raw splits come from (``lmlab.data.sources``); conf/data/*.yaml explain every key."""

    name: str = "synthetic"  # the preset's label
    task: str = "translation"  # translation | summarization | language_modeling: which metrics
    source_lang: str | None = None  # ISO codes; the target's picks sacreBLEU's tokenizer
    target_lang: str | None = None
    loader: str = "builtin"  # builtin (a generator of lmlab's) | hub (Hugging Face) | local (files)
    corpus: str | None = "synthetic"  # builtin: the generator, a key of data.builtin.BUILTIN_CORPORA
    seed: int | None = 1234  # builtin: the generator's seed
    # builtin: how many examples to generate; hub and local: keep the first N (null: all)
    n_train: int | None = 20000
    n_valid: int | None = 1000
    n_test: int | None = 1000
    repo: str | None = None  # hub: dataset repository, e.g. wmt/wmt14
    revision: str | None = None  # hub: commit, branch or tag (null: main)
    subset: str | None = None  # hub: a config of the dataset card, e.g. de-en
    data_dir: str | None = None  # hub: folder of split folders (refs/convert/parquet layout)
    path: str | None = None  # local: the directory of the split files
    format: str | None = None  # local: text | tsv | jsonl | parquet
    splits: tuple[str, str, str] = ("train", "validation", "test")  # the source's names for ours
    # hub and local: record fields (dotted paths such as translation.de); the text format reads
    # files {path}/{split}.{field}, the field defaulting to the language code (txt for text_field)
    source_field: str | None = None
    target_field: str | None = None
    text_field: str | None = None
    # language_modeling: keep blank lines, each as an empty example (a lone <eos> in the token
    # stream, as "\n\n" is in the raw text); false drops them
    keep_blank_lines: bool = False

    def check(self) -> None:
        _require(bool(self.name), "data.name", self.name, "must not be empty")
        _require(self.task in TASKS, "data.task", self.task, f"must be one of {', '.join(TASKS)}")
        _require(self.loader in DATA_LOADERS, "data.loader", self.loader,
                 f"must be one of {', '.join(DATA_LOADERS)}")
        for key in ("source_lang", "target_lang"):
            value = getattr(self, key)
            _require(value is None or self._is_lang_code(value), f"data.{key}", value,
                     "must be an ISO 639 code such as en, de or pt-BR, or null")
        _require(not self.keep_blank_lines or self.task == "language_modeling", "data.keep_blank_lines",
                 self.keep_blank_lines, "is read for data.task=language_modeling only: set it to false")
        if self.task == "language_modeling":
            _require(self.target_lang is None, "data.target_lang", self.target_lang,
                     "must be null for data.task=language_modeling (there is no target side)")
        for loader, keys in _LOADER_KEYS.items():
            for key in keys:
                if loader != self.loader:
                    _require(getattr(self, key) is None, f"data.{key}", getattr(self, key),
                             f"is read by data.loader={loader} only: set it to null for "
                             f"data.loader={self.loader}")
        for key in ("n_train", "n_valid", "n_test"):
            value = getattr(self, key)
            if self.loader == "builtin":
                _require(value is not None and value >= 1, f"data.{key}", value,
                         "must be >= 1 (examples to generate)")
            else:
                _require(value is None or value >= 1, f"data.{key}", value,
                         "must be >= 1 (keep the first N) or null (all)")
        getattr(self, f"_check_{self.loader}")()

    def _check_builtin(self) -> None:
        _require(self.corpus in BUILTIN_CORPORA, "data.corpus", self.corpus,
                 f"must be one of {', '.join(BUILTIN_CORPORA)}")
        corpus_task = BUILTIN_CORPORA[self.corpus].task
        _require(self.task == corpus_task, "data.task", self.task,
                 f"does not match data.corpus={self.corpus} (a {corpus_task} corpus)")
        _require(self.seed is not None, "data.seed", self.seed, "must be an integer for data.loader=builtin")
        for key in ("source_field", "target_field", "text_field"):
            _require(getattr(self, key) is None, f"data.{key}", getattr(self, key),
                     "is read by data.loader=hub and local only: set it to null")
        _require(self.splits == ("train", "validation", "test"), "data.splits", list(self.splits),
                 "must be [train, validation, test] for data.loader=builtin (it names a source's splits)")

    def _check_hub(self) -> None:
        repo = self.repo or ""
        owner, _, name = repo.partition("/")
        _require(bool(owner and name) and "/" not in name and " " not in repo, "data.repo", self.repo,
                 "must name a Hugging Face dataset repository as owner/name, e.g. wmt/wmt14")
        for key in ("revision", "subset", "data_dir"):
            _require(getattr(self, key) != "", f"data.{key}", "", "must be null or not empty")
        if self.data_dir is not None:
            _require(not self.data_dir.startswith("/") and ".." not in self.data_dir.split("/"),
                     "data.data_dir", self.data_dir, "must be a folder inside the repository")
            _require(self.subset is None, "data.subset", self.subset,
                     "must be null when data.data_dir is set (data_dir is for repositories without "
                     "a dataset card, such as refs/convert/parquet)")
        self._check_splits_and_fields(files=False)

    def _check_local(self) -> None:
        if self.path in (None, "", "???"):  # ??? is Hydra's mark of a required value
            raise ConfigError("data.path is required for data.loader=local: the directory of your "
                              "split files (data=local data.path=DIR)")
        _require(self.format in LOCAL_FORMATS, "data.format", self.format,
                 f"must be one of {', '.join(LOCAL_FORMATS)}")
        self._check_splits_and_fields(files=self.format == "text")

    def _check_splits_and_fields(self, files: bool) -> None:
        """The source's split names and the fields read from each record; with ``files`` (the text
        format) the fields are file suffixes, and the language codes stand in for missing ones."""
        for i, split in enumerate(self.splits):
            _require(bool(split) and "/" not in split, f"data.splits[{i}]", split,
                     "must be a split name (not empty, no /)")
        lm = self.task == "language_modeling"
        needed = ("text_field",) if lm else ("source_field", "target_field")
        for key in ("source_field", "target_field") if lm else ("text_field",):
            _require(getattr(self, key) is None, f"data.{key}", getattr(self, key),
                     f"is not read for data.task={self.task}: set it to null")
        for key in needed:
            value = getattr(self, key)
            _require(value != "", f"data.{key}", value, "must be null or not empty")
            if files:
                lang_key = key.replace("_field", "_lang")
                if not lm and value is None and getattr(self, lang_key) is None:
                    raise ConfigError(f"data.{key} and data.{lang_key} are both null: the text format "
                                      f"reads {{path}}/{{split}}.{{{key}}}, which defaults to "
                                      f"data.{lang_key} (e.g. data.{lang_key}=en)")
            else:
                _require(value is not None, f"data.{key}", value,
                         "must name the field that holds the "
                         + ("text" if lm else key.split("_")[0])
                         + " in each record, a dotted path such as translation.de")

    @staticmethod
    def _is_lang_code(code: str) -> bool:
        """ISO 639-1/-3 language, optionally followed by -subtags: en, de, zh, pt-BR, sr-Latn."""
        lang, *subtags = code.split("-")
        return (2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha() and lang.islower()
                and all(1 <= len(t) <= 8 and t.isascii() and t.isalnum() for t in subtags))


TOKENIZER_KINDS = ("bpe", "byte_bpe", "char")
BYTE_VOCAB_MIN = 260  # byte-level BPE starts from the 256 byte symbols, plus the 4 special tokens


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer and the prepare stage's filters (lmlab.data.tokenizer, lmlab.data.prepare);
    conf/tokenizer/bpe.yaml explains every key."""

    kind: str = "bpe"  # bpe | byte_bpe | char
    joint: bool = True  # one vocabulary for every side, or one per side in one id space
    vocab_size: int = 6000  # per vocabulary, the four special tokens included
    min_frequency: int = 2
    max_tokens: int | None = 128  # train/validation pairs with a longer side are dropped
    min_tokens: int | None = None  # ... with a shorter side
    max_ratio: float | None = None  # ... whose longer side has more than this times the tokens
    workers: int = 1  # encoding processes (0 or 1: in this process)
    chunk_size: int = 4096  # lines encoded at a time

    def check(self) -> None:
        _require(self.kind in TOKENIZER_KINDS, "tokenizer.kind", self.kind,
                 f"must be one of {', '.join(TOKENIZER_KINDS)}")
        _require(self.vocab_size >= 16, "tokenizer.vocab_size", self.vocab_size, "must be >= 16")
        if self.kind == "byte_bpe":
            _require(self.vocab_size >= BYTE_VOCAB_MIN, "tokenizer.vocab_size", self.vocab_size,
                     f"must be >= {BYTE_VOCAB_MIN} with tokenizer.kind=byte_bpe (256 bytes + 4 special tokens)")
        _require(self.min_frequency >= 1, "tokenizer.min_frequency", self.min_frequency, "must be >= 1")
        _require(self.max_tokens is None or self.max_tokens >= 1, "tokenizer.max_tokens",
                 self.max_tokens, "must be >= 1 or null (no limit)")
        _require(self.min_tokens is None or self.min_tokens >= 1, "tokenizer.min_tokens",
                 self.min_tokens, "must be >= 1 or null (no limit)")
        if self.min_tokens is not None and self.max_tokens is not None:
            _require(self.min_tokens <= self.max_tokens, "tokenizer.min_tokens", self.min_tokens,
                     f"must be <= tokenizer.max_tokens={self.max_tokens}")
        _require(self.max_ratio is None or (self.max_ratio >= 1 and math.isfinite(self.max_ratio)),
                 "tokenizer.max_ratio", self.max_ratio, "must be >= 1 or null (no ratio filter)")
        _require(self.workers >= 0, "tokenizer.workers", self.workers, "must be >= 0 (0 or 1: in-process)")
        _require(self.chunk_size >= 1, "tokenizer.chunk_size", self.chunk_size, "must be >= 1")


@dataclass(frozen=True, kw_only=True)
class ModelSection(Architecture):
    """The model's ``Architecture`` and the name of the preset it came from."""

    name: str = "tiny"

    def check(self) -> None:
        for key, choices in (("arch", ARCHS), ("positions", POSITIONS), ("activation", ACTIVATIONS)):
            _require(getattr(self, key) in choices, f"model.{key}", getattr(self, key),
                     f"must be one of {', '.join(choices)}")
        for key in ("n_embd", "n_head", "d_ff", "max_len"):
            _require(getattr(self, key) >= 1, f"model.{key}", getattr(self, key), "must be >= 1")
        for key, stack in (("n_encoder_layer", "encoder"), ("n_decoder_layer", "decoder")):
            has = self.arch in ("encoder-decoder", f"{stack}-only")
            _require(getattr(self, key) >= 1 if has else getattr(self, key) == 0, f"model.{key}",
                     getattr(self, key), f"must be {'>= 1' if has else '0'} when model.arch={self.arch}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}")
        if (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"model.n_embd / model.n_head = {self.n_embd // self.n_head} must be even "
                              "(sinusoidal and rotary positions pair up dimensions)")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")
        _require(self.norm_eps > 0.0, "model.norm_eps", self.norm_eps, "must be > 0")


STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")
LR_SCHEDULES = ("cosine", "inverse_sqrt", "constant")


@dataclass(frozen=True)
class TrainerConfig:
    # auto: the machine decides (lmlab.train.hardware.plan_hardware): CUDA GPUs when present, in
    # bf16-mixed where they have it (else 16-mixed), the CPU in 32-true otherwise
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    max_steps: int = 1500
    batch_size: int | None = 64
    max_tokens: int | None = None
    accumulate_grad_batches: int = 1
    lr: float | None = None           # null: follows the model's width (lr_for_width)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_steps: int | None = None   # null: follows the model's width (warmup_for_width)
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    label_smoothing: float = 0.1
    gradient_clip_val: float = 1.0
    val_check_interval: int = 250
    checkpoint_every_n_steps: int = 100
    limit_val_batches: float = 1.0
    log_every_n_steps: int = 25
    num_workers: int = 0
    compile: bool = False
    fused_adamw: bool = True
    average_last: int = 0
    block_size: int = 128  # language modelling: tokens per training sequence (<= model.max_len)
    # masked language modelling (model.arch=encoder-only): BERT's rule, Hugging Face's names
    mlm_probability: float = 0.15  # the share of positions chosen for prediction
    mask_replace_prob: float = 0.8  # of those, the share that become <mask>
    random_replace_prob: float = 0.1  # ... a random token (the rest stay as they are)
    # fine-tuning (init_from): the learning rate of the tensors loaded from it is lr × this (the
    # new ones get lr), and the parts named here do not train: embeddings, encoder, decoder, or a
    # parameter-name prefix such as decoder.0 (the first decoder block)
    init_lr_scale: float = 1.0
    freeze: tuple[str, ...] = ()
    # LoRA (Hu et al., 2021) through peft: rank > 0 trains low-rank adapters on the linear layers
    # named here (every attention projection by default) and freezes everything else; the model
    # file holds the adapters merged into the weights (lmlab.model.lora)
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("qkv", "q", "kv", "proj")
    # language modelling: a training block starts every N tokens of the stream (null: block_size,
    # blocks side by side; 1: at every position, windows at any offset as in nanoGPT)
    block_stride: int | None = None

    def check(self) -> None:
        _require(self.accelerator in ("cpu", "gpu", "cuda", "auto"), "trainer.accelerator",
                 self.accelerator, "must be one of cpu, gpu, cuda, auto")
        _require(self.precision in ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"),
                 "trainer.precision", self.precision,
                 "must be one of auto, 32-true, bf16-mixed, 16-mixed, bf16-true")
        _require(self.devices == -1 or self.devices >= 1, "trainer.devices", self.devices,
                 "must be >= 1 or -1 (all)")
        _require(self.strategy in STRATEGIES, "trainer.strategy", self.strategy,
                 f"must be one of {', '.join(STRATEGIES)}")
        for key in ("max_steps", "val_check_interval", "checkpoint_every_n_steps",
                    "log_every_n_steps", "num_nodes", "accumulate_grad_batches"):
            _require(getattr(self, key) >= 1, f"trainer.{key}", getattr(self, key), "must be >= 1")
        for key in ("batch_size", "max_tokens"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"trainer.{key}", value, "must be >= 1 or null")
        if self.batch_size is None and self.max_tokens is None:
            raise ConfigError("trainer.batch_size and trainer.max_tokens are both null: set one "
                              "(sentences per batch, or tokens per batch)")
        _require(self.lr_schedule in LR_SCHEDULES, "trainer.lr_schedule", self.lr_schedule,
                 f"must be one of {', '.join(LR_SCHEDULES)}")
        _require(0.0 <= self.min_lr_ratio <= 1.0, "trainer.min_lr_ratio", self.min_lr_ratio,
                 "must be in [0, 1]")
        _require(self.block_size >= 1, "trainer.block_size", self.block_size, "must be >= 1")
        _require(self.init_lr_scale >= 0.0, "trainer.init_lr_scale", self.init_lr_scale, "must be >= 0")
        _require(self.lora_rank >= 0, "trainer.lora_rank", self.lora_rank, "must be >= 0 (0: no LoRA)")
        _require(self.lora_alpha > 0, "trainer.lora_alpha", self.lora_alpha, "must be > 0")
        _require(0.0 <= self.lora_dropout < 1.0, "trainer.lora_dropout", self.lora_dropout, "must be in [0, 1)")
        _require(0.0 < self.mlm_probability < 1.0, "trainer.mlm_probability", self.mlm_probability,
                 "must be in (0, 1)")
        for key in ("mask_replace_prob", "random_replace_prob"):
            _require(0.0 <= getattr(self, key) <= 1.0, f"trainer.{key}", getattr(self, key), "must be in [0, 1]")
        _require(self.mask_replace_prob + self.random_replace_prob <= 1.0, "trainer.random_replace_prob",
                 self.random_replace_prob, f"must be <= 1 - trainer.mask_replace_prob={self.mask_replace_prob}")
        _require(self.block_stride is None or 1 <= self.block_stride <= self.block_size, "trainer.block_stride",
                 self.block_stride, f"must be null or in [1, trainer.block_size={self.block_size}]")
        for key in ("num_workers", "average_last"):
            _require(getattr(self, key) >= 0, f"trainer.{key}", getattr(self, key), "must be >= 0")
        _require(self.warmup_steps is None or self.warmup_steps >= 0, "trainer.warmup_steps",
                 self.warmup_steps, "must be >= 0, or null to follow the model's width")
        _require(self.lr is None or self.lr > 0, "trainer.lr", self.lr,
                 "must be > 0, or null to follow the model's width")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "trainer.betas",
                 list(self.betas), "must be two numbers in [0, 1)")
        _require(0.0 <= self.label_smoothing < 1.0, "trainer.label_smoothing", self.label_smoothing,
                 "must be in [0, 1)")
        _require(self.gradient_clip_val >= 0, "trainer.gradient_clip_val", self.gradient_clip_val,
                 "must be >= 0 (0 turns clipping off)")
        _require(0 < self.limit_val_batches, "trainer.limit_val_batches", self.limit_val_batches,
                 "must be > 0")


DECODING_STRATEGIES = ("greedy", "beam", "sample")
EARLY_STOPPING = ("fairseq", "never")
_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode; every key is documented in conf/decoding/*.yaml. ``check`` is the one place
    that decides which values and combinations are valid (``decoding.build_policy`` trusts it)."""

    name: str = "greedy"  # the preset's label (a sweep entry is labelled by its key instead)
    strategy: str = "greedy"
    beam_size: int = 1
    length_penalty: float = 1.0
    n_best: int = 1
    early_stopping: str = "fairseq"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    max_new_tokens: int = 64
    batch_size: int = 64
    seed: int | None = None
    prompt_tokens: int = 16  # language modelling: continue each test line after its first N tokens

    def check(self, key: str = "decoding") -> None:
        """``key`` names this section in messages: ``decoding`` or ``sweep.<name>``."""
        _require(bool(self.name) and "/" not in self.name, f"{key}.name", self.name,
                 "must be a non-empty label without /")
        _require(self.strategy in DECODING_STRATEGIES, f"{key}.strategy", self.strategy,
                 f"must be one of {', '.join(DECODING_STRATEGIES)}")
        _require(self.beam_size >= 1, f"{key}.beam_size", self.beam_size, "must be >= 1")
        if self.strategy != "beam" and self.beam_size != 1:
            raise ConfigError(f"{key}.beam_size={self.beam_size} needs {key}.strategy=beam "
                              f"({self.strategy} keeps one hypothesis)")
        _require(1 <= self.n_best <= self.beam_size, f"{key}.n_best", self.n_best,
                 f"must be between 1 and {key}.beam_size={self.beam_size}")
        _require(math.isfinite(self.length_penalty), f"{key}.length_penalty", self.length_penalty,
                 "must be a finite number")
        _require(self.early_stopping in EARLY_STOPPING, f"{key}.early_stopping", self.early_stopping,
                 f"must be one of {', '.join(EARLY_STOPPING)}")
        if self.strategy != "beam" and self.early_stopping != "fairseq":
            raise ConfigError(f"{key}.early_stopping={self.early_stopping} needs {key}.strategy=beam "
                              f"({self.strategy} keeps one hypothesis)")
        if self.strategy != "sample":
            for name, default in _SAMPLING_DEFAULTS.items():
                if getattr(self, name) != default:
                    raise ConfigError(f"{key}.{name}={getattr(self, name)!r} needs {key}.strategy="
                                      f"sample ({self.strategy} never samples; presets sample, "
                                      "topk, topp, minp)")
        _require(self.temperature > 0 and math.isfinite(self.temperature), f"{key}.temperature",
                 self.temperature, "must be > 0 (for the argmax, use strategy greedy)")
        _require(self.top_k >= 0, f"{key}.top_k", self.top_k, "must be >= 0 (0 keeps every token)")
        _require(0 < self.top_p <= 1, f"{key}.top_p", self.top_p, "must be in (0, 1] (1 keeps every token)")
        _require(0 <= self.min_p < 1, f"{key}.min_p", self.min_p, "must be in [0, 1) (0 keeps every token)")
        _require(self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty),
                 f"{key}.repetition_penalty", self.repetition_penalty, "must be > 0 (1 turns it off)")
        _require(self.no_repeat_ngram_size >= 0, f"{key}.no_repeat_ngram_size",
                 self.no_repeat_ngram_size, "must be >= 0 (0 turns it off)")
        _require(self.max_new_tokens >= 1, f"{key}.max_new_tokens", self.max_new_tokens, "must be >= 1")
        _require(0 <= self.min_new_tokens <= self.max_new_tokens, f"{key}.min_new_tokens",
                 self.min_new_tokens, f"must be between 0 and {key}.max_new_tokens={self.max_new_tokens}")
        _require(self.batch_size >= 1, f"{key}.batch_size", self.batch_size, "must be >= 1")
        _require(self.prompt_tokens >= 1, f"{key}.prompt_tokens", self.prompt_tokens, "must be >= 1")


@dataclass(frozen=True)
class LoggerConfig:
    kind: str = "wandb"
    project: str = "lmlab"
    entity: str | None = None
    mode: str = "offline"
    save_dir: str = "."
    group: str | None = None  # W&B run group; null: derived (lmlab.tracking.run_group)

    def check(self) -> None:
        _require(self.kind in ("wandb", "csv", "none"), "logger.kind", self.kind,
                 "must be one of wandb, csv, none")
        _require(self.mode in ("offline", "online", "disabled"), "logger.mode", self.mode,
                 "must be one of offline, online, disabled")


@dataclass(frozen=True)
class EvaluateConfig:
    bleu_tokenize: str = "auto"
    rouge_stemmer: bool = True
    batch_size: int = 64
    report_examples: int = 8
    bootstrap_samples: int = 1000

    def check(self) -> None:
        import sacrebleu

        choices = ["auto", *sacrebleu.BLEU.TOKENIZERS]
        _require(self.bleu_tokenize in choices, "evaluate.bleu_tokenize", self.bleu_tokenize,
                 f"must be one of {', '.join(choices)}")
        _require(self.batch_size >= 1, "evaluate.batch_size", self.batch_size, "must be >= 1")
        _require(self.bootstrap_samples >= 100, "evaluate.bootstrap_samples", self.bootstrap_samples,
                 "must be >= 100")
        _require(self.report_examples >= 0, "evaluate.report_examples", self.report_examples,
                 "must be >= 0")


@dataclass(frozen=True)
class Config:
    seed: int = 1234
    ckpt_path: str | None = None
    init_from: str | None = None  # pre-trained weights and tokenizer to start from (lmlab.model.warmstart)
    init_weights: bool = True  # false: take only init_from's tokenizer (a from-scratch control on the same tokens)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelSection = field(default_factory=ModelSection)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    # more strategies decoded from the same model and tested against `decoding` (dvc.yaml's
    # sweep-* stages): name -> settings, composed from conf/decoding presets in conf/config.yaml
    sweep: dict[str, DecodingConfig] = field(default_factory=dict)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def check(self) -> None:
        """The checks across sections (each section checked its own keys): whatever the config
        alone can tell about a run failing or silently cutting text later on."""
        m = self.model
        if self.trainer.lora_rank and not (self.init_from and self.init_weights):
            raise ConfigError(f"trainer.lora_rank={self.trainer.lora_rank} needs init_from (with init_weights=true): "
                              "LoRA adapts a pre-trained model, and everything but its adapters stays frozen")
        if self.data.task == "language_modeling":
            if m.arch == "encoder-decoder":
                raise ConfigError(f"data.task=language_modeling needs a decoder-only model (causal) or an "
                                  f"encoder-only one (masked), but model.arch={m.arch} (model={m.name}): "
                                  "choose one with model=gpt-tiny, gpt-small, gpt2-124m, bert-tiny or bert-base")
            _require(self.trainer.block_size <= m.max_len, "trainer.block_size",
                     self.trainer.block_size, f"must be <= model.max_len={m.max_len}")
        elif m.arch == "encoder-only":
            raise ConfigError(f"data.task={self.data.task} needs a model that generates, but model.arch=encoder-only "
                              f"(model={m.name}) only fills in masked tokens: pre-train it on text "
                              "(a language_modeling data preset) or choose an encoder-decoder or decoder-only model")
        else:
            limit = pair_token_limit(m.arch, m.max_len)
            _require(self.tokenizer.max_tokens is None or self.tokenizer.max_tokens <= limit,
                     "tokenizer.max_tokens", self.tokenizer.max_tokens,
                     f"must be <= {limit} for model.max_len={m.max_len} ({m.arch}: "
                     + ("the target and its <s> must fit the positions" if m.arch != "decoder-only" else
                        "source, target and their 2 end tokens share the positions")
                     + "); lower it or raise model.max_len")
        for key, d in (("decoding", self.decoding), *((f"sweep.{k}", v) for k, v in self.sweep.items())):
            if m.arch == "encoder-only":  # fills in masked positions of whole lines: no room to check
                continue
            if self.data.task == "language_modeling":  # generation reads at most half the positions
                _require(d.prompt_tokens <= m.max_len // 2 - 1, f"{key}.prompt_tokens", d.prompt_tokens,
                         f"must be <= {m.max_len // 2 - 1} (half of model.max_len={m.max_len}, less the "
                         "token before the prompt)")
            room = new_token_limit(m.arch, m.max_len, self.data.task, d.prompt_tokens)
            _require(d.max_new_tokens <= room, f"{key}.max_new_tokens", d.max_new_tokens,
                     f"must be <= {room}, what model.max_len={m.max_len} leaves after the "
                     + ("prompt" if m.arch == "decoder-only" else "decoder's <s>"))

    def with_strategy(self, name: str) -> Config:
        """This config with ``sweep.<name>`` as its ``decoding``."""
        if name not in self.sweep:
            raise ConfigError(f"--strategy {name}: no sweep.{name} in the config "
                              f"(sweep has: {', '.join(self.sweep) or 'nothing'})")
        return dataclasses.replace(self, decoding=dataclasses.replace(self.sweep[name], name=name))


def pair_token_limit(arch: str, max_len: int) -> int:
    """The most tokens a side of a training pair may have (``tokenizer.max_tokens``) for a model of
    ``max_len`` positions. Encoder-decoder: the decoder reads ``<s> y1 .. yn`` (a longer source is
    cut, as in generation, but a target must fit whole). Decoder-only: the model reads
    ``source </s> <s> target`` and the source is cut to half the positions, so each side gets half,
    less its end token."""
    return max_len // 2 - 1 if arch == "decoder-only" else max_len - 1


def new_token_limit(arch: str, max_len: int, task: str, prompt_tokens: int) -> int:
    """The most new tokens a model of ``max_len`` positions can generate after its longest prompt:
    a text continuation reads ``prompt_tokens`` positions, a decoder-only translation up to half of
    them, an encoder-decoder one ``<s>``."""
    if arch != "decoder-only":
        return max_len - 1
    return max_len - prompt_tokens if task == "language_modeling" else max_len - max_len // 2


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _require(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} {rule}")


def _coerce(value, annotation, key: str):
    """Check ``value`` against a field annotation (int, float, bool, str, X | None, tuple)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple and typing.get_args(annotation)[1:] == (Ellipsis,):  # tuple[X, ...]: any length
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        return tuple(_coerce(v, typing.get_args(annotation)[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}={value!r} must be a list of {len(args)} values")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a field type this function does not know
        raise TypeError(f"unsupported config field type {annotation} for {key}")
    raise ConfigError(f"{key}={value!r} must be of type {annotation.__name__}")


def _build(cls, raw: Mapping, prefix: str, check: bool = True):
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    values = {}
    for name in names:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], f"{prefix}{name}.")
        elif typing.get_origin(hint) is dict:  # name -> section, e.g. sweep.topp
            values[name] = _build_map(typing.get_args(hint)[1], raw[name], f"{prefix}{name}")
        else:
            values[name] = _coerce(raw[name], hint, f"{prefix}{name}")
    obj = cls(**values)
    if check and hasattr(obj, "check"):
        obj.check()
    return obj


def _build_map(cls, raw, key: str) -> dict:
    """A mapping of names to ``cls`` sections; each is checked under its own key."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be a mapping of names to settings, got {raw!r}")
    out = {}
    for name, section in raw.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{key}.{name}: names may use letters, digits, - and _ only")
        out[name] = _build(cls, section, f"{key}.{name}.", check=False)
        out[name].check(f"{key}.{name}")
    return out


def build_config(raw: Mapping) -> Config:
    """The one constructor of a validated ``Config``, for both the Hydra and the DVC door. A null
    ``trainer.lr`` or ``trainer.warmup_steps`` becomes the value the model's width calls for."""
    cfg = _build(Config, raw, "")
    return dataclasses.replace(cfg, trainer=dataclasses.replace(
        cfg.trainer, **follow_width(vars(cfg.trainer), cfg.model.n_embd)))


# Hyper-parameters that follow the model's size (README, "Hyper-parameters that follow size").
# Adam's best learning rate falls as a Transformer gets wider: in proportion to 1/width for the
# hidden layers under muP (Yang et al. 2022, "Tensor Programs V"), and GPT-3's table (Brown et al.
# 2020, Table 2.1) cuts it to a third from 768 to 2048 wide. lmlab's rule is anchored on the width its CPU
# default was tuned at; a set trainer.lr / trainer.warmup_steps always wins.
RULE_WIDTH = 128      # model.n_embd of `tiny`, where trainer.lr = RULE_LR was tuned
RULE_LR = 2e-3
RULE_WARMUP = 150     # warm-up steps at RULE_WIDTH


def lr_for_width(n_embd: int) -> float:
    """The peak learning rate for a model ``n_embd`` wide: RULE_LR x RULE_WIDTH / n_embd."""
    return float(f"{RULE_LR * RULE_WIDTH / n_embd:.3g}")


def warmup_for_width(n_embd: int) -> int:
    """Warm-up steps for a model ``n_embd`` wide: RULE_WARMUP x sqrt(n_embd / RULE_WIDTH), so a
    wider model, whose early updates are larger relative to its weights, warms up for longer."""
    return int(round(RULE_WARMUP * math.sqrt(n_embd / RULE_WIDTH), -1))


def follow_width(trainer: Mapping, n_embd: int) -> dict:
    """The keys of ``trainer`` (a trainer section) that the width rule fills: each of ``lr`` and
    ``warmup_steps`` that is there and null, with the value a model ``n_embd`` wide calls for."""
    return {key: rule(n_embd) for key, rule in (("lr", lr_for_width), ("warmup_steps", warmup_for_width))
            if key in trainer and trainer[key] is None}


def compose(overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """``conf/config.yaml`` composed with Hydra overrides, as a plain dict (the Hydra door)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise override_error(err, overrides) from None


def override_error(err: Exception, overrides) -> ConfigError:
    """A Hydra or OmegaConf error about ``overrides`` as one line; a key that is not in the config
    gets the closest key that is, as ``build_config`` gives for a params file."""
    first = first_line(err)
    key = first.removeprefix("Could not override '").split("'")[0] if first.startswith("Could not override '") else None
    hint = ""
    if key:
        node, *parts = key.split(".")
        cls = Config
        for part in [node, *parts][:-1]:
            hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
            cls = hints.get(part)
        if dataclasses.is_dataclass(cls):
            close = difflib.get_close_matches(key.split(".")[-1], [f.name for f in dataclasses.fields(cls)], n=1)
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            hint = f" (no such key{f'; did you mean {prefix}{close[0]}?' if close else ''})"
    return ConfigError(f"bad override in {' '.join(overrides)!r}: {first}{hint}")


def load_params(path: str | Path = "params.yaml") -> dict:
    """``params.yaml`` as a plain dict (the DVC door)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run `make params` (or `dvc exp run`) to compose it from conf/")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or first_line(err)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of config groups")
    return raw
