import json
import time
from pathlib import Path

import pytest
import torch
from conftest import child_env

from lmlab.config import build_config, compose
from lmlab.evaluate.wandb_run import log_evaluation
from lmlab.model.checkpoint import average_state_dicts, load_model, model_task
from lmlab.train.callbacks import AtomicCheckpointIO, snapshot_files
from lmlab.train.fit import train
from lmlab.train.module import lr_lambda
from lmlab.train.resume import fingerprint, resume_plan


def test_lr_schedule_warms_up_then_decays():
    f = lr_lambda(warmup_steps=10, max_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)


def test_inverse_sqrt_and_constant_schedules():
    f = lr_lambda(warmup_steps=100, max_steps=10_000, floor=0.05, schedule="inverse_sqrt")
    assert f(49) == pytest.approx(0.5) and f(99) == pytest.approx(1.0)
    assert f(399) == pytest.approx(0.5) and f(9999) == pytest.approx(0.1)  # sqrt(100 / step)
    assert lr_lambda(10, 100, floor=0.3, schedule="inverse_sqrt")(10**6) == pytest.approx(0.3)
    g = lr_lambda(warmup_steps=4, max_steps=100, schedule="constant")
    assert [g(i) for i in (0, 3, 4, 99)] == [0.25, 1.0, 1.0, 1.0]


def test_average_state_dicts_is_the_elementwise_mean(tmp_path):
    dicts = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(7)},
             {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)},
             {"w": torch.tensor([5.0, 1.0]), "n": torch.tensor(7)}]
    paths = []
    for i, d in enumerate(dicts):
        paths.append(tmp_path / f"step-{i:08d}.pt")
        torch.save(d, paths[-1])
    avg = average_state_dicts(paths)
    assert avg["w"].tolist() == [3.0, 3.0] and avg["w"].dtype == torch.float32 and int(avg["n"]) == 7
    assert snapshot_files(tmp_path) == paths


def test_resume_plan_names_what_changed(tmp_path, tiny_overrides):
    cfg = build_config(compose(tiny_overrides))
    fp = fingerprint(cfg, "{tokenizer}", 400)
    (tmp_path / "last.ckpt").write_bytes(b"x")
    (tmp_path / "state.json").write_text(json.dumps({"fingerprint": fp, "wandb_id": "abc12345",
                                                     "finished": False}))
    assert resume_plan("auto", tmp_path, fp)[:2] == (str(tmp_path / "last.ckpt"), "abc12345")
    assert resume_plan(None, tmp_path, fp)[0] is None
    other = fingerprint(build_config(compose(tiny_overrides + ["trainer.lr=0.5"])), "{tokenizer}", 400)
    start, run_id, why = resume_plan("auto", tmp_path, other)
    assert start is None and run_id is None and "trainer.lr was 0.002, now 0.5" in why
    with pytest.raises(ValueError, match="belongs to another configuration \\(trainer.lr was 0.002, now 0.5\\)"):
        resume_plan("last", tmp_path, other)
    # checkpoint/log cadence does not change the numbers: still the same run
    cadence = fingerprint(build_config(compose(tiny_overrides + ["trainer.checkpoint_every_n_steps=7"])),
                          "{tokenizer}", 400)
    assert resume_plan("last", tmp_path, cadence)[0] == str(tmp_path / "last.ckpt")
    (tmp_path / "state.json").write_text(json.dumps({"fingerprint": fp, "finished": True}))
    assert resume_plan("auto", tmp_path, fp)[0] is None  # a finished run starts over
    with pytest.raises(FileNotFoundError, match="ckpt_path=nope.ckpt not found"):
        resume_plan("nope.ckpt", tmp_path, fp)


def test_decoder_only_with_token_budget_accumulation_and_averaging(prepared, tiny_overrides, tmp_path):
    """A GPT-layout model trains on the pairs; batches of at most 600 tokens, two per optimizer
    step; the exported weights are the mean of the last three snapshots. Validation every 5 steps
    and after the last (12)."""
    from lmlab.config import build_config as build
    from lmlab.data.tokenizer import TokenArray
    from lmlab.decoding.driver import translate

    overrides = tiny_overrides + ["model=gpt-tiny", "model.n_encoder_layer=0", "model.max_len=192",
                                  "trainer.batch_size=null", "trainer.max_tokens=600",
                                  "trainer.accumulate_grad_batches=2", "trainer.max_steps=12",
                                  "trainer.checkpoint_every_n_steps=4", "trainer.average_last=3",
                                  "trainer.lr_schedule=inverse_sqrt", "trainer.val_check_interval=5",
                                  "ckpt_path=null"]
    cfg = build(compose(overrides))
    assert cfg.model.arch == "decoder-only" and cfg.model.positions == "learned"
    summary = train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves")
    assert summary["arch"] == "decoder-only" and summary["global_step"] == 12
    assert summary["averaged_checkpoints"] == ["step-00000004.pt", "step-00000008.pt", "step-00000012.pt"]
    val_steps = [line.split("\t")[0] for line in (tmp_path / "curves/val_loss.tsv").read_text().splitlines()[1:]]
    assert val_steps == ["5", "10", "12"]
    snaps = snapshot_files(tmp_path / "model/checkpoints/snapshots")
    model, tok, payload = load_model(tmp_path / "model/model.pt")
    want = average_state_dicts(snaps)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0)
    assert summary["averaged_val_loss"] < 6.0  # well below uniform over the 300-token vocabulary
    # it generates through the same decoding loop as the encoder-decoder
    sources = TokenArray(prepared / "prepared/test.source")
    out = translate(model, tok, [sources[i].tolist() for i in range(4)], cfg, progress=False)
    assert len(out) == 4 and all(isinstance(r["hypothesis"], str) for r in out)


def test_train_writes_model_checkpoints_curves_and_offline_wandb_run(prepared, tiny_overrides, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_config(compose(tiny_overrides + ["logger=wandb", "trainer.max_steps=30",
                                                  "trainer.val_check_interval=15", "trainer.lr=3e-3"]))
    summary = train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves")
    assert summary["global_step"] == 30
    val = (tmp_path / "curves/val_loss.tsv").read_text().splitlines()
    assert val[0] == "step\tval/loss" and [int(r.split("\t")[0]) for r in val[1:]] == [15, 30]
    train_loss = [float(r.split("\t")[1]) for r in (tmp_path / "curves/train_loss.tsv").read_text().splitlines()[1:]]
    assert train_loss[-1] < train_loss[0] - 0.5
    assert (tmp_path / "model/checkpoints/last.ckpt").is_file()
    assert (tmp_path / "model/checkpoints/best.ckpt").is_file()
    assert json.loads((tmp_path / "model/run.json").read_text())["global_step"] == 30

    # the exported model reproduces the best validation loss without the training config
    model, tok, payload = load_model(tmp_path / "model/model.pt")
    assert payload["config"]["model"]["n_embd"] == 32 and tok.get_vocab_size() <= 300
    assert min(float(r.split("\t")[1]) for r in val[1:]) == pytest.approx(summary["best_val_loss"])
    # a training checkpoint decodes on its own too: best.ckpt holds the exported weights
    from_ckpt, ckpt_tok, ckpt_payload = load_model(tmp_path / "model/checkpoints/best.ckpt")
    assert ckpt_tok.to_json() == tok.to_json()
    assert model_task(ckpt_payload) == model_task(payload) == "translation"  # translate.py reads it
    for key, value in model.state_dict().items():
        assert torch.equal(from_ckpt.state_dict()[key], value), key

    # W&B: offline, one run, evaluate adds to the same run id
    run_id = summary["wandb"]["id"]
    runs = list(Path("wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith(run_id)
    generations = tmp_path / "generations.jsonl"
    generations.write_text(json.dumps({"id": 0, "source": "s", "reference": "r", "hypothesis": "h",
                                       "hyp_tokens": 1, "hit_max_len": False}) + "\n")
    assert log_evaluation(cfg, tmp_path / "model/model.pt", generations, {"bleu": 12.5})["id"] == run_id
    files = sorted(Path("wandb").glob(f"offline-run-*/run-{run_id}.wandb"))
    assert len(files) == 2, "evaluate should resume the training run's id"
    # tests/test_tracking.py decodes these files; here the raw bytes, read again for a few seconds:
    # W&B's service writes the transaction log, and one full-suite run read it before the
    # resumed run's summary had landed
    needles = (b"val/loss", b"n_embd", b"test/greedy/bleu", b"test/greedy/generations")
    deadline = time.monotonic() + 15
    while True:
        blob = b"".join(f.read_bytes() for f in files)
        if all(n in blob for n in needles) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for needle in needles:
        assert needle in blob


def test_bad_prepared_dir_names_the_missing_file(tmp_path, tiny_overrides):
    cfg = build_config(compose(tiny_overrides))
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found: run the prepare stage"):
        train(cfg, tmp_path / "nothing", tmp_path / "model", tmp_path / "curves")
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_through_the_train_script(prepared, tiny_overrides, tmp_path):
    """Real DDP: Lightning starts a second process (gloo) by rerunning src/train.py, a Hydra app,
    with rank 0's hydra.run.dir; both ranks must share one output directory and only rank 0 writes."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "src/train.py"), "--prepared-dir", str(prepared / "prepared"),
           *tiny_overrides, "logger=wandb", "trainer.max_steps=6", "trainer.val_check_interval=3",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    env = child_env(PYTHONPATH=str(root / "src"))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list((tmp_path / "outputs").glob("*/*"))  # outputs/<date>/<time>
    # rank 1 ran in the same Hydra job directory (its log file is there) and wrote nothing else
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log", "train_ddp_process_1.log"]
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 6
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt", "state.json"]
    assert [line.split("\t")[0] for line in (run_dir / "curves/val_loss.tsv").read_text().splitlines()] == [
        "step", "3", "6"]
    model, _, _ = load_model(run_dir / "model.pt")
    assert model.num_parameters() == summary["n_parameters"]
    assert proc.stdout.count("wrote ") == 1  # only rank 0 reports
    runs = list((run_dir / "wandb").glob("offline-run-*"))  # one W&B run, created by rank 0
    assert [r.name.rsplit("-", 1)[1] for r in runs] == [summary["wandb"]["id"]]


def _train_cmd(prepared, overrides, out_dir, *extra):
    import sys

    root = Path(__file__).resolve().parents[1]
    return [sys.executable, str(root / "src/train.py"), "--prepared-dir", str(prepared / "prepared"),
            "--out-dir", str(out_dir), *overrides, *extra]


def _curve(path):
    return {int(s): float(v) for s, v in (line.split("\t") for line in path.read_text().splitlines()[1:])}


@pytest.mark.slow
@pytest.mark.parametrize("start", ["scratch", "fine-tuning"])
def test_sigkill_and_resume_replays_the_uninterrupted_run(start, prepared, tiny_overrides, tmp_path, request):
    """Kill training with SIGKILL after a checkpoint, resume with ckpt_path=last: every loss after
    the checkpoint equals the uninterrupted run's (same batches, same dropout masks). The same for
    a fine-tuning run (init_from, its own learning rate for the loaded tensors, a frozen part)."""
    import signal
    import subprocess
    import time

    root = Path(__file__).resolve().parents[1]
    env = child_env(PYTHONPATH=str(root / "src"))
    # 400 pairs / batch 32 = 13 batches an epoch: the kill lands mid-epoch and the run spans epochs
    overrides = tiny_overrides + ["logger=wandb", "trainer.max_steps=60", "trainer.val_check_interval=20",
                                  "trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=3"]
    if start == "fine-tuning":
        overrides += [f"init_from={request.getfixturevalue('pretrained')}", "trainer.init_lr_scale=0.5",
                      "trainer.freeze=[embeddings]", "model.n_decoder_layer=2"]
    full = subprocess.run(_train_cmd(prepared, overrides, tmp_path / "full"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    last = killed_dir / "checkpoints/last.ckpt"
    proc = subprocess.Popen(_train_cmd(prepared, overrides, killed_dir), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, map_location="cpu", weights_only=False)["global_step"] >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    k = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 15 <= k < 60 and not (killed_dir / "model.pt").exists()

    resumed = subprocess.run(_train_cmd(prepared, overrides, killed_dir, "ckpt_path=last"), cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = _curve(tmp_path / "full/curves/train_loss.tsv"), _curve(killed_dir / "curves/train_loss.tsv")
    assert sorted(got) == list(range(1, 61))  # curves before the kill kept, the rest appended
    for step, loss in got.items():
        assert loss == pytest.approx(want[step], abs=1e-5), f"step {step}"
    summary = json.loads((killed_dir / "run.json").read_text())
    assert summary["global_step"] == 60
    # the same W&B run continues: the killed and the resumed process wrote under one run id
    ids = {r.name.rsplit("-", 1)[1] for r in (tmp_path / "wandb").glob("offline-run-*")}
    assert len(ids) == 2 and summary["wandb"]["id"] in ids  # the full run's, and the killed+resumed one
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{summary['wandb']['id']}"))) == 2


def test_every_slurm_rank_of_a_job_step_picks_the_same_output_directory():
    import time

    from lmlab.cli import run_stamp

    job = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "3", "SLURM_NTASKS": "8"}
    assert run_stamp({**job, "SLURM_PROCID": "0"}) == "slurm-4242.3"
    assert run_stamp({**job, "SLURM_PROCID": "7"}) == "slurm-4242.3"
    # a one-task allocation (salloc, an interactive shell) keeps the time stamp
    stamp = run_stamp({"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1"})
    assert time.strptime(stamp, "%Y-%m-%d/%H-%M-%S")


def test_checkpoint_writes_are_point_in_time_and_waited_for(tmp_path):
    """The writer thread saves the weights as they were when the save was asked for, training's
    later in-place updates notwithstanding; teardown waits for it and raises what it met."""
    io = AtomicCheckpointIO()
    w = torch.ones(3)
    io.save_checkpoint({"state_dict": {"w": w}, "global_step": 7}, tmp_path / "last.ckpt")
    w.add_(1)  # the next optimiser step, while the write may still be pending
    io.teardown()
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert torch.equal(saved["state_dict"]["w"], torch.ones(3)) and saved["global_step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind

    io.save_checkpoint({"w": w}, tmp_path / "last.ckpt" / "inside-a-file.ckpt")  # cannot be written
    with pytest.raises(OSError):
        io.teardown()
