"""Stage `report`: reports/report.md with the metrics table, loss plots and example generations."""

from lmlab.cli import stage_main
from lmlab.report.report import write_report


def upstream(cfg) -> dict:
    """The settings shown in the report: those whose change reruns this stage through its deps."""
    full = cfg.to_dict()
    return {k: full[k] for k in ("data", "tokenizer", "model", "trainer", "decoding", "sweep")}


def run(cfg, metrics, generations, curves_dir, out, figures_dir, sweep_dir):
    write_report(metrics, generations, curves_dir, out, figures_dir,
                 n_examples=cfg.evaluate.report_examples, config=upstream(cfg), sweep_dir=sweep_dir,
                 sweep_names=tuple(cfg.sweep), task=cfg.data.task)
    print(f"wrote {out}")


def main(argv=None) -> int:
    paths = {"metrics": "reports/metrics.json", "generations": "reports/generations.jsonl",
             "curves_dir": "reports/train", "out": "reports/report.md", "figures_dir": "reports/figures",
             "sweep_dir": "reports/sweep"}
    return stage_main(__doc__, paths, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
