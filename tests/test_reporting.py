"""reporting and files: real PNGs, the markdown a reader sees, missing curves, atomic writes."""

import json
from pathlib import Path

import pytest
from conftest import ROOT, png_size

from lmlab.evaluate.metrics import score
from lmlab.files import atomic_path, atomic_write_json, atomic_write_text
from lmlab.report.report import pick_examples, plot_curves, read_curve, render_report, write_report


def write_curve(path: Path, name: str, points) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{name}\n" + "".join(f"{s}\t{v:.6g}\n" for s, v in points))
    return path


@pytest.fixture
def run_dir(tmp_path):
    """What train, generate and evaluate leave behind, in miniature."""
    records = [{"id": i, "source": f"source {i} | piped", "reference": f"The cat {i} sat.",
                "hypothesis": "" if i == 4 else f"The cat {i} sat.", "hyp_tokens": 4, "hit_max_len": i == 4}
               for i in range(10)]
    gen = tmp_path / "reports" / "generations.jsonl"
    gen.parent.mkdir(parents=True)
    gen.write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = {**score(records), "loss": 1.25, "perplexity": 3.4903}
    atomic_write_json(tmp_path / "reports" / "metrics.json", metrics)
    curves = tmp_path / "reports" / "train"
    write_curve(curves / "train_loss.tsv", "train/loss", [(s, 6 / (1 + s)) for s in range(0, 40, 2)])
    write_curve(curves / "val_loss.tsv", "val/loss", [(10, 1.0), (20, 0.5), (30, 0.4)])
    write_curve(curves / "lr.tsv", "lr", [(s, 1e-3 * min(1, (s + 1) / 10)) for s in range(0, 40, 2)])
    return tmp_path, metrics


def report_args(root: Path, out_md="reports/report.md", figures="reports/figures"):
    r = root / "reports"
    return (r / "metrics.json", r / "generations.jsonl", r / "train", root / out_md, root / figures)


# --- curves and plots ------------------------------------------------------------------------------

def test_read_curve(tmp_path):
    path = tmp_path / "val_loss.tsv"
    path.write_text("step\tval/loss\n0\t2.5\n\n100\t1e-3\n")
    assert read_curve(path) == [(0, 2.5), (100, 0.001)]
    assert read_curve(write_curve(tmp_path / "empty.tsv", "lr", [])) == []


@pytest.mark.parametrize("text, expected", [
    ("loss\tstep\n0\t1\n", "bad.tsv:1: expected a header"),
    ("", "bad.tsv:1: expected a header"),
    ("step\tlr\n0\t1\n1.5\t2\n", "bad.tsv:3: expected '<int step><TAB><float value>', got '1.5\\\\t2'"),
    ("step\tlr\n0\t1\t2\n", "bad.tsv:2:"),
    ("step\tlr\n0 1\n", "bad.tsv:2:"),
])
def test_read_curve_names_bad_line(tmp_path, text, expected):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected):
        read_curve(path)


def test_plot_curves_writes_a_png_atomically(tmp_path):
    out = tmp_path / "figs" / "loss.png"
    plot_curves({"train/loss": [(0, 3.0), (10, 2.0), (20, 1.5)], "val/loss": [(10, 2.2)], "empty": []},
                out, title="Loss", ylabel="loss", logy=True)
    assert png_size(out) == (768, 480)   # 6.4 x 4.0 inches at 120 dpi
    assert [p.name for p in out.parent.iterdir()] == ["loss.png"]   # no temporary file left
    with pytest.raises(ValueError, match="every curve is empty"):
        plot_curves({"lr": []}, tmp_path / "lr.png", title="lr", ylabel="lr")
    assert not (tmp_path / "lr.png").exists()


# --- markdown --------------------------------------------------------------------------------------

def test_render_report_tables_escaping_and_sections():
    metrics = {"bleu": 12.5, "bleu_signature": "nrefs:1|case:mixed|tok:13a", "len_cap_rate": 0.1 + 0.2,
               "rouge_stemmer": True, "n_examples": 2, "speed": {"tokens_per_second": 10.5}}
    examples = [{"id": 7, "source": "a|b", "reference": "line1\nline2", "hypothesis": "<unk> & co"},
                {"id": 9, "source": "s", "reference": "r", "hypothesis": ""}]
    md = render_report(metrics, examples, [("Loss", "figures/loss.png"), ("LR", "my figs/lr.png")],
                       title="Run 1", config={"model": {"n_embd": 32}}, notes=["lr.tsv not found"])
    lines = md.splitlines()
    assert lines[0] == "# Run 1"
    assert "| bleu | 12.5 |" in lines
    assert "| len_cap_rate | 0.3 |" in lines          # float noise trimmed
    assert "| rouge_stemmer | True |" in lines
    assert "| speed.tokens_per_second | 10.5 |" in lines
    assert not any(line.startswith("| bleu_signature") for line in lines)
    assert "- bleu: `nrefs:1|case:mixed|tok:13a`" in lines
    assert "![Loss](figures/loss.png)" in lines
    assert "![LR](<my figs/lr.png>)" in lines
    assert "*lr.tsv not found*" in lines
    assert "| 7 | a\\|b | line1<br>line2 | &lt;unk&gt; &amp; co |" in lines
    assert "| 9 | s | r | *(empty)* |" in lines
    assert "```yaml" in lines and "  n_embd: 32" in lines
    assert md.index("## Metrics") < md.index("## Figures") < md.index("## Example generations") \
        < md.index("## Config")


def test_render_report_without_figures_examples_or_config():
    md = render_report({"bleu": 1.0}, [], [])
    assert "*(no figures)*" in md and "*(no examples)*" in md and "## Config" not in md


def test_pick_examples_is_deterministic_and_spread():
    records = [{"id": i} for i in range(10)]
    assert [r["id"] for r in pick_examples(records, 3)] == [0, 3, 6]
    assert [r["id"] for r in pick_examples(records, 4)] == [0, 2, 5, 7]
    assert pick_examples(records, 20) == records and pick_examples(records, 0) == []
    with pytest.raises(ValueError, match="report_examples=-1"):
        pick_examples(records, -1)


# --- write_report ----------------------------------------------------------------------------------

def test_write_report_end_to_end(run_dir):
    root, metrics = run_dir
    write_report(*report_args(root), n_examples=3, config={"decoding": {"strategy": "greedy"}})
    md = (root / "reports" / "report.md").read_text()
    lines = md.splitlines()
    assert f"| bleu | {metrics['bleu']} |" in lines
    assert "| len_cap_rate | 0.1 |" in lines and "| perplexity | 3.4903 |" in lines
    assert "![Training and validation loss](figures/loss.png)" in lines
    assert "![Learning rate](figures/lr.png)" in lines
    assert "| 0 | source 0 \\| piped | The cat 0 sat. | The cat 0 sat. |" in lines
    assert "| 3 | source 3 \\| piped | The cat 3 sat. | The cat 3 sat. |" in lines
    assert "| 6 | source 6 \\| piped | The cat 6 sat. | The cat 6 sat. |" in lines
    assert "| 1 |" not in md
    assert "  strategy: greedy" in lines
    for name in ("loss.png", "lr.png"):
        assert png_size(root / "reports" / "figures" / name) == (768, 480)
    assert sorted(p.name for p in (root / "reports").iterdir()) == \
        ["figures", "generations.jsonl", "metrics.json", "report.md", "train"]


def test_write_report_links_are_relative_to_the_report(run_dir):
    root, _ = run_dir
    write_report(*report_args(root, out_md="docs/run/report.md", figures="plots"))
    md = (root / "docs" / "run" / "report.md").read_text()
    assert "![Training and validation loss](../../plots/loss.png)" in md
    assert (root / "docs" / "run" / "../../plots/loss.png").is_file()


def test_write_report_skips_missing_curves_with_a_note(run_dir):
    root, _ = run_dir
    write_report(*report_args(root))                       # first run: both figures
    (root / "reports" / "train" / "lr.tsv").unlink()
    write_curve(root / "reports" / "train" / "val_loss.tsv", "val/loss", [])
    write_report(*report_args(root))
    md = (root / "reports" / "report.md").read_text()
    assert "![Training and validation loss](figures/loss.png)" in md
    assert "lr.png" not in md
    assert "*Learning rate: lr.tsv not found in" in md
    assert "*Training and validation loss: val_loss.tsv has no points, so val/loss (NLL per token) is not plotted.*" in md
    assert not (root / "reports" / "figures" / "lr.png").exists()   # stale figure removed
    assert png_size(root / "reports" / "figures" / "loss.png") == (768, 480)

    for tsv in ("train_loss.tsv", "val_loss.tsv"):
        (root / "reports" / "train" / tsv).unlink()
    write_report(*report_args(root))
    md = (root / "reports" / "report.md").read_text()
    assert "![" not in md and "train_loss.tsv not found" in md and "val_loss.tsv not found" in md


def test_write_report_bad_input_leaves_no_report(run_dir):
    root, _ = run_dir
    (root / "reports" / "generations.jsonl").write_text('{"id": 0}\n')
    with pytest.raises(ValueError, match="generations.jsonl:1: missing key 'source'"):
        write_report(*report_args(root))
    assert not (root / "reports" / "report.md").exists()


def test_report_stage_main_in_process(run_dir, capsys):
    import report as stage  # src/report.py
    root, main_metrics = run_dir
    metrics, gen, curves, out, figs = report_args(root)
    sweep_dir = root / "reports" / "sweep"
    for name in ("beam4", "topp"):  # the sweep of params.yaml
        atomic_write_json(sweep_dir / name / "metrics.json",
                          {**main_metrics, "bleu_delta": 0.0, "bleu_p_value": 1.0, "chrf_delta": 0.0,
                           "chrf_p_value": 1.0, "bootstrap_samples": 1000})
    rc = stage.main(["--params", str(ROOT / "params.yaml"), "--metrics", str(metrics), "--generations",
                     str(gen), "--curves-dir", str(curves), "--out", str(out), "--figures-dir", str(figs),
                     "--sweep-dir", str(sweep_dir)])
    assert rc == 0, capsys.readouterr().err
    md = out.read_text()
    assert "![Learning rate](figures/lr.png)" in md and "## Config" in md
    assert "| beam4 | 89.48 | 91.84 | 10.00 |" in md and "| topp | 89.48 |" in md
    # evaluate.report_examples in params.yaml is 8: eight example rows.
    assert sum(line.startswith("| ") and " piped |" in line for line in md.splitlines()) == 8


# --- files -----------------------------------------------------------------------------------------

def test_atomic_writes(tmp_path):
    atomic_write_json(tmp_path / "a" / "b.json", {"z": 1, "a": "ü"})
    assert (tmp_path / "a" / "b.json").read_text(encoding="utf-8") == '{\n  "z": 1,\n  "a": "ü"\n}\n'
    atomic_write_text(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "t.txt") as tmp:
            assert tmp.parent == tmp_path and tmp.exists()
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert (tmp_path / "t.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "t.txt"]   # temporary file deleted
    assert oct((tmp_path / "t.txt").stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_strategy_table_marks_significant_differences():
    from lmlab.report.report import strategy_table

    main = {"bleu": 30.0, "chrf": 50.0, "ter": 60.0, "mean_hyp_words": 10.0}
    sweep = {"beam4": {"bleu": 31.5, "chrf": 50.2, "ter": 58.25, "mean_hyp_words": 9.5,
                       "bleu_delta": 1.5, "bleu_p_value": 0.01, "chrf_delta": 0.2, "chrf_p_value": 0.3,
                       "bootstrap_samples": 1000}}
    assert strategy_table(main, sweep) == [
        "| strategy | BLEU | chrF | TER | mean words | ΔBLEU (p) | ΔchrF (p) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| decoding (baseline) | 30.00 | 50.00 | 60.00 | 10.00 | | |",
        "| beam4 | 31.50 | 50.20 | 58.25 | 9.50 | +1.50* (0.010) | +0.20 (0.300) |",
        "",
        "\\* significant at p < 0.05 (sacreBLEU's paired bootstrap, 1000 resamples, against the baseline).",
    ]


def test_strategy_table_of_a_summarization_sweep_shows_rouge_without_bleu_tests():
    from lmlab.report.report import strategy_table

    main = {"rouge1": 40.0, "rouge2": 20.0, "rougeL": 30.0, "rougeLsum": 35.0, "mean_hyp_words": 12.0}
    sweep = {"beam4": {**main, "rouge1": 41.0, "mean_hyp_words": 11.0}}
    assert strategy_table(main, sweep, task="summarization") == [
        "| strategy | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | mean words |",
        "|---|---:|---:|---:|---:|---:|",
        "| decoding (baseline) | 40.00 | 20.00 | 30.00 | 35.00 | 12.00 |",
        "| beam4 | 41.00 | 20.00 | 30.00 | 35.00 | 11.00 |",
    ]
