"""bench/train_throughput.py: the bare loop does the work of lmlab's real training run, and the
script records every run and ends in its JSON; bench/decode_speed.py ends in its JSON too."""

import json
import math
import os

import pytest
import torch
import train_throughput as tt

from lmlab.model.checkpoint import load_model

# tiny models, a tiny vocabulary and small batches; dropout 0 so that the two paths can agree bit
# for bit; a checkpoint and log lines inside the timed window, as in the full-size bench
SHRINK = ["model.dropout=0.0", "model.n_embd=32", "model.n_head=2", "model.n_decoder_layer=1", "model.d_ff=64",
          "tokenizer.vocab_size=300", "trainer.batch_size=32", "trainer.lr=0.002", "trainer.warmup_steps=2",
          "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=2"]
N_TRAIN = 200  # 7 batches of 32: the 10 steps below cross an epoch boundary
LAYERS = {"tiny": ["model.n_encoder_layer=1"], "gpt-tiny": []}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return tt.prepare_data(tmp_path_factory.mktemp("bench_data"), N_TRAIN, SHRINK)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.parametrize("preset", ["tiny", "gpt-tiny"])
def test_bare_loop_does_the_work_of_the_real_training_run(preset, prepared, tmp_path, offline):
    # Same seed, batches, optimiser, schedule, loss and clipping: without dropout the bare loop and
    # fit.train (W&B logger, checkpoints, curves and all) must end with identical weights.
    cfg = tt.run_config(preset, "cpu", 10, tmp_path / "logs", N_TRAIN, overrides=SHRINK + LAYERS[preset])
    bare, bare_model = tt.run_bare(cfg, prepared, 2, "cpu")
    lmlab, lmlab_model = tt.run_lmlab(cfg, prepared, tmp_path / "run", 2, "cpu")
    for fig in (bare, lmlab):  # one time per timed step, from the start of step 2 to the end of step 9
        assert fig["timed_steps"] == len(fig["step_s"]) == 8 and min(fig["step_s"]) > 0
        assert abs(sum(fig["step_s"]) - fig["window_s"]) < 1e-3
    assert bare["counts"] == lmlab["counts"] and bare["tokens"] == lmlab["tokens"] > 0  # the same batches
    assert lmlab["train_s"] > lmlab["window_s"]
    assert (tmp_path / "run/checkpoints/last.ckpt").is_file()  # the real run's periodic work happened
    assert (tmp_path / "run/curves/train_loss.tsv").is_file()

    start, _ = tt.build_like_fit(cfg, prepared)
    _, _, payload = load_model(tmp_path / "run/model/model.pt")  # what the run exported
    bare_sd, lmlab_sd = bare_model.state_dict(), lmlab_model.state_dict()
    for key, value in bare_sd.items():
        assert torch.equal(value, lmlab_sd[key]), key
        assert torch.equal(value, payload["state_dict"][key]), key
    assert any(not torch.equal(bare_sd[k], v) for k, v in start.model.state_dict().items())  # it trained


def test_script_records_every_run_and_ends_in_its_json(capsys, tmp_path):
    # main() leaves the environment as it found it, but for the address of W&B's service process,
    # which lives on with this process (conftest.child_env keeps it from child processes)
    environ = lambda: {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # noqa: E731
    before, threads = environ(), torch.get_num_threads()
    overrides = [x for item in SHRINK + LAYERS["tiny"] for x in ("--override", item)]
    record = tt.main(["--presets", "tiny", "--steps", "3", "--warmup", "1", "--repeats", "2", "--threads", "1",
                      "--device", "cpu", "--n-train", str(N_TRAIN), *overrides, "--record", str(tmp_path / "r.json")])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == record
    assert environ() == before and torch.get_num_threads() == threads
    assert record["device"] == "cpu" and record["threads"] == 1 and record["precision"] == "32-true"
    assert record["tiny_ratio"] > 0 and record["tiny_tokens_per_s"] > 0 and record["tiny_bare_tokens_per_s"] > 0
    assert "tiny_mfu" not in record and not any("mem" in key for key in record)  # no memory column on CPU

    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["summary"] == record and saved["meta"]["n_runs"] == 4
    runs = saved["runs"]
    assert sorted((r["pair"], r["path"]) for r in runs) == [(0, "bare"), (0, "lmlab"), (1, "bare"), (1, "lmlab")]
    assert {(r["pair"], r["first"]) for r in runs} == {(0, "bare"), (1, "lmlab")}  # both orders
    assert all(r["order"] == (1 if r["path"] == r["first"] else 2) for r in runs)
    assert all(r["timed_steps"] == 3 == len(r["step_s"]) and r["tokens"] > 0 for r in runs)
    ratios = sorted({r["pair_ratio"] for r in runs})
    assert len(ratios) == 2 and abs(record["tiny_ratio"] - sum(ratios) / 2) < 1e-3  # median of the pairs
    for r in runs:
        assert abs(r["tokens_per_s"] - r["tokens"] / r["window_s"]) < 1e-6 * r["tokens_per_s"]
        assert ("train_s" in r) == (r["path"] == "lmlab") and "peak_mem_mb" not in r


def test_overrides_the_bench_sets_itself_are_refused():
    with pytest.raises(SystemExit):
        tt.parse_args(["--override", "trainer.max_steps=5"])


def test_decode_speed_prints_ratios_for_every_strategy_and_batch(capsys, tmp_path):
    pytest.importorskip("transformers")
    import decode_speed as ds
    record = ds.main(["--preset", "gpt-tiny", "--batches", "1,2", "--new-tokens", "3", "--prompt-len", "4",
                      "--vocab", "50", "--repeats", "2", "--threads", "1", "--record", str(tmp_path / "d.json")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == record
    for key in ("greedy_b1", "greedy_b2", "beam5_b1", "beam5_b2", "topp_b1", "topp_b2", "encdec_greedy_b2",
                "encdec_beam5_b2", "encdec_topp_b1"):
        assert record[f"{key}_ratio"] > 0 and record[f"{key}_tokens_per_s"] > 0
    saved = json.loads((tmp_path / "d.json").read_text())
    assert saved["summary"] == record
    timed = [r for r in saved["runs"] if not r["warmup"]]
    # 2 archs × 3 strategies × 2 batches × 2 sides × 2 repeats, every one of them
    assert len(timed) == 48 and {r["side"] for r in timed} == {"lmlab", "hf"}


def test_size_scaling_trains_both_presets_per_seed_and_ends_in_its_ratio(capsys, tmp_path):
    """bench/size_scaling.py: every seed trains both presets through train(), order alternating;
    the ratio is the median over seeds of the second preset's best val loss ÷ the first's."""
    import size_scaling

    record = tmp_path / "record.json"
    result = size_scaling.main(["--presets", "tiny,small", "--steps", "4", "--seeds", "1,2", "--n-train", str(N_TRAIN),
                                "--record", str(record), *[f"--override={o}" for o in SHRINK],
                                "--override=model.n_encoder_layer=1", "--override=tokenizer.max_tokens=95"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = json.loads(record.read_text())["runs"]
    assert last == result and [(r["preset"], r["seed"]) for r in runs] == [
        ("tiny", 1), ("small", 1), ("small", 2), ("tiny", 2)]
    assert all(r["steps"] == 4 and r["val_curve"] for r in runs)
    loss = {(r["preset"], r["seed"]): r["best_val_loss"] for r in runs}
    ratios = sorted(loss[("small", s)] / loss[("tiny", s)] for s in (1, 2))
    assert result["small_vs_tiny_val_loss_ratio"] == round((ratios[0] + ratios[1]) / 2, 4)


SPEECHES = "".join(f"PERSON {i % 3}:\nWords of line {i}, and more words.\nA second line {i * 7}.\n\n"
                   for i in range(40))
SMALL_GPT = ["model.n_embd=32", "model.n_head=2", "model.n_decoder_layer=1", "model.d_ff=128"]


def test_char_lm_parity_reads_the_very_characters_lmlab_trains_and_scores_on(tmp_path):
    """lmlab's validation stream is the validation text character for character (a newline is
    <eos>, a blank line a lone <eos>), so the two losses average the same predictions."""
    import char_lm_parity as clp

    from lmlab.data.batching import TextDataset
    from lmlab.data.download import download
    from lmlab.data.prepare import prepare
    from lmlab.data.tokenizer import EOS, load_tokenizer

    train_text, val_text = clp.split_text(SPEECHES, tmp_path / "text")
    assert train_text + val_text == SPEECHES and len(train_text) == int(0.9 * len(SPEECHES))
    cfg = clp.lmlab_config(tmp_path / "text", 5, 1, tmp_path / "logs")
    download(cfg, tmp_path / "raw")
    prepare(cfg, tmp_path / "raw", tmp_path / "prepared")
    tokenizer = load_tokenizer(tmp_path / "prepared" / "tokenizer.json")
    stream = TextDataset(tmp_path / "prepared", "validation", cfg.trainer.block_size).stream.tolist()
    assert "".join("\n" if t == EOS else tokenizer.decode([t], "text") for t in stream) == val_text
    blocks = clp.val_blocks(torch.arange(len(val_text)), cfg.trainer.block_size)
    lmlab_blocks = TextDataset(tmp_path / "prepared", "validation", cfg.trainer.block_size)
    assert blocks.shape == (len(lmlab_blocks), cfg.trainer.block_size + 1)


def test_nanogpt_schedule_warms_up_then_falls_to_the_floor():
    from char_lm_parity import nanogpt_lr

    assert [round(nanogpt_lr(s, 1e-3, 1e-4, 100, 2000), 8) for s in (0, 99, 100, 1050, 2000)] == [
        round(1e-3 / 101, 8), round(1e-3 * 100 / 101, 8), 1e-3, 5.5e-4, 1e-4]


def test_char_lm_parity_alternates_the_sides_and_ends_in_its_ratios(capsys, tmp_path):
    import char_lm_parity as clp

    text = tmp_path / "input.txt"
    text.write_text(SPEECHES, encoding="utf-8")
    record = tmp_path / "record.json"
    result = clp.main(["--text", str(text), "--steps", "3", "--seeds", "1,2", "--record", str(record),
                       *[f"--override={o}" for o in SMALL_GPT]])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    runs = json.loads(record.read_text())["runs"]
    assert [(r["side"], r["seed"]) for r in runs] == [("lmlab", 1), ("reference", 1), ("reference", 2), ("lmlab", 2)]
    loss = {(r["side"], r["seed"]): r["val_loss"] for r in runs}
    # three steps from a 0.02 init: each near ln(its vocabulary): the text's characters, and for
    # lmlab those less the newline (<eos>) plus its four special tokens
    chars = len(set(SPEECHES))
    vocab = {"reference": chars, "lmlab": chars - 1 + 4}
    assert all(abs(v - math.log(vocab[side])) < 0.1 for (side, _), v in loss.items()), loss
    ratios = sorted(loss["lmlab", s] / loss["reference", s] for s in (1, 2))
    assert result["val_loss_ratio"] == round((ratios[0] + ratios[1]) / 2, 4)
    assert result["val_characters"] == len(SPEECHES) - int(0.9 * len(SPEECHES))


def test_pretrain_gain_runs_both_sides_of_every_budget_and_continues_where_it_stopped(tmp_path, capsys):
    """bench/pretrain_gain.py: one pre-training, then per budget a fine-tuning from it and a run
    from scratch through the stage scripts; a second call reuses every finished run."""
    import pretrain_gain

    shrink = ["data.n_train=200", "data.n_valid=20", "data.n_test=12", "tokenizer.vocab_size=200",
              "tokenizer.max_tokens=40", "model.n_embd=32", "model.n_head=2", "model.n_decoder_layer=1",
              "model.d_ff=64", "model.max_len=96", "trainer.batch_size=16", "trainer.block_size=32",
              "decoding.max_new_tokens=20", "sweep.beam4.max_new_tokens=20", "sweep.topp.max_new_tokens=20"]
    argv = ["--out", str(tmp_path / "runs"), "--budgets", "3", "--pretrain-steps", "2",
            "--figure", str(tmp_path / "gain.png"), *[f"--override={o}" for o in shrink]]
    result = pretrain_gain.main(argv)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) == ["ft3", "pre", "sc3", "st3"]
    for n in ("3",):
        both = result["budgets"][n]
        assert both["bleu_gain"] == round(both["pretrained"]["bleu"] - both["scratch_same_tokenizer"]["bleu"], 2)
        same = json.loads((tmp_path / f"runs/st{n}/model/run.json").read_text())["init"]
        assert same["loaded"] == [] and len(same["new"]) > 0  # init_weights=false: the tokenizer only
        assert (tmp_path / f"runs/st{n}/prepared/tokenizer.json").read_text() == \
            (tmp_path / f"runs/ft{n}/prepared/tokenizer.json").read_text()
        run = json.loads((tmp_path / f"runs/ft{n}/model/run.json").read_text())
        assert run["init"]["init_from"] == str(tmp_path / "runs/pre/model/model.pt") and run["global_step"] == int(n)
        assert "init" not in json.loads((tmp_path / f"runs/sc{n}/model/run.json").read_text())
    assert (tmp_path / "gain_bleu.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "gain_loss.png").is_file()
    assert pretrain_gain.main(argv) == result  # nothing retrained: the same figures
    assert capsys.readouterr().out.count("done before, kept") == 4
