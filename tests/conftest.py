import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The one place the suite edits sys.path: this checkout's src/ (lmlab and the stage scripts, which
# tests import as `import report`) wins over any installed copy, and bench/ makes the bench
# scripts importable (`import train_throughput`).
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def pytest_configure(config):
    import torch

    # Test models are tiny: one thread avoids OpenMP spin-waits that make small ops crawl
    # whenever another process shares the two cores.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def child_env(**extra):
    """The environment for a subprocess that must start its own runs: this process's environment
    minus what an in-process run left behind (the address of its W&B service, lmlab's run
    hand-over variables), so a child never attaches to a stream of this process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WANDB_SERVICE", "LMLAB_RUN_DIR", "LMLAB_WANDB_ID")}
    # one thread per child, as in this process: the suite runs two test processes on two cores,
    # and torch processes that each spin two OpenMP threads there slow one another down
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def tiny_overrides():
    """The real config, shrunk to seconds: small corpus, vocabulary, model and step budget."""
    return [
        "data.n_train=400", "data.n_valid=40", "data.n_test=24",
        "tokenizer.vocab_size=300", "tokenizer.max_tokens=95",  # what model.max_len=96 allows (and 192, decoder-only)
        "model.n_embd=32", "model.n_head=2", "model.n_encoder_layer=1", "model.n_decoder_layer=1",
        "model.d_ff=64", "model.max_len=96",
        "trainer.max_steps=12", "trainer.val_check_interval=6", "trainer.batch_size=32",
        "trainer.lr=0.002", "trainer.warmup_steps=2", "trainer.log_every_n_steps=2",
        "decoding.max_new_tokens=20",
        "logger=none",
    ]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_overrides):
    """The tiny config's corpus, downloaded and tokenized once: ``<root>/raw``, ``<root>/prepared``."""
    from lmlab.config import build_config, compose
    from lmlab.data.download import download
    from lmlab.data.prepare import prepare

    root = tmp_path_factory.mktemp("prepared")
    cfg = build_config(compose(tiny_overrides))
    download(cfg, root / "raw")
    stats = prepare(cfg, root / "raw", root / "prepared")
    assert stats["train"]["pairs"] == 400 and stats["test"]["pairs"] == 24
    return root


def run(cmd, cwd, env, timeout=600) -> str:
    """Run ``cmd``; fail the test with the tail of its output unless it exits 0. Returns the output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def shrink(conf: Path, overrides: list[str]) -> None:
    """Append the overrides to conf/config.yaml; `_self_` comes last, so they win over the presets
    and stay in force when DVC recomposes the config for `dvc exp run -S ...`."""
    tree: dict = {}
    for item in overrides:
        key, value = item.split("=", 1)
        if "." not in key:
            continue  # group choices such as logger=none are set below
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    text = conf.read_text().replace("  - logger: wandb", "  - logger: none")
    conf.write_text(text + "\n# shrunk for the end-to-end test\n" + yaml.safe_dump(tree, sort_keys=False))


def copy_repo(dest: Path, overrides: list[str], edit=None) -> tuple[dict, list[str]]:
    """A copy of the working tree (tracked and untracked-but-not-ignored files) as a new git repo
    at ``dest``, its config shrunk by ``overrides`` (and then changed by ``edit(dest)``), without
    this checkout's results. Returns the environment for its commands and the git command prefix."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file() and not rel.startswith(("reports/", "dvc.lock")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / "reports/sweep").mkdir(parents=True, exist_ok=True)
    (dest / "reports/sweep/.gitkeep").touch()  # the report stage's dependency, as in the repository
    shrink(dest / "conf" / "config.yaml", overrides)
    if edit is not None:
        edit(dest)
    env = child_env(PYTHONPATH=str(dest / "src"), DVC_NO_ANALYTICS="1",
                    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    (dest / "params.yaml").write_text(run([sys.executable, "-m", "lmlab.params"], dest, env))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], dest, env)
    run(git + ["add", "-A"], dest, env)
    run(git + ["commit", "-qm", "copy"], dest, env)
    return env, git


def without_sweep(dest: Path) -> None:
    """A ``copy_repo`` edit: no strategy sweep in the copy (its sweep-* stages would only add
    minutes to repros that test something else), its entries dropped from conf/config.yaml's defaults."""
    conf = dest / "conf/config.yaml"
    conf.write_text("".join(line for line in conf.read_text().splitlines(True)
                            if not line.lstrip().startswith("- decoding@sweep.")))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def is_png(path: Path) -> bool:
    return Path(path).read_bytes()[:8] == PNG_MAGIC


def read_run_file(path: Path) -> list[dict]:
    """The records of a .wandb transaction log, decoded by wandb itself."""
    wandb_cli = Path(sys.executable).parent / "wandb"
    proc = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(path)], cwd=path.parents[2],
                          env=child_env(WANDB_MODE="offline"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An empty Hugging Face home, offline."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT",
                "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME",
                "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


@pytest.fixture(scope="session")
def pretrained(prepared, tiny_overrides, tmp_path_factory):
    """A model.pt of the tiny config after 4 steps on the tiny corpus: the "pre-trained" model of
    the fine-tuning tests (its tokenizer is the tiny corpus's)."""
    from lmlab.config import build_config, compose
    from lmlab.train.fit import train

    root = tmp_path_factory.mktemp("pretrained")
    cfg = build_config(compose([*tiny_overrides, "trainer.max_steps=4", "trainer.val_check_interval=4",
                                "ckpt_path=null"]))
    train(cfg, prepared / "prepared", root / "model", root / "curves")
    return root / "model/model.pt"
