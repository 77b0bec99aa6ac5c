"""Dependency hygiene: every package that lmlab's code imports is declared in pyproject.toml (not
merely pulled in by another), and the lock pins every declared one."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of every import in ``folder``'s Python files, at any depth of the code."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonical(re.split(r"[<>=!~;\[ ]", d)[0]) for d in project["dependencies"]}


def test_every_package_src_imports_is_declared():
    ours = {"lmlab"} | {p.stem for p in (ROOT / "src").glob("*.py")}  # the package and the stage scripts
    third_party = imported_modules(ROOT / "src") - set(sys.stdlib_module_names) - ours
    providers = packages_distributions()
    missing = {m: providers.get(m) for m in third_party if not {canonical(d) for d in providers.get(m, [])} & declared()}
    assert not missing, f"imported by src/ but not in pyproject.toml's dependencies: {missing}"
    assert {"torch", "huggingface_hub", "omegaconf", "peft"} <= third_party  # the scan sees lazy imports too


def test_the_lock_pins_every_declared_package():
    pins = {canonical(line.split("==")[0]) for line in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = declared() | {canonical(re.split(r"[<>=!~;\[ ]", d)[0]) for d in project["optional-dependencies"]["test"]}
    assert not wanted - pins, f"declared but not pinned in requirements.lock: {sorted(wanted - pins)}"


def test_pip_check_is_clean():
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
