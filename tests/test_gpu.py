"""The GPU path: bf16-mixed training, the fused AdamW kernel, torch.compile, FSDP and the MFU figure
of the throughput bench. Every test here needs CUDA and is skipped cleanly without it (conftest)."""

import json
import sys

import pytest
import torch
from conftest import ROOT, child_env

from lmlab.config import build_config, compose
from lmlab.model.checkpoint import load_model
from lmlab.model.transformer import ModelConfig
from lmlab.train.fit import train
from lmlab.train.module import TransformerLitModule

pytestmark = pytest.mark.gpu


def _gpu_cfg(tiny_overrides, *extra):
    return build_config(compose(tiny_overrides + ["trainer=gpu", "trainer.batch_size=32",
                                                  "trainer.max_steps=30", "trainer.val_check_interval=15",
                                                  "trainer.num_workers=0", *extra]))


def test_gpu_preset_trains_in_bf16_mixed_and_learns(prepared, tiny_overrides, tmp_path):
    cfg = _gpu_cfg(tiny_overrides, "trainer.lr=3e-3")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    summary = train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves")
    assert summary["global_step"] == 30
    losses = [float(r.split("\t")[1]) for r in (tmp_path / "curves/train_loss.tsv").read_text().splitlines()[1:]]
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0] - 0.5
    model, _, _ = load_model(tmp_path / "model/model.pt")  # fp32 weights, loadable on the CPU
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


def test_fused_adamw_on_cuda_only():
    cfg = build_config(compose(["model=tiny", "trainer=gpu"]))
    tc = cfg.trainer.__dict__ | {"betas": list(cfg.trainer.betas)}
    module = TransformerLitModule(ModelConfig.of(cfg, 300).__dict__, tc).cuda()
    assert module.configure_optimizers()["optimizer"].defaults["fused"] is True
    off = TransformerLitModule(ModelConfig.of(cfg, 300).__dict__, tc | {"fused_adamw": False}).cuda()
    assert not off.configure_optimizers()["optimizer"].defaults["fused"]


def test_compiled_training_exports_the_plain_models_keys(prepared, tiny_overrides, tmp_path):
    cfg = _gpu_cfg(tiny_overrides, "trainer.compile=true", "trainer.max_steps=10",
                   "trainer.val_check_interval=10")
    summary = train(cfg, prepared / "prepared", tmp_path / "model", tmp_path / "curves")
    assert summary["global_step"] == 10
    model, _, payload = load_model(tmp_path / "model/model.pt")
    assert not any("_orig_mod" in k for k in payload["state_dict"])


def test_throughput_bench_reports_mfu(tmp_path):
    import train_throughput as tt
    record = tt.main(["--presets", "gpt-tiny,tiny", "--steps", "5", "--warmup", "2", "--repeats", "2",
                      "--device", "cuda", "--n-train", "2000", "--record", str(tmp_path / "r.json")])
    assert record["precision"] == "bf16-mixed"
    for preset in ("gpt-tiny", "tiny"):
        assert 0 < record[f"{preset}_mfu"] < 1 and 0 < record[f"{preset}_bare_mfu"] < 1
        assert record[f"{preset}_ratio"] > 0 and record[f"{preset}_flops_per_step"] > 0
        assert record[f"{preset}_peak_mem_mb"] > 0 and record[f"{preset}_bare_peak_mem_mb"] > 0
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert len(runs) == 8 and all(r["peak_mem_mb"] > 0 and 0 < r["mfu"] < 1 for r in runs)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP needs two GPUs")
def test_fsdp_on_two_gpus_through_the_train_script(prepared, tiny_overrides, tmp_path):
    import subprocess

    cmd = [sys.executable, str(ROOT / "src/train.py"), "--prepared-dir", str(prepared / "prepared"),
           "--out-dir", str(tmp_path / "run"), *tiny_overrides, "trainer=fsdp", "trainer.devices=2",
           "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.batch_size=32",
           "trainer.num_workers=0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env(PYTHONPATH=str(ROOT / "src")),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run/run.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 6
    model, _, _ = load_model(tmp_path / "run/model.pt")  # full (unsharded) weights
    assert model.num_parameters() == summary["n_parameters"]
