"""The sweep report: every DVC experiment's results as a model × decoding-strategy pivot.

``collect`` turns the JSON of ``dvc exp show --json`` into one ``Result`` per (experiment, decoding
strategy): the experiment's main ``decoding`` and each ``sweep.<name>`` it decoded. ``write_comparison``
pivots them into ``reports/sweep.md`` and ``reports/sweep.csv`` with three figures: the main metric
against the parameter count (one line per strategy), quality against decoding speed, and the
validation-loss curves of every training run.

Labels: a row is a model preset (``model.name``); a column is a strategy (``decoding.name``, or the
sweep key). When two experiments share a label but differ in other settings (a learning rate, a
beam size), the differing keys are added to the label, so no cell silently mixes two setups. The
same setup found twice (a sweep entry decoded again by a later experiment from the run-cached
model) counts once: the newest.

Significance (translation, where sacreBLEU's paired bootstrap applies): in each row every strategy
is tested against the row's first strategy, and in each column every model against the column's
first (smallest) model, on the same test set.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.config import follow_width
from lmlab.evaluate.metrics import MAIN_METRICS, METRIC_NAMES, paired_bootstrap
from lmlab.files import atomic_write_text
from lmlab.report.report import flatten, markdown_cell, new_axes, plot_curves, save_figure

MAIN_METRICS_FILE = "reports/metrics.json"
DECODE_FILE = "reports/decode.json"
TRAIN_FILE = "reports/train/summary.json"
GENERATIONS_FILE = "reports/generations.jsonl"
VAL_CURVE_FILE = "reports/train/val_loss.tsv"
# the settings that never tell two results apart (where the run was logged, not what it computed)
IGNORED_SECTIONS = ("logger", "sweep", "decoding")
FIGURES = {"params": "quality_vs_params.png", "speed": "quality_vs_speed.png", "val_loss": "val_loss.png"}


@dataclass
class Result:
    """One decoding strategy's results in one experiment."""

    exp: str                     # the experiment's name (or the commit's short hash)
    rev: str                     # its commit
    timestamp: str               # when it ran (ISO), newest wins a duplicate
    params: dict[str, Any]       # params.yaml, flattened (decoding = this strategy's settings)
    strategy: str                # the strategy's own label: decoding.name or the sweep key
    metrics: dict[str, Any]
    decode: dict[str, Any]       # decode.json: sentences/s, tokens/s
    train: dict[str, Any]        # the training summary: parameters, seconds, tokens/s
    generations: str             # the generations file in ``rev``
    row: str = ""
    col: str = ""
    marks: dict[str, str] = field(default_factory=dict)  # metric -> significance marks
    tests: dict[str, Any] = field(default_factory=dict)  # p-values for the CSV


def _file(data: dict, path: str) -> dict:
    """The parsed content of a params or metrics file in an experiment's ``data`` ({} if absent)."""
    return (data.get(path) or {}).get("data") or {}


def _experiments(show: list[dict]) -> list[tuple[str, str, str, dict]]:
    """(name, rev, timestamp, data) of every finished experiment in ``dvc exp show --json`` output,
    and of each baseline commit that has results itself; the uncommitted workspace is left out."""
    found = []
    for base in show:
        if base.get("rev") == "workspace":
            continue
        states = [(base.get("name") or base["rev"][:7], base)]
        for exp_range in base.get("experiments") or []:
            state = (exp_range.get("revs") or [None])[0]
            executor = exp_range.get("executor") or {}
            if state is None or executor.get("state") not in (None, "success"):
                continue  # queued, running or failed: nothing to compare yet
            states.append((exp_range.get("name") or state.get("name") or state["rev"][:7], state))
        for name, state in states:
            data = state.get("data")
            if state.get("error") or not data or not _file(data["metrics"], MAIN_METRICS_FILE):
                continue
            found.append((name, state["rev"], data.get("timestamp") or "", data))
    return found


def collect(show: list[dict], only: list[str] | None = None) -> list[Result]:
    """Every strategy's results of every experiment in ``dvc exp show --json`` output (or of the
    experiments ``only`` names, by name or a prefix of the commit), labelled."""
    results = []
    for name, rev, timestamp, data in _experiments(show):
        if only and name not in only and not any(rev.startswith(o) for o in only):
            continue
        params = as_trained(_file(data["params"], "params.yaml"))
        metrics, train = data["metrics"], _file(data["metrics"], TRAIN_FILE)
        base = {k: v for k, v in params.items() if k not in ("decoding", "sweep")}
        decoding = params.get("decoding") or {}
        strategies = [(decoding.get("name") or decoding.get("strategy", "decoding"), decoding,
                       MAIN_METRICS_FILE, DECODE_FILE, GENERATIONS_FILE)]
        for key, settings in (params.get("sweep") or {}).items():
            folder = f"reports/sweep/{key}"
            strategies.append((key, settings, f"{folder}/metrics.json", f"{folder}/decode.json",
                               f"{folder}/generations.jsonl"))
        for label, settings, metrics_file, decode_file, generations in strategies:
            m = _file(metrics, metrics_file)
            if not m:
                continue  # a sweep entry without results (its stages never ran here)
            settings = {k: v for k, v in settings.items() if k != "name"}
            results.append(Result(name, rev, timestamp, flatten({**base, "decoding": settings}), label,
                                  m, _file(metrics, decode_file), train, generations))
    return _label(_dedupe(results))


def as_trained(params: dict) -> dict:
    """An experiment's params with a null ``trainer.lr`` / ``trainer.warmup_steps`` replaced by the
    value the model's width gave the run (``config.follow_width``, as ``build_config`` does), so
    that rows show the rate used, and an older experiment that set the same value by hand is the
    same setup."""
    trainer, width = params.get("trainer") or {}, (params.get("model") or {}).get("n_embd")
    if not width:
        return params
    return {**params, "trainer": {**trainer, **follow_width(trainer, width)}}


def _dedupe(results: list[Result]) -> list[Result]:
    """One result per distinct setup (params and strategy label): the newest."""
    newest: dict[tuple, Result] = {}
    for r in sorted(results, key=lambda r: r.timestamp):
        key = (r.strategy, tuple(sorted((k, repr(v)) for k, v in r.params.items()
                                        if not k.startswith("logger."))))
        newest[key] = r
    return list(newest.values())


def _varying(results: list[Result], keys: Callable[[str], bool]) -> list[str]:
    """The selected param keys whose values differ among ``results``."""
    names = sorted({k for r in results for k in r.params if keys(k)})
    return [k for k in names if len({repr(r.params.get(k)) for r in results}) > 1]


def _with(label: str, r: Result, keys: list[str]) -> str:
    return label if not keys else f"{label} ({', '.join(f'{k}={r.params.get(k)}' for k in keys)})"


def _label(results: list[Result]) -> list[Result]:
    """Rows by model preset, columns by strategy; clashing labels get their differing settings."""
    def trains(k: str) -> bool:
        return k.split(".", 1)[0] not in IGNORED_SECTIONS and k != "model.name"

    by_model: dict[str, list[Result]] = {}
    for r in results:
        by_model.setdefault(str(r.params.get("model.name", "?")), []).append(r)
    for model, group in by_model.items():
        keys = _varying(group, trains)
        for r in group:
            r.row = _with(model, r, keys)
    by_cell: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_cell.setdefault((r.row, r.strategy), []).append(r)
    for (_, strategy), group in by_cell.items():
        keys = _varying(group, lambda k: k.startswith("decoding."))
        for r in group:
            r.col = _with(strategy, r, keys)
    return results


def _task(results: list[Result]) -> str:
    tasks = {r.params.get("data.task", "translation") for r in results}
    if len(tasks) > 1:
        raise ValueError(f"the experiments mix tasks ({', '.join(sorted(tasks))}): their metrics "
                         "cannot share one table; compare one task at a time (--exp NAME ...)")
    return tasks.pop()


def order(results: list[Result]) -> tuple[list[str], list[str]]:
    """Rows from the smallest model up (then by label); columns greedy first, then as found."""
    size = {}
    for r in results:
        size.setdefault(r.row, r.train.get("n_parameters") or 0)
    rows = sorted(size, key=lambda row: (size[row], row))
    cols: list[str] = []
    for r in sorted(results, key=lambda r: (r.strategy != "greedy", r.timestamp)):
        if r.col not in cols:
            cols.append(r.col)
    return rows, cols


def mark_significance(results: list[Result], read: Callable[[Result], list[dict]], *,
                      bleu_tokenize: str, n_samples: int) -> list[str]:
    """Paired bootstrap (sacreBLEU) of every cell against its row's first strategy (``*``) and its
    column's first model (``†``), for BLEU and chrF. Returns notes on tests that could not run."""
    rows, cols = order(results)
    cell = {(r.row, r.col): r for r in results}
    cache: dict[int, list[dict]] = {}
    notes: list[str] = []

    def records(r: Result) -> list[dict]:
        if id(r) not in cache:
            cache[id(r)] = read(r)
        return cache[id(r)]

    def test(base: Result, other: Result, sign: str, against: str) -> None:
        try:
            out = paired_bootstrap(records(base), records(other), bleu_tokenize=bleu_tokenize,
                                   n_samples=n_samples)
        except ValueError as err:  # different test sets
            notes.append(f"{other.row} / {other.col} against {base.row} / {base.col}: not tested ({err}).")
            return
        for key in ("bleu", "chrf"):
            p = out[f"{key}_p_value"]
            other.tests[f"{key}_p_vs_{against}"] = p
            if p < 0.05 and out[f"{key}_delta"] != 0:
                other.marks[key] = other.marks.get(key, "") + sign

    for row in rows:
        present = [cell[row, c] for c in cols if (row, c) in cell]
        for other in present[1:]:
            test(present[0], other, "*", "row_first")
    for col in cols:
        present = [cell[r, col] for r in rows if (r, col) in cell]
        for other in present[1:]:
            test(present[0], other, "†", "col_first")
    return notes


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(results: list[Result], task: str, figures: list[tuple[str, str]],
                    notes: list[str], tested: bool, n_samples: int) -> str:
    rows, cols = order(results)
    cell = {(r.row, r.col): r for r in results}
    header = "| model | " + " | ".join(markdown_cell(c) for c in cols) + " |"
    rule = "|---|" + "---:|" * len(cols)
    lines = ["# Sweep: model size × decoding strategy", "",
             f"{len(results)} results from {len({r.exp for r in results})} experiments "
             f"({', '.join(sorted({r.exp for r in results}))}), task: {task}.", ""]
    for key in MAIN_METRICS[task]:
        lines += [f"## {METRIC_NAMES[key]}", "", header, rule]
        for row in rows:
            values = [(f"{cell[row, c].metrics[key]:.2f}{cell[row, c].marks.get(key, '')}"
                       if (row, c) in cell and key in cell[row, c].metrics else "–") for c in cols]
            lines.append(f"| {markdown_cell(row)} | " + " | ".join(values) + " |")
        lines.append("")
    if tested:
        lines += [f"\\* differs from the row's first strategy, † from the column's first model, at "
                  f"p < 0.05 (sacreBLEU's paired bootstrap, {n_samples} resamples, same test set; "
                  "BLEU and chrF).", ""]
    else:
        lines += ["No significance marks: sacreBLEU's paired bootstrap covers BLEU and chrF, the "
                  "translation metrics.", ""]
    lines += ["## Decoding speed (tokens/s)", "", header, rule]
    for row in rows:
        values = [_fmt(cell[row, c].decode.get("tokens_per_second"), 0) if (row, c) in cell else "–"
                  for c in cols]
        lines.append(f"| {markdown_cell(row)} | " + " | ".join(values) + " |")
    lines += ["", "## Models", "", "| model | parameters | training s | training tok/s | best val loss |",
              "|---|---:|---:|---:|---:|"]
    for row in rows:
        t = next(r.train for r in results if r.row == row)
        lines.append(f"| {markdown_cell(row)} | {_fmt(t.get('n_parameters'))} | {_fmt(t.get('train_seconds'), 0)} | "
                     f"{_fmt(t.get('train_tokens_per_second'), 0)} | {_fmt(t.get('best_val_loss'), 4)} |")
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({path})\n" for caption, path in figures]
    lines += [f"*{note}*\n" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def render_csv(results: list[Result], task: str) -> str:
    rows, cols = order(results)
    rank = {(row, col): (i, j) for i, row in enumerate(rows) for j, col in enumerate(cols)}
    tests = sorted({k for r in results for k in r.tests})
    fields = ["model", "strategy", "experiment", "rev", "n_parameters", "train_seconds",
              "train_tokens_per_second", "best_val_loss", "decode_tokens_per_second",
              "decode_sentences_per_second", *MAIN_METRICS[task], *tests]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in sorted(results, key=lambda r: rank[r.row, r.col]):
        writer.writerow({
            "model": r.row, "strategy": r.col, "experiment": r.exp, "rev": r.rev,
            "n_parameters": r.train.get("n_parameters"), "train_seconds": r.train.get("train_seconds"),
            "train_tokens_per_second": r.train.get("train_tokens_per_second"),
            "best_val_loss": r.train.get("best_val_loss"),
            "decode_tokens_per_second": r.decode.get("tokens_per_second"),
            "decode_sentences_per_second": r.decode.get("sentences_per_second"),
            **{k: r.metrics.get(k) for k in MAIN_METRICS[task]}, **{k: r.tests.get(k) for k in tests},
        })
    return buf.getvalue()


def plot_figures(results: list[Result], task: str, figures_dir: Path,
                 curves: dict[str, list[tuple[int, float]]]) -> dict[str, Path]:
    """The three PNGs; returns {figure key: path} of those drawn."""
    key = MAIN_METRICS[task][0]
    metric = METRIC_NAMES[key]
    rows, cols = order(results)
    cell = {(r.row, r.col): r for r in results}
    out = {}

    fig, ax = new_axes(f"{metric} against model size", "parameters", metric)
    for col in cols:
        points = sorted((cell[row, col].train.get("n_parameters"), cell[row, col].metrics[key])
                        for row in rows if (row, col) in cell and cell[row, col].train.get("n_parameters"))
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=col)
    ax.set_xscale("log")
    out["params"] = figures_dir / FIGURES["params"]
    save_figure(fig, ax, out["params"])

    fig, ax = new_axes(f"{metric} against decoding speed", "decoding tokens/s", metric)
    markers = "osD^v<>pP*X"
    for j, col in enumerate(cols):
        for i, row in enumerate(rows):
            r = cell.get((row, col))
            if r is not None and r.decode.get("tokens_per_second"):
                ax.scatter(r.decode["tokens_per_second"], r.metrics[key], color=f"C{j % 10}",
                           marker=markers[i % len(markers)], label=f"{row} / {col}")
    ax.set_xscale("log")
    out["speed"] = figures_dir / FIGURES["speed"]
    save_figure(fig, ax, out["speed"])

    if any(curves.values()):
        out["val_loss"] = figures_dir / FIGURES["val_loss"]
        plot_curves(curves, out["val_loss"], title="Validation loss of every training run",
                    ylabel="val/loss (NLL per token)")
    return out


def write_comparison(results: list[Result], out_md: str | Path, out_csv: str | Path,
                     figures_dir: str | Path, *, read_generations: Callable[[Result], list[dict]],
                     read_curve: Callable[[Result], list[tuple[int, float]] | None],
                     bleu_tokenize: str = "13a", n_samples: int = 1000) -> None:
    """Write the pivot (markdown and CSV) and the figures for ``results`` (see ``collect``).
    ``read_generations`` and ``read_curve`` fetch a result's generations and validation curve from
    its commit (the caller knows where experiments live)."""
    if not results:
        raise ValueError("no experiment with results to compare: run some first, e.g. "
                         "dvc exp run --queue -S 'model=tiny,small' && dvc queue start")
    task = _task(results)
    out_md, figures_dir = Path(out_md), Path(figures_dir)
    tested = task == "translation"
    notes = mark_significance(results, read_generations, bleu_tokenize=bleu_tokenize,
                              n_samples=n_samples) if tested else []
    curves = {}
    for row in order(results)[0]:
        r = next(r for r in results if r.row == row)
        points = read_curve(r)
        if points is None:
            notes.append(f"{row}: no {VAL_CURVE_FILE} in {r.exp}, so its curve is not plotted.")
        else:
            curves[row] = points
    drawn = plot_figures(results, task, figures_dir, curves)
    captions = {"params": "Main metric against parameter count, one line per strategy",
                "speed": "Quality against decoding speed", "val_loss": "Validation loss of every run"}
    figures = [(captions[k], Path(os.path.relpath(p.resolve(), out_md.resolve().parent)).as_posix())
               for k, p in drawn.items()]
    atomic_write_text(out_csv, render_csv(results, task))
    atomic_write_text(out_md, render_markdown(results, task, figures, notes, tested, n_samples))
