"""The shared command line of the stage scripts in ``src/``.

Every stage takes its file paths as ``--options`` (``dvc.yaml`` is where they are wired) and its
configuration from one of the two doors:

    python src/train.py --params params.yaml        # DVC: the config DVC composed
    python src/train.py model=small trainer.lr=3e-4  # Hydra: conf/ plus overrides

Bad input ends with one line on stderr naming the key or file, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .config import Config, ConfigError, build_config, compose, load_params


def stage_main(description: str, paths: dict[str, str], run: Callable[..., object],
               argv: list[str] | None = None, strategy: bool = False) -> int:
    """Parse ``argv``, build the validated config and call ``run(cfg, **paths)``. With
    ``strategy``, ``--strategy NAME`` makes ``sweep.NAME`` the config's ``decoding``, and ``run``
    also gets ``strategy=NAME`` (None without the option)."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Other arguments are Hydra overrides of conf/, e.g. model=small decoding=beam.")
    parser.add_argument("--params", metavar="FILE",
                        help="read the config from a composed params file (the DVC stages use params.yaml)")
    for name, default in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default, metavar="PATH",
                            help=f"(default: {default})")
    if strategy:
        parser.add_argument("--strategy", metavar="NAME",
                            help="decode with sweep.NAME instead of decoding (the sweep-* stages)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        unknown = [o for o in overrides if o.startswith("-") or "=" not in o]
        if unknown:
            raise ConfigError(f"unrecognised argument {unknown[0]!r}: overrides look like key=value")
        if args.params and overrides:
            raise ConfigError("give either --params or overrides, not both "
                              "(with DVC, use `dvc exp run -S key=value`)")
        raw = load_params(args.params) if args.params else compose(overrides)
        cfg: Config = build_config(raw)
        if strategy and args.strategy:
            cfg = cfg.with_strategy(args.strategy)
        kwargs = {name: getattr(args, name) for name in paths}
        if strategy:
            kwargs["strategy"] = args.strategy
        run(cfg, **kwargs)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        if os.environ.get("LMLAB_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
