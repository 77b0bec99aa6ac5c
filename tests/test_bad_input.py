"""Bad input at every door ends the same way: exit status 2, exactly one ``error: ...`` line on
stderr that names the key or file, no traceback, and nothing written.

Each case runs a stage script's ``main()`` in this process (the status it returns is the process's
exit status: each script ends in ``raise SystemExit(main())``), inside an empty working directory,
and compares the tree of that directory before and after. A few cases run as real subprocesses, to
check the door itself. The model files are built from random weights (``save_model``): what is
tested is how a file is read, not what the model learnt.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, child_env

from lmlab.config import build_config, compose
from lmlab.data.tokenizer import PAD, load_tokenizer, train_tokenizer
from lmlab.model.checkpoint import save_model
from lmlab.model.transformer import ModelConfig, Transformer

MALICIOUS_MARK = "pwned-by-unpickling"


class Evil:
    """Unpickling this object calls ``os.system``: it would create ``MALICIOUS_MARK`` in the cwd."""

    def __reduce__(self):
        return os.system, (f"touch {MALICIOUS_MARK}",)


@dataclass
class Case:
    id: str
    script: str  # the module name of a stage script in src/
    args: list  # str, or a callable of the fixture paths giving str
    expect: str  # in the one error line (after "error: "), with {name} fields of the paths
    stdin: bytes | None = None
    files: dict = field(default_factory=dict)  # relative path -> bytes, written before the run


SHRUNK = ["model.n_embd=32", "model.n_head=2", "model.n_decoder_layer=1", "model.d_ff=64"]
LM = ["data=lm_text", "model=gpt-tiny", *SHRUNK]  # a language model (decoder-only)


def tiny_cfg(overrides=()):
    return build_config(compose(overrides or [*SHRUNK, "model.n_encoder_layer=1"]))


def model_file(path: Path, tokenizer_json: str, overrides=(), edit=None) -> Path:
    """A model file of the tiny architecture with random weights, optionally changed by ``edit``."""
    cfg = tiny_cfg(overrides)
    vocab = load_tokenizer(tokenizer_json).get_vocab_size()
    mcfg = ModelConfig.of(cfg, vocab, PAD)
    torch.manual_seed(0)
    weights = Transformer(mcfg).state_dict()
    if edit is not None:
        edit(weights)
    save_model(mcfg.to_dict(), weights, tokenizer_json, cfg.to_dict(), path)
    return path


@pytest.fixture(scope="module")
def fx(prepared, tmp_path_factory):
    """Read-only inputs of the cases: the tiny corpus (raw, prepared), model files good and bad,
    params files good and bad, local data files in each format."""
    root = tmp_path_factory.mktemp("bad_input")
    tok = (prepared / "prepared" / "tokenizer.json").read_text()
    other_tok = train_tokenizer(["a completely different corpus of words"] * 20, "bpe", 60, 1).to_str()
    p = {"raw": prepared / "raw", "prepared": prepared / "prepared", "root": root}
    p["model"] = model_file(root / "model.pt", tok)
    p["lm_model"] = model_file(root / "lm.pt", tok, LM)
    p["other_tok_model"] = model_file(root / "other.pt", other_tok)
    p["nan_model"] = model_file(root / "nan.pt", tok, edit=lambda w: w["embed.weight"].fill_(float("nan")))
    blob = p["model"].read_bytes()
    (root / "half.pt").write_bytes(blob[: len(blob) // 2])
    (root / "random.pt").write_bytes(os.urandom(4096))
    (root / "lfs.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                                 + "0" * 64 + "\nsize 123456\n")
    torch.save({"format": "lmlab-model-v1", "hook": Evil()}, root / "evil.pt")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    wrong = torch.load(p["model"], weights_only=True)
    wrong["model_config"]["n_embd"] = 64
    torch.save(wrong, root / "wrong_shape.pt")
    for name in ("half", "random", "lfs", "evil", "foreign", "wrong_shape"):
        p[name] = root / f"{name}.pt"
    params = compose([])
    p["params"] = root / "params.yaml"
    p["params"].write_text(yaml.safe_dump(params, sort_keys=False))
    for name, text in {"bad_yaml": "seed: 1\ntrainer: [1, 2\n", "list_yaml": "- 1\n- 2\n",
                       "unknown_yaml": yaml.safe_dump({**params, "trainer": {**params["trainer"], "bogus": 1}}),
                       "gpu_yaml": yaml.safe_dump(compose(["trainer=gpu"]), sort_keys=False),
                       "long_yaml": yaml.safe_dump({
                           **params, "model": {**params["model"], "max_len": 8},
                           "tokenizer": {**params["tokenizer"], "max_tokens": None},
                           "decoding": {**params["decoding"], "max_new_tokens": 4},
                           "sweep": {k: {**v, "max_new_tokens": 4} for k, v in params["sweep"].items()}}),
                       }.items():
        p[name] = root / f"{name}.yaml"
        p[name].write_text(text)
    p["latin1_yaml"] = root / "latin1.yaml"
    p["latin1_yaml"].write_bytes("seed: 1  # café\n".encode("latin-1"))
    return p


def local(fmt: str, **extra) -> list[str]:
    args = ["data=local", f"data.path=in/{fmt}", f"data.format={fmt}"]
    if fmt == "text":
        args += ["data.source_lang=en", "data.target_lang=fr"]
    else:
        args += ["data.source_field=en", "data.target_field=fr"]
    return args + [f"{k}={v}" for k, v in extra.items()]


def text_split(en: bytes = b"a cat\n", fr: bytes = b"un chat\n", fmt="text") -> dict:
    return {f"in/{fmt}/{s}.{lang}": data for s in ("train", "validation", "test")
            for lang, data in (("en", en), ("fr", fr))}


def jsonl_split(train: bytes) -> dict:
    good = b'{"en": "a cat", "fr": "un chat"}\n'
    return {"in/jsonl/train.jsonl": train, "in/jsonl/validation.jsonl": good, "in/jsonl/test.jsonl": good}


RAW = ["--raw-dir", "out/raw"]
# a gzip file cut halfway through its compressed data (the first line is intact)
TRUNCATED_GZ = gzip.compress(b"un chat\n" + os.urandom(3000).hex().encode())[:2000]
GEN = ["--out", "out/gen.jsonl", "--speed", "out/decode.json"]
TRAIN = ["--out-dir", "out/model", "--curves-dir", "out/curves", "--ckpt-dir", "out/ckpt"]

CASES = [
    # the Hydra door: overrides
    Case("override-not-divisible", "download", RAW + ["model.n_head=3"], "model.n_embd=128 is not divisible by model.n_head=3"),
    Case("override-unknown-key", "download", RAW + ["trainer.lrr=1"],
         "bad override in 'trainer.lrr=1': Could not override 'trainer.lrr'. (no such key; did you mean trainer.lr?)"),
    Case("override-wrong-type", "download", RAW + ["trainer.max_steps=abc"], "trainer.max_steps='abc' must be of type int"),
    Case("override-unknown-preset", "download", RAW + ["model=huge"], "model=huge"),
    Case("override-flag", "download", RAW + ["--frobnicate"], "unrecognised argument '--frobnicate'"),
    Case("max-tokens-vs-max-len", "download", RAW + ["tokenizer.max_tokens=300"],
         "tokenizer.max_tokens=300 must be <= 255 for model.max_len=256 (encoder-decoder"),
    Case("max-tokens-vs-max-len-decoder-only", "download", RAW + ["model=gpt-tiny", "tokenizer.max_tokens=300"],
         "tokenizer.max_tokens=300 must be <= 255 for model.max_len=512 (decoder-only"),
    Case("max-new-tokens-vs-max-len", "download", RAW + ["decoding.max_new_tokens=300"],
         "decoding.max_new_tokens=300 must be <= 255, what model.max_len=256 leaves"),
    Case("sweep-max-new-tokens", "download", RAW + ["sweep.beam4.max_new_tokens=999"],
         "sweep.beam4.max_new_tokens=999 must be <= 255"),
    Case("lm-prompt-longer-than-half", "download", RAW + ["data=lm_text", "model=gpt-tiny", "decoding.prompt_tokens=500"],
         "decoding.prompt_tokens=500 must be <= 255 (half of model.max_len=512"),
    Case("lm-prompt-leaves-no-room", "download", RAW + ["data=lm_text", "model=gpt-tiny", "decoding.prompt_tokens=250",
                                                        "decoding.max_new_tokens=300"],
         "decoding.max_new_tokens=300 must be <= 262, what model.max_len=512 leaves after the prompt"),
    Case("train-hydra-door", "train", ["--prepared-dir", "{prepared}", *TRAIN, "model.dropout=1.5"],
         "model.dropout=1.5 must be in [0, 1)"),
    Case("unknown-strategy", "generate", ["--model", "{model}", "--prepared-dir", "{prepared}", "--raw-dir", "{raw}",
                                          *GEN, "--strategy", "nope"], "--strategy nope: no sweep.nope in the config"),
    # the DVC door: --params files
    Case("params-bad-yaml", "download", RAW + ["--params", "{bad_yaml}"], "{bad_yaml}:3:1: not valid YAML"),
    Case("params-missing", "download", RAW + ["--params", "nope.yaml"], "nope.yaml not found"),
    Case("params-not-mapping", "download", RAW + ["--params", "{list_yaml}"], "must hold a mapping of config groups"),
    Case("params-unknown-key", "download", RAW + ["--params", "{unknown_yaml}"], "unknown config key trainer.bogus"),
    Case("params-not-utf8", "download", RAW + ["--params", "{latin1_yaml}"], "{latin1_yaml} is not UTF-8 text"),
    Case("params-and-overrides", "download", RAW + ["--params", "{params}", "seed=3"], "give either --params or overrides"),
    # local data, each format
    Case("local-no-path", "download", RAW + ["data=local"], "data.path is required for data.loader=local"),
    Case("local-not-a-dir", "download", RAW + local("text"), "data.path='in/text' is not a directory"),
    Case("local-not-utf8", "download", RAW + local("text"), "in/text/train.en is not UTF-8 text",
         files=text_split(en="caf\xe9\n".encode("latin-1"))),
    Case("local-bad-gzip", "download", RAW + local("text"), "in/text/train.fr.gz is not a readable gzip file",
         files={**text_split(), "in/text/train.fr": None, "in/text/train.fr.gz": b"un chat\n"}),
    Case("local-truncated-gzip", "download", RAW + local("text"), "in/text/train.fr.gz is not a readable gzip file",
         files={**text_split(), "in/text/train.fr": None, "in/text/train.fr.gz": TRUNCATED_GZ}),
    Case("local-line-mismatch", "download", RAW + local("text"), "in/text/train.en has 2 lines but in/text/train.fr has 1",
         files=text_split(en=b"a cat\na dog\n")),
    Case("local-tsv-columns", "download", RAW + local("tsv"), "in/tsv/train.tsv:3: 1 columns where the header has 2",
         files={f"in/tsv/{s}.tsv": b"en\tfr\na cat\tun chat\nonly one\n" for s in ("train", "validation", "test")}),
    Case("local-jsonl-not-json", "download", RAW + local("jsonl"), "in/jsonl/train.jsonl:2: not a JSON object",
         files=jsonl_split(b'{"en": "a", "fr": "b"}\n{"en": \n')),
    Case("local-jsonl-no-field", "download", RAW + local("jsonl"),
         "data.target_field='fr': record 0 of in/jsonl/train.jsonl has no field",
         files=jsonl_split(b'{"en": "a", "de": "b"}\n')),
    Case("local-parquet-corrupt", "download", RAW + local("parquet"), "in/parquet/train.parquet is not a readable Parquet file",
         files={f"in/parquet/{s}.parquet": b"PAR1 not really" for s in ("train", "validation", "test")}),
    Case("local-data-in-raw-dir", "download", ["--raw-dir", "in", *local("text")],
         "data.path='in/text' lies in in, which the download stage replaces whole", files=text_split()),
    Case("local-unknown-format", "download", RAW + ["data=local", "data.path=in", "data.format=csv"],
         "data.format='csv' must be one of text, tsv, jsonl, parquet"),
    # prepare
    Case("filters-empty-the-split", "prepare", ["--raw-dir", "{raw}", "--out-dir", "out/prepared",
                                                "tokenizer.vocab_size=300", "tokenizer.min_tokens=90", "tokenizer.max_tokens=95"],
         "prepare: the filters leave 0 of the 400 train pairs (tokenizer.min_tokens dropped 400): relax those keys"),
    Case("prepare-no-raw", "prepare", ["--raw-dir", "nowhere", "--out-dir", "out/prepared"],
         "nowhere/train.source (or .text) not found: run the download stage"),
    # model files
    Case("model-missing", "translate", ["--model", "nope.pt", "--prompt", "a cat"], "nope.pt not found"),
    Case("model-random-bytes", "translate", ["--model", "{random}", "--prompt", "a cat"],
         "{random} is not a readable PyTorch file"),
    Case("model-half-copied", "translate", ["--model", "{half}", "--prompt", "a cat"], "{half} is not a readable PyTorch file"),
    Case("model-lfs-pointer", "translate", ["--model", "{lfs}", "--prompt", "a cat"], "{lfs} is a Git LFS pointer"),
    Case("model-malicious-pickle", "translate", ["--model", "{evil}", "--prompt", "a cat"],
         "{evil} holds Python objects (posix.system), not only tensors and plain data"),
    Case("model-not-lmlab", "translate", ["--model", "{foreign}", "--prompt", "a cat"],
         "{foreign} is neither an lmlab model file nor an lmlab training checkpoint"),
    Case("model-wrong-shapes", "translate", ["--model", "{wrong_shape}", "--prompt", "a cat"],
         "{wrong_shape} does not hold a model lmlab can build"),
    Case("model-diverged", "translate", ["--model", "{nan_model}", "--prompt", "a cat"],
         "{nan_model} has non-finite weights (embed.weight): the training diverged"),
    Case("generate-other-tokenizer", "generate", ["--model", "{other_tok_model}", "--prepared-dir", "{prepared}",
                                                  "--raw-dir", "{raw}", *GEN],
         "{other_tok_model} was trained with another tokenizer than {prepared}/tokenizer.json"),
    Case("evaluate-other-tokenizer", "score", ["--model", "{other_tok_model}", "--prepared-dir", "{prepared}",
                                               "--generations", "gen.jsonl", "--metrics", "out/metrics.json"],
         "{other_tok_model} was trained with another tokenizer than {prepared}/tokenizer.json",
         files={"gen.jsonl": json.dumps({"id": 0, "source": "a", "reference": "b", "hypothesis": "b",
                                         "hyp_tokens": 1, "hit_max_len": False}).encode() + b"\n"}),
    Case("generate-no-prepared", "generate", ["--model", "{model}", "--prepared-dir", "nowhere", "--raw-dir", "{raw}", *GEN],
         "nowhere/tokenizer.json not found: run the prepare stage"),
    # checkpoints and the training data
    Case("ckpt-missing", "train", ["--params", "{params}", "--prepared-dir", "{prepared}", *TRAIN],
         "ckpt_path=nope.ckpt not found"),
    Case("ckpt-corrupt", "train", ["--params", "{params}", "--prepared-dir", "{prepared}", *TRAIN],
         "{half} is not a readable PyTorch file"),
    Case("ckpt-malicious", "train", ["--params", "{params}", "--prepared-dir", "{prepared}", *TRAIN],
         "{evil} holds Python objects (posix.system)"),
    Case("targets-longer-than-max-len", "train", ["--params", "{long_yaml}", "--prepared-dir", "{prepared}", *TRAIN],
         "{prepared}/train: 400 of 400 pairs need more than model.max_len=8 positions"),
    Case("gpu-trainer-hydra-door", "train", ["--prepared-dir", "{prepared}", *TRAIN, "trainer=gpu"],
         "trainer.accelerator=gpu but this machine has no CUDA GPU: use trainer=cpu"),
    Case("gpu-trainer-params-door", "train", ["--params", "{gpu_yaml}", "--prepared-dir", "{prepared}", *TRAIN],
         "trainer.accelerator=gpu but this machine has no CUDA GPU: use trainer=cpu"),
    Case("ckpt-dir-inside-curves-dir", "train", ["--params", "{params}", "--prepared-dir", "{prepared}", "--out-dir",
                                                 "out/model", "--curves-dir", "out/curves", "--ckpt-dir", "out/curves/ckpt"],
         "--ckpt-dir out/curves/ckpt lies inside --curves-dir out/curves, which is replaced whole at the end"),
    Case("curves-dir-holds-folders", "train", ["--params", "{params}", "--prepared-dir", "{prepared}",
                                               "--out-dir", "out/model", "--curves-dir", "in", "--ckpt-dir", "out/ckpt"],
         "in holds the folder sub/: an output folder is replaced whole", files={"in/sub/x.txt": b"keep me"}),
    # prompts
    Case("stdin-not-utf8", "translate", ["--model", "{model}"], "stdin is not UTF-8 text (byte 3", stdin=b"caf\xe9\n"),
    Case("lm-empty-prompt", "translate", ["--model", "{lm_model}"], "prompt 2 is empty: a language model continues text",
         stdin=b"To be\n\n"),
    Case("prompt-bad-decoding", "translate", ["--model", "{model}", "--prompt", "a cat", "decoding.n_best=3"],
         "decoding.n_best=3 must be between 1 and decoding.beam_size=1"),
]
# the checkpoint cases point ckpt_path at a file through their own params file
CKPT_PATHS = {"ckpt-missing": "nope.ckpt", "ckpt-corrupt": "{half}", "ckpt-malicious": "{evil}"}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_there_are_at_least_30_cases_across_every_door():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert {c.script for c in CASES} == {"download", "prepare", "train", "generate", "score", "translate"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_status_2_and_writes_nothing(case, fx, tmp_path, monkeypatch, capfd):
    import importlib

    if case.id.startswith("gpu-") and torch.cuda.is_available():
        pytest.skip("the machine has the GPU this case lacks")
    paths = {k: str(v) for k, v in fx.items()}
    for rel, data in case.files.items():
        if data is None:
            continue
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    args = [a.format(**paths) for a in case.args]
    if case.id in CKPT_PATHS:
        params = yaml.safe_load(fx["params"].read_text())
        params["ckpt_path"] = CKPT_PATHS[case.id].format(**paths)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        args[args.index("--params") + 1] = "params.yaml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMLAB_DEBUG", raising=False)
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin)))
    before = tree(tmp_path)
    capfd.readouterr()
    status = importlib.import_module(case.script).main(args)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert status == 2, f"status {status}; stderr:\n{err}"
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == "error: " + lines[0].removeprefix("error: ")
    assert case.expect.format(**paths) in lines[0]
    assert tree(tmp_path) == before, "the failed run wrote or removed files"
    assert not (tmp_path / MALICIOUS_MARK).exists()


def test_a_malicious_model_file_is_refused_before_any_of_it_runs(fx, tmp_path):
    """As a user would run it: a model file whose unpickling creates a file. Unpickled the old way
    (weights_only=False, as lmlab did before) it does create the file; through lmlab it does not."""
    env = child_env(PYTHONPATH=str(ROOT / "src"))
    for cmd in ([sys.executable, str(ROOT / "src" / "translate.py"), "--model", str(fx["evil"]), "--prompt", "a"],
                [sys.executable, str(ROOT / "src" / "generate.py"), "--model", str(fx["evil"]), "--prepared-dir",
                 str(fx["prepared"]), "--raw-dir", str(fx["raw"]), "--out", "g.jsonl", "--speed", "d.json"]):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "holds Python objects (posix.system)" in proc.stderr
        assert not (tmp_path / MALICIOUS_MARK).exists() and sorted(os.listdir(tmp_path)) == []
    # the control: the same file does run code when loaded without weights_only
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(fx['evil'])!r}, weights_only=False)"],
                   cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert (tmp_path / MALICIOUS_MARK).exists()


def test_lmlab_debug_shows_the_traceback(fx, tmp_path):
    env = child_env(PYTHONPATH=str(ROOT / "src"), LMLAB_DEBUG="1")
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "translate.py"), "--model", str(fx["random"]),
                           "--prompt", "a"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    assert f"ValueError: {fx['random']} is not a readable PyTorch file" in proc.stderr


def test_prepare_counts_unknown_characters_and_warns(tmp_path, capfd):
    """A char vocabulary that never saw 'z': the test split's z's become <unk> (they would vanish
    when decoded); stats.json counts them and the stage warns."""
    import prepare as prepare_stage

    raw = tmp_path / "raw"
    raw.mkdir()
    for split, (src, tgt) in {"train": ("abc\nabcabc\n", "cab\nbca\n"), "validation": ("abc\n", "cab\n"),
                              "test": ("azzz\n", "abc\n")}.items():
        (raw / f"{split}.source").write_text(src)
        (raw / f"{split}.target").write_text(tgt)
    status = prepare_stage.main(["--raw-dir", str(raw), "--out-dir", str(tmp_path / "p"), "tokenizer=char",
                                 "tokenizer.min_frequency=1"])
    err = capfd.readouterr().err.strip().splitlines()
    stats = json.loads((tmp_path / "p" / "stats.json").read_text())
    assert status == 0 and stats["test"]["source_unk_rate"] == 0.75 and stats["train"]["source_unk_rate"] == 0.0
    assert err == ["warning: 75.0% of the test.source tokens are <unk> (above 1%): raise tokenizer.vocab_size, "
                   "lower tokenizer.min_frequency or use tokenizer=byte_bpe, which has no <unk>"]
    assert stats["tokenizer_sha256"] == __import__("lmlab.data.tokenizer", fromlist=["x"]).tokenizer_hash(
        (tmp_path / "p" / "tokenizer.json").read_text())


def test_translate_continues_text_with_a_language_model(fx, capsys):
    """translate.py with a language model continues the prompt (the model's data.task says so),
    exactly as ``continue_texts`` does, instead of reading it as a source to translate."""
    import translate
    from lmlab.decoding.driver import continue_texts
    from lmlab.model.checkpoint import load_model

    assert translate.main(["--model", str(fx["lm_model"]), "--prompt", "a cat", "decoding.max_new_tokens=6"]) == 0
    out = capsys.readouterr().out.splitlines()
    model, tokenizer, _ = load_model(fx["lm_model"])
    expected = continue_texts(model, tokenizer, ["a cat"], build_config(compose(["decoding.max_new_tokens=6"])))
    assert out == [expected[0]["hypothesis"]] and expected[0]["hyp_tokens"] <= 6
