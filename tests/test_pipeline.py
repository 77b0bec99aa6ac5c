"""End to end: the real `dvc repro` in a temporary git repository, on a shrunken config."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {
    "bleu", "chrf", "bleu_signature", "chrf_signature", "rouge1", "rouge2", "rougeL", "rougeLsum",
    "rouge_stemmer", "mean_hyp_words", "mean_hyp_tokens", "len_cap_rate", "n_examples", "loss",
    "perplexity",
}
STAGES = ["download", "prepare", "train", "generate", "evaluate", "report"]


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


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


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_overrides):
    """A copy of the working tree (tracked and untracked-but-not-ignored files) as a new git repo."""
    dest = tmp_path_factory.mktemp("lmlab") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for stale in ("dvc.lock", "reports/metrics.json"):
        (dest / stale).unlink(missing_ok=True)
    shrink(dest / "conf" / "config.yaml", tiny_overrides)
    env = dict(os.environ, PYTHONPATH=str(dest / "src"), DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    params = run([sys.executable, "-m", "lmlab.params"], dest, env)
    (dest / "params.yaml").write_text(params)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], dest, env)
    run(git + ["add", "-A"], dest, env)
    run(git + ["commit", "-qm", "copy"], dest, env)
    return dest, env, git


@pytest.mark.slow
def test_dvc_repro_end_to_end(repo):
    dest, env, git = repo
    out = run(["dvc", "repro"], dest, env)
    assert ran_stages(out) == STAGES

    metrics = json.loads((dest / "reports/metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["n_examples"] == 24
    assert "tok:13a" in metrics["bleu_signature"]
    assert metrics["perplexity"] > 1.0
    records = [json.loads(line) for line in (dest / "reports/generations.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(24))
    refs = (dest / "data/raw/test.target").read_text().splitlines()
    assert [r["reference"] for r in records] == refs
    for name in ("train_loss.tsv", "val_loss.tsv", "lr.tsv"):
        lines = (dest / "reports/train" / name).read_text().splitlines()
        assert lines[0].startswith("step\t") and len(lines) >= 2
    report = (dest / "reports/report.md").read_text()
    assert "bleu" in report.lower() and "figures/loss.png" in report
    assert (dest / "reports/figures/loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (dest / "data/model/model.pt").is_file()
    assert (dest / "data/model/checkpoints/last.ckpt").is_file()

    # nothing changed: nothing reruns
    again = run(["dvc", "repro"], dest, env)
    assert ran_stages(again) == [] and "up to date" in again

    # a decoding experiment reruns only what depends on decoding
    run(git + ["add", "-A"], dest, env)
    run(git + ["commit", "-qm", "baseline"], dest, env)
    exp = run(["dvc", "exp", "run", "-S", "decoding=beam"], dest, env)
    assert ran_stages(exp) == ["generate", "evaluate", "report"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env))
    found = json.dumps(shown)
    assert found.count('"bleu"') >= 2 and '"beam"' in found


@pytest.mark.slow
def test_train_script_from_the_repo_root(repo):
    dest, env, _ = repo
    (dest / "outputs").mkdir(exist_ok=True)
    if not (dest / "data/prepared/tokenizer.json").exists():
        run(["dvc", "repro", "prepare"], dest, env)
    run([sys.executable, "src/train.py", "model=tiny", "trainer.max_steps=4", "logger=csv"], dest, env)
    (run_dir,) = list((dest / "outputs").iterdir())
    assert (run_dir / "model.pt").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    assert (dest / "logs/csv").is_dir()
