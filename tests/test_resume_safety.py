"""Issue 13 for training: nothing lost, nothing executed, nothing silently wrong.

* a fresh start moves the earlier checkpoints aside (``<ckpt_dir>/superseded/<UTC time>``), never
  deletes them;
* ``ckpt_path=last`` never falls back to a fresh start; ``auto`` treats a broken state file as
  another run's;
* ``ckpt_path=<file>`` is read with ``weights_only=True`` and checked against the configuration
  and the prepared tokenizer before anything is written or moved;
* the hardware is checked before anything is written or moved;
* a non-finite training loss stops the run with one line; no checkpoint holds weights it updated.

Every error case checks the whole tree of the checkpoint directory before and after.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, child_env

from lmlab.config import ConfigError, TrainerConfig, build_config, compose
from lmlab.model.checkpoint import CKPT_TOKENIZER, safe_load, tokenizer_hash
from lmlab.train.fit import train
from lmlab.train.resume import fingerprint, resume_plan

STAMP = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ(-\d+)?"  # a superseded set: <UTC time>[-n]


def _cfg(tiny_overrides, *extra):
    return build_config(compose([*tiny_overrides, *extra]))


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (empty for a missing directory)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def _earlier_run(ckpt: Path, state: bytes | None = None) -> dict[str, bytes]:
    """Stand-ins for an earlier run's files in ``ckpt``; returns their tree."""
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "last.ckpt").write_bytes(b"earlier last")
    (ckpt / "best.ckpt").write_bytes(b"earlier best")
    (ckpt / "snapshots").mkdir(exist_ok=True)
    (ckpt / "snapshots/step-00000004.pt").write_bytes(b"earlier snapshot")
    if state is None:
        state = json.dumps({"fingerprint": {"seed": -1}, "wandb_id": None, "finished": False}).encode()
    (ckpt / "state.json").write_bytes(state)
    return _tree(ckpt)


def _params(tmp_path: Path, tiny_overrides, *extra) -> Path:
    """A composed params file (the DVC door) of the tiny config with ``extra`` overrides."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(compose([*tiny_overrides, *extra]), sort_keys=False))
    return path


def _stage(capsys, prepared, params: Path, out: Path, ckpt: Path) -> tuple[int, str, list[str]]:
    """The train stage's main() in this process: (exit status, stdout, stderr lines)."""
    import train as train_stage

    capsys.readouterr()
    rc = train_stage.main(["--params", str(params), "--prepared-dir", str(prepared / "prepared"),
                           "--out-dir", str(out), "--curves-dir", str(out / "curves"), "--ckpt-dir", str(ckpt)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.splitlines()


# -- 1. a fresh start moves the earlier checkpoints aside ------------------------------------------

def test_superseded_sets_never_overwrite_one_another(tmp_path):
    from datetime import datetime, timezone

    from lmlab.train.resume import move_aside

    now = datetime(2026, 12, 1, 15, 4, 5, tzinfo=timezone.utc)
    first = _earlier_run(tmp_path)
    a = move_aside(tmp_path, now)
    assert a == tmp_path / "superseded/2026-12-01T15-04-05Z" and _tree(a) == first
    (tmp_path / "last.ckpt").write_bytes(b"second")
    b = move_aside(tmp_path, now)  # the same second: a new folder beside the first
    assert b == tmp_path / "superseded/2026-12-01T15-04-05Z-1" and _tree(b) == {"last.ckpt": b"second"}
    assert _tree(a) == first
    assert move_aside(tmp_path, now) is None  # nothing left to move: no empty folder
    assert sorted(p.name for p in (tmp_path / "superseded").iterdir()) == ["2026-12-01T15-04-05Z",
                                                                          "2026-12-01T15-04-05Z-1"]


def test_a_fresh_start_moves_the_earlier_checkpoints_aside(prepared, tiny_overrides, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    earlier = _earlier_run(ckpt)
    cfg = _cfg(tiny_overrides, "trainer.max_steps=2", "trainer.val_check_interval=2", "ckpt_path=null")
    train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves", ckpt)
    (first,) = (ckpt / "superseded").iterdir()
    assert re.fullmatch(STAMP, first.name) and _tree(first) == earlier  # every file, byte for byte
    lines = [line for line in capsys.readouterr().out.splitlines() if "moved" in line]
    assert lines == [f"train: moved the earlier checkpoints (best.ckpt, last.ckpt, snapshots/, state.json) "
                     f"to {first}"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.ckpt", "last.ckpt", "state.json", "superseded"]

    # the run finished: auto starts afresh and moves this run's checkpoints aside in turn
    run1 = {name: (ckpt / name).read_bytes() for name in ("best.ckpt", "last.ckpt", "state.json")}
    train(_cfg(tiny_overrides, "trainer.max_steps=2", "trainer.val_check_interval=2"), prepared / "prepared",
          tmp_path / "model", tmp_path / "curves", ckpt)
    sets = sorted((ckpt / "superseded").iterdir())
    assert len(sets) == 2 and _tree(first) == earlier
    (second,) = [s for s in sets if s != first]
    assert _tree(second) == run1


# -- 2. ckpt_path=last never starts afresh; auto survives a broken state file ----------------------

def test_ckpt_path_last_without_a_checkpoint_is_an_error(prepared, tiny_overrides, tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"
    ckpt.mkdir()
    params = _params(tmp_path, tiny_overrides, "ckpt_path=last")
    rc, _, err = _stage(capsys, prepared, params, out, ckpt)
    assert rc == 2 and err == [f"error: ckpt_path=last: no last.ckpt in {ckpt} to resume; use ckpt_path=null "
                               "for a fresh start, or ckpt_path=auto (resumes when there is one)"]
    assert _tree(ckpt) == {} and not out.exists()


def test_ckpt_path_last_needs_a_readable_state_file(tmp_path, tiny_overrides):
    fp = fingerprint(_cfg(tiny_overrides), "{tokenizer}", 400)
    last, state = tmp_path / "last.ckpt", tmp_path / "state.json"
    last.write_bytes(b"x")
    fix = f"use ckpt_path={last} to resume it anyway (its model and tokenizer are checked), or ckpt_path=null " \
          "for a fresh start (the old files are moved aside)"
    with pytest.raises(ConfigError) as no_state:
        resume_plan("last", tmp_path, fp)
    assert str(no_state.value) == f"ckpt_path=last: {state} not found, so whose run {last} is can't be told; {fix}"
    state.write_text('{"fingerprint": {"seed": 0')  # cut short
    with pytest.raises(ConfigError) as broken:
        resume_plan("last", tmp_path, fp)
    assert str(broken.value) == (f"ckpt_path=last: {state} is not readable JSON (Expecting ',' delimiter: "
                                 f"line 1 column 27 (char 26)); {fix}")
    assert resume_plan("auto", tmp_path, fp) == (None, None, f"fresh start ({state} is not readable JSON "
                                                               "(Expecting ',' delimiter: line 1 column 27 (char 26)): "
                                                               "another run's files, moved aside)")
    state.write_text(json.dumps({"wandb_id": "abc12345", "finished": False}))  # no fingerprint
    with pytest.raises(ConfigError) as no_fp:
        resume_plan("last", tmp_path, fp)
    assert str(no_fp.value) == f"ckpt_path=last: {state} has no fingerprint; {fix}"
    assert resume_plan("auto", tmp_path, fp) == (None, None, f"fresh start ({state} has no fingerprint: "
                                                               "another run's files, moved aside)")


def test_auto_moves_the_files_of_a_broken_state_aside(prepared, tiny_overrides, tmp_path):
    ckpt = tmp_path / "ckpt"
    earlier = _earlier_run(ckpt, state=b"{not json")
    train(_cfg(tiny_overrides, "trainer.max_steps=2", "trainer.val_check_interval=2"), prepared / "prepared",
          tmp_path / "model", tmp_path / "curves", ckpt)
    (moved,) = (ckpt / "superseded").iterdir()
    assert _tree(moved) == earlier
    assert json.loads((ckpt / "state.json").read_text())["finished"] is True


# -- 3. ckpt_path=<file> is checked before anything is written or moved ----------------------------

@pytest.fixture(scope="module")
def trained(prepared, tiny_overrides, tmp_path_factory):
    """A real last.ckpt of the tiny config at step 2."""
    root = tmp_path_factory.mktemp("trained")
    cfg = _cfg(tiny_overrides, "trainer.max_steps=2", "trainer.val_check_interval=2",
               "trainer.checkpoint_every_n_steps=2", "ckpt_path=null")
    train(cfg, prepared / "prepared", root / "model", root / "curves")
    return root / "model/checkpoints/last.ckpt"


def _refused(capsys, prepared, tiny_overrides, tmp_path, ckpt_file, *extra) -> str:
    """Run the stage resuming from ``ckpt_file``; assert exit 2, one stderr line, nothing touched;
    return the line."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"
    earlier = _earlier_run(ckpt)
    rc, _, err = _stage(capsys, prepared, _params(tmp_path, tiny_overrides, f"ckpt_path={ckpt_file}", *extra),
                        out, ckpt)
    assert rc == 2 and len(err) == 1, err
    assert _tree(ckpt) == earlier and not out.exists()
    return err[0]


def test_resume_file_of_another_model_is_refused(prepared, tiny_overrides, tmp_path, capsys, trained):
    line = _refused(capsys, prepared, tiny_overrides, tmp_path, trained, "model.n_embd=64")
    assert line == f"error: ckpt_path={trained}: model.n_embd was 32, now 64; a checkpoint only continues its own model"


def test_resume_file_of_another_tokenizer_is_refused(prepared, tiny_overrides, tmp_path, capsys, trained):
    payload = safe_load(trained)
    ours = payload[CKPT_TOKENIZER]
    payload[CKPT_TOKENIZER] = ours.replace('"<unk>"', '"<UNK>"')
    assert payload[CKPT_TOKENIZER] != ours
    other = tmp_path / "other.ckpt"
    torch.save(payload, other)
    line = _refused(capsys, prepared, tiny_overrides, tmp_path, other)
    tok = prepared / "prepared/tokenizer.json"
    assert line == (f"error: ckpt_path={other}: its tokenizer ({tokenizer_hash(payload[CKPT_TOKENIZER])}) is not "
                    f"the prepared data's ({tok}: {tokenizer_hash(tok.read_text())}); resume on the data it was "
                    "trained on, or start afresh with ckpt_path=null")


def test_resume_file_that_is_no_lmlab_checkpoint_is_refused(prepared, tiny_overrides, tmp_path, capsys):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 3}, foreign)
    line = _refused(capsys, prepared, tiny_overrides, tmp_path, foreign)
    assert line == (f"error: ckpt_path={foreign} is not an lmlab training checkpoint (no hyper_parameters.model_cfg): "
                    "give a last.ckpt or best.ckpt of lmlab's training")


class _OpensAFile:
    """Unpickling this creates the file ``path`` (``open(path, "w")``): code run by a checkpoint."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_resume_file_that_runs_code_is_refused_unexecuted(prepared, tiny_overrides, tmp_path, capsys):
    evil, mark = tmp_path / "evil.ckpt", tmp_path / "executed"
    torch.save({"state_dict": {}, "hyper_parameters": {"model_cfg": {}}, "hook": _OpensAFile(mark)}, evil)
    assert not mark.exists()
    line = _refused(capsys, prepared, tiny_overrides, tmp_path, evil)
    # safe_load names the global it refused; which name is safe_load's business (tests/test_bad_input.py)
    assert line.startswith(f"error: ckpt_path={evil}: {evil} holds Python objects (") and "refused to load it" in line
    assert line.endswith("; start afresh with ckpt_path=null")
    assert not mark.exists()


def test_a_matching_resume_file_continues_and_moves_the_directory_aside(prepared, tiny_overrides, tmp_path, trained):
    ckpt = tmp_path / "ckpt"
    earlier = _earlier_run(ckpt)
    cfg = _cfg(tiny_overrides, "trainer.max_steps=4", "trainer.val_check_interval=2",
               "trainer.checkpoint_every_n_steps=2", f"ckpt_path={trained}")
    summary = train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves", ckpt)
    assert summary["global_step"] == 4
    (moved,) = (ckpt / "superseded").iterdir()
    assert _tree(moved) == earlier
    assert safe_load(ckpt / "last.ckpt")["global_step"] == 4


def test_resuming_from_a_checkpoint_of_the_directory_follows_it_aside(prepared, tiny_overrides, tmp_path, trained):
    """best.ckpt of the checkpoint directory itself: the run would overwrite it, so it moves aside
    with the rest, and training continues from where it went."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained.parent, ckpt)
    before = _tree(ckpt)
    cfg = _cfg(tiny_overrides, "trainer.max_steps=4", "trainer.val_check_interval=2",
               "trainer.checkpoint_every_n_steps=2", f"ckpt_path={ckpt / 'best.ckpt'}")
    assert train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves", ckpt)["global_step"] == 4
    (moved,) = (ckpt / "superseded").iterdir()
    assert _tree(moved) == before


# -- 4. hardware, before anything is written or moved ----------------------------------------------

REFUSED = [  # (trainer keys, CUDA GPUs, bf16 on them, the error)
    (dict(accelerator="gpu"), 0, False, "trainer.accelerator=gpu but this machine has no CUDA GPU: use trainer=cpu"),
    (dict(accelerator="cuda", precision="bf16-mixed"), 0, False,
     "trainer.accelerator=cuda but this machine has no CUDA GPU: use trainer=cpu"),
    (dict(accelerator="gpu", devices=4), 2, True,
     "trainer.devices=4 but this machine has 2 CUDA GPUs: set trainer.devices=2 or fewer (-1 takes them all)"),
    (dict(accelerator="auto", devices=2), 1, True,
     "trainer.devices=2 but this machine has 1 CUDA GPU: set trainer.devices=1 or fewer (-1 takes them all)"),
    (dict(accelerator="gpu", precision="bf16-mixed"), 1, False,
     "trainer.precision=bf16-mixed but this GPU has no bf16: use trainer.precision=16-mixed (or 32-true)"),
    (dict(accelerator="auto", precision="bf16-true"), 1, False,
     "trainer.precision=bf16-true but this GPU has no bf16: use trainer.precision=16-mixed (or 32-true)"),
    # Lightning: ValueError "The strategy `fsdp` requires a GPU accelerator, but received `accelerator='cpu'`"
    (dict(accelerator="cpu", strategy="fsdp"), 2, True,
     "trainer.strategy=fsdp needs CUDA GPUs, and this run is on the CPU: use trainer.strategy=ddp there"),
    (dict(accelerator="auto", strategy="fsdp"), 0, False,
     "trainer.strategy=fsdp needs CUDA GPUs, and this run is on the CPU: use trainer.strategy=ddp there"),
    # Lightning only warns "AMP with fp16 is not supported on CPU. Using precision='bf16-mixed'
    # instead." and trains in bf16: not what the config says, so refused (SILENTLY_CHANGED)
    (dict(accelerator="cpu", precision="16-mixed"), 0, False,
     "trainer.precision=16-mixed needs a CUDA GPU (on the CPU, Lightning would train in bf16-mixed instead): "
     "use trainer.precision=bf16-mixed or 32-true"),
    # Lightning: TypeError "`devices` selected with `CPUAccelerator` should be an int > 0."
    (dict(accelerator="cpu", devices=-1), 0, False,
     "trainer.devices=-1 (every GPU) but this run is on the CPU: give a number of processes, e.g. trainer.devices=2"),
]

ACCEPTED = [
    (dict(), 0, False),
    (dict(accelerator="gpu", devices=-1, strategy="fsdp", precision="bf16-mixed"), 8, True),
    (dict(accelerator="gpu", devices=2, precision="16-mixed"), 2, False),
    (dict(accelerator="auto", precision="bf16-mixed"), 0, False),  # the CPU has bf16 autocast
    (dict(accelerator="cpu", precision="bf16-true"), 0, False),
    (dict(accelerator="cpu", devices=2, strategy="ddp"), 0, False),
]


@pytest.mark.parametrize(("keys", "gpus", "bf16", "error"), REFUSED)
def test_check_hardware_refuses(keys, gpus, bf16, error):
    from lmlab.train.hardware import check_hardware

    with pytest.raises(ConfigError) as refused:
        check_hardware(TrainerConfig(**keys), gpus, bf16)
    assert str(refused.value) == error


@pytest.mark.parametrize(("keys", "gpus", "bf16"), ACCEPTED)
def test_check_hardware_accepts(keys, gpus, bf16):
    from lmlab.train.hardware import check_hardware

    check_hardware(TrainerConfig(**keys), gpus, bf16)


def test_check_hardware_refuses_what_lightning_refuses_on_this_machine():
    """Parity with the real thing: on this machine, Lightning's Trainer refuses exactly the
    settings check_hardware refuses (the CUDA ones need a GPU to agree, so only CPU-only here)."""
    import pytorch_lightning as pl

    from lmlab.train.fit import make_strategy
    from lmlab.train.hardware import cuda_facts, plan_hardware

    if torch.cuda.is_available():
        pytest.skip("the cases are the CPU-only machine's")
    silently_changed = [dict(accelerator="cpu", precision="16-mixed")]  # Lightning runs it, as bf16
    cases = [keys for keys, gpus, _, _ in REFUSED if gpus == 0 and keys not in silently_changed] \
        + [keys for keys, gpus, _ in ACCEPTED if gpus == 0]
    for keys in cases:
        tc = TrainerConfig(**keys)
        try:  # what we accept, Lightning must run as planned; what we refuse, Lightning refuses as asked
            plan = plan_hardware(tc, *cuda_facts(tc))
            ours, asked = None, (plan.accelerator, plan.devices, plan.precision)
        except ConfigError as err:
            ours, asked = str(err), (tc.accelerator, tc.devices, "32-true" if tc.precision == "auto" else tc.precision)
        try:
            pl.Trainer(accelerator=asked[0], devices=asked[1], strategy=make_strategy(tc.strategy),
                       precision=asked[2], logger=False, enable_checkpointing=False)
            theirs = None
        except Exception as err:  # MisconfigurationException, ValueError, TypeError
            theirs = f"{type(err).__name__}: {err}"
        assert (ours is None) == (theirs is None), (keys, ours, theirs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_config_on_a_cpu_machine_exits_2_and_touches_nothing(prepared, tiny_overrides, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"
    earlier = _earlier_run(ckpt)
    params = _params(tmp_path, tiny_overrides, "trainer.accelerator=gpu")
    proc = subprocess.run([sys.executable, str(ROOT / "src/train.py"), "--params", str(params),
                           "--prepared-dir", str(prepared / "prepared"), "--out-dir", str(out),
                           "--ckpt-dir", str(ckpt)],
                          cwd=tmp_path, env=child_env(PYTHONPATH=str(ROOT / "src")), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: trainer.accelerator=gpu but this machine has no CUDA GPU: use trainer=cpu"], proc.stderr[-2000:]
    assert _tree(ckpt) == earlier and not out.exists()


# -- 5. divergence ---------------------------------------------------------------------------------

# The real config, with a learning rate 500 times the default's and no warmup: the loss grows
# (2.6e7, 2.2e8, 1.5e9, 1.7e10) and is nan from step 6 on, every time, on this machine.
DIVERGES = ["trainer.lr=1000", "trainer.warmup_steps=0", "trainer.lr_schedule=constant", "trainer.max_steps=12",
            "trainer.val_check_interval=12"]


def test_divergence_stops_at_the_first_nan_and_keeps_the_last_good_checkpoint(prepared, tiny_overrides, tmp_path,
                                                                             capsys):
    """A checkpoint and a snapshot are due at step 6, the first nan step; the log steps (every 50)
    never come: only the check before every save can stop it."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"
    params = _params(tmp_path, tiny_overrides, *DIVERGES, "trainer.checkpoint_every_n_steps=2",
                     "trainer.log_every_n_steps=50", "trainer.average_last=3", "ckpt_path=null")
    rc, _, err = _stage(capsys, prepared, params, out, ckpt)
    assert rc == 2
    assert [line for line in err if line.startswith("error")] == err[-1:] == [
        f"error: training diverged at step 6: loss nan (lr 1.0e+03); the last good checkpoint is {ckpt}/last.ckpt "
        "(step 4); lower trainer.lr (or raise trainer.warmup_steps) and train again: ckpt_path=auto moves these "
        "checkpoints aside"]
    last = safe_load(ckpt / "last.ckpt")
    assert last["global_step"] == 4 and all(v.isfinite().all() for v in last["state_dict"].values())
    assert sorted(p.name for p in (ckpt / "snapshots").iterdir()) == ["step-00000002.pt", "step-00000004.pt"]
    assert json.loads((ckpt / "state.json").read_text())["finished"] is False
    assert not (out / "model.pt").exists() and not (out / "run.json").exists()


def test_weights_that_are_no_longer_finite_are_not_saved(tiny_overrides):
    """An update can overflow with every loss finite (bf16 has no loss scaler): the check before a
    checkpoint also looks at the weights."""
    import pytorch_lightning as pl

    from lmlab.model.transformer import ModelConfig
    from lmlab.train.module import TrainingDiverged, TransformerLitModule

    cfg = build_config(compose(tiny_overrides))
    tc = cfg.trainer
    module = TransformerLitModule(ModelConfig.of(cfg, 300, 0).to_dict(), tc.__dict__ | {"betas": list(tc.betas)})
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
    module.on_save_checkpoint({})  # finite: saved as usual
    with torch.no_grad():
        module.model.embed.weight[5, 3] = float("inf")
    with pytest.raises(TrainingDiverged) as stopped:
        module.on_save_checkpoint({})
    assert str(stopped.value) == ("training diverged by step 0: the losses were finite but some weights no longer "
                                  "are (an update overflowed)")


def test_divergence_between_checkpoints_is_caught_at_the_next_log_step(prepared, tiny_overrides, tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"
    params = _params(tmp_path, tiny_overrides, *DIVERGES, "trainer.checkpoint_every_n_steps=100",
                     "trainer.log_every_n_steps=4", "ckpt_path=null")
    rc, _, err = _stage(capsys, prepared, params, out, ckpt)
    assert rc == 2 and err[-1] == (
        "error: training diverged at step 6: loss nan (lr 1.0e+03), before any checkpoint was written; lower "
        "trainer.lr (or raise trainer.warmup_steps) and train again")
    assert sorted(p.name for p in ckpt.iterdir()) == ["state.json"]
    assert json.loads((ckpt / "state.json").read_text())["finished"] is False
    assert not (out / "model.pt").exists()


def test_ddp_ranks_agree_on_the_divergence_and_stop_together(prepared, tiny_overrides, tmp_path):
    """Real DDP on the CPU (gloo, two processes): each rank sees its own batches' losses, so the
    ranks gather their first non-finite step at every check and stop at the same one; a rank
    that went on alone would wait for the other in its next all-reduce."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"
    params = _params(tmp_path, tiny_overrides, *DIVERGES, "trainer.checkpoint_every_n_steps=2",
                     "trainer.log_every_n_steps=50", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.strategy=ddp", "ckpt_path=null")
    proc = subprocess.run([sys.executable, str(ROOT / "src/train.py"), "--params", str(params),
                           "--prepared-dir", str(prepared / "prepared"), "--out-dir", str(out), "--ckpt-dir", str(ckpt)],
                          cwd=tmp_path, env=child_env(PYTHONPATH=str(ROOT / "src")), capture_output=True,
                          text=True, timeout=300)
    line = (f"error: training diverged at step 6: loss nan (lr 1.0e+03); the last good checkpoint is {ckpt}/last.ckpt "
            "(step 4); lower trainer.lr (or raise trainer.warmup_steps) and train again: ckpt_path=auto moves these "
            "checkpoints aside")
    # every rank meets the error and prints it; the other rank's line says which rank it is
    assert proc.returncode == 2 and proc.stderr.count(line) == 2, proc.stderr[-3000:]
    assert proc.stderr.count(f"rank 1: {line}") == 1 and proc.stderr.count("error:") == 2
    assert safe_load(ckpt / "last.ckpt")["global_step"] == 4
    assert json.loads((ckpt / "state.json").read_text())["finished"] is False and not (out / "model.pt").exists()
