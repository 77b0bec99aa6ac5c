import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from lmlab.config import CONF_DIR, ConfigError, build_config, compose, load_params
from lmlab.model.presets import count_parameters, preset_config
from lmlab.params import render

PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_params_yaml_is_the_composition_of_conf():
    """params.yaml must not drift from conf/: regenerate it with `make params`."""
    assert load_params(ROOT / "params.yaml") == compose([]), "params.yaml differs from conf/: run `make params`"
    assert yaml.safe_load(render()) == compose([])


def test_pretrain_params_are_conf_with_the_pretraining_overrides():
    """pretrain/params.yaml must not drift either: regenerate it with `make pretrain-params`."""
    overrides = (ROOT / "pretrain/overrides.txt").read_text().split()
    assert load_params(ROOT / "pretrain/params.yaml") == compose(overrides), \
        "pretrain/params.yaml differs from conf/ with pretrain/overrides.txt: run `make pretrain-params`"
    assert build_config(compose(overrides)).init_from is None  # pre-training starts from scratch


def test_both_doors_build_the_same_config(tmp_path):
    overrides = ["model=small", "decoding=beam", "trainer.max_steps=7"]
    params = tmp_path / "params.yaml"
    params.write_text(render(overrides))
    via_dvc = build_config(load_params(params))
    via_hydra = build_config(compose(overrides))
    assert via_dvc == via_hydra
    assert (via_hydra.model.n_embd, via_hydra.decoding.beam_size, via_hydra.trainer.max_steps) == (384, 4, 7)


@pytest.mark.parametrize("preset", PRESETS)
def test_model_preset_comment_matches_the_code(preset):
    """Each preset opens with a comment giving its dims and its parameter count at vocab 6,000."""
    text = (CONF_DIR / "model" / f"{preset}.yaml").read_text()
    assert text.startswith(f"# {preset}:")
    cfg = preset_config(preset)
    stated = float(re.search(r"([\d.]+)M parameters", text).group(1))
    assert stated == round(count_parameters(preset, 6000) / 1e6, 2)
    m = cfg.model
    assert f"n_embd {m.n_embd}" in text and f"{m.n_head} heads" in text and f"d_ff {m.d_ff}" in text
    layers = {"decoder-only": f"{m.n_decoder_layer} layers", "encoder-only": f"{m.n_encoder_layer} layers"}.get(
        m.arch, f"{m.n_encoder_layer}+{m.n_decoder_layer} layers")
    assert layers in text and m.arch in text


def test_transformer_base_and_big_dimensions():
    base = build_config(compose(["model=base"])).model
    big = build_config(compose(["model=large"])).model
    assert (base.n_embd, base.n_head, base.n_encoder_layer, base.d_ff) == (512, 8, 6, 2048)
    assert (big.n_embd, big.n_head, big.n_encoder_layer, big.d_ff) == (1024, 16, 6, 4096)


@pytest.mark.parametrize("overrides, message", [
    (["model.n_embd=128", "model.n_head=7"], "model.n_embd=128 is not divisible by model.n_head=7"),
    (["decoding=beam", "decoding.beam_size=0"], "decoding.beam_size=0 must be >= 1"),
    (["decoding.beam_size=4"], "decoding.beam_size=4 needs decoding.strategy=beam"),
    (["decoding=beam", "decoding.top_p=0.9"], "decoding.top_p=0.9 needs decoding.strategy=sample"),
    (["sweep.topp.top_p=0"], "sweep.topp.top_p=0.0 must be in (0, 1]"),
    (["sweep.beam4.n_best=9"], "sweep.beam4.n_best=9 must be between 1 and sweep.beam4.beam_size=4"),
    (["trainer.lr=-1"], "trainer.lr=-1.0 must be > 0"),
    (["+model.n_layers=4"], "unknown config key model.n_layers (did you mean model.n_encoder_layer?)"),
    (["trainer.max_steps=many"], "trainer.max_steps='many' must be of type int"),
    (["evaluate.bleu_tokenize=moses"], "evaluate.bleu_tokenize='moses' must be one of"),
    (["data=lm_text"], "data.task=language_modeling needs a decoder-only model (causal) or an encoder-only one "
                       "(masked), but model.arch=encoder-decoder (model=tiny): choose one with model=gpt-tiny"),
    (["data=lm_text", "model=gpt-tiny", "trainer.block_size=600"], "trainer.block_size=600 must be <= model.max_len=512"),
    (["decoding.prompt_tokens=0"], "decoding.prompt_tokens=0 must be >= 1"),
    (["trainer.block_stride=200"], "trainer.block_stride=200 must be null or in [1, trainer.block_size=128]"),
    (["data.keep_blank_lines=true"], "data.keep_blank_lines=True is read for data.task=language_modeling only"),
])
def test_validation_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_config(compose(overrides))
    assert message in str(err.value)


def test_unknown_group_option_is_one_clear_error():
    with pytest.raises(ConfigError, match="model=huge"):
        compose(["model=huge"])


@pytest.mark.slow
def test_cli_bad_override_exits_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "src/train.py", "model.n_head=7", "model.n_embd=128", f"--out-dir={tmp_path}/out"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: model.n_embd=128 is not divisible by model.n_head=7"]
    assert not (tmp_path / "out").exists()


def test_the_default_sweep_and_strategy_selection():
    cfg = build_config(compose([]))
    assert list(cfg.sweep) == ["beam4", "topp"]
    assert (cfg.sweep["beam4"].strategy, cfg.sweep["beam4"].beam_size) == ("beam", 4)
    assert (cfg.sweep["topp"].strategy, cfg.sweep["topp"].top_p) == ("sample", 0.9)
    assert cfg.with_strategy("topp").decoding == cfg.sweep["topp"]
    with pytest.raises(ConfigError, match=r"--strategy nope: no sweep.nope in the config \(sweep has: beam4, topp\)"):
        cfg.with_strategy("nope")


def test_learning_rate_and_warmup_follow_the_width_unless_set():
    """trainer.lr / trainer.warmup_steps null (the presets' default): 2e-3 x 128 / n_embd and
    150 x sqrt(n_embd / 128) to the nearest 10; tiny keeps the values it was tuned with."""
    for name, lr, warmup in (("tiny", 2e-3, 150), ("small", 6.67e-4, 260), ("base", 5e-4, 300),
                             ("large", 2.5e-4, 420), ("gpt2-124m", 3.33e-4, 370)):
        t = build_config(compose([f"model={name}"])).trainer
        assert (t.lr, t.warmup_steps) == (lr, warmup), name
    t = build_config(compose(["model=small", "trainer.lr=0.001", "trainer.warmup_steps=0"])).trainer
    assert (t.lr, t.warmup_steps) == (0.001, 0)  # a value set by hand wins
    t = build_config(compose(["model.n_embd=256", "model.n_head=4"])).trainer
    assert (t.lr, t.warmup_steps) == (1e-3, 210)  # any width, not only the presets'
    assert compose([])["trainer"]["lr"] is None  # params.yaml keeps null; the built config has the value
