"""Where the raw splits come from: one of lmlab's generators, a Hugging Face Hub dataset, or files.

``load_splits(cfg.data)`` returns ``{"train", "validation", "test"} -> examples``: ``(source,
target)`` pairs for translation and summarization, lines of text for language modelling. The
``download`` stage (``data.download.download``) writes them one per line, so every example is made to
fit on one line here:

* a pair's texts have their line breaks turned into spaces (a summarization document keeps its
  words, on one line); a pair with an empty side is skipped;
* language-modelling text is split into its lines, each stripped of surrounding whitespace, and
  blank lines are left out: WikiText's rows are already lines (one record per line, headings
  `` = Title = `` included), Tiny Shakespeare's split is one text that becomes its lines;
* ``data.n_train`` / ``n_valid`` / ``n_test`` keep the first N examples of each split (after the
  two rules above), in the source's order, so a capped run always sees the same examples.

Loaders (``data.loader``):

``builtin``
    a generator registered in ``builtin.BUILTIN_CORPORA`` (``data.corpus``), called with ``data.seed`` and
    the three sizes; no network.
``hub``
    a dataset repository on the Hugging Face Hub without a loading script, read with ``datasets``.
    Only the subset's files are fetched into the Hugging Face cache (``huggingface_hub``'s, under
    ``HF_HOME``): the files the dataset card's config ``data.subset`` names, the folder
    ``data.data_dir`` (a repository without a card, such as the Parquet conversion
    ``refs/convert/parquet``, which keeps each config in a folder of split folders), or else the
    whole repository. ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``, or a Hub that does not
    answer a connection within ``PROBE_TIMEOUT_S``, means the cache only: a dataset that is not
    there fails at once with one message naming it, the cache directory and the local-copy way.
``local``
    the user's files in ``data.path``, ``{path}/{split}.{ext}`` with the split names of
    ``data.splits``: ``text`` (one example per line; ``{split}.{source_field}`` and
    ``{split}.{target_field}``, the fields defaulting to the language codes, or
    ``{split}.{text_field}``, default ``txt``), ``tsv`` (a header row names the columns),
    ``jsonl`` or ``parquet``. Text, TSV and JSONL files may be gzipped (``{name}.gz``).

Record fields are dotted paths (``translation.de`` reads ``record["translation"]["de"]``); a key
that contains the dots itself (a TSV column ``text.en``) is read as it is.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import socket
import threading
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from lmlab.config import DataConfig, first_line
from lmlab.data.builtin import BUILTIN_CORPORA
from lmlab.data.rawfiles import SPLITS

PROBE_TIMEOUT_S = 3.0  # the connection test before a Hub download: offline is found out at once
HUB_ETAG_TIMEOUT_S = 10.0  # per metadata request of huggingface_hub
_TRUE = ("1", "ON", "YES", "TRUE")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text",
             ".arrow": "arrow"}

Example = Any  # tuple[str, str] for translation and summarization, str for language modelling


class SourceError(ValueError):
    """Source data that cannot be read as configured; the message names the file and the key."""


class SourceNotFound(FileNotFoundError):
    """A file, or a Hub dataset, that is not there; the message says where it looked."""


class HubDatasetUnavailable(SourceNotFound):
    """A Hub dataset that is neither in the cache nor downloadable now."""


def load_splits(d: DataConfig) -> dict[str, Iterable[Example]]:
    """``{"train", "validation", "test"} -> examples`` of ``d`` (see the module docstring). Files
    and datasets are found before this returns (a missing one fails here); reading is lazy."""
    if d.loader == "builtin":
        return BUILTIN_CORPORA[d.corpus].generate(d.seed, d.n_train, d.n_valid, d.n_test)
    if d.loader == "hub":
        records = _hub_records(d)
        examples = {split: _examples(d, records[split], f"{d.repo} split {theirs!r}")
                    for split, theirs in zip(SPLITS, d.splits)}
    elif d.format == "text":
        examples = {split: _text_examples(d, i) for i, split in enumerate(SPLITS)}
    else:
        examples = {split: _examples(d, *_local_records(d, i)) for i, split in enumerate(SPLITS)}
    caps = dict(zip(SPLITS, (d.n_train, d.n_valid, d.n_test)))
    return {split: islice(examples[split], caps[split]) for split in SPLITS}


# --- examples from records --------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` with its line breaks (any that ``str.splitlines`` knows) turned into spaces."""
    lines = text.splitlines()
    if len(lines) == 1 and lines[0] == text:
        return text
    return " ".join(line.strip() for line in lines if line.strip())


def text_lines(text: str, keep_blank: bool = False) -> list[str]:
    """The lines of ``text``, stripped; the blank ones (an empty ``text`` is one) become "" with
    ``keep_blank``, else they are left out."""
    return [line.strip() for line in text.splitlines() or [""] if keep_blank or line.strip()]


def _field(record: Mapping, path: str, key: str, where: str, index: int) -> str:
    """``record``'s field ``path`` (dotted), which ``data.<key>`` names."""
    value: Any = record
    if path in record:
        value = record[path]
    else:
        for part in path.split("."):
            if not isinstance(value, Mapping) or part not in value:
                has = ", ".join(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
                raise SourceError(f"data.{key}={path!r}: record {index} of {where} has no field "
                                  f"{part!r} (it has: {has})")
            value = value[part]
    if not isinstance(value, str):
        raise SourceError(f"data.{key}={path!r}: record {index} of {where} holds "
                          f"{type(value).__name__} {str(value)[:40]!r}, not text")
    return value


def _examples(d: DataConfig, records: Iterable[Mapping], where: str) -> Iterator[Example]:
    if d.task == "language_modeling":
        for i, record in enumerate(records):
            yield from text_lines(_field(record, d.text_field, "text_field", where, i), d.keep_blank_lines)
        return
    for i, record in enumerate(records):
        source = one_line(_field(record, d.source_field, "source_field", where, i))
        target = one_line(_field(record, d.target_field, "target_field", where, i))
        if source and target:
            yield source, target


# --- hub ----------------------------------------------------------------------------------------


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache")
                / "huggingface").expanduser()


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded repositories, read from the environment now (the
    library reads it once, at import)."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(cache).expanduser() if cache else hf_home() / "hub"


def datasets_cache_dir() -> Path:
    cache = os.environ.get("HF_DATASETS_CACHE")
    return Path(cache).expanduser() if cache else hf_home() / "datasets"


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline_reason() -> str | None:
    """Why the Hub must not (or cannot) be asked, or None: an offline variable, or no TCP
    connection to the endpoint within ``PROBE_TIMEOUT_S`` (DNS included). Behind a proxy the
    connection test would say nothing, so the Hub client's own timeouts decide."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return f"{var}={os.environ[var]} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urllib.parse.urlsplit(hub_endpoint())
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    failure: list[str] = ["no answer"]

    def connect():
        try:
            socket.create_connection(address, timeout=PROBE_TIMEOUT_S).close()
            failure.clear()
        except OSError as err:
            failure[0] = str(err) or type(err).__name__

    # a thread, so that a slow name lookup cannot hold us past the timeout either
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(PROBE_TIMEOUT_S + 0.5)
    return f"{hub_endpoint()} cannot be reached ({failure[0]})" if failure else None


def _describe(d: DataConfig) -> str:
    parts = [f"subset {d.subset}"] if d.subset else [f"folder {d.data_dir}"] if d.data_dir else []
    parts += [f"revision {d.revision}"] if d.revision else []
    return f"{d.repo} ({', '.join(parts)})" if parts else d.repo


def _snapshot(d: DataConfig, patterns: list[str] | None, offline: str | None) -> Path:
    """The repository folder in the Hugging Face cache with (at least) the files matching
    ``patterns``, downloaded first unless ``offline`` says why not."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(
            d.repo, repo_type="dataset", revision=d.revision, allow_patterns=patterns,
            ignore_patterns=["*.duckdb"],  # the Parquet conversions' search indexes, not data
            cache_dir=cache, local_files_only=offline is not None, endpoint=hub_endpoint(),
            etag_timeout=HUB_ETAG_TIMEOUT_S))
    except LocalEntryNotFoundError as err:
        reason = offline or first_line(err).removeprefix("Got: ")
        raise HubDatasetUnavailable(
            f"data.repo: the dataset {_describe(d)} is not in the Hugging Face cache {cache} and "
            f"cannot be downloaded now: {reason}. Download it once with network access (into the "
            "same HF_HOME or HF_HUB_CACHE; then HF_DATASETS_OFFLINE=1 reads it from the cache), or "
            "use a copy on disk: data=local data.path=DIR data.format=parquet|jsonl|tsv|text "
            "(conf/data/local.yaml)") from None
    except RevisionNotFoundError:
        raise SourceError(f"data.revision={d.revision!r}: {d.repo} has no such revision on the Hub") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise SourceError(f"data.repo={d.repo!r}: no such dataset on the Hub, or it needs a login "
                          "(`hf auth login`)") from None
    except HfHubHTTPError as err:
        raise SourceError(f"data.repo={d.repo!r}: the Hub answered "
                          f"{first_line(err)}") from None


def _card_data_files(root: Path, d: DataConfig) -> dict[str, list[str]]:
    """``{split: [file patterns]}`` of the config ``data.subset`` in the dataset card."""
    from datasets.data_files import sanitize_patterns
    from huggingface_hub import DatasetCard

    readme = root / "README.md"
    if not readme.is_file():
        raise SourceError(f"data.subset={d.subset!r}: {_describe(d)} has no dataset card (README.md) "
                          "to name subsets; for a Parquet conversion (revision refs/convert/parquet) "
                          "set data.subset=null and data.data_dir to the subset's folder")
    configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
    names = [config.get("config_name", "default") for config in configs]
    if d.subset not in names:
        raise SourceError(f"data.subset={d.subset!r}: the dataset card of {d.repo} has no such "
                          f"config (it has: {', '.join(names) or 'none'})")
    data_files = configs[names.index(d.subset)].get("data_files")
    if not data_files:
        raise SourceError(f"data.subset={d.subset!r}: the dataset card of {d.repo} names no "
                          "data_files for it")
    return sanitize_patterns(data_files)


def _hub_records(d: DataConfig) -> dict[str, Iterable[Mapping]]:
    """Our split -> the records of the source's split, streamed from the cached files."""
    import datasets

    offline = offline_reason()
    if d.data_dir:
        root = _snapshot(d, [f"{d.data_dir}/*"], offline)
        kwargs: dict[str, Any] = {"path": str(root), "data_dir": d.data_dir}
    elif d.subset:
        # the card says which files make the subset's splits: fetch those only
        patterns = _card_data_files(_snapshot(d, ["README.md"], offline), d)
        root = _snapshot(d, ["README.md", *(p for ps in patterns.values() for p in ps)], offline)
        data_files = {split: _matching_files(root, ps, d, split) for split, ps in patterns.items()}
        builders = {_BUILDERS.get(Path(f).suffix) for files in data_files.values() for f in files}
        if len(builders) != 1 or None in builders:
            raise SourceError(f"data.subset={d.subset!r}: cannot read the files of {_describe(d)} "
                              f"(file types {sorted(map(str, builders))})")
        kwargs = {"path": builders.pop(), "data_files": data_files}
    else:
        root = _snapshot(d, None, offline)
        kwargs = {"path": str(root)}
    try:
        ds = datasets.load_dataset(**kwargs, streaming=True, cache_dir=str(datasets_cache_dir()))
    except (FileNotFoundError, ValueError) as err:
        raise SourceError(f"data.repo: cannot read {_describe(d)} from {root}: "
                          f"{first_line(err)}") from None
    missing = [f"data.splits[{i}]={name!r}" for i, name in enumerate(d.splits) if name not in ds]
    if missing:
        raise SourceError(f"{', '.join(missing)}: {_describe(d)} has no such split "
                          f"(it has: {', '.join(ds)})")
    return {split: ds[name] for split, name in zip(SPLITS, d.splits)}


def _matching_files(root: Path, patterns: list[str], d: DataConfig, split: str) -> list[str]:
    files = sorted({str(p) for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    if not files:
        raise SourceNotFound(f"data.subset={d.subset!r}: no files of split {split!r} "
                             f"({', '.join(patterns)}) in {root}")
    return files


# --- local files --------------------------------------------------------------------------------


@contextmanager
def _open(path: Path, newline: str | None = None):
    """``path`` (gzipped if it ends in .gz) as UTF-8 text; a byte-order mark is dropped. A file
    that is not UTF-8, or not gzip behind its .gz, fails while it is read with a line naming it."""
    gz = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rt", encoding="utf-8-sig", newline=newline) if gz else
              open(path, encoding="utf-8-sig", newline=newline)) as f:
            yield f
    except UnicodeDecodeError as err:
        raise SourceError(f"{path} is not UTF-8 text (byte {err.start}{' after decompression' if gz else ''}: "
                          f"{err.reason}): convert it, e.g. with iconv -t UTF-8") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise SourceError(f"{path} is not a readable gzip file ({err or 'it ends too early'}): "
                          "recompress it, or drop the .gz from its name if it is plain text") from None


def _local_file(d: DataConfig, i: int, suffix: str, key: str | None = None) -> Path:
    """``{data.path}/{split}.{suffix}`` or its ``.gz``; ``key`` names the key behind ``suffix``."""
    folder = Path(d.path).expanduser()
    if not folder.is_dir():
        raise SourceNotFound(f"data.path={d.path!r} is not a directory")
    path = folder / f"{d.splits[i]}.{suffix}"
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    keys = ["data.path", f"data.splits[{i}]={d.splits[i]!r}"] + ([key] if key else [])
    raise SourceNotFound(f"{path} not found (nor {path.name}.gz): data.format={d.format} reads "
                         f"{{path}}/{{split}}.{suffix}; fix {', '.join(keys)}")


def _count_lines(path: Path) -> int:
    with _open(path) as f:
        return sum(1 for _ in f)


def _text_examples(d: DataConfig, i: int) -> Iterator[Example]:
    if d.task == "language_modeling":
        path = _local_file(d, i, d.text_field or "txt", "data.text_field" if d.text_field else None)
        return (line for text in _read_lines(path) for line in text_lines(text, d.keep_blank_lines))
    source = _local_file(d, i, d.source_field or d.source_lang,
                         "data.source_field" if d.source_field else "data.source_lang")
    target = _local_file(d, i, d.target_field or d.target_lang,
                         "data.target_field" if d.target_field else "data.target_lang")
    n_source, n_target = _count_lines(source), _count_lines(target)
    if n_source != n_target:
        raise SourceError(f"{source} has {n_source} lines but {target} has {n_target}: the two "
                          "sides of a parallel text must have one line per sentence pair")
    pairs = ((one_line(s), one_line(t)) for s, t in zip(_read_lines(source), _read_lines(target)))
    return ((s, t) for s, t in pairs if s and t)


def _read_lines(path: Path) -> Iterator[str]:
    with _open(path) as f:
        for line in f:
            yield line.rstrip("\r\n")


def _local_records(d: DataConfig, i: int) -> tuple[Iterator[Mapping], str]:
    path = _local_file(d, i, d.format)
    readers = {"tsv": _tsv_records, "jsonl": _jsonl_records, "parquet": _parquet_records}
    return readers[d.format](path), str(path)


def _tsv_records(path: Path) -> Iterator[Mapping]:
    with _open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            if None in row or None in row.values():  # extra cells go to key None, missing are None
                cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, ()))
                raise SourceError(f"{path}:{reader.line_num}: {cells} columns where the header has "
                                  f"{len(reader.fieldnames)}")
            yield row


def _jsonl_records(path: Path) -> Iterator[Mapping]:
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SourceError(f"{path}:{number}: not a JSON object ({err})") from None
            if not isinstance(record, dict):
                raise SourceError(f"{path}:{number}: a JSON {type(record).__name__}, not an object")
            yield record


def _parquet_records(path: Path) -> Iterator[Mapping]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise SourceError(f"{path} is not a readable Parquet file ({first_line(err)})") from None
