"""bench/train_throughput.py: both paths train the same thing, and the script ends in its JSON."""

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
import pytest
import train_throughput as tt

SMALL = ["model.dropout=0.0", "model.n_embd=32", "model.n_head=2", "model.n_decoder_layer=1",
         "model.d_ff=64", "trainer.warmup_steps=2"]


@pytest.mark.parametrize("preset,layers", [("tiny", "model.n_encoder_layer=1"),
                                           ("gpt-tiny", "model.n_encoder_layer=0")])
def test_bare_loop_and_lightning_reach_identical_weights(preset, layers):
    # Without dropout the two paths must agree bit for bit: same optimiser, schedule, loss, clip.
    batches = tt.make_batches(6, batch_size=4, seq_len=6, vocab=300, seed=0,
                              decoder_only=preset.startswith("gpt"))
    make = lambda: tt.new_module(preset, 300, 0, SMALL + [layers])  # noqa: E731
    bare_steps, bare = tt.run_bare(make, batches, 2, "cpu", "32-true")
    lmlab_steps, lmlab = tt.run_lmlab(make, batches, 2, "cpu", "32-true")
    # one time per step after the 2 warm-up steps, each from a step's start to the next's
    assert len(bare_steps) == len(lmlab_steps) == 4 and min(bare_steps + lmlab_steps) > 0
    start = make()[0]
    for p_bare, p_lmlab, p0 in zip(bare.model.parameters(), lmlab.model.parameters(),
                                   start.model.parameters()):
        assert torch.equal(p_bare, p_lmlab)
    assert any(not torch.equal(p, p0) for p, p0 in zip(bare.model.parameters(), start.model.parameters()))


def test_script_prints_table_then_json(capsys):
    record = tt.main(["--presets", "tiny,gpt-tiny", "--steps", "2", "--warmup", "1", "--seq-len", "4",
                      "--batch-size", "2", "--repeats", "1", "--device", "cpu", "--threads", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == record
    assert record["device"] == "cpu" and record["threads"] == 1
    assert record["tiny_tokens_per_s"] > 0 and record["tiny_bare_tokens_per_s"] > 0
    expected = record["tiny_tokens_per_s"] / record["tiny_bare_tokens_per_s"]
    assert abs(record["tiny_ratio"] - expected) < 1e-3 * expected + 1e-3
    assert "tiny_mfu" not in record
    assert record["gpt-tiny_ratio"] > 0 and record["gpt-tiny_tokens_per_s"] > 0


def test_decode_speed_prints_ratios_for_every_strategy_and_batch(capsys):
    pytest.importorskip("transformers")
    import decode_speed as ds
    record = ds.main(["--preset", "gpt-tiny", "--batches", "1,2", "--new-tokens", "3", "--prompt-len", "4",
                      "--vocab", "50", "--repeats", "1", "--threads", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == record
    for key in ("greedy_b1", "greedy_b2", "beam5_b1", "beam5_b2", "topp_b1", "topp_b2", "encdec_greedy_b2",
                "encdec_beam5_b2", "encdec_topp_b1"):
        assert record[f"{key}_ratio"] > 0 and record[f"{key}_tokens_per_s"] > 0
