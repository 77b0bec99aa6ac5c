"""A team's shared cache: the model file depends on the run's inputs alone (so DVC's hash of it
does), and a DVC remote lets a fresh clone pull what another clone trained instead of training."""

import json

import pytest
from conftest import copy_repo, run

from lmlab.config import build_config, compose
from lmlab.model.checkpoint import read_summary
from lmlab.train.fit import train


def test_the_same_inputs_give_the_same_model_file_bytes(prepared, tiny_overrides, tmp_path):
    cfg = build_config(compose([*tiny_overrides, "trainer.max_steps=4", "trainer.val_check_interval=4", "ckpt_path=null"]))
    for name in ("a", "b"):
        train(cfg, prepared / "prepared", tmp_path / name / "model", tmp_path / name / "curves")
    first, second = ((tmp_path / name / "model/model.pt").read_bytes() for name in ("a", "b"))
    assert first == second
    # what differs between the runs stays in run.json, and read_summary still finds it there
    runs = [json.loads((tmp_path / name / "model/run.json").read_text()) for name in ("a", "b")]
    assert runs[0]["train_seconds"] != runs[1]["train_seconds"]
    assert read_summary(tmp_path / "a/model/model.pt")["train_seconds"] == runs[0]["train_seconds"]


def ran(output: str) -> set[str]:
    import re

    started = set(re.findall(r"Running stage '([\w@.-]+)'", output))
    return started - set(re.findall(r"Stage '([\w@.-]+)' is cached", output))


@pytest.mark.slow
def test_a_fresh_clone_pulls_from_the_remote_and_trains_nothing(tmp_path, tiny_overrides):
    first, remote = tmp_path / "first", tmp_path / "remote"
    env, git = copy_repo(first, tiny_overrides)
    run(["dvc", "remote", "add", "-d", "team", str(remote)], first, env)
    run(["dvc", "repro"], first, env)
    run(["dvc", "push", "--run-cache", "dvc.yaml"], first, env)
    run([*git, "add", "-A"], first, env)
    run([*git, "commit", "-qm", "pipeline run, remote"], first, env)

    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    # the main pipeline's outputs (targetless, DVC would also look for pretrain/'s, never made here)
    run(["dvc", "pull", "--run-cache", "dvc.yaml"], second, env)
    out = run(["dvc", "repro"], second, env)
    assert ran(out) == {"init"}, out  # everything was pulled: only init runs (it hashes init_from, always)
    for path in ("data/model/model.pt", "reports/report.md", "reports/generations.jsonl"):
        assert (second / path).read_bytes() == (first / path).read_bytes(), path
    # an experiment of a configuration already run restores instead of training
    out = run(["dvc", "exp", "run", "-S", "trainer.max_steps=12"], second, env)
    assert ran(out) == {"init"} and "Stage 'train' didn't change" in out, out
