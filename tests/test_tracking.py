"""W&B as users see it: one real tiny training logged offline inside a (pretend) `dvc exp run`, the
evaluate stage run for two strategies, and the run files read back with wandb's own reader
(`wandb leet inspect --json`, which decodes the .wandb transaction log with wandb-core)."""

import contextlib
import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest
import sacrebleu
from conftest import read_run_file

from lmlab.config import build_config, compose
from lmlab.evaluate.metrics import example_scores, score
from lmlab.evaluate.wandb_run import log_evaluation
from lmlab.tracking import provenance, run_group, run_tags, strategy_name

BASELINE = "0123456789abcdef0123456789abcdef01234567"  # what `dvc exp run` puts in DVC_EXP_BASELINE_REV
TABLE_COLUMNS = ["id", "source", "reference", "hypothesis", "sentence BLEU"]


def of_type(records: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in records if r["type"] == kind]


def merged(updates: list[dict]) -> dict:
    out = {}
    for update in updates:
        out.update(update.get("update", {}))
    return out


def curve(path: Path) -> dict[int, float]:
    return {int(s): float(v) for s, v in (line.split("\t") for line in path.read_text().splitlines()[1:])}


@pytest.fixture(scope="module")
def logged(prepared, tiny_overrides, tmp_path_factory):
    """Train with logger=wandb, then run the evaluate stage for the main decoding (greedy) and
    the sweep entry beam4 as DVC does (src/score.py, in-process); every run file read back."""
    import score as score_stage
    from lmlab.decoding.driver import generate_split
    from lmlab.train.fit import train

    root = tmp_path_factory.mktemp("tracking")
    overrides = tiny_overrides + ["logger=wandb", f"logger.save_dir={root}", "evaluate.bootstrap_samples=100",
                                  "evaluate.report_examples=2"]
    cfg = build_config(compose(overrides))
    model, prepared_dir = root / "model/model.pt", prepared / "prepared"
    stdout = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DATA_DIR", str(root / "wandb-data"))  # artifact staging stays in the test's folder
        with pytest.MonkeyPatch.context() as dvc:
            dvc.setenv("DVC_EXP_BASELINE_REV", BASELINE)
            dvc.setenv("DVC_EXP_NAME", "tidy-fish")
            summary = train(cfg, prepared_dir, root / "model", root / "curves")
        for name, extra in (("greedy", []), ("beam4", ["--strategy", "beam4", "--baseline",
                                                       str(root / "greedy/generations.jsonl")])):
            generations = root / name / "generations.jsonl"
            generate_split(cfg.with_strategy(name) if extra else cfg, model, prepared_dir, prepared / "raw",
                           generations)
            argv = ["--generations", str(generations), "--model", str(model), "--prepared-dir", str(prepared_dir),
                    "--metrics", str(root / name / "metrics.json"), *extra, *overrides]
            with contextlib.redirect_stdout(io.StringIO()) as out:
                assert score_stage.main(argv) == 0
            stdout[name] = out.getvalue()

        run_id = summary["wandb"]["id"]
        files = {}
        for path in root.glob(f"wandb/offline-run-*/run-{run_id}.wandb"):
            records = read_run_file(path)
            (run,) = of_type(records, "run")
            run_summary = merged(of_type(records, "summary"))
            key = "train" if run.get("job_type") == "train" else next(
                k.split("/")[1] for k in run_summary if k.startswith("test/"))
            assert key not in files, f"two run files for {key}"
            files[key] = {"dir": path.parent, "records": records, "run": run, "summary": run_summary}
        yield {"root": root, "cfg": cfg, "summary": summary, "stdout": stdout, "files": files, "model": model}


def test_one_training_run_with_the_resolved_config_group_and_tags(logged):
    files, cfg = logged["files"], logged["cfg"]
    assert sorted(files) == ["beam4", "greedy", "train"]  # one run: training, then two resumes by id
    run = files["train"]["run"]
    assert run["run_id"] == logged["summary"]["wandb"]["id"]
    assert run["job_type"] == "train" and run["display_name"] == "tidy-fish"
    assert run["run_group"] == "dvc-0123456"
    assert run["tags"] == ["model=tiny", "arch=encoder-decoder"]  # nothing scored yet
    config = {k: v for k, v in run["config"]["update"].items() if k != "_wandb"}
    provenance = config.pop("provenance")
    assert config == json.loads(json.dumps(cfg.to_dict()))  # the whole resolved config
    # where the run comes from, to filter by: the DVC experiment, the commit, the params file's hash
    params = Path.cwd() / "params.yaml"
    assert provenance == {"dvc_experiment": "tidy-fish", "git_commit": BASELINE,
                          "params_sha256": hashlib.sha256(params.read_bytes()).hexdigest()}
    assert config["model"]["name"] == "tiny" and config["trainer"]["max_steps"] == 12
    later = merged(of_type(files["train"]["records"], "config"))
    assert later["n_parameters"] == logged["summary"]["n_parameters"]


def test_curves_use_the_global_step_as_x_axis(logged):
    records, root = logged["files"]["train"]["records"], logged["root"]
    axes = {m.get("glob_name") or m["name"]: m.get("step_metric") for m in of_type(records, "metric")}
    assert axes["train/*"] == axes["val/*"] == "trainer/global_step"
    rows = [h["item"] for h in of_type(records, "history")]
    train = {r["trainer/global_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    val = {r["trainer/global_step"]: r["val/loss"] for r in rows if "val/loss" in r}
    # Lightning logs a metric at the optimizer steps done before its batch's own step; the DVC
    # curves (reports/train/*.tsv) count the steps after it. Same losses, one step apart.
    assert sorted(train) == [1, 3, 5, 7, 9, 11] and sorted(val) == [5, 11]
    tsv_train, tsv_val = curve(root / "curves/train_loss.tsv"), curve(root / "curves/val_loss.tsv")
    assert sorted(tsv_train) == [2, 4, 6, 8, 10, 12] and sorted(tsv_val) == [6, 12]
    for step, loss in train.items():
        assert loss == pytest.approx(tsv_train[step + 1], rel=1e-5), step
    for step, loss in val.items():
        assert loss == pytest.approx(tsv_val[step + 1], rel=1e-5), step


def test_parameter_count_and_throughput_in_the_summary(logged):
    from lmlab.model.checkpoint import load_model

    summary = logged["files"]["train"]["summary"]
    model, _, _ = load_model(logged["model"])
    assert summary["n_parameters"] == model.num_parameters() == logged["summary"]["n_parameters"]
    assert summary["train_tokens_per_second"] == logged["summary"]["train_tokens_per_second"] > 0
    assert summary["global_step"] == 12 and summary["best_val_loss"] == logged["summary"]["best_val_loss"]


def test_each_strategy_s_metrics_in_the_training_run_summary(logged):
    files, root = logged["files"], logged["root"]
    for name in ("greedy", "beam4"):
        metrics = json.loads((root / name / "metrics.json").read_text())
        summary = files[name]["summary"]
        assert {k.split("/", 2)[2]: v for k, v in summary.items()
                if k.startswith(f"test/{name}/") and k != f"test/{name}/generations"} == metrics
        # the resume leaves the training run's job_type and group as they are, and its tags and
        # scored_strategies name every strategy scored so far
        assert files[name]["run"]["resume"] is True
        assert {"job_type", "run_group"}.isdisjoint(files[name]["run"])
        so_far = ["greedy"] if name == "greedy" else ["greedy", "beam4"]
        assert files[name]["run"]["tags"] == ["model=tiny", "arch=encoder-decoder", *(f"decoding={s}" for s in so_far)]
        assert summary["scored_strategies"] == so_far
        assert summary[f"test/{name}/bleu"] == metrics["bleu"]
    assert "test/greedy/perplexity" in files["greedy"]["summary"]
    assert "test/beam4/bleu_p_value" in files["beam4"]["summary"]


def test_a_table_of_generations_per_strategy(logged):
    files, root = logged["files"], logged["root"]
    for name in ("greedy", "beam4"):
        ref = files[name]["summary"][f"test/{name}/generations"]
        assert ref["_type"] == "table-file" and ref["ncols"] == 5 and ref["nrows"] == 8  # 4 × report_examples
        table = json.loads((files[name]["dir"] / "files" / ref["path"]).read_text())
        assert table["columns"] == TABLE_COLUMNS
        first = json.loads((root / name / "generations.jsonl").read_text().splitlines()[0])
        bleu = sacrebleu.sentence_bleu(first["hypothesis"], [first["reference"]], tokenize="13a",
                                       use_effective_order=True).score
        assert table["data"][0] == [first["id"], first["source"], first["reference"], first["hypothesis"],
                                    round(bleu, 4)]


def test_each_evaluate_prints_the_sync_command_of_its_run(logged):
    for name in ("greedy", "beam4"):
        lines = logged["stdout"][name].splitlines()
        assert lines[-2] == f"W&B run {logged['summary']['wandb']['id']}: test/{name}/* in its summary"
        assert lines[-1] == f"W&B run saved offline; upload with: wandb sync {logged['files'][name]['dir']}"


def test_no_run_on_other_ranks_or_without_a_training_run(logged, monkeypatch, tmp_path):
    root, cfg = logged["root"], logged["cfg"]
    before = sorted(root.glob("wandb/offline-run-*"))
    args = (logged["model"], root / "greedy/generations.jsonl", {"bleu": 1.0})
    monkeypatch.setenv("RANK", "1")  # what torchrun and Lightning's DDP launcher set on rank 1
    assert log_evaluation(cfg, *args) is None
    monkeypatch.delenv("RANK")
    assert log_evaluation(build_config(compose(["logger=wandb", "logger.mode=disabled"])), *args) is None
    assert log_evaluation(build_config(compose(["logger=csv"])), *args) is None
    assert log_evaluation(cfg, tmp_path / "no-model.pt", *args[1:]) is None  # a sweep scored without it
    assert sorted(root.glob("wandb/offline-run-*")) == before


def test_global_rank_reads_the_launchers_variables():
    from lmlab.cli import global_rank

    assert global_rank({}) == 0
    assert global_rank({"RANK": "3", "LOCAL_RANK": "1"}) == 3  # torchrun: the global rank first
    assert global_rank({"LOCAL_RANK": "1"}) == 1  # Lightning's DDP children before RANK is set
    assert global_rank({"SLURM_PROCID": "5"}) == 5


def test_a_relative_save_dir_holds_the_whole_run_after_a_chdir(logged, monkeypatch, tmp_path):
    """The W&B service started by the runs above outlives this chdir: given a relative dir, it
    would write the .wandb log under its own working directory, away from the run's folder."""
    monkeypatch.chdir(tmp_path)
    cfg = build_config(compose(["logger=wandb"]))
    assert cfg.logger.save_dir == "."
    info = log_evaluation(cfg, logged["model"], logged["root"] / "beam4/generations.jsonl", {"bleu": 1.0}, "beam4")
    (log,) = tmp_path.glob(f"wandb/offline-run-*/run-{info['id']}.wandb")
    assert Path(info["dir"]).parent == log.parent


# -- the pieces, without a run ----------------------------------------------------------------------

def test_group_from_config_dvc_experiment_or_hydra_multirun():
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    cfg = build_config(compose([]))
    assert run_group(cfg, {}) is None
    assert run_group(cfg, {"DVC_EXP_BASELINE_REV": BASELINE, "DVC_EXP_NAME": "x"}) == "dvc-0123456"
    named = build_config(compose(["logger.group=ablation"]))
    assert run_group(named, {"DVC_EXP_BASELINE_REV": BASELINE}) == "ablation"
    hydra = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    hydra.hydra.mode = RunMode.MULTIRUN
    hydra.hydra.sweep.dir = "multirun/2026-01-02/03-04-05"
    HydraConfig.instance().set_config(hydra)
    try:
        assert run_group(cfg, {}) == "multirun/2026-01-02/03-04-05"
    finally:
        HydraConfig.instance().cfg = None


def test_strategy_names_and_tags():
    cfg = build_config(compose(["decoding=beam"]))
    assert strategy_name(cfg) == "beam" and strategy_name(cfg, "topp") == "topp"
    assert run_tags(cfg) == ["model=tiny", "arch=encoder-decoder"]
    assert run_tags(cfg, ["greedy", "beam4"]) == ["model=tiny", "arch=encoder-decoder", "decoding=greedy", "decoding=beam4"]
    # a sweep entry named like the main strategy but decoding otherwise: the main one is "decoding"
    clash = build_config(compose(["+decoding@sweep.beam=beam", "sweep.beam.beam_size=8", "decoding=beam"]))
    assert strategy_name(clash) == "decoding" and strategy_name(clash, "beam") == "beam"
    same = build_config(compose(["+decoding@sweep.beam=beam", "decoding=beam"]))
    assert strategy_name(same) == "beam"


def rec(i, hyp, ref):
    return {"id": i, "source": "s", "reference": ref, "hypothesis": hyp, "hyp_tokens": 1, "hit_max_len": False}


def test_example_scores_per_task():
    records = [rec(0, "the cat sat on the mat", "the cat sat on the mat"),
               rec(1, "a dog ran in the park today", "the dog ran in a park"),
               rec(2, "nothing alike", "completely different words")]
    column, bleu = example_scores(records, task="translation", bleu_tokenize="13a")
    assert column == "sentence BLEU" and bleu[0] == 100.0 and bleu[2] == 0.0
    assert bleu[1] == round(sacrebleu.sentence_bleu(records[1]["hypothesis"], [records[1]["reference"]],
                                                    use_effective_order=True).score, 4)
    column, rouge = example_scores(records, task="summarization")
    assert column == "ROUGE-L" and rouge[0] == 100.0 and rouge[2] == 0.0
    # the corpus ROUGE-L is the mean of the examples' own
    assert sum(rouge) / 3 == pytest.approx(score(records, task="summarization")["rougeL"], abs=1e-4)
    column, rep = example_scores([rec(0, "a b c d a b c d", "x"), rec(1, "a b c d e", "x")],
                                 task="language_modeling")
    assert column == "seq-rep-4" and rep == [0.2, 0.0]  # 5 4-grams, 1 repeats one before it


def test_provenance_outside_dvc_reads_git_and_params_yaml(tmp_path):
    assert provenance({}, tmp_path) == {"dvc_experiment": None, "git_commit": None, "params_sha256": None}
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert provenance({}, tmp_path) == {"dvc_experiment": None, "git_commit": head,
                                        "params_sha256": hashlib.sha256(b"seed: 1\n").hexdigest()}
    # DVC's variables win: the experiment's name and its baseline commit, the params of DVC_ROOT
    got = provenance({"DVC_EXP_NAME": "tidy-fish", "DVC_EXP_BASELINE_REV": BASELINE, "DVC_ROOT": str(tmp_path)}, "/")
    assert got["dvc_experiment"] == "tidy-fish" and got["git_commit"] == BASELINE and got["params_sha256"]
