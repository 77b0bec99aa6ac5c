import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
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
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def tiny_overrides():
    """The real config, shrunk to seconds: small corpus, vocabulary, model and step budget."""
    return [
        "data.n_train=400", "data.n_valid=40", "data.n_test=24",
        "tokenizer.vocab_size=300",
        "model.n_embd=32", "model.n_head=2", "model.n_encoder_layer=1", "model.n_decoder_layer=1",
        "model.d_ff=64", "model.max_len=96",
        "trainer.max_steps=12", "trainer.val_check_interval=6", "trainer.batch_size=32",
        "trainer.warmup_steps=2", "trainer.log_every_n_steps=2",
        "decoding.max_new_tokens=20",
        "logger=none",
    ]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_overrides):
    """The tiny config's corpus, downloaded and tokenized once: ``<root>/raw``, ``<root>/prepared``."""
    from lmlab.config import build_config, compose
    from lmlab.encoding import prepare
    from lmlab.rawdata import download

    root = tmp_path_factory.mktemp("prepared")
    cfg = build_config(compose(tiny_overrides))
    download(cfg, root / "raw")
    stats = prepare(cfg, root / "raw", root / "prepared")
    assert stats["train"]["pairs"] == 400 and stats["test"]["pairs"] == 24
    return root
