"""End to end: the real `dvc repro` in a temporary git repository, on a shrunken config."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import copy_repo, is_png, run

METRIC_KEYS = {
    "bleu", "chrf", "ter", "bleu_signature", "chrf_signature", "ter_signature", "rouge1", "rouge2",
    "rougeL", "rougeLsum", "rouge_stemmer", "mean_hyp_words", "mean_hyp_tokens", "len_cap_rate", "n_examples", "loss",
    "perplexity",
}
STAGES = ["download", "prepare", "train", "generate", "evaluate", "report"]


# a `dvc exp run` without the strategy sweep (its stages are the baseline's and the summaries'
# business here): Hydra's `~` drops the two sweep entries of the defaults list
NO_SWEEP = ["-S", "~decoding@sweep.beam4", "-S", "~decoding@sweep.topp"]


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_overrides):
    dest = tmp_path_factory.mktemp("lmlab") / "repo"
    env, git = copy_repo(dest, tiny_overrides)
    return dest, env, git


@pytest.mark.slow
def test_dvc_repro_end_to_end(repo):
    dest, env, git = repo
    out = run(["dvc", "repro"], dest, env)
    assert ran_stages(out) == STAGES

    metrics = json.loads((dest / "reports/metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["n_examples"] == 24
    assert "tok:13a" in metrics["bleu_signature"]
    assert metrics["perplexity"] > 1.0
    records = [json.loads(line) for line in (dest / "reports/generations.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(24))
    refs = (dest / "data/raw/test.target").read_text().splitlines()
    assert [r["reference"] for r in records] == refs
    for name in ("train_loss.tsv", "val_loss.tsv", "lr.tsv"):
        lines = (dest / "reports/train" / name).read_text().splitlines()
        assert lines[0].startswith("step\t") and len(lines) >= 2
    report = (dest / "reports/report.md").read_text()
    assert "bleu" in report.lower() and "figures/loss.png" in report
    assert is_png(dest / "reports/figures/loss.png")
    assert (dest / "data/model/model.pt").is_file()
    assert (dest / "data/checkpoints/last.ckpt").is_file()  # outside DVC's outs: survives a rerun

    # the strategy sweep: each decoded from the same model, tested against greedy, in DVC metrics
    for name in ("beam4", "topp"):
        assert f"Running stage 'sweep-evaluate@{name}'" in out
        m = json.loads((dest / f"reports/sweep/{name}/metrics.json").read_text())
        assert m["n_examples"] == 24 and 0 <= m["bleu_p_value"] <= 1 and "perplexity" not in m
    shown_metrics = json.loads(run(["dvc", "metrics", "show", "--json"], dest, env))
    assert '"reports/sweep/topp/metrics.json"' in json.dumps(shown_metrics)
    assert "## Decoding strategies (same model)" in report and "| topp |" in report

    # nothing changed: nothing reruns but the init stage, which hashes the init_from file (none here)
    again = run(["dvc", "repro"], dest, env)
    assert ran_stages(again) == [] and re.findall(r"Running stage '([^']+)'", again) == ["init"]
    assert json.loads((dest / "data/init/init.json").read_text()) == {"init_from": None}

    # one sweep entry changed: only its stages (and the report) rerun
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["sweep"]["topp"]["top_p"] = 0.5
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = run(["dvc", "repro"], dest, env)
    assert ran_stages(again) == ["report"]
    assert "Running stage 'sweep-generate@topp'" in again and "Running stage 'sweep-generate@beam4'" not in again
    run(["git", "checkout", "params.yaml"], dest, env)
    run(["dvc", "repro"], dest, env)  # back to the committed params (from DVC's run cache)

    # (that a decoding experiment never retrains is tests/test_sweep.py's 2 x 2 queue)
    run(["dvc", "remote", "add", "-d", "team", str(dest.parent / "remote")], dest, env)
    run(git + ["add", "-A"], dest, env)
    run(git + ["commit", "-qm", "baseline"], dest, env)
    fresh_clone_pulls_and_trains_nothing(dest, env)

    # (the decoder-only architecture through the same pipeline is tests/test_pretrain_pipeline.py's
    # fine-tuning experiment: retrain, decode, score)

    # the built-in summarization set: ROUGE beside the lead baseline, no BLEU
    # (its articles are long: a model of 96 positions cannot read them whole, and prepare's
    # max_tokens filter must stay within the model's positions)
    exp = run(["dvc", "exp", "run", "-S", "data=summaries", "-S", "model.max_len=256",
               "-S", "tokenizer.max_tokens=255"], dest, env)
    assert "Running stage 'download'" in exp and "Running stage 'train'" in exp
    metrics = json.loads((dest / "reports/metrics.json").read_text())
    assert {"rouge1", "rougeLsum", "lead3_rouge1", "lead3_rougeLsum", "perplexity"} <= set(metrics)
    assert "bleu" not in metrics and metrics["n_examples"] == 24
    assert "(lead " in exp  # the stage's summary line shows the lead baseline beside the model
    sweep = json.loads((dest / "reports/sweep/topp/metrics.json").read_text())
    assert "rouge1" in sweep and "perplexity" not in sweep and "bleu_p_value" not in sweep

    # the built-in language-modelling text: a decoder-only model on the stream, continuations scored
    exp = run(["dvc", "exp", "run", "-S", "data=lm_text", "-S", "model=gpt-tiny", "-S", "model.n_encoder_layer=0",
               "-S", "trainer.block_size=32", "-S", "decoding.prompt_tokens=8", *NO_SWEEP], dest, env)
    metrics = json.loads((dest / "reports/metrics.json").read_text())
    assert {"distinct_1", "distinct_2", "seq_rep_4", "perplexity"} <= set(metrics) and "rouge1" not in metrics
    records = [json.loads(line) for line in (dest / "reports/generations.jsonl").read_text().splitlines()]
    assert 0 < len(records) <= 24 and all(r["source"] and r["reference"] for r in records)
    assert sorted(p.name for p in (dest / "data/raw").iterdir()) == ["test.text", "train.text", "validation.text"]

    # masked language modelling: an encoder-only model on the same text, its fills and test masks scored
    exp = run(["dvc", "exp", "run", "-S", "data=lm_text", "-S", "model=bert-tiny", "-S", "model.n_decoder_layer=0",
               "-S", "trainer.block_size=32", *NO_SWEEP], dest, env)
    metrics = json.loads((dest / "reports/metrics.json").read_text())
    assert {"masked_accuracy", "masked_tokens", "fill_accuracy", "perplexity"} <= set(metrics)
    assert "distinct_2" not in metrics and "fill accuracy" in exp
    assert json.loads((dest / "reports/train/summary.json").read_text())["arch"] == "encoder-only"
    records = [json.loads(line) for line in (dest / "reports/generations.jsonl").read_text().splitlines()]
    assert len(records) == 24 and all(r["hyp_tokens"] == len(r["masked_positions"]) >= 1 for r in records)

    # back to the baseline workspace (params, lock and outputs) for the tests that follow
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], dest, env)
    run(["dvc", "checkout", "--force", "dvc.yaml"], dest, env)  # the main pipeline (pretrain/ never ran here)
    assert (dest / "data/raw/train.source").is_file() and not (dest / "data/raw/train.text").exists()


def fresh_clone_pulls_and_trains_nothing(dest, env):
    """A team's shared cache: push the baseline's outputs to a local remote, clone the repository
    afresh, pull, and `dvc repro` runs no stage but init (which only hashes init_from); the model,
    report and generations are the pushed bytes, and an experiment of the same configuration
    trains nothing either."""
    run(["dvc", "push", "--run-cache", "dvc.yaml"], dest, env)
    second = dest.parent / "second"
    run(["git", "clone", "-q", str(dest), str(second)], dest.parent, env)
    # the main pipeline's outputs (targetless, DVC would also look for pretrain/'s, never made here)
    run(["dvc", "pull", "--run-cache", "dvc.yaml"], second, env)
    out = run(["dvc", "repro"], second, env)
    assert re.findall(r"Running stage '([^']+)'", out) == ["init"], out
    for path in ("data/model/model.pt", "reports/report.md", "reports/generations.jsonl"):
        assert (second / path).read_bytes() == (dest / path).read_bytes(), path
    out = run(["dvc", "exp", "run", "-S", "trainer.max_steps=12"], second, env)
    assert re.findall(r"Running stage '([^']+)'", out) == ["init"] and "Stage 'train' didn't change" in out, out


@pytest.mark.slow
def test_dvc_train_stage_resumes_after_a_crash(repo):
    """SIGKILL `dvc repro` in the middle of training; the next `dvc repro` continues from the last
    checkpoint in data/checkpoints instead of starting over."""
    import signal
    import time

    import torch

    dest, env, git = repo
    run(["dvc", "repro", "prepare"], dest, env)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["trainer"].update(max_steps=60, checkpoint_every_n_steps=5, val_check_interval=30)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    last = dest / "data/checkpoints/last.ckpt"
    last.unlink(missing_ok=True)
    proc = subprocess.Popen(["dvc", "repro", "train"], cwd=dest, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
            if step >= 10:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the training process under it
    proc.wait()
    assert 10 <= step < 60, "training finished before it could be killed"
    (dest / ".dvc/tmp/rwlock").unlink(missing_ok=True)  # the killed dvc could not release its lock
    out = run(["dvc", "repro", "train"], dest, env)
    assert "train: resuming from data/checkpoints/last.ckpt" in out
    assert json.loads((dest / "data/model/run.json").read_text())["global_step"] == 60


@pytest.mark.slow
def test_train_script_from_the_repo_root(repo):
    dest, env, _ = repo
    (dest / "outputs").mkdir(exist_ok=True)
    if not (dest / "data/prepared/tokenizer.json").exists():
        run(["dvc", "repro", "prepare"], dest, env)
    run([sys.executable, "src/train.py", "model=tiny", "trainer.max_steps=4", "logger=csv"], dest, env)
    (run_dir,) = list((dest / "outputs").glob("*/*"))  # outputs/<date>/<time>, Hydra's run directory
    assert (run_dir / "model.pt").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    assert (run_dir / "logs/csv").is_dir()  # logger.save_dir=logs, inside the run's directory
    # generate from the checkpoint alone: prompts from --prompt or stdin, any decoding preset
    ckpt = str(run_dir / "checkpoints/last.ckpt")
    one = subprocess.run([sys.executable, "src/translate.py", "--model", ckpt, "--prompt", "a b c ."],
                         cwd=dest, env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    assert len(one.stdout.splitlines()) == 1
    nbest = subprocess.run([sys.executable, "src/translate.py", "--model", ckpt, "decoding=beam",
                            "decoding.n_best=2"], input="a b c .\nd e .\n", cwd=dest, env=env,
                           capture_output=True, text=True, timeout=120)
    assert nbest.returncode == 0, nbest.stderr[-2000:]
    blocks = nbest.stdout.split("\n\n")
    assert len(blocks) == 3 and blocks[2] == ""  # two prompts, two hypotheses each, then the end
    for block in blocks[:2]:
        scores = [float(line.split("\t")[0]) for line in block.splitlines()]
        assert len(scores) == 2 and scores[0] >= scores[1]
    bad = subprocess.run([sys.executable, "src/translate.py", "--model", ckpt, "--prompt", "a",
                          "decoding.top_p=0.5"], cwd=dest, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "decoding.top_p=0.5 needs decoding.strategy=sample" in bad.stderr
