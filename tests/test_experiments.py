"""Recipes (conf/experiment/*.yaml): each composes to a valid config from both doors, the Hydra
overrides and DVC's own Hydra composition (what `dvc exp run -S experiment=NAME` writes to
params.yaml), and runs its first stages offline on fixture files of its data's layout."""

from __future__ import annotations

import gzip

import pytest
import yaml
from test_sources import cache_repo, hub_fixture

from lmlab.config import CONF_DIR, build_config, compose

RECIPES = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_there_are_recipes():
    assert {"multi30k_en_fr", "multi30k_de_en", "multi30k_de_en_gpu", "shakespeare_char",
            "shakespeare_char_gpu"} <= set(RECIPES)


def test_multi30k_de_en_is_the_en_fr_recipe_on_other_data():
    fr, de = compose(["experiment=multi30k_en_fr"]), compose(["experiment=multi30k_de_en"])
    assert {k: v for k, v in fr.items() if k != "data"} == {k: v for k, v in de.items() if k != "data"}
    assert de["data"] == compose(["data=multi30k"])["data"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipe_composes_the_same_through_dvc_and_hydra(recipe, tmp_path):
    from dvc.utils.hydra import compose_and_dump

    text = (CONF_DIR / "experiment" / f"{recipe}.yaml").read_text()
    lines = text.splitlines()
    assert lines[0] == "# @package _global_" and lines[1].startswith(f"# {recipe}: ")  # the header says what it is
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(CONF_DIR), None, "config", str(tmp_path), [f"experiment={recipe}"])
    via_dvc = yaml.safe_load(out.read_text())
    via_hydra = compose([f"experiment={recipe}"])
    assert via_dvc == via_hydra and "experiment" not in via_hydra
    build_config(via_hydra)  # valid, whatever it sets


def _gz(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(f"{line}\n" for line in lines).encode("utf-8")))


def test_multi30k_en_fr_downloads_and_prepares_the_official_layout(tmp_path, capsys):
    """The recipe reads the official files' names and gzip (train, val, test_2016_flickr)."""
    import download
    import prepare

    data = tmp_path / "multi30k"
    for split, n in (("train", 40), ("val", 6), ("test_2016_flickr", 5)):
        _gz(data / f"{split}.en.gz", [f"a dog runs on the grass number {i} ." for i in range(n)])
        _gz(data / f"{split}.fr.gz", [f"un chien court sur l' herbe numéro {i} ." for i in range(n)])
    args = ["experiment=multi30k_en_fr", f"data.path={data}", "tokenizer.vocab_size=120", "tokenizer.min_frequency=1"]
    assert download.main(["--raw-dir", str(tmp_path / "raw"), *args]) == 0
    assert prepare.main(["--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path / "prepared"), *args]) == 0
    out = capsys.readouterr().out
    assert "train 40, validation 6, test 5" in out
    assert (tmp_path / "raw" / "test.target").read_text().splitlines()[4] == "un chien court sur l' herbe numéro 4 ."
    assert (tmp_path / "prepared" / "tokenizer.json").is_file()


@pytest.mark.parametrize("recipe", [r for r in RECIPES if build_config(compose([f"experiment={r}"])).data.loader != "local"])
def test_a_recipe_downloads_and_prepares_offline(recipe, hf_home, tmp_path, capsys):
    """What `dvc exp run -S experiment=NAME` runs first, offline: a Hub recipe on fixture files in
    its repository's layout (tests/test_sources.py), a built-in one on a small corpus."""
    import download
    import prepare

    cfg = build_config(compose([f"experiment={recipe}"]))
    args = [f"experiment={recipe}", "tokenizer.min_frequency=1"]
    if cfg.data.loader == "hub":
        cache_repo(hf_home, cfg.data.repo, cfg.data.revision, hub_fixture(cfg.data.name)[0])
        if cfg.tokenizer.kind != "char":
            args.append("tokenizer.vocab_size=60")
    else:
        args += ["data.n_train=200", "data.n_valid=20", "data.n_test=20", "tokenizer.vocab_size=300"]
    assert download.main(["--raw-dir", str(tmp_path / "raw"), *args]) == 0
    assert prepare.main(["--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path / "prepared"), *args]) == 0
    assert (tmp_path / "prepared" / "tokenizer.json").is_file() and "error" not in capsys.readouterr().err


def test_no_unfilled_figure_is_left_in_the_recipes_or_the_readme():
    """Figures are written in after a run; a placeholder left behind would read as a result."""
    import re

    from conftest import ROOT

    texts = {p.name: p.read_text() for p in [ROOT / "README.md", *(CONF_DIR / "experiment").glob("*.yaml")]}
    left = {name: re.findall(r"\b[A-Z0-9]+_(?:CELL|RESULT|LINE|TABLE)\b", t) for name, t in texts.items()}
    assert {k: v for k, v in left.items() if v} == {}
