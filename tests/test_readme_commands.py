"""The README's commands as bench/readme_commands.py reads them: continuation lines joined,
comments dropped, and each command either run or skipped for a stated reason."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import readme_commands as rc  # noqa: E402


def test_commands_are_extracted_in_order_with_continuations_joined():
    text = "```bash\nmake repro   # set-up\n# a comment\npython src/a.py --x 1 \\\n  y=2   # both lines\n```\n" \
           "```text\nnot a command\n```\n```bash\ndvc exp run -S trainer=gpu\n```\n"
    assert rc.readme_commands(text) == ["make repro", "python src/a.py --x 1 y=2", "dvc exp run -S trainer=gpu"]
    steps = rc.plan(rc.readme_commands(text), max_steps=5)
    assert [s["skip"] for s in steps] == [None, None, "needs a GPU"]
    assert steps[1]["run"] == "python src/a.py --x 1 y=2"  # not a training command: unchanged
    assert rc.plan(["dvc exp run -S model=small"], 5)[0]["run"] == "dvc exp run -S model=small -S trainer.max_steps=5"


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    steps = rc.plan(rc.readme_commands((ROOT / "README.md").read_text()), max_steps=None)
    ran = [s["command"] for s in steps if not s["skip"]]
    assert ran[0] == "make repro" and "dvc repro" in ran and len(ran) >= 20
    assert {s["skip"] for s in steps} - {None} <= {reason for _, reason in rc.SKIP}
    # the pre-trained model's path is the project's, not a user's data folder
    assert "dvc repro pretrain/dvc.yaml" in ran
