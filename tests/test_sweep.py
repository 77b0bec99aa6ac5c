"""A real 2 × 2 sweep through DVC's queue in a temporary repository, then the sweep report."""

import csv
import json
import re
import subprocess
import sys
import time

import pytest
from conftest import copy_repo, is_png, run, without_sweep

# Two model presets of different widths, both tiny (the test's own, beside conf/model/*.yaml).
PRESETS = {"narrow": 24, "wide": 48}


def add_presets(dest):
    for name, width in PRESETS.items():
        (dest / f"conf/model/{name}.yaml").write_text(
            f"defaults:\n  - tiny\n  - _self_\n\nname: {name}\nn_embd: {width}\n")
    without_sweep(dest)  # no in-experiment sweep: one strategy each
    conf = dest / "conf/config.yaml"
    conf.write_text(conf.read_text().replace("\nmodel:\n  n_embd: 32\n", "\nmodel:\n"))


def wait_for_queue(dest, env, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], dest, env)
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


@pytest.mark.slow
def test_dvc_queue_sweep_trains_once_per_size_and_reports_the_pivot(tmp_path, tiny_overrides):
    dest = tmp_path / "repo"
    env, git = copy_repo(dest, tiny_overrides, edit=add_presets)
    run(["dvc", "repro", "download", "prepare"], dest, env)  # shared by every experiment (run cache)
    run(git + ["add", "-A"], dest, env)
    run(git + ["commit", "-qm", "data"], dest, env)

    run(["dvc", "exp", "run", "--queue", "-S", "model=narrow,wide", "-S", "decoding=greedy,beam"], dest, env)
    run(["dvc", "queue", "start", "-j", "1"], dest, env)
    status = wait_for_queue(dest, env)
    assert status.count("Success") == 4, status

    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env))
    names = [r["name"] for base in shown for r in base.get("experiments") or []]
    assert len(names) == 4
    logs = {name: run(["dvc", "queue", "logs", name], dest, env) for name in names}
    trained = [n for n, log in logs.items() if "Running stage 'train'" in log]
    evaluated = [n for n, log in logs.items() if "Running stage 'evaluate'" in log]
    assert len(trained) == 2 and len(evaluated) == 4, {n: log[-2000:] for n, log in logs.items()}

    out = run([sys.executable, "src/compare.py", "--bootstrap-samples", "200"], dest, env)
    assert "4 results from 4 experiments" in out
    md = (dest / "reports/sweep.md").read_text()
    bleu = md.split("## BLEU\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert bleu[0] == "| model | greedy | beam |"
    assert [line.split(" | ")[0] for line in bleu[2:]] == ["| narrow", "| wide"]
    rows = list(csv.DictReader((dest / "reports/sweep.csv").open()))
    assert [(r["model"], r["strategy"]) for r in rows] == [
        ("narrow", "greedy"), ("narrow", "beam"), ("wide", "greedy"), ("wide", "beam")]
    metrics = {}
    for name in names:  # each cell is the experiment's own metrics.json
        rev = next(r["revs"][0]["rev"] for base in shown for r in base.get("experiments") or [] if r["name"] == name)
        params = subprocess.run(["git", "show", f"{rev}:params.yaml"], cwd=dest, capture_output=True,
                                text=True, check=True).stdout
        model = re.search(r"^model:\n  name: (\w+)", params, re.M).group(1)
        strategy = re.search(r"^decoding:\n  name: (\w+)", params, re.M).group(1)
        m = json.loads(subprocess.run(["git", "show", f"{rev}:reports/metrics.json"], cwd=dest,
                                      capture_output=True, text=True, check=True).stdout)
        metrics[model, strategy] = m
    for r in rows:
        assert float(r["bleu"]) == metrics[r["model"], r["strategy"]]["bleu"]
        assert r["bleu_p_vs_row_first" if r["strategy"] == "beam" else "bleu_p_vs_col_first"] or \
            (r["model"], r["strategy"]) == ("narrow", "greedy")
    assert int(rows[2]["n_parameters"]) > int(rows[0]["n_parameters"]) > 0
    for png in ("quality_vs_params.png", "quality_vs_speed.png", "val_loss.png"):
        assert is_png(dest / "reports/compare" / png)
        assert f"](compare/{png})" in md
