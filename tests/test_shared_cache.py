"""A team's shared cache: the model file depends on the run's inputs alone, so DVC's hash of it
does (the remote itself, push, a fresh clone, pull, is tests/test_pipeline.py's end-to-end test)."""

import json

from lmlab.config import build_config, compose
from lmlab.model.checkpoint import read_summary
from lmlab.train.fit import train


def test_the_same_inputs_give_the_same_model_file_bytes(prepared, tiny_overrides, tmp_path):
    cfg = build_config(compose([*tiny_overrides, "trainer.max_steps=4", "trainer.val_check_interval=4", "ckpt_path=null"]))
    for name in ("a", "b"):
        train(cfg, prepared / "prepared", tmp_path / name / "model", tmp_path / name / "curves")
    first, second = ((tmp_path / name / "model/model.pt").read_bytes() for name in ("a", "b"))
    assert first == second
    # what can differ between runs (the timing, the W&B run) stays in run.json beside the model,
    # and read_summary finds it there
    from lmlab.model.checkpoint import RUN_SPECIFIC, safe_load

    assert not set(RUN_SPECIFIC) & set(safe_load(tmp_path / "a/model/model.pt")["summary"])
    run = json.loads((tmp_path / "a/model/run.json").read_text())
    assert read_summary(tmp_path / "a/model/model.pt")["train_seconds"] == run["train_seconds"]
