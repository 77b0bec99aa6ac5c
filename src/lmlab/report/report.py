"""The ``report`` stage's library: training-curve plots and a markdown report of one run.

``write_report`` reads what the earlier stages left (``reports/metrics.json``, the generations JSONL,
the curve TSVs in ``reports/train``) and writes ``reports/report.md`` plus PNG figures whose links
are relative to the report's folder, so the report renders wherever the repository is checked out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmlab.evaluate.metrics import METRIC_NAMES, main_metric_keys, read_generations
from lmlab.files import atomic_outputs, atomic_path

# Figure file -> (caption, y label, [(curve file, legend label), ...]); the curve files are the ones
# the train stage writes (see ``train.callbacks.CURVES``).
FIGURES: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "loss.png": ("Training and validation loss", "loss",
                 [("train_loss.tsv", "train/loss (label-smoothed objective)"),
                  ("val_loss.tsv", "val/loss (NLL per token)")]),
    "lr.png": ("Learning rate", "learning rate", [("lr.tsv", "lr")]),
}


def read_curve(path: str | Path) -> list[tuple[int, float]]:
    """Read a curve TSV: a header ``step<TAB>name`` then one ``step<TAB>value`` row per point."""
    path = Path(path)
    return parse_curve(path.read_text(encoding="utf-8"), str(path))


def parse_curve(text: str, name: str) -> list[tuple[int, float]]:
    """The points of a curve TSV's ``text``; errors name ``name`` and the line."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("step\t"):
        raise ValueError(f"{name}:1: expected a header 'step<TAB><metric name>', "
                         f"got {lines[0] if lines else ''!r}")
    points = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            if len(fields) != 2:
                raise ValueError
            points.append((int(fields[0]), float(fields[1])))
        except ValueError:
            raise ValueError(f"{name}:{lineno}: expected '<int step><TAB><float value>', "
                             f"got {line!r}") from None
    return points


def new_axes(title: str, xlabel: str, ylabel: str):
    """A figure and its axes, titled and gridded: a bare ``Figure`` with the Agg canvas rather than
    pyplot, so there is no backend to select and no global figure registry to leak into (safe in
    tests and headless stages alike)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def save_figure(fig, ax, out_png: str | Path) -> None:
    """Add the legend and write the PNG atomically (a log x axis labels its decades only)."""
    if ax.get_xscale() == "log":
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)  # the temporary name ends in .tmp: say the format


def plot_curves(curves: dict[str, list[tuple[int, float]]], out_png: str | Path, *, title: str,
                ylabel: str, logy: bool = False) -> None:
    """Plot one line per curve (x = step) into ``out_png``, written atomically."""
    if not any(curves.values()):
        raise ValueError(f"nothing to plot for {out_png}: every curve is empty")
    fig, ax = new_axes(title, "step", ylabel)
    for label, points in curves.items():
        if not points:
            continue
        steps, values = zip(*points)
        # A few points (validation runs) read better with markers; a dense curve without.
        ax.plot(steps, values, label=label, marker="o" if len(points) <= 30 else None, markersize=3)
    if logy:
        ax.set_yscale("log")
    save_figure(fig, ax, out_png)


def markdown_cell(value: Any) -> str:
    """Text safe inside a markdown table cell: HTML-escaped, ``|`` escaped, newlines as <br>."""
    text = str(value)
    if not text.strip():
        return "*(empty)*"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".10g")  # as written to metrics.json, minus float noise (0.1+0.2)
    return str(value)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (an empty mapping stays a value)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _link(path: str) -> str:
    return f"<{path}>" if any(c in path for c in " ()") else path


def strategy_table(main: dict, sweep: dict[str, dict], main_name: str = "decoding",
                   task: str = "translation") -> list[str]:
    """Markdown rows comparing the main strategy with each sweep strategy: the task's main scores,
    and for translation the differences and paired-bootstrap p-values (a difference counts as
    significant at p < 0.05)."""
    keys = main_metric_keys(task, main)
    tested = [k for k in ("bleu", "chrf") if sweep and all(f"{k}_p_value" in m for m in sweep.values())]
    header = ["strategy", *(METRIC_NAMES[k] for k in keys), "mean words",
              *(f"Δ{METRIC_NAMES[k]} (p)" for k in tested)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, m in [(f"{main_name} (baseline)", main), *sweep.items()]:
        cells = [markdown_cell(name), *(f"{m[k]:.2f}" for k in keys), f"{m['mean_hyp_words']:.2f}"]
        for key in tested:
            if m is main:
                cells.append("")
                continue
            p = m[f"{key}_p_value"]
            cells.append(f"{m[f'{key}_delta']:+.2f}{'*' if p < 0.05 else ''} ({p:.3f})")
        lines.append("|" + "".join(f" {c} |" if c else " |" for c in cells))
    if tested:
        n = next(iter(sweep.values()))["bootstrap_samples"]
        lines += ["", f"\\* significant at p < 0.05 (sacreBLEU's paired bootstrap, {n} resamples, "
                      "against the baseline)."]
    return lines


def render_report(metrics: dict, examples: list[dict], figures: list[tuple[str, str]], *,
                  title: str = "lmlab report", config: dict | None = None,
                  notes: list[str] | None = None, sweep: dict[str, dict] | None = None,
                  task: str = "translation") -> str:
    """The report as markdown.

    ``figures`` are ``(caption, path)`` with paths relative to where the markdown will live;
    ``notes`` are lines shown under the figures (e.g. which curve files were missing); ``sweep``
    maps sweep strategy names to their metrics (with significance against ``metrics``).
    """
    flat = flatten(metrics)
    signatures = {k: v for k, v in flat.items() if k.endswith("_signature")}
    lines = [f"# {title}", "", "## Metrics", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {markdown_cell(k)} | {markdown_cell(_format_value(v))} |" for k, v in flat.items() if k not in signatures]
    if signatures:
        lines += ["", "### Metric signatures", ""]
        lines += [f"- {k.removesuffix('_signature')}: `{v}`" for k, v in signatures.items()]
    if sweep:
        lines += ["", "## Decoding strategies (same model)", ""] + strategy_table(metrics, sweep, task=task)

    lines += ["", "## Figures", ""]
    for caption, path in figures:
        lines += [f"![{caption}]({_link(path)})", ""]
    if not figures and not notes:
        lines += ["*(no figures)*", ""]
    for note in notes or []:
        lines += [f"*{note}*", ""]

    lines += ["## Example generations", ""]
    if examples:
        lines += ["| id | source | reference | hypothesis |", "|---:|---|---|---|"]
        lines += [f"| {markdown_cell(r['id'])} | {markdown_cell(r['source'])} | {markdown_cell(r['reference'])} | "
                  f"{markdown_cell(r['hypothesis'])} |" for r in examples]
    else:
        lines += ["*(no examples)*"]

    if config:
        import yaml

        # Folded: the resolved config is long, and the metrics are what a reader comes for.
        lines += ["", "## Config", "", "<details><summary>resolved config</summary>", "", "```yaml",
                  yaml.safe_dump(config, sort_keys=False, default_flow_style=False).rstrip(), "```",
                  "", "</details>"]
    return "\n".join(lines) + "\n"


def pick_examples(records: list[dict], n: int) -> list[dict]:
    """``n`` records spread evenly over the file (indices ``i * len // n``), all of them if fewer."""
    if n < 0:
        raise ValueError(f"evaluate.report_examples={n} must be >= 0")
    if n >= len(records):
        return list(records)
    return [records[i * len(records) // n] for i in range(n)]


def write_report(metrics_path: str | Path, generations_path: str | Path, curves_dir: str | Path,
                 out_md: str | Path, figures_dir: str | Path, *, n_examples: int = 8,
                 config: dict | None = None, sweep_dir: str | Path = "reports/sweep",
                 sweep_names: tuple[str, ...] = (), task: str = "translation") -> None:
    """Write ``out_md`` and its figures (``loss.png``, ``lr.png`` in ``figures_dir``).

    A missing or empty curve file drops its line (or its whole figure) with a note in the report.
    The figures are drawn into a temporary folder that replaces ``figures_dir`` whole, so no stale
    figure of an earlier run stays beside the new report; it is published just before the report
    (``lmlab.files.atomic_outputs``), and nothing is published if anything fails.
    """
    metrics_path, out_md, figures_dir = Path(metrics_path), Path(out_md), Path(figures_dir)
    curves_dir = Path(curves_dir)
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_path}: expected a JSON object of metrics")
    examples = pick_examples(read_generations(generations_path), n_examples)

    sweep = {}  # the configured strategies only: a removed entry's old files may still be there
    for name in sweep_names:
        path = Path(sweep_dir) / name / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the sweep-evaluate@{name} stage")
        sweep[name] = json.loads(path.read_text(encoding="utf-8"))
    # every input is read before anything is drawn or staged
    with atomic_outputs() as staged:
        figures_tmp, md_tmp = staged.dir(figures_dir), staged.file(out_md)
        figures, notes = _draw_figures(curves_dir, figures_tmp, figures_dir, out_md)
        md_tmp.write_text(render_report(metrics, examples, figures, config=config, notes=notes, sweep=sweep,
                                        task=task), encoding="utf-8")


def _draw_figures(curves_dir: Path, into: Path, figures_dir: Path, out_md: Path) -> tuple[list, list[str]]:
    """Draw each figure of ``FIGURES`` that has points into the folder ``into``, which becomes
    ``figures_dir``; returns the (caption, link relative to ``out_md``) of each and the notes."""
    figures, notes = [], []
    for fname, (caption, ylabel, sources) in FIGURES.items():
        curves = {}
        for tsv, label in sources:
            path = curves_dir / tsv
            if not path.is_file():
                notes.append(f"{caption}: {tsv} not found in {curves_dir}, so {label} is not plotted.")
                continue
            points = read_curve(path)
            if not points:
                notes.append(f"{caption}: {tsv} has no points, so {label} is not plotted.")
                continue
            curves[label] = points
        if not curves:
            continue
        plot_curves(curves, into / fname, title=caption, ylabel=ylabel)
        rel = os.path.relpath((figures_dir / fname).resolve(), out_md.resolve().parent)
        figures.append((caption, Path(rel).as_posix()))
    return figures, notes
