"""The newcomer's path: clone the repository afresh and run the README's commands in the order
they are written, in the environment the README says to activate, and report each one.

    python bench/readme_commands.py --workdir /tmp/readme                 # every command as written
    python bench/readme_commands.py --workdir /tmp/readme --max-steps 20  # training cut to 20 steps
    python bench/readme_commands.py --list                                # the plan only

Commands come from the README's ```bash blocks (a line ending in a backslash continues on the
next). A command is skipped, with the reason, when it needs what this machine may not have: a GPU
(``trainer=gpu``, ``ddp``, ``fsdp``, SLURM), your own data (``/data/...``), the Hugging Face Hub (a
recipe of a Hub dataset), a model folder you downloaded (``init_from=hf/...``) or a run that was
interrupted (``ckpt_path=last``); ``make test`` is the CI's own command and is left to it; and the
by-hand set-up is the same as ``make repro``, which runs first. ``outputs/<date>/<time>`` is the
folder the training command before it printed. ``--max-steps N`` appends ``trainer.max_steps=N``
to every command that trains, so the whole path runs in minutes (the commands otherwise train for
up to an hour each on a CPU): it checks that each command works in its place, not its figures.

The last line is a JSON object: how many ran, passed, failed and were skipped, and every command's
record (``failed`` lists the commands that exited non-zero, with the tail of their output in
``--workdir``'s log files).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = (  # (pattern, why): the first that matches
    (r"trainer=(gpu|ddp|fsdp)\b|\bsbatch\b|\bsrun\b", "needs a GPU"),
    (r"(^|[\s=])/data/", "needs your own data"),
    (r"experiment=(shakespeare_char|multi30k_de_en|wikitext2)", "needs the Hugging Face Hub (network)"),
    (r"init_from=hf/", "needs a Hugging Face model folder you saved"),
    (r"ckpt_path=last\b", "continues an interrupted run: none here (tests/test_training.py kills one and resumes it)"),
    (r"^make test\b", "the CI's command (run by .ci/run)"),
    (r"^(python3 -m venv|pip install)", "the by-hand set-up: make repro did it"),
)
TRAINS = re.compile(r"^(dvc exp run|python src/train\.py)\b")


def readme_commands(text: str) -> list[str]:
    """Every command of the README's bash blocks, in order, continuation lines joined."""
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        pending = ""
        for line in block.splitlines():
            line = pending + line.strip()
            if line.endswith("\\"):
                pending = line[:-1].rstrip() + " "
                continue
            pending = ""
            command = re.sub(r"\s+#.*$", "", line).strip() if not line.startswith("#") else ""
            if command:
                out.append(command)
    return out


def plan(commands: list[str], max_steps: int | None) -> list[dict]:
    steps = []
    for command in commands:
        why = next((reason for pattern, reason in SKIP if re.search(pattern, command)), None)
        run = command
        if why is None and max_steps is not None and TRAINS.match(command):
            run += f" -S trainer.max_steps={max_steps}" if command.startswith("dvc") else f" trainer.max_steps={max_steps}"
        steps.append({"command": command, "run": run, "skip": why})
    return steps


def latest_output(clone: Path) -> str | None:
    found = sorted(clone.glob("outputs/*/*/model.pt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1].parent.relative_to(clone)) if found else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/lmlab-readme"), help="where the fresh clone goes")
    p.add_argument("--source", default=str(ROOT), help="the repository to clone (its HEAD)")
    p.add_argument("--max-steps", type=int, default=None, help="cut every training to N steps")
    p.add_argument("--list", action="store_true", help="print the plan and stop")
    args = p.parse_args(argv)
    steps = plan(readme_commands((ROOT / "README.md").read_text(encoding="utf-8")), args.max_steps)
    if args.list:
        for s in steps:
            print(f"{'skip: ' + s['skip'] if s['skip'] else 'run'}\t{s['run']}")
        return {"steps": steps}
    clone = args.workdir / "lmlab"
    if clone.exists():
        raise SystemExit(f"error: {clone} exists: give an empty --workdir (the README is for a fresh clone)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", args.source, str(clone)], check=True)
    # what the README asks after `make repro`: the project's environment activated
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env |= {"VIRTUAL_ENV": str(clone / ".venv"), "PATH": f"{clone / '.venv/bin'}{os.pathsep}{env['PATH']}",
            "WANDB_MODE": env.get("WANDB_MODE", "offline")}
    records = []
    for i, step in enumerate(steps):
        record = {"command": step["command"]}
        if step["skip"]:
            records.append(record | {"skipped": step["skip"]})
            print(f"[{i + 1}/{len(steps)}] skip ({step['skip']}): {step['command']}", flush=True)
            continue
        command = step["run"]
        if "outputs/<date>/<time>" in command:
            folder = latest_output(clone)
            command = command.replace("outputs/<date>/<time>", folder or "outputs/<date>/<time>")
        log = args.workdir / f"{i + 1:02d}.log"
        start = time.perf_counter()
        with open(log, "w") as f:
            rc = subprocess.run(["bash", "-c", command], cwd=clone, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        record |= {"ran": command, "rc": rc, "seconds": round(time.perf_counter() - start, 1), "log": str(log)}
        records.append(record)
        print(f"[{i + 1}/{len(steps)}] rc={rc} {record['seconds']:.0f}s: {command}", flush=True)
    failed = [r["command"] for r in records if r.get("rc")]
    result = {"ran": sum("rc" in r for r in records), "failed": failed,
              "skipped": sum("skipped" in r for r in records), "max_steps": args.max_steps, "records": records}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(1 if main().get("failed") else 0)
