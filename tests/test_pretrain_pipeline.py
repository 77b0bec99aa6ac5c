"""Pre-train, then fine-tune, through the real DVC pipelines in a temporary git repository: the
fine-tuning starts from the pre-training's model, and a change to the pre-training reruns it."""

import json
import re
import sys

import pytest
from conftest import copy_repo, run, without_sweep

# the shrunk test config's model, decoder-only (192 positions: a translation pair of 95 tokens a side fits)
GPT = ["model=gpt-tiny", "model.n_encoder_layer=0", "model.max_len=192"]
PRETRAIN = [*GPT, "data=lm_text_both", "data.seed=4321", "trainer.block_size=32"]


def ran(output: str) -> list[str]:
    """The stages a repro ran, in pipeline order (a stage of pretrain/dvc.yaml is printed with
    the file's name before its own)."""
    names = set(re.findall(r"Running stage '(?:[^':]*:)?([\w-]+)'", output))
    return [s for s in ("init", "download", "prepare", "train", "generate", "evaluate") if s in names]


@pytest.mark.slow
def test_pretrain_then_fine_tune_and_a_new_pretraining_reruns_the_fine_tuning(tmp_path, tiny_overrides):
    dest = tmp_path / "repo"
    env, git = copy_repo(dest, tiny_overrides, edit=without_sweep)

    def pretrain(steps: int) -> str:
        params = run([sys.executable, "-m", "lmlab.params", *PRETRAIN, f"trainer.max_steps={steps}"], dest, env)
        (dest / "pretrain/params.yaml").write_text(params)
        return run(["dvc", "repro", "pretrain/dvc.yaml"], dest, env)

    assert ran(pretrain(4)) == ["download", "prepare", "train"]
    model = dest / "pretrain/data/model/model.pt"
    assert json.loads((dest / "pretrain/reports/train/summary.json").read_text())["global_step"] == 4

    out = run(["dvc", "exp", "run", "-S", "init_from=pretrain/data/model/model.pt",
               *[arg for o in GPT for arg in ("-S", o)]], dest, env)
    assert {"init", "prepare", "train", "generate", "evaluate"} <= set(ran(out))
    metrics = json.loads((dest / "reports/metrics.json").read_text())  # decoder-only translation, scored
    assert metrics["n_examples"] == 24 and metrics["perplexity"] > 1.0 and "bleu" in metrics
    assert json.loads((dest / "reports/train/summary.json").read_text())["arch"] == "decoder-only"
    init = json.loads((dest / "data/model/run.json").read_text())["init"]
    assert init["init_from"] == "pretrain/data/model/model.pt" and init["new"] == [] and init["dropped"] == []
    recorded = json.loads((dest / "data/init/init.json").read_text())
    assert recorded["bytes"] == model.stat().st_size and len(recorded["sha256"]) == 64
    assert "init_from pretrain/data/model/model.pt: loaded" in out

    # nothing changed: only the init stage runs (it hashes the file), nothing after it
    assert ran(run(["dvc", "repro"], dest, env)) == ["init"]
    # a longer pre-training makes another model: prepare, train and what follows rerun
    assert ran(pretrain(6)) == ["train"]
    again = run(["dvc", "repro"], dest, env)
    assert {"init", "prepare", "train", "generate", "evaluate"} <= set(ran(again))
    assert json.loads((dest / "data/init/init.json").read_text())["sha256"] != recorded["sha256"]
