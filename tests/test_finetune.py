"""Starting from a pre-trained model (``init_from``): which tensors load, the tokenizer that comes
with them, the fine-tuning options, and the inputs that cannot work."""

import json

import pytest
import torch
import yaml

import prepare as prepare_stage
import train as train_stage
from lmlab.config import ConfigError, build_config, compose
from lmlab.data.prepare import prepare
from lmlab.data.tokenizer import tokenizer_hash
from lmlab.model.checkpoint import load_model
from lmlab.model.transformer import ModelConfig, Transformer
from lmlab.model.warmstart import InitError, freeze, read_init, warm_start
from lmlab.train.fit import train
from lmlab.train.module import TransformerLitModule


def cfg_of(tiny_overrides, *extra):
    return build_config(compose([*tiny_overrides, "ckpt_path=null", *extra]))


def test_matching_tensors_load_and_the_rest_is_reported_by_name(pretrained, tiny_overrides):
    weights, model_config, _, _ = read_init(pretrained)
    deeper = Transformer(ModelConfig(**(model_config | {"n_decoder_layer": 2})))
    fresh = {k: v.clone() for k, v in deeper.state_dict().items()}
    report = warm_start(deeper, weights, str(pretrained))
    assert report.new == [k for k in fresh if k.startswith("decoder.1.")] and len(report.new) == 20
    assert report.dropped == [] and sorted(report.loaded) == sorted(weights)
    for name, value in deeper.state_dict().items():
        assert torch.equal(value, weights[name] if name in weights else fresh[name]), name
    shallower = Transformer(ModelConfig(**(model_config | {"n_encoder_layer": 1, "n_decoder_layer": 1})))
    assert warm_start(shallower, weights, "x").dropped == []  # the tiny config has one of each already
    fewer = {k: v for k, v in weights.items() if not k.startswith("encoder.")}
    report = warm_start(shallower, fewer | {"extra.weight": torch.zeros(1)}, "x")
    assert report.dropped == ["extra.weight"] and all(n.startswith("encoder.") for n in report.new)


def test_a_tensor_of_another_shape_is_an_error_naming_it(pretrained):
    weights, model_config, _, _ = read_init(pretrained)
    wider = Transformer(ModelConfig(**(model_config | {"n_embd": 64})))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(InitError, match=r"^init_from='p': embed.weight is \(300, 32\) there but \(300, 64\) in this model"):
        warm_start(wider, weights, "p")
    assert all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())  # nothing copied


def test_the_prepare_stage_takes_the_pretrained_tokenizer(pretrained, prepared, tiny_overrides, tmp_path):
    # a vocabulary size the pre-trained model did not use would train another tokenizer; init_from
    # takes the model's instead, and a conflicting setting is refused naming the key
    cfg = cfg_of(tiny_overrides, f"init_from={pretrained}", "data.seed=99")
    from lmlab.data.download import download

    download(cfg, tmp_path / "raw")
    prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    _, _, tokenizer_json, _ = read_init(pretrained)
    assert tokenizer_hash((tmp_path / "prepared/tokenizer.json").read_text()) == tokenizer_hash(tokenizer_json)
    status = prepare_stage.main([*tiny_overrides, f"init_from={pretrained}", "tokenizer.vocab_size=500",
                                 "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path / "other")])
    assert status == 2 and not (tmp_path / "other").exists()


def test_conflicting_tokenizer_key_is_one_line(pretrained, prepared, tiny_overrides, tmp_path, capsys):
    status = prepare_stage.main([*tiny_overrides, f"init_from={pretrained}", "tokenizer=char",
                                 "--raw-dir", str(prepared / "raw"), "--out-dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and "tokenizer.kind='char' conflicts with init_from=" in err
    assert err.endswith("fine-tuning reuses that tokenizer, so set tokenizer.kind='bpe'\n")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("init, message", [
    ("missing.pt", "init_from='{dir}/missing.pt' not found: give an lmlab model.pt, a training checkpoint or a "
                   "Hugging Face model folder"),
    ("junk.pt", "init_from='{dir}/junk.pt': {dir}/junk.pt is not a readable PyTorch file"),
    ("folder", "init_from='{dir}/folder' is a folder without config.json: give an lmlab model.pt"),
    ("wide", "model.n_embd=64 but init_from='{init}' was built with model.n_embd=32: set model.n_embd=32"),
    ("heads", "model.n_head=4 but init_from='{init}' was built with model.n_head=2: set model.n_head=2"),
])
def test_bad_init_from_is_one_line_exit_2_and_nothing_written(init, message, pretrained, prepared, tiny_overrides,
                                                              tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("not a model")
    (tmp_path / "folder").mkdir()
    path = pretrained if init in ("wide", "heads") else tmp_path / init
    wide = {"wide": ["model.n_embd=64"], "heads": ["model.n_head=4"]}.get(init, [])
    out = tmp_path / "run"
    params = tmp_path / "params.yaml"  # the DVC door (the Hydra door would take over this process's output)
    params.write_text(yaml.safe_dump(compose([*tiny_overrides, *wide, f"init_from={path}"]), sort_keys=False))
    status = train_stage.main(["--params", str(params), "--prepared-dir", str(prepared / "prepared"),
                               "--out-dir", str(out / "model"), "--curves-dir", str(out / "curves"),
                               "--ckpt-dir", str(out / "ckpt")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message.format(dir=tmp_path, init=pretrained) in err
    assert not out.exists()


def test_a_fine_tuning_run_records_its_start_freezes_and_scales(pretrained, prepared, tiny_overrides, tmp_path):
    cfg = cfg_of(tiny_overrides, f"init_from={pretrained}", "trainer.max_steps=3", "trainer.val_check_interval=3",
                 "trainer.init_lr_scale=0.5", "trainer.freeze=[embeddings,encoder.0]", "model.n_decoder_layer=2")
    summary = train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves")
    init = json.loads((tmp_path / "model/run.json").read_text())["init"]
    assert init == summary["init"] and init["init_from"] == str(pretrained)
    assert len(init["new"]) == 20 and all(n.startswith("decoder.1.") for n in init["new"]) and init["dropped"] == []
    assert init["frozen"][:2] == ["embed.weight", "encoder.0.self_attn.qkv.weight"]
    before, _, _ = load_model(pretrained)
    after, _, _ = load_model(tmp_path / "model/model.pt")
    start, end = before.state_dict(), after.state_dict()
    assert torch.equal(start["embed.weight"], end["embed.weight"])  # frozen (and the tied output layer)
    assert torch.equal(start["encoder.0.ff.up.weight"], end["encoder.0.ff.up.weight"])
    assert not torch.equal(start["decoder.0.ff.up.weight"], end["decoder.0.ff.up.weight"])  # fine-tuned


def test_loaded_tensors_get_their_own_learning_rate_and_frozen_ones_none(tiny_overrides):
    cfg = cfg_of(tiny_overrides, "trainer.init_lr_scale=0.1")
    module = TransformerLitModule(ModelConfig.of(cfg, 300).to_dict(), cfg.trainer.__dict__)
    module.init_loaded = {n for n, _ in module.model.named_parameters() if n.startswith("encoder.")}
    freeze(module.model, ["embeddings"])
    groups = module.configure_optimizers()["optimizer"].param_groups
    names = {id(p): n for n, p in module.model.named_parameters()}
    seen = {(g["initial_lr"], g["weight_decay"]): sorted(names[id(p)] for p in g["params"]) for g in groups}
    assert set(seen) == {(0.002, 0.01), (0.0002, 0.01), (0.002, 0.0), (0.0002, 0.0)}
    assert all(n.startswith("encoder.") for n in seen[0.0002, 0.01] + seen[0.0002, 0.0])
    assert "embed.weight" not in sum(seen.values(), [])
    # without init_from: the two groups of before, matrices first
    plain = TransformerLitModule(ModelConfig.of(cfg, 300).to_dict(), cfg.trainer.__dict__)
    assert [g["weight_decay"] for g in plain.configure_optimizers()["optimizer"].param_groups] == [0.01, 0.0]


def test_freeze_names_an_unknown_part():
    model = Transformer(ModelConfig(vocab_size=20, n_embd=16, n_head=2, n_encoder_layer=1, n_decoder_layer=1, d_ff=32))
    with pytest.raises(ConfigError, match=r"^trainer.freeze: 'encodr' names no parameter of this model \(say "
                                          r"embeddings, encoder, decoder, or a prefix of: dec_ln, decoder, embed, "
                                          r"enc_ln, encoder\)$"):
        freeze(model, ["encodr"])


def test_lora_trains_only_adapters_and_the_model_file_holds_them_merged(pretrained, prepared, tiny_overrides,
                                                                         tmp_path):
    from lmlab.model.checkpoint import checkpoint_weights

    cfg = cfg_of(tiny_overrides, f"init_from={pretrained}", "trainer.max_steps=3", "trainer.val_check_interval=3",
                 "trainer.lora_rank=4", "trainer.lora_alpha=8", "trainer.lr=0.05")
    summary = train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves", tmp_path / "ckpt")
    lora = summary["init"]["lora"]
    layers = ["encoder.0.self_attn.qkv", "encoder.0.self_attn.proj", "decoder.0.self_attn.qkv",
              "decoder.0.self_attn.proj", "decoder.0.cross_attn.q", "decoder.0.cross_attn.kv", "decoder.0.cross_attn.proj"]
    assert sorted(lora["adapted"]) == sorted(layers) and lora["rank"] == 4
    assert lora["trainable"] == 4 * sum(32 + out for out in (96, 32, 96, 32, 32, 64, 32))  # A: r×in, B: out×r
    before, _, _ = load_model(pretrained)
    after, _, _ = load_model(tmp_path / "model/model.pt")  # a plain lmlab model: the adapters merged in
    start, end = before.state_dict(), after.state_dict()
    assert list(end) == list(start)
    ckpt = checkpoint_weights(tmp_path / "ckpt/best.ckpt")
    for name in start:
        layer = name.removesuffix(".weight")
        if layer in layers:  # W + alpha/r · B·A, computed here from the checkpoint's own tensors
            a, b = ckpt[f"{layer}.lora_A.default.weight"], ckpt[f"{layer}.lora_B.default.weight"]
            assert not torch.equal(end[name], start[name]), name
            torch.testing.assert_close(end[name], ckpt[f"{layer}.base_layer.weight"] + 2.0 * b @ a)
        else:  # everything else, biases of the adapted layers included, stayed frozen
            assert torch.equal(end[name], start[name]), name


def test_lora_without_a_pretrained_model_is_refused(tiny_overrides):
    with pytest.raises(ConfigError, match=r"^trainer.lora_rank=8 needs init_from \(with init_weights=true\)"):
        cfg_of(tiny_overrides, "trainer.lora_rank=8")


def test_an_encoder_decoder_takes_its_decoder_from_a_decoder_only_model():
    # GPT-style blocks are the decoder's blocks less cross-attention: they load by name, and the
    # encoder, the cross-attention and its norm start fresh
    arch = dict(vocab_size=40, n_embd=16, n_head=2, d_ff=32, max_len=24, positions="learned", norm_first=True)
    gpt = Transformer(ModelConfig(arch="decoder-only", n_encoder_layer=0, n_decoder_layer=2, **arch))
    seq2seq = Transformer(ModelConfig(arch="encoder-decoder", n_encoder_layer=1, n_decoder_layer=2, **arch))
    report = warm_start(seq2seq, gpt.state_dict(), "gpt")
    assert report.dropped == [] and sorted(report.loaded) == sorted(gpt.state_dict())
    assert {n.split(".")[0] if n.startswith(("encoder", "enc_ln")) else n.split(".", 2)[2].split(".")[0]
            for n in report.new} == {"encoder", "enc_ln", "cross_attn", "ln2"}
