"""src/train.py as a Hydra application: sweeps with the basic and the submitit launchers, the
SLURM preset's batch script, and the --params door beside it."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, child_env, read_run_file

from lmlab.config import build_config, compose
from lmlab.model.checkpoint import load_model


def train_script(cwd, *args, env=None):
    env = env or child_env(PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, str(ROOT / "src/train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def sweep_jobs(cwd):
    (sweep,) = list((cwd / "multirun").glob("*/*"))  # multirun/<date>/<time>
    return sweep, sorted(p for p in sweep.iterdir() if p.name.isdigit())


def job_overrides(job_dir):
    return yaml.safe_load((job_dir / ".hydra/overrides.yaml").read_text())


@pytest.mark.slow
def test_basic_multirun_runs_each_job_in_its_own_directory(prepared, tiny_overrides, tmp_path):
    proc = train_script(tmp_path, "-m", "--prepared-dir", str(prepared / "prepared"), *tiny_overrides,
                        "logger=wandb", "model=tiny,small")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep, jobs = sweep_jobs(tmp_path)
    assert [j.name for j in jobs] == ["0", "1"]
    for job, preset in zip(jobs, ["tiny", "small"]):
        assert f"model={preset}" in job_overrides(job)
        _, _, payload = load_model(job / "model.pt")
        # the job's preset, with the overrides every job shares on top
        assert payload["config"]["model"]["name"] == preset
        assert (payload["config"]["model"]["n_embd"], payload["model_config"]["n_embd"]) == (32, 32)
        summary = json.loads((job / "run.json").read_text())
        assert summary["global_step"] == 12
        assert (job / "checkpoints/last.ckpt").is_file() and (job / "curves/val_loss.tsv").is_file()
        # the W&B run lives in the job's directory too
        (run,) = list((job / "wandb").glob("offline-run-*"))
        assert run.name.endswith(summary["wandb"]["id"])
        (record,) = [r["run"] for r in read_run_file(next(run.glob("*.wandb"))) if r["type"] == "run"]
        assert record["run_group"] == str(sweep.relative_to(tmp_path))  # the jobs of one sweep group together
        assert f"wrote {job.relative_to(tmp_path)}/model.pt" in proc.stdout
    assert summary["wandb"]["id"] != json.loads((jobs[0] / "run.json").read_text())["wandb"]["id"]
    # nothing outside the sweep: Hydra did not chdir, no run fell back to outputs/ or ./wandb
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun"]


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep_as_processes(prepared, tiny_overrides, tmp_path):
    proc = train_script(tmp_path, "-m", "--prepared-dir", str(prepared / "prepared"), *tiny_overrides,
                        "model.n_embd=32,48", "hydra/launcher=local")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep, jobs = sweep_jobs(tmp_path)
    assert [j.name for j in jobs] == ["0", "1"]
    for job, n_embd in zip(jobs, [32, 48]):
        assert f"model.n_embd={n_embd}" in job_overrides(job)
        model, _, payload = load_model(job / "model.pt")
        assert payload["config"]["model"]["n_embd"] == n_embd
        assert model.embed.weight.shape[1] == n_embd
        assert json.loads((job / "run.json").read_text())["global_step"] == 12
    # each job ran in a process of its own, under submitit: its result and log are in the sweep
    assert len(list(sweep.glob(".submitit/*/*_result.pkl"))) == 2
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    assert logs.count("wrote multirun/") == 2


@pytest.mark.slow
def test_slurm_preset_writes_a_batch_script_of_one_rank_per_gpu(tmp_path):
    """The SLURM preset through the real plugin and submitit, up to sbatch: a stand-in sbatch
    keeps the batch script it is given and refuses it (srun's stand-in only says it exists)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text('#!/bin/sh\nfor last; do :; done\ncp "$last" "$SBATCH_COPY"\n'
                                    'echo "sbatch: error: no cluster here" >&2\nexit 1\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    env = child_env(PYTHONPATH=str(ROOT / "src"), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    SBATCH_COPY=str(tmp_path / "batch.sh"))
    proc = train_script(tmp_path, "-m", "model=tiny,small", "trainer=gpu", "trainer.devices=4",
                        "trainer.num_nodes=2", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                        env=env)
    assert proc.returncode != 0 and "sbatch: error: no cluster here" in proc.stderr
    script = (tmp_path / "batch.sh").read_text()
    sbatch = {line.split("=", 1)[0][len("#SBATCH "):]: line.split("=", 1)[1]
              for line in script.splitlines() if line.startswith("#SBATCH ")}
    assert {k: sbatch[k] for k in ("--array", "--nodes", "--ntasks-per-node", "--gpus-per-node",
                                   "--partition", "--time", "--job-name")} == {
        "--array": "0-1%2", "--nodes": "2", "--ntasks-per-node": "4", "--gpus-per-node": "4",
        "--partition": "gpu", "--time": "240", "--job-name": "train"}
    assert f"{sys.executable} -u -m submitit.core._submit" in script


@pytest.mark.slow
def test_a_sweep_refuses_ddp_that_lightning_would_launch(tmp_path):
    proc = train_script(tmp_path, "-m", "model=tiny,small", "trainer.accelerator=cpu", "trainer.devices=2",
                        "trainer.strategy=ddp")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: trainer.devices=2 with trainer.strategy=ddp in a sweep: Lightning would rerun the whole sweep")


@pytest.mark.slow
def test_the_params_door_takes_no_hydra_run_and_names_a_bad_key(prepared, tiny_overrides, tmp_path):
    raw = compose(tiny_overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = train_script(tmp_path, "--params", "params.yaml", "--prepared-dir", str(prepared / "prepared"),
                        "--out-dir", "model")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, payload = load_model(tmp_path / "model/model.pt")
    assert payload["config"] == build_config(raw).to_dict()  # the file's config, as it was
    assert payload["config"]["model"]["n_embd"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "params.yaml"]  # no Hydra directory

    raw["model"]["n_heads"] = 4
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    bad = train_script(tmp_path, "--params", "bad.yaml", "--prepared-dir", str(prepared / "prepared"),
                       "--out-dir", "bad")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: unknown config key model.n_heads (did you mean model.n_head?)"]
    assert not (tmp_path / "bad").exists()
