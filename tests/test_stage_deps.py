"""The code each DVC stage runs is among its deps in dvc.yaml, and the package's import graph is
sound: no circle, no Lightning where a model is only loaded, no script that shadows a module.

A missing dep is a correctness bug, not untidiness: `dvc repro` would say "up to date" with
metrics computed by code that has since changed. The closure is computed from the source text
(ast), so a new import anywhere in a stage's code shows up here before it can go stale.
"""

import ast
import importlib.machinery
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")


def module_path(src: Path, dotted: str) -> Path | None:
    base = src.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(src: Path, path: Path) -> set[str]:
    """Every ``lmlab`` module that ``path`` imports, at any depth of its code (function-level
    imports run too), with the packages whose ``__init__`` each import runs."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(src).with_suffix("")
    package = list(rel.parts[:-1])  # the package a relative import starts from
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from lmlab.data import corpus`
    modules = set()
    for name in found:
        parts = name.split(".")
        if parts[0] != "lmlab":
            continue
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in modules if module_path(src, m)}


def closure(src: Path, script: Path) -> set[Path]:
    """The files of every lmlab module ``script`` runs, directly or through other modules."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(src, todo.pop()):
            path = module_path(src, name)
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def defines_nothing(path: Path) -> bool:
    """A module whose body is only a docstring: importing it computes nothing."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def stage_scripts(dvc_yaml: Path) -> dict[str, tuple[Path, list[Path]]]:
    """stage name -> (its script, its deps), for every stage whose command runs a src/ script."""
    root = dvc_yaml.parent
    stages = {}
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        stage = stage.get("do", stage)  # foreach stages
        scripts = [w for w in stage["cmd"].split() if w.startswith("src/") and w.endswith(".py")]
        if scripts:
            stages[name] = (root / scripts[0], [root / d for d in stage.get("deps", [])])
    return stages


def uncovered(root: Path) -> list[str]:
    """``stage: file`` for every module a stage runs that none of its deps covers."""
    src = root / "src"
    missing = []
    for name, (script, deps) in stage_scripts(root / "dvc.yaml").items():
        for path in sorted(closure(src, script) | {script}):
            if defines_nothing(path):
                continue
            if not any(path == d or d in path.parents for d in deps):
                missing.append(f"{name}: {path.relative_to(root)}")
    return missing


def test_every_stage_depends_on_the_code_it_runs():
    stages = stage_scripts(ROOT / "dvc.yaml")
    assert set(stages) == {"init", "download", "prepare", "train", "generate", "sweep-generate", "evaluate",
                           "sweep-evaluate", "report"}
    assert uncovered(ROOT) == []


@pytest.fixture
def repo_copy(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_a_new_import_without_its_dep_is_named(repo_copy):
    # generate borrows single modules from model/: the exporter is not one of them
    script = repo_copy / "src" / "generate.py"
    script.write_text(script.read_text() + "\nfrom lmlab.model.interop import to_gpt2  # noqa\n")
    assert uncovered(repo_copy) == ["generate: src/lmlab/model/interop.py",
                                    "sweep-generate: src/lmlab/model/interop.py"]


def test_an_import_deep_inside_a_function_counts(repo_copy):
    module = repo_copy / "src" / "lmlab" / "evaluate" / "metrics.py"
    module.write_text(module.read_text() + "\n\ndef _late():\n    from lmlab.data import sources  # noqa\n")
    # report reaches metrics.py, and metrics.py now reaches the Hub loaders (and what they import)
    assert "report: src/lmlab/data/sources.py" in uncovered(repo_copy)


def test_a_dropped_dep_is_named(repo_copy):
    dvc = repo_copy / "dvc.yaml"
    text = dvc.read_text()
    train = text.index("  train:")
    cut = text.index("      - src/lmlab/model/loss.py\n", train)
    dvc.write_text(text[:cut] + text[cut + len("      - src/lmlab/model/loss.py\n"):])
    assert uncovered(repo_copy) == ["train: src/lmlab/model/loss.py"]


def test_the_built_in_generators_are_deps_of_download():
    """The registry names its generators as strings (the config reads it without importing them);
    the download stage, which calls them, must still depend on their modules."""
    from lmlab.data.builtin import BUILTIN_CORPORA

    script, deps = stage_scripts(ROOT / "dvc.yaml")["download"]
    modules = {b.generator.split(":")[0] for b in BUILTIN_CORPORA.values()}
    assert modules == {"lmlab.data.corpus", "lmlab.data.summaries"}
    for name in modules:
        path = module_path(ROOT / "src", name)
        assert any(path == d or d in path.parents for d in deps), f"download: {path}"


def test_no_import_circle_in_the_package():
    src = ROOT / "src"
    files = sorted((src / "lmlab").rglob("*.py"))
    graph = {f: {module_path(src, m) for m in imported_modules(src, f)} - {f} for f in files}
    # a package's __init__ is run by every import of its modules; an edge into one that defines
    # nothing carries no code, so it cannot close a circle
    graph = {f: {g for g in out if not defines_nothing(g)} for f, out in graph.items()}
    circles = []
    state: dict[Path, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(str(p.relative_to(src)) for p in path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for f in files:
        if f not in state:
            visit(f, [f])
    assert circles == []


@pytest.mark.parametrize("script", ["generate.py", "score.py", "report.py", "translate.py", "compare.py"])
def test_loading_a_model_needs_no_lightning(script):
    """The model file, decoding, evaluation and reporting code never import the training framework."""
    src = ROOT / "src"
    offenders = []
    for path in sorted(closure(src, src / script) | {src / script}):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.relative_to(src)}: {n}" for n in names if n.split(".")[0] in LIGHTNING]
    assert offenders == []


def test_no_stage_script_shadows_a_module():
    """`python src/<stage>.py` puts src/ first on sys.path: a script named like a standard or
    installed module (tokenize, datasets, evaluate, wandb) would replace it for every import."""
    src = str(ROOT / "src")
    path = [p for p in sys.path if Path(p or ".").resolve() != Path(src)]
    clashes = []
    for script in sorted((ROOT / "src").glob("*.py")):
        name = script.stem
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if name in sys.stdlib_module_names or name in sys.builtin_module_names or spec is not None:
            clashes.append(name)
    assert clashes == []


def test_the_readme_map_matches_the_tree():
    """README's "Where things live": each package folder's row names exactly the modules in it."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Where things live"):]
    section = section[: section.index("\n\n", section.index("| stage |"))]
    named: dict[str, set[str]] = {}
    for row in [line for line in section.splitlines() if line.startswith("|")][2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        folder = cells[2].split("`")[1].rstrip("/")  # lmlab/data/ -> lmlab/data
        named.setdefault(folder, set()).update(
            name for name in cells[3].replace("`", " ").split() if name.endswith(".py"))
    src = ROOT / "src"
    actual = {str(d.relative_to(src)): {p.name for p in d.glob("*.py") if p.name != "__init__.py"}
              for d in [src / "lmlab", *(p for p in (src / "lmlab").iterdir() if (p / "__init__.py").is_file())]}
    assert named == actual


def test_the_pretraining_stages_are_the_main_ones_run_from_their_folder():
    """pretrain/dvc.yaml runs download, prepare and train from pretrain/: the same commands (the
    scripts one folder up), code dependencies and params as dvc.yaml's, less the init stage's."""
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    pre = yaml.safe_load((ROOT / "pretrain/dvc.yaml").read_text())["stages"]
    assert list(pre) == ["download", "prepare", "train"]
    for name, stage in pre.items():
        assert stage["cmd"] == main[name]["cmd"].replace("python src/", "python ../src/")
        assert stage["deps"] == [d if d.startswith("data/") else "../" + d
                                 for d in main[name]["deps"] if d != "data/init"], name
        assert stage["params"] == [p for p in main[name]["params"] if p != "init_from"], name
