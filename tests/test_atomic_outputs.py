"""Atomic outputs: a stage killed at any instant leaves each of its outputs (a folder, or a file)
as the old complete set or the new complete set, never a mixture, and the next `dvc repro` ends
where an uninterrupted one does.

The kill test does not guess when to kill. A stage's outputs change only when a file or folder is
renamed onto one of them (or one is deleted), so an audit hook (``sys.addaudithook``, installed in
the stage's process by a ``sitecustomize`` on its PYTHONPATH) counts those events and SIGKILLs the
process right before the k-th: every moment at which an output could be seen changing (six of
them, first to last, where there are more). The stage commands are dvc.yaml's own, run as they are.
A stage whose outputs lie at separate paths can be killed between their renames, leaving some old
and the others new, each whole (``lmlab.files``: the window between separate paths); the test
prints where that happened rather than failing on it.
"""

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_repo, run, without_sweep

# The outputs of each stage (dvc.yaml's outs, metrics and plots), as the units that must switch
# whole: a folder with everything in it, or a file. reports/train is declared file by file (three
# plots and a metric) and written as one folder.
UNITS = {
    "download": ["data/raw"],
    "prepare": ["data/prepared"],
    "train": ["data/model", "reports/train"],
    "generate": ["reports/generations.jsonl", "reports/decode.json"],
    "evaluate": ["reports/metrics.json"],
    "report": ["reports/report.md", "reports/figures"],
}

# Installed as the stage process's sitecustomize: counts the events that change a watched path (a
# rename from or onto it, a deletion of it, lmlab's RENAME_EXCHANGE, which ctypes does not audit)
# and kills the process before the KILL_AT-th. Also logs each one, and every open for writing of a
# watched file under its final name (a write in place, which no rename would reveal).
HOOK = r'''
import os, signal, sys

WATCH = [p for p in os.environ.get("ATOMIC_TEST_WATCH", "").split(os.pathsep) if p]
KILL_AT = int(os.environ.get("ATOMIC_TEST_KILL_AT", "0"))
LOG = os.environ.get("ATOMIC_TEST_LOG")
seen = 0


def watched(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    p = os.path.abspath(os.fsdecode(path))
    return any(p == w or p.startswith(w + os.sep) for w in WATCH)


def log(line):
    if LOG:
        with open(LOG, "a") as f:
            f.write(line + "\n")


def hook(event, args):
    global seen
    if event in ("os.rename", "lmlab.files.exchange"):
        paths = args[:2]
    elif event in ("os.remove", "os.rmdir", "shutil.rmtree") and args[-1] is None:  # no dir_fd
        paths = args[:1]
    elif event == "open" and watched(args[0]):
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or (flags or 0) & (os.O_WRONLY | os.O_RDWR)
        if writing and not os.fsdecode(path).endswith(".tmp"):
            log(f"write {os.fsdecode(path)}")
        return
    else:
        return
    if not any(watched(p) for p in paths):
        return
    seen += 1
    log(f"change {seen} {event} " + " ".join(os.fsdecode(p) for p in paths))
    if seen == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


if WATCH:
    sys.addaudithook(hook)
'''


def _digest(path: Path) -> str:
    """The file's content; for what holds timings (decode speed, training seconds) the rest of it."""
    if path.suffix == ".json":
        obj = json.loads(path.read_text())
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if "seconds" not in k and "per_second" not in k}
        data = json.dumps(obj, sort_keys=True).encode()
    elif path.suffix == ".pt":  # torch.save names the archive after the file: compare what it holds
        payload = torch.load(path, map_location="cpu", weights_only=True)
        h = hashlib.sha256(json.dumps([payload["model_config"], payload["tokenizer_sha256"]]).encode())
        for name, tensor in sorted(payload["state_dict"].items()):
            h.update(name.encode() + tensor.numpy().tobytes())
        return h.hexdigest()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def fingerprint(path: Path) -> dict[str, str] | None:
    """{relative name: digest} of a file or a folder's files, leaving out *.tmp debris (temporary
    files and folders are no output); None when the path does not exist."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": _digest(path)}
    return {p.relative_to(path).as_posix(): _digest(p) for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.endswith(".tmp") for part in p.relative_to(path).parts)}


def describe(got, old, new) -> str:
    if got is None:
        return "missing"
    parts = []
    for name in sorted(set(got) | set(old or {}) | set(new or {})):
        g = got.get(name)
        state = ("absent" if g is None else "old" if g == (old or {}).get(name)
                 else "new" if g == (new or {}).get(name) else "neither old nor new")
        parts.append(f"{name}: {state}")
    return ", ".join(parts)


def snapshot(root: Path, rels: list[str], store: Path) -> Path:
    for rel in rels:
        src, dst = root / rel, store / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        elif src.exists():
            shutil.copy2(src, dst)
    return store


def restore(root: Path, rels: list[str], store: Path) -> None:
    for rel in rels:
        target = root / rel
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    snapshot(store, rels, root)


def kill_points(n: int, most: int = 4) -> list[int]:
    """Every one of ``n`` changes when there are few, else ``most`` spread from the first to the last."""
    return sorted({1 + round(i * (n - 1) / (most - 1)) for i in range(most)}) if n else []


def run_stage(cmd, dest, env, hook_dir, units, log=None, kill_at=0):
    env = dict(env, PYTHONPATH=f"{hook_dir}{os.pathsep}{env['PYTHONPATH']}",
               ATOMIC_TEST_WATCH=os.pathsep.join(str(dest / u) for u in units),
               ATOMIC_TEST_KILL_AT=str(kill_at), ATOMIC_TEST_LOG=str(log or ""))
    return subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_killed_stage_leaves_old_or_new_outputs_and_dvc_repro_recovers(tmp_path, tiny_overrides):
    start = time.perf_counter()
    dest = tmp_path / "repo"
    dest.mkdir()
    env, _ = copy_repo(dest, tiny_overrides, edit=without_sweep)
    run(["dvc", "repro"], dest, env)  # the old outputs, and the metrics every recovery must reach
    reference = json.loads((dest / "reports/metrics.json").read_text())
    stages = yaml.safe_load((dest / "dvc.yaml").read_text())["stages"]
    for stage, units in UNITS.items():  # UNITS covers what dvc.yaml declares, and no more
        declared = [next(iter(o)) if isinstance(o, dict) else o
                    for key in ("outs", "metrics", "plots") for o in stages[stage].get(key, [])]
        assert all(any(d == u or d.startswith(u + "/") for u in units) for d in declared), (stage, declared)
        assert all(any(d == u or d.startswith(u + "/") for d in declared) for u in units), (stage, declared)

    # The killed runs write other outputs, so that old and new differ file by file and a mixture
    # shows: another corpus (data.seed) changes every stage's, another warm-up the lr curve's.
    params_a = (dest / "params.yaml").read_text()
    params_b = yaml.safe_load(params_a)
    params_b["data"]["seed"] += 1
    params_b["trainer"]["warmup_steps"] += 1
    (dest / "params.yaml").write_text(yaml.safe_dump(params_b, sort_keys=False))
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(HOOK)

    problems, kills, windows = [], [], []
    for stage, units in UNITS.items():
        cmd = [sys.executable if a == "python" else a for a in shlex.split(stages[stage]["cmd"])]
        # the checkpoints too, so that every killed training starts as the logged one did
        kept = units + (["data/checkpoints"] if stage == "train" else [])
        old_store = snapshot(dest, kept, tmp_path / "old" / stage)
        old = {u: fingerprint(dest / u) for u in units}
        log = tmp_path / f"{stage}.log"
        done = run_stage(cmd, dest, env, hook_dir, units, log)  # uninterrupted: the new outputs
        assert done.returncode == 0, f"{stage}:\n{done.stderr[-3000:]}"
        events = log.read_text().splitlines() if log.exists() else []
        problems += [f"{stage}: {e} (a write in place)" for e in events if e.startswith("write ")]
        changes = [e for e in events if e.startswith("change ")]
        new = {u: fingerprint(dest / u) for u in units}
        assert all(new[u] is not None and new[u] != old[u] for u in units if not u.endswith("decode.json")), stage
        new_store = snapshot(dest, kept, tmp_path / "new" / stage)
        for k in kill_points(len(changes)):
            restore(dest, kept, old_store)
            killed = run_stage(cmd, dest, env, hook_dir, units, kill_at=k)
            assert killed.returncode == -signal.SIGKILL, f"{stage} was not killed before change {k}"
            kills.append(f"{stage}@{k}/{len(changes)}")
            state = {}
            for u in units:
                got = fingerprint(dest / u)
                state[u] = "old" if got == old[u] else "new" if got == new[u] else "mixed"
                if state[u] == "mixed":
                    problems.append(f"{stage} killed before {changes[k - 1].split(' ', 2)[2]} "
                                    f"({k} of {len(changes)}): {u} is a mixture: {describe(got, old[u], new[u])}")
            if {"old", "new"} <= set(state.values()):  # between the renames of separate paths
                windows.append(f"{stage}@{k} (" + ", ".join(f"{u} {v}" for u, v in state.items()) + ")")
        restore(dest, kept, new_store)  # the next stage reads this one's new outputs

    # Back to the first params, amid what the kills left: `dvc repro` checks the outputs out of
    # DVC's cache (their deps did not change); --force runs every stage again.
    (dest / "params.yaml").write_text(params_a)
    for repro in (["dvc", "repro"], ["dvc", "repro", "--force"]):
        out = run(repro, dest, env)
        print(" ".join(repro) + ": " + "; ".join(line for line in out.splitlines()
                                                   if line.startswith(("Running stage", "Stage '"))))
        recovered = json.loads((dest / "reports/metrics.json").read_text())
        if recovered != reference:
            problems.append(f"{' '.join(repro)} after the kills: {recovered} instead of {reference}")
    # the main pipeline (not pretrain/dvc.yaml's, never run here): all up to date but the init
    # stage, which DVC always counts as changed (it hashes the init_from file on every repro)
    status = run(["dvc", "status", "dvc.yaml"], dest, env)
    if status.split() != ["init:", "always", "changed"]:
        problems.append(f"dvc status after the repros:\n{status}")
    print(f"{len(kills)} kills ({', '.join(kills)}) in {time.perf_counter() - start:.0f} s; "
          f"between the renames of separate paths: {'; '.join(windows) or 'none'}")
    assert not problems, "\n".join(problems)


# --- lmlab.files ---------------------------------------------------------------------------------

_EVENTS: list | None = None  # what _record records while a test sets it to a list


def _record(event, args):
    if _EVENTS is not None and event in ("os.rename", "lmlab.files.exchange"):
        _EVENTS.append(("rename", os.fsdecode(args[0]), os.fsdecode(args[1])))


@pytest.fixture
def events(monkeypatch):
    """The renames and fsyncs of the test, in order: ("rename", src, dst), ("fsync", path)."""
    global _EVENTS
    if not getattr(_record, "installed", False):  # an audit hook cannot be removed: it stays, idle
        sys.addaudithook(_record)
        _record.installed = True
    _EVENTS = []
    real_fsync = os.fsync

    def fsync(fd):
        _EVENTS.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield _EVENTS
    _EVENTS = None


def tree(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def test_atomic_dir_swaps_the_folder_whole_and_fsyncs_before_the_swap(tmp_path, events):
    from lmlab.files import atomic_dir

    target = tmp_path / "raw"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".raw.") and tmp.name.endswith(".tmp")
        assert list(tmp.iterdir()) == []
        (tmp / "a.txt").write_text("a")
        (tmp / "b.txt").write_text("b")
        assert tree(target) == {"old.txt": "old"}  # nothing visible before the block ends
    assert tree(target) == {"a.txt": "a", "b.txt": "b"}  # the old file went with the old folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary folder left
    assert oct(target.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0o700
    (swap,) = [i for i, e in enumerate(events) if e[0] == "rename"]
    synced_before = {e[1] for e in events[:swap] if e[0] == "fsync"}
    assert {str(tmp / "a.txt"), str(tmp / "b.txt"), str(tmp)} <= synced_before
    assert ("fsync", str(tmp_path)) in events[swap:]  # the parent, which records the rename


def test_atomic_dir_error_leaves_the_old_folder_and_no_temporary(tmp_path):
    from lmlab.files import atomic_dir

    target = tmp_path / "prepared"
    target.mkdir()
    (target / "stats.json").write_text("{}")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as tmp:
            (tmp / "stats.json").write_text('{"new": 1}')
            raise RuntimeError("boom")
    assert tree(target) == {"stats.json": "{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_atomic_dir_creates_a_missing_folder(tmp_path):
    from lmlab.files import atomic_dir

    with atomic_dir(tmp_path / "reports" / "figures") as tmp:
        (tmp / "loss.png").write_bytes(b"png")
    assert tree(tmp_path / "reports" / "figures") == {"loss.png": "png"}
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["figures"]


def test_atomic_dir_falls_back_to_two_renames_without_renameat2(tmp_path, monkeypatch, events):
    import lmlab.files

    monkeypatch.setattr(lmlab.files, "_renameat2", None)  # as on macOS or glibc < 2.28
    target = tmp_path / "model"
    target.mkdir()
    (target / "model.pt").write_text("old")
    with lmlab.files.atomic_dir(target) as tmp:
        (tmp / "model.pt").write_text("new")
    assert tree(target) == {"model.pt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    renames = [e for e in events if e[0] == "rename"]
    assert len(renames) == 2 and renames[0][1] == str(target) and renames[1] == ("rename", str(tmp), str(target))


def test_atomic_dir_refuses_a_folder_that_holds_folders(tmp_path):
    from lmlab.files import atomic_dir

    (tmp_path / "data" / "prepared").mkdir(parents=True)  # `--raw-dir data` by mistake
    (tmp_path / "data" / "prepared" / "stats.json").write_text("{}")
    with pytest.raises(IsADirectoryError, match="holds the folder prepared/"):
        with atomic_dir(tmp_path / "data"):
            pytest.fail("the block must not run")
    assert tree(tmp_path) == {"data/prepared/stats.json": "{}"}


def test_atomic_outputs_publish_together_in_order_or_not_at_all(tmp_path, events):
    from lmlab.files import atomic_outputs

    figures, md = tmp_path / "figures", tmp_path / "report.md"
    figures.mkdir()
    (figures / "loss.png").write_text("old")
    md.write_text("old")
    with pytest.raises(ValueError):
        with atomic_outputs() as out:
            (out.dir(figures) / "loss.png").write_text("new")
            out.file(md).write_text("new")
            raise ValueError("a bad input after both were written")
    assert tree(tmp_path) == {"figures/loss.png": "old", "report.md": "old"}
    assert not [e for e in events if e[0] == "rename"]

    events.clear()
    with atomic_outputs() as out:
        figures_tmp, md_tmp = out.dir(figures), out.file(md)
        (figures_tmp / "loss.png").write_text("new")
        md_tmp.write_text("new")
    assert tree(tmp_path) == {"figures/loss.png": "new", "report.md": "new"}
    renames = [i for i, e in enumerate(events) if e[0] == "rename"]
    assert [events[i][2] for i in renames] == [str(figures), str(md)]  # in the order asked for
    synced_before = {e[1] for e in events[:renames[0]] if e[0] == "fsync"}
    assert {str(figures_tmp / "loss.png"), str(figures_tmp), str(md_tmp)} <= synced_before


def test_atomic_path_fsyncs_the_file_before_the_rename(tmp_path, events):
    from lmlab.files import atomic_write_text

    atomic_write_text(tmp_path / "metrics.json", "{}")
    (rename,) = [i for i, e in enumerate(events) if e[0] == "rename"]
    tmp = events[rename][1]
    assert ("fsync", tmp) in events[:rename] and ("fsync", str(tmp_path)) in events[rename:]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_outputs_refuse_an_output_inside_another_output_folder(tmp_path):
    """A folder swapped in whole would carry away a temporary staged inside it (and the old and
    new files with it): such a pair is refused before anything is written."""
    from lmlab.files import atomic_outputs

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model.pt").write_text("old")
    for first, second in (("dir", "file"), ("file", "dir")):
        with pytest.raises(ValueError, match="one is the folder of the other"), atomic_outputs() as out:
            getattr(out, first)(tmp_path / "x" if first == "dir" else tmp_path / "x" / "model.pt")
            getattr(out, second)(tmp_path / "x" if second == "dir" else tmp_path / "x" / "model.pt")
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["model.pt", "x"]
        assert (tmp_path / "x" / "model.pt").read_text() == "old"


def test_a_run_whose_curves_share_the_model_folder_exports_both(prepared, tiny_overrides, tmp_path):
    """--out-dir and --curves-dir the same folder: the model files go into the curves' folder,
    which is published whole."""
    from lmlab.config import build_config, compose
    from lmlab.train.fit import train

    cfg = build_config(compose(tiny_overrides + ["trainer.max_steps=4", "trainer.val_check_interval=4"]))
    train(cfg, prepared / "prepared", tmp_path / "run", tmp_path / "run", tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "lr.tsv", "model.pt", "run.json", "summary.json", "train_loss.tsv", "val_loss.tsv"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["global_step"] == 4
