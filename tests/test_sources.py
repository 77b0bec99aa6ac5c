"""The download stage on real datasets, offline: every conf/data preset, each Hub loader on files in
its repository's real layout and schema, the local formats, and the errors.

A Hub dataset is "downloaded" by writing its files where huggingface_hub keeps a download, a
snapshot folder of the repository in the cache (``$HF_HOME/hub/datasets--<owner>--<name>/
snapshots/<commit>/``, a branch such as ``refs/convert/parquet`` recorded in ``refs/``): from there
on the code under test runs unchanged, as it does offline (``HF_HUB_OFFLINE=1``) after a real
download. Nothing here touches the network or anything outside ``tmp_path``.
"""

import gzip
import json
import re
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import download as download_stage
from lmlab.config import CONF_DIR, ConfigError, build_config, compose
from lmlab.data.batching import TextDataset
from lmlab.data.corpus import generate_corpus
from lmlab.data.download import download
from lmlab.data.prepare import prepare
from lmlab.data.sources import BUILTIN_CORPORA, SourceError, SourceNotFound, load_splits
from lmlab.data.tokenizer import EOS, decode, load_tokenizer

PRESETS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
HUB_PRESETS = ["cnn_dailymail", "iwslt2017_de_en", "multi30k", "tiny_shakespeare", "wikitext103",
               "wikitext2", "wmt14_en_de", "wmt16_ro_en", "xsum"]
LOCAL_OK = ["data.path=/nowhere", "data.source_lang=en", "data.target_lang=fr"]


def data_config(*overrides):
    # a decoder-only model, so that the language-modelling presets build too (Config.check)
    return build_config(compose(["model=gpt-tiny", *overrides])).data


def read_raw(raw: Path) -> dict[str, list[str]]:
    return {f.name: f.read_text(encoding="utf-8").split("\n") for f in sorted(raw.iterdir())}


# --- the presets ----------------------------------------------------------------------------------


def test_the_presets_are_the_ones_documented():
    assert PRESETS == sorted(["lm_text", "lm_text_both", "local", "summaries", "synthetic", "synthetic_hard",
                              *HUB_PRESETS])


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_and_says_what_it_is(name):
    d = data_config(f"data={name}", *(LOCAL_OK if name == "local" else ()))
    text = (CONF_DIR / "data" / f"{name}.yaml").read_text()
    assert d.name == name and f"data={name}" in text.split("\nname:")[0]
    metric = {"translation": "BLEU", "summarization": "ROUGE", "language_modeling": "perplexity"}
    assert name == "synthetic" or metric[d.task] in text.split("\nname:")[0]
    if d.loader == "hub":
        assert d.revision is not None
        if not re.fullmatch(r"[0-9a-f]{40}", d.revision):
            # not a commit: the Parquet conversion of a script-only repository, and it says so
            assert d.revision == "refs/convert/parquet" and "loading script" in text


def test_the_default_is_the_synthetic_corpus_unchanged():
    d = data_config()
    assert (d.name, d.loader, d.corpus, d.seed, d.n_train, d.n_valid, d.n_test) == (
        "synthetic", "builtin", "synthetic", 1234, 20000, 1000, 1000)
    assert BUILTIN_CORPORA["synthetic"].task == "translation"


def test_local_needs_a_path():
    with pytest.raises(ConfigError, match=r"^data.path is required for data.loader=local"):
        data_config("data=local")


@pytest.mark.parametrize("overrides, message", [
    (["data.loader=web"], "data.loader='web' must be one of builtin, hub, local"),
    (["data.corpus=news"], "data.corpus='news' must be one of synthetic"),
    (["data.task=summarization"], "data.task='summarization' does not match data.corpus=synthetic"),
    (["data.n_train=null"], "data.n_train=None must be >= 1 (examples to generate)"),
    (["data.repo=wmt/wmt14"], "data.repo='wmt/wmt14' is read by data.loader=hub only"),
    (["data=wmt14_en_de", "data.n_test=0"], "data.n_test=0 must be >= 1 (keep the first N) or null"),
    (["data=wmt14_en_de", "data.repo=wmt14"], "data.repo='wmt14' must name a Hugging Face dataset"),
    (["data=wmt14_en_de", "data.target_lang=German"], "data.target_lang='German' must be an ISO 639"),
    (["data=wmt14_en_de", "data.source_field=null"], "data.source_field=None must name the field"),
    (["data=wmt14_en_de", "data.path=/data"], "data.path='/data' is read by data.loader=local only"),
    (["data=wmt14_en_de", "data.seed=1"], "data.seed=1 is read by data.loader=builtin only"),
    (["data=xsum", "data.subset=default"], "data.subset='default' must be null when data.data_dir"),
    (["data=wikitext2", "data.target_field=x"], "data.target_field='x' is not read for data.task"),
    (["data=wikitext2", "data.target_lang=en"], "data.target_lang='en' must be null for data.task"),
    (["data=local", "data.path=/d"], "data.source_field and data.source_lang are both null"),
    (["data=local", *LOCAL_OK, "data.format=csv"], "data.format='csv' must be one of text, tsv"),
    (["data=local", *LOCAL_OK, "data.splits=[train,'',test]"], "data.splits[1]='' must be a split"),
])
def test_bad_data_keys_are_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        data_config(*overrides)
    assert message in str(err.value)


# --- the built-in loader --------------------------------------------------------------------------


def test_builtin_output_is_the_generators_lines(tmp_path):
    cfg = build_config(compose(["data.n_train=30", "data.n_valid=4", "data.n_test=5", "data.seed=7"]))
    counts = download(cfg, tmp_path)
    corpus = generate_corpus(seed=7, n_train=30, n_valid=4, n_test=5)
    assert counts == {"train": 30, "validation": 4, "test": 5}
    for split, pairs in corpus.items():
        for i, side in enumerate(("source", "target")):  # byte for byte what the stage always wrote
            assert (tmp_path / f"{split}.{side}").read_bytes() == "".join(
                p[i] + "\n" for p in pairs).encode("utf-8")
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(
        f"{s}.{side}" for s in corpus for side in ("source", "target"))


# --- Hub datasets, in their repositories' layout ----------------------------------------------------

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # what refs/convert/parquet points to here


def cache_repo(home: Path, repo: str, revision: str, files: dict[str, object]) -> Path:
    """Write ``files`` (path -> rows for .parquet, text otherwise) as huggingface_hub's download of
    ``repo`` at ``revision``."""
    folder = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else FAKE_COMMIT
    if commit != revision:
        (folder / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / revision).write_text(commit)
    snapshot = folder / "snapshots" / commit
    for name, content in files.items():
        path = snapshot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(content), path)
        else:
            path.write_text(content, encoding="utf-8")
    return snapshot


def card(configs: dict[str, tuple[str, ...]]) -> str:
    """A dataset card whose YAML lists ``configs`` (name -> splits) the way the Hub's Parquet
    conversions do (``<config>/<split>-*``)."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {name}/{s}-*" for s in splits]
    return "\n".join(lines + ["---", "# Dataset Card", ""])


def translation(a: str, b: str, rows: list[tuple[str, str]]) -> list[dict]:
    return [{"translation": {a: x, b: y}} for x, y in rows]


SPLIT_NAMES = ("train", "validation", "test")


def hub_fixture(name: str) -> tuple[dict, dict[str, list[str]]]:
    """(files in the repository's layout and schema, the raw files the stage must write)."""
    if name == "wmt14_en_de":  # de-en/<split>-0000i-of-0000n.parquet, {translation: {de, en}}
        files = {"README.md": card({"cs-en": SPLIT_NAMES, "de-en": SPLIT_NAMES, "fr-en": SPLIT_NAMES}),
                 "de-en/train-00000-of-00002.parquet": translation("de", "en", [
                     ("Guten Morgen .", "Good morning ."), ("Danke !", "Thanks !")]),
                 "de-en/train-00001-of-00002.parquet": translation("de", "en", [
                     ("Ja\nnein", "Yes\nno"), ("", "empty source")]),
                 "de-en/validation-00000-of-00001.parquet": translation("de", "en", [("Haus", "house")]),
                 "de-en/test-00000-of-00001.parquet": translation("de", "en", [("Baum", "tree")])}
        return files, {"train.source": ["Good morning .", "Thanks !", "Yes no", ""],
                       "train.target": ["Guten Morgen .", "Danke !", "Ja nein", ""],
                       "validation.source": ["house", ""], "validation.target": ["Haus", ""],
                       "test.source": ["tree", ""], "test.target": ["Baum", ""]}
    if name == "wmt16_ro_en":
        files = {"README.md": card({"cs-en": SPLIT_NAMES, "ro-en": SPLIT_NAMES}),
                 "ro-en/train-00000-of-00001.parquet": translation("ro", "en", [("Bună ziua", "Hello")]),
                 "ro-en/validation-00000-of-00001.parquet": translation("ro", "en", [("casă", "house")]),
                 "ro-en/test-00000-of-00001.parquet": translation("ro", "en", [("pom", "tree")])}
        return files, {"train.source": ["Bună ziua", ""], "train.target": ["Hello", ""],
                       "validation.source": ["casă", ""], "validation.target": ["house", ""],
                       "test.source": ["pom", ""], "test.target": ["tree", ""]}
    if name == "iwslt2017_de_en":  # refs/convert/parquet: <subset>/<split>/0000.parquet
        files = {f"{sub}/{s}/0000.parquet": translation("de", "en", [(f"{sub} {s} de", f"{s} en")])
                 for sub in ("iwslt2017-de-en", "iwslt2017-de-it") for s in SPLIT_NAMES}
        return files, {f"{s}.{side}": [f"iwslt2017-de-en {s} de" if side == "source" else f"{s} en", ""]
                       for s in SPLIT_NAMES for side in ("source", "target")}
    if name == "multi30k":  # JSON Lines at the root, no configs: val.jsonl is the validation split
        files = {"README.md": "---\ntask_categories:\n- translation\n---\n# Multi30k\n",
                 **{f"{f}.jsonl": "".join(json.dumps({"en": f"{f} {i} en", "de": f"{f} {i} de"}) + "\n"
                                          for i in range(2)) for f in ("train", "val", "test")}}
        return files, {f"{s}.{side}": [f"{f} {i} {lang}" for i in range(2)] + [""]
                       for s, f in zip(SPLIT_NAMES, ("train", "val", "test"))
                       for side, lang in (("source", "de"), ("target", "en"))}
    if name == "cnn_dailymail":  # 3.0.0/<split>-*.parquet, {article, highlights, id}
        rows = {s: [{"article": f"({s}) A storm hit .\nIt rained.\n", "highlights": f"Storm {s} .\nRain .",
                     "id": "0f3c"}] for s in SPLIT_NAMES}
        files = {"README.md": card({"1.0.0": SPLIT_NAMES, "2.0.0": SPLIT_NAMES, "3.0.0": SPLIT_NAMES}),
                 **{f"3.0.0/{s}-00000-of-00001.parquet": rows[s] for s in SPLIT_NAMES}}
        return files, {**{f"{s}.source": [f"({s}) A storm hit . It rained.", ""] for s in SPLIT_NAMES},
                       **{f"{s}.target": [f"Storm {s} . Rain .", ""] for s in SPLIT_NAMES}}
    if name == "xsum":  # refs/convert/parquet: default/<split>/0000.parquet, {document, summary, id}
        files = {f"default/{s}/0000.parquet": [{"document": f"Doc {s},\nline two.", "summary": f"Sum {s}.",
                                                "id": "3"}] for s in SPLIT_NAMES}
        return files, {**{f"{s}.source": [f"Doc {s}, line two.", ""] for s in SPLIT_NAMES},
                       **{f"{s}.target": [f"Sum {s}.", ""] for s in SPLIT_NAMES}}
    if name in ("wikitext2", "wikitext103"):  # <subset>/<split>-*.parquet, {text}: one row a line
        subset = {"wikitext2": "wikitext-2-raw-v1", "wikitext103": "wikitext-103-raw-v1"}[name]
        subsets = ["wikitext-103-raw-v1", "wikitext-103-v1", "wikitext-2-raw-v1", "wikitext-2-v1"]
        rows = [{"text": ""}, {"text": " = Valkyria Chronicles III = \n"}, {"text": ""},
                {"text": " Senjō no Valkyria 3 is a game . \n"}]
        files = {"README.md": card({s: SPLIT_NAMES for s in subsets}),
                 **{f"{subset}/{s}-00000-of-00001.parquet": rows for s in SPLIT_NAMES}}
        return files, {f"{s}.text": ["= Valkyria Chronicles III =", "Senjō no Valkyria 3 is a game .", ""]
                       for s in SPLIT_NAMES}
    if name == "tiny_shakespeare":  # refs/convert/parquet: default/<split>/0000.parquet, one {text}
        text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
        files = {f"default/{s}/0000.parquet": [{"text": text}] for s in SPLIT_NAMES}
        return files, {f"{s}.text": ["First Citizen:", "Before we proceed any further, hear me speak.",
                                     "All:", "Speak, speak.", ""] for s in SPLIT_NAMES}
    raise KeyError(name)


@pytest.mark.parametrize("name", HUB_PRESETS)
def test_hub_preset_reads_its_repository_layout(name, hf_home, tmp_path):
    cfg = build_config(compose(["model=gpt-tiny", f"data={name}"]))
    files, expected = hub_fixture(name)
    cache_repo(hf_home, cfg.data.repo, cfg.data.revision, files)
    counts = download(cfg, tmp_path / "raw")
    assert read_raw(tmp_path / "raw") == expected
    first = "train.text" if cfg.data.task == "language_modeling" else "train.source"
    assert counts["train"] == len(expected[first]) - 1


def test_caps_keep_the_first_examples_in_the_sources_order(hf_home, tmp_path):
    cfg = build_config(compose(["data=wmt14_en_de", "data.n_train=3", "data.n_test=1"]))
    cache_repo(hf_home, cfg.data.repo, cfg.data.revision, hub_fixture("wmt14_en_de")[0])
    assert download(cfg, tmp_path / "raw") == {"train": 3, "validation": 1, "test": 1}
    assert (tmp_path / "raw" / "train.source").read_text() == "Good morning .\nThanks !\nYes no\n"


def test_a_cached_dataset_loads_with_HF_DATASETS_OFFLINE_alone(hf_home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    d = data_config("data=wikitext2", "data.n_valid=1")
    cache_repo(hf_home, d.repo, d.revision, hub_fixture("wikitext2")[0])
    splits = load_splits(d)
    assert list(splits["validation"]) == ["= Valkyria Chronicles III ="]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_an_unreachable_hub_means_the_cache_without_any_offline_variable(hf_home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    d = data_config("data=tiny_shakespeare", "data.n_train=2")
    cache_repo(hf_home, d.repo, d.revision, hub_fixture("tiny_shakespeare")[0])
    assert list(load_splits(d)["train"]) == ["First Citizen:",
                                             "Before we proceed any further, hear me speak."]


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", None])
def test_a_dataset_missing_from_the_cache_fails_at_once_with_one_message(offline, hf_home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    if offline:
        monkeypatch.setenv(offline, "1")
    else:  # no variable, and nothing answers at the endpoint
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    with pytest.raises(SourceNotFound) as err:
        load_splits(data_config("data=wmt14_en_de"))
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "\n" not in message
    assert ("the dataset wmt/wmt14 (subset de-en, revision "
            "b199e406369ec1b7634206d3ded5ba45de2fe696)") in message
    assert f"is not in the Hugging Face cache {hf_home / 'hub'} and cannot be downloaded now: " in message
    assert (f"{offline}=1 is set" if offline else "cannot be reached") in message
    assert "HF_DATASETS_OFFLINE=1 reads it from the cache" in message
    assert "data=local data.path=DIR" in message


def test_the_stage_reports_an_offline_hub_in_one_line_and_writes_nothing(hf_home, tmp_path, capsys):
    raw = tmp_path / "raw"
    assert download_stage.main(["data=xsum", f"--raw-dir={raw}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data.repo: the dataset EdinburghNLP/xsum "
                                               "(folder default, revision refs/convert/parquet)")
    assert not raw.exists()


def test_hub_errors_name_the_key(hf_home):
    d = data_config("data=wmt14_en_de", "data.subset=en-de")
    cache_repo(hf_home, d.repo, d.revision, hub_fixture("wmt14_en_de")[0])
    with pytest.raises(SourceError, match=r"data.subset='en-de': the dataset card of wmt/wmt14 has "
                                          r"no such config \(it has: cs-en, de-en, fr-en\)"):
        load_splits(d)
    d = data_config("data=wmt14_en_de", "data.splits=[train,dev,test]")
    with pytest.raises(SourceError, match=r"data.splits\[1\]='dev': wmt/wmt14 .* has no such split "
                                          r"\(it has: train, validation, test\)"):
        load_splits(d)
    d = data_config("data=wmt14_en_de", "data.source_field=translation.fr")
    with pytest.raises(SourceError, match=r"data.source_field='translation.fr': record 0 of wmt/wmt14 "
                                          r"split 'train' has no field 'fr' \(it has: de, en\)"):
        list(load_splits(d)["train"])


# --- local files ---------------------------------------------------------------------------------


def write(path: Path, lines: list[str]) -> Path:
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def local(path: Path, *overrides: str):
    return build_config(compose(["model=gpt-tiny", "data=local", f"data.path={path}", *overrides]))


def test_local_text_plain_and_gzipped_with_the_sources_split_names(tmp_path):
    src = tmp_path / "multi30k"
    src.mkdir()
    write(src / "train.en.gz", ["A man .", "Two dogs .", "", "A cat ."])
    write(src / "train.fr.gz", ["Un homme .", "Deux chiens .", "(vide)", "Un chat ."])
    write(src / "val.en", ["A boy ."])
    write(src / "val.fr", ["Un garçon ."])
    write(src / "test_2016_flickr.en", ["A girl .", "A bird ."])
    write(src / "test_2016_flickr.fr", ["Une fille .", "Un oiseau ."])
    cfg = local(src, "data.source_lang=en", "data.target_lang=fr", "data.n_test=1",
                "data.splits=[train,val,test_2016_flickr]")
    assert download(cfg, tmp_path / "raw") == {"train": 3, "validation": 1, "test": 1}
    assert read_raw(tmp_path / "raw") == {
        "test.source": ["A girl .", ""], "test.target": ["Une fille .", ""],
        "train.source": ["A man .", "Two dogs .", "A cat .", ""],  # the pair with an empty side is skipped
        "train.target": ["Un homme .", "Deux chiens .", "Un chat .", ""],
        "validation.source": ["A boy .", ""], "validation.target": ["Un garçon .", ""]}


def test_local_text_for_language_modelling(tmp_path):
    for split in SPLIT_NAMES:
        write(tmp_path / f"{split}.txt", [f"  {split} one ", "", f"{split} two"])
    cfg = local(tmp_path, "data.task=language_modeling", "data.source_lang=en")
    download(cfg, tmp_path / "raw")
    assert read_raw(tmp_path / "raw")["validation.text"] == ["validation one", "validation two", ""]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "test.text", "train.text", "validation.text"]


def test_keep_blank_lines_keeps_them_as_empty_lines_that_become_lone_eos(tmp_path):
    for split in SPLIT_NAMES:
        write(tmp_path / f"{split}.txt", ["ROMEO:", "  Speak. ", "", "JULIET:", " ", "Ay."])
    cfg = local(tmp_path, "data.task=language_modeling", "data.keep_blank_lines=true", "tokenizer=char",
                "tokenizer.min_frequency=1")
    download(cfg, tmp_path / "raw")
    assert read_raw(tmp_path / "raw")["test.text"] == ["ROMEO:", "Speak.", "", "JULIET:", "", "Ay.", ""]
    prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    tokenizer = load_tokenizer(tmp_path / "prepared" / "tokenizer.json")
    stream = TextDataset(tmp_path / "prepared", "test", 1).stream.tolist()
    lines = [decode(tokenizer, ids, "text") for ids in split_at(stream, EOS)]
    assert lines == ["ROMEO:", "Speak.", "", "JULIET:", "", "Ay."]  # a blank line is EOS EOS
    assert stream.count(EOS) == 6


def split_at(stream: list[int], sep: int) -> list[list[int]]:
    """``stream`` cut after every ``sep``, which is dropped (the stream ends with one)."""
    out, cur = [], []
    for token in stream:
        if token == sep:
            out.append(cur)
            cur = []
        else:
            cur.append(token)
    assert not cur
    return out


@pytest.mark.parametrize("name", ["tiny_shakespeare", "wikitext2"])
def test_hub_text_with_keep_blank_lines(name, hf_home, tmp_path):
    cfg = build_config(compose(["model=gpt-tiny", f"data={name}", "data.keep_blank_lines=true"]))
    cache_repo(hf_home, cfg.data.repo, cfg.data.revision, hub_fixture(name)[0])
    download(cfg, tmp_path / "raw")
    assert read_raw(tmp_path / "raw")["train.text"] == {
        # a blank record (WikiText's paragraph break) is a blank line too
        "wikitext2": ["", "= Valkyria Chronicles III =", "", "Senjō no Valkyria 3 is a game .", ""],
        "tiny_shakespeare": ["First Citizen:", "Before we proceed any further, hear me speak.", "", "All:",
                             "Speak, speak.", ""]}[name]


def test_local_tsv_jsonl_and_parquet_with_field_paths(tmp_path):
    (tmp_path / "tsv").mkdir()
    for split in SPLIT_NAMES:  # columns named with a dot, read as they are
        write(tmp_path / "tsv" / f"{split}.tsv", ["id\ttext.en\ttext.fr", f"1\t{split} \"en\"\t{split} fr"])
    cfg = local(tmp_path / "tsv", "data.format=tsv", "data.source_field=text.en", "data.target_field=text.fr")
    assert list(load_splits(cfg.data)["test"]) == [('test "en"', "test fr")]

    (tmp_path / "jsonl").mkdir()
    for split in SPLIT_NAMES:  # summarization: a document over several lines becomes one
        write(tmp_path / "jsonl" / f"{split}.jsonl.gz", [json.dumps({"doc": {"body": f"{split}\nbody\n"},
                                                                     "sum": f"{split} sum"}), ""])
    cfg = local(tmp_path / "jsonl", "data.task=summarization", "data.format=jsonl",
                "data.source_field=doc.body", "data.target_field=sum")
    assert list(load_splits(cfg.data)["train"]) == [("train body", "train sum")]

    (tmp_path / "parquet").mkdir()
    for split in SPLIT_NAMES:
        pq.write_table(pa.Table.from_pylist(translation("de", "en", [(f"{split} de", f"{split} en")])),
                       tmp_path / "parquet" / f"{split}.parquet")
    cfg = local(tmp_path / "parquet", "data.format=parquet", "data.source_field=translation.en",
                "data.target_field=translation.de")
    assert list(load_splits(cfg.data)["validation"]) == [("validation en", "validation de")]


def test_local_missing_file_names_it_and_the_keys(tmp_path):
    for split in SPLIT_NAMES:
        write(tmp_path / f"{split}.en", ["a"])
    write(tmp_path / "train.fr", ["b"])
    cfg = local(tmp_path, "data.source_lang=en", "data.target_lang=fr")
    with pytest.raises(SourceNotFound) as err:
        load_splits(cfg.data)
    assert str(err.value) == (f"{tmp_path}/validation.fr not found (nor validation.fr.gz): "
                              "data.format=text reads {path}/{split}.fr; fix data.path, "
                              "data.splits[1]='validation', data.target_lang")
    with pytest.raises(SourceNotFound, match=r"^data.path='/no/such/dir' is not a directory$"):
        load_splits(local(Path("/no/such/dir"), "data.source_lang=en", "data.target_lang=fr").data)


def test_local_parallel_files_of_different_lengths_are_refused(tmp_path):
    for split in SPLIT_NAMES:
        write(tmp_path / f"{split}.de", ["x", "y", "z"])
        write(tmp_path / f"{split}.en", ["x", "y", "z"])
    write(tmp_path / "test.en", ["x", "y"])
    cfg = local(tmp_path, "data.source_lang=de", "data.target_lang=en", "data.n_test=1")
    with pytest.raises(SourceError) as err:
        load_splits(cfg.data)
    assert str(err.value) == (f"{tmp_path}/test.de has 3 lines but {tmp_path}/test.en has 2: the two "
                              "sides of a parallel text must have one line per sentence pair")


def test_a_failed_download_leaves_the_old_files_and_switching_task_removes_stale_ones(tmp_path, capsys):
    raw = tmp_path / "raw"
    download(build_config(compose(["data.n_train=3", "data.n_valid=2", "data.n_test=2"])), raw)
    before = read_raw(raw)
    src = tmp_path / "src"
    src.mkdir()
    for split in SPLIT_NAMES:
        write(src / f"{split}.jsonl", [json.dumps({"text": f"{split} line"})])
    write(src / "test.jsonl", ["{not json"])
    overrides = ["model=gpt-tiny", "data=local", f"data.path={src}", "data.format=jsonl", "data.task=language_modeling",
                 "data.text_field=text"]
    assert download_stage.main([*overrides, f"--raw-dir={raw}"]) == 2
    assert capsys.readouterr().err == (f"error: {src}/test.jsonl:1: not a JSON object (Expecting "
                                       "property name enclosed in double quotes: line 1 column 2 "
                                       "(char 1))\n")
    assert read_raw(raw) == before  # train and validation were written, but nothing was replaced
    write(src / "test.jsonl", [json.dumps({"text": "test line"})])
    assert download_stage.main([*overrides, f"--raw-dir={raw}"]) == 0
    assert read_raw(raw) == {f"{s}.text": [f"{s} line", ""] for s in ("test", "train", "validation")}


def test_local_rows_that_do_not_fit_the_header_are_refused(tmp_path):
    for split in SPLIT_NAMES:
        write(tmp_path / f"{split}.tsv", ["\ufeffen\tfr", "a\tb"])  # a byte-order mark is dropped
    write(tmp_path / "train.tsv", ["en\tfr", "a\tb", "c\td\te"])
    cfg = local(tmp_path, "data.format=tsv", "data.source_field=en", "data.target_field=fr")
    splits = load_splits(cfg.data)
    assert list(splits["test"]) == [("a", "b")]
    with pytest.raises(SourceError, match=rf"^{tmp_path}/train.tsv:3: 3 columns where the header has 2$"):
        list(splits["train"])
