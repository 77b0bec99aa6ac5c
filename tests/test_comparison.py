"""The sweep report's collection and labelling, on hand-written `dvc exp show --json` output."""

import csv

import pytest

from lmlab.report.compare import collect, write_comparison


def exp(name, rev, ts, model="tiny", decoding="greedy", lr=0.002, sweep=(), bleu=10.0, n_params=1000,
        task="translation", beam_size=1):
    params = {"data": {"task": task}, "model": {"name": model, "n_embd": 32},
              "trainer": {"lr": lr}, "logger": {"mode": f"offline-{name}"},
              "decoding": {"name": decoding, "strategy": "greedy", "beam_size": beam_size},
              "sweep": {k: {"name": "beam", "strategy": "beam", "beam_size": 4} for k in sweep}}
    metrics = {"reports/metrics.json": {"data": {"bleu": bleu, "chrf": bleu + 1, "ter": 50.0}},
               "reports/decode.json": {"data": {"tokens_per_second": 100.0}},
               "reports/train/summary.json": {"data": {"n_parameters": n_params, "train_seconds": 5.0}}}
    for k in sweep:
        metrics[f"reports/sweep/{k}/metrics.json"] = {"data": {"bleu": bleu + 2, "chrf": bleu + 3, "ter": 40.0}}
        metrics[f"reports/sweep/{k}/decode.json"] = {"data": {"tokens_per_second": 20.0}}
    return {"revs": [{"rev": rev, "name": name, "error": None, "experiments": None,
                      "data": {"rev": rev, "timestamp": ts, "params": {"params.yaml": {"data": params}},
                               "metrics": metrics}}],
            "executor": {"state": "success"}, "name": name}


def show(*exps, queued=False):
    base = {"rev": "b" * 40, "name": "main", "error": None, "experiments": list(exps),
            "data": {"rev": "b" * 40, "timestamp": "2026-01-01T00:00:00", "params": {}, "metrics": {}}}
    if queued:
        base["experiments"].append({"revs": [{"rev": "q" * 40, "name": "later", "data": None, "error": None}],
                                    "executor": {"state": "queued"}, "name": "later"})
    return [{"rev": "workspace", "name": None, "error": None, "experiments": None,
             "data": exps[0]["revs"][0]["data"] if exps else None}, base]


def cells(results):
    return sorted((r.row, r.col, r.exp, r.metrics["bleu"]) for r in results)


def test_rows_are_models_and_columns_strategies_with_the_sweep_entries():
    results = collect(show(exp("a", "1" * 40, "2026-01-02", sweep=["beam4"]),
                           exp("b", "2" * 40, "2026-01-03", model="small", n_params=5000, bleu=20.0),
                           queued=True))
    assert cells(results) == [("small", "greedy", "b", 20.0), ("tiny", "beam4", "a", 12.0),
                              ("tiny", "greedy", "a", 10.0)]
    sweep = next(r for r in results if r.col == "beam4")
    assert sweep.decode == {"tokens_per_second": 20.0} and sweep.train["n_parameters"] == 1000


def test_a_setting_that_differs_is_added_to_the_label_and_the_same_setup_counts_once():
    results = collect(show(
        exp("a", "1" * 40, "2026-01-02", sweep=["beam4"]),
        exp("b", "2" * 40, "2026-01-03", decoding="beam", sweep=["beam4"], bleu=11.0),  # beam4 again
        exp("c", "3" * 40, "2026-01-04", lr=0.001, bleu=7.0),
        exp("d", "4" * 40, "2026-01-05", decoding="beam", beam_size=8, bleu=9.0)))
    assert cells(results) == [
        ("tiny (trainer.lr=0.001)", "greedy", "c", 7.0),
        ("tiny (trainer.lr=0.002)", "beam (decoding.beam_size=1)", "b", 11.0),
        ("tiny (trainer.lr=0.002)", "beam (decoding.beam_size=8)", "d", 9.0),
        ("tiny (trainer.lr=0.002)", "beam4", "b", 13.0),  # a's and b's are one setup: b's, the newer
        ("tiny (trainer.lr=0.002)", "greedy", "a", 10.0),
    ]


def test_mixed_tasks_are_refused_naming_them(tmp_path):
    results = collect(show(exp("a", "1" * 40, "2026-01-02"),
                           exp("b", "2" * 40, "2026-01-03", task="summarization", model="small")))
    with pytest.raises(ValueError, match=r"mix tasks \(summarization, translation\)"):
        write_comparison(results, tmp_path / "s.md", tmp_path / "s.csv", tmp_path,
                         read_generations=None, read_curve=lambda r: None)


def test_nothing_to_compare_says_how_to_run_a_sweep(tmp_path):
    with pytest.raises(ValueError, match="dvc exp run --queue"):
        write_comparison(collect(show()), tmp_path / "s.md", tmp_path / "s.csv", tmp_path,
                         read_generations=None, read_curve=lambda r: None)


def test_significance_marks_and_the_csv(tmp_path):
    refs = [f"the cat number {i} sat on the mat ." for i in range(30)]
    good = [{"id": i, "source": "s", "reference": r, "hypothesis": r} for i, r in enumerate(refs)]
    bad = [{"id": i, "source": "s", "reference": r, "hypothesis": "a dog"} for i, r in enumerate(refs)]
    results = collect(show(exp("a", "1" * 40, "2026-01-02", sweep=["beam4"], bleu=1.0),
                           exp("b", "2" * 40, "2026-01-03", model="small", n_params=5000, bleu=90.0)))
    outputs = {("a", "greedy"): bad, ("a", "beam4"): bad, ("b", "greedy"): good}
    write_comparison(results, tmp_path / "sweep.md", tmp_path / "sweep.csv", tmp_path / "fig",
                     read_generations=lambda r: outputs[r.exp, r.col],
                     read_curve=lambda r: [(1, 3.0), (2, 2.0)] if r.exp == "a" else None, n_samples=100)
    md = (tmp_path / "sweep.md").read_text()
    table = md.split("## BLEU\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    # beam4 decodes exactly what greedy did: no mark; the bigger model wins clearly: †
    assert table == ["| model | greedy | beam4 |", "|---|---:|---:|", "| tiny | 1.00 | 3.00 |",
                     "| small | 90.00† | – |"]
    assert "small: no reports/train/val_loss.tsv in b" in md
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["model"], r["strategy"], r["bleu_p_vs_row_first"], r["bleu_p_vs_col_first"]) for r in rows] == [
        ("tiny", "greedy", "", ""), ("tiny", "beam4", "1.0", ""), ("small", "greedy", "", "0.0099")]
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "quality_vs_params.png", "quality_vs_speed.png", "val_loss.png"]


def test_a_null_learning_rate_is_shown_and_matched_as_the_rate_the_width_gave():
    """params.yaml keeps trainer.lr null (the width rule); the report labels rows with the rate the
    run used, and an older experiment that set that same rate by hand is the same setup."""
    results = collect(show(exp("old", "1" * 40, "2026-01-02", lr=8e-3, bleu=10.0),  # n_embd 32: the rule's 8e-3
                           exp("new", "2" * 40, "2026-01-03", lr=None, bleu=11.0),
                           exp("slow", "3" * 40, "2026-01-04", lr=1e-3, bleu=7.0)))
    assert cells(results) == [("tiny (trainer.lr=0.001)", "greedy", "slow", 7.0),
                              ("tiny (trainer.lr=0.008)", "greedy", "new", 11.0)]
