"""The shared command line of the stage scripts in ``src/``.

Every stage takes its file paths as ``--options`` (``dvc.yaml`` is where they are wired) and its
configuration from one of the two doors:

    python src/train.py --params params.yaml        # DVC: the config DVC composed
    python src/train.py model=small trainer.lr=3e-4  # Hydra: conf/ plus overrides

A stage that is a Hydra application (``hydra_app``: train) hands everything but its path options to
Hydra, so ``-m`` sweeps, ``hydra/launcher=...`` and ``--cfg job`` work there; the other stages
compose conf/ with the overrides themselves.

Bad input ends with one line on stderr naming the key or file, and exit status 2 (``LMLAB_DEBUG=1``
shows the traceback instead).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable

from lmlab.config import CONF_DIR, Config, ConfigError, build_config, compose, load_params, override_error


def run_stamp(environ) -> str:
    """``<date>/<time>``, the folder of a new run under ``outputs/``; the same on every rank of one
    SLURM job step (``slurm-<job>.<step>``), where srun starts each rank as its own process."""
    if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return f"slurm-{environ['SLURM_JOB_ID']}.{environ.get('SLURM_STEP_ID', '0')}"
    return time.strftime("%Y-%m-%d/%H-%M-%S")


def stage_main(description: str, paths: dict[str, str], run: Callable[..., object],
               argv: list[str] | None = None, strategy: bool = False, hydra_app: bool = False,
               check: Callable[[Config], None] | None = None) -> int:
    """Parse ``argv``, build the validated config and call ``run(cfg, **paths)``. With
    ``strategy``, ``--strategy NAME`` makes ``sweep.NAME`` the config's ``decoding``, and ``run``
    also gets ``strategy=NAME`` (None without the option). With ``hydra_app``, the Hydra door runs
    ``run`` as a Hydra application, once per job of a run or sweep, and ``run`` also gets ``job``:
    Hydra's config of the job (``job.runtime.output_dir``, ``job.mode``), or None when the config
    came from ``--params``. ``check(cfg)`` runs before Hydra makes a run's output directory (a
    stage's own checks, such as the trainer's against the hardware)."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Other arguments are Hydra overrides of conf/, e.g. model=small decoding=beam"
               + (", and Hydra's own flags: -m (a sweep), --cfg job, --hydra-help." if hydra_app else "."))
    parser.add_argument("--params", metavar="FILE",
                        help="read the config from a composed params file (the DVC stages use params.yaml)")
    for name, default in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default, metavar="PATH",
                            help=f"(default: {default})")
    if strategy:
        parser.add_argument("--strategy", metavar="NAME",
                            help="decode with sweep.NAME instead of decoding (the sweep-* stages)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args, overrides = parser.parse_known_args(argv)
    path_args = {name: getattr(args, name) for name in paths}
    try:
        if hydra_app and not args.params:
            @functools.wraps(run)  # Hydra names the job, and its log file, after the stage script
            def task(job_cfg) -> None:
                from hydra.core.hydra_config import HydraConfig
                from omegaconf import OmegaConf

                # Lightning's DDP launcher starts the other ranks by rerunning sys.argv: give it
                # the whole command line again, path options included.
                sys.argv = [sys.argv[0], *argv]
                cfg = build_config(OmegaConf.to_container(job_cfg, resolve=True))  # no `hydra` node
                run(cfg, **path_args, job=HydraConfig.get())

            _run_hydra_app(overrides, task, check)
            return 0
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
        run(cfg, **path_args, **({"job": None} if hydra_app else {}),
            **({"strategy": args.strategy} if strategy else {}))
    except (ConfigError, OSError, ValueError) as err:  # OSError: FileNotFoundError, permissions, ...
        return report_error(err)
    return 0


def report_error(err: BaseException) -> int:
    """Print ``err`` as one ``error: ...`` line on stderr and return the exit status 2; with
    ``LMLAB_DEBUG=1`` in the environment, raise it instead (the full traceback)."""
    if os.environ.get("LMLAB_DEBUG"):
        raise err
    lines = str(err).strip().splitlines() or [type(err).__name__]
    rank = global_rank()  # under DDP each rank prints its own error, named, after rank 0's
    print(f"{f'rank {rank}: ' if rank else ''}error: {' '.join(line.strip() for line in lines)}", file=sys.stderr)
    return 2


def _run_hydra_app(hydra_args: list[str], task: Callable, check: Callable[[Config], None] | None = None) -> None:
    """Run ``task`` as the Hydra application on conf/config.yaml, with ``hydra_args`` as its command
    line. A single run of overrides only is validated before Hydra makes its output directory, so
    a bad config writes nothing; with Hydra's own flags (``-m``, ``--cfg``, ...) each job is
    validated in its own directory. Errors, Hydra's included, come out as exceptions
    (``ConfigError`` for a bad override)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in hydra_args if not a.startswith("-")]
    if len(overrides) == len(hydra_args):  # no flag: one run of these overrides
        cfg = build_config(compose(overrides))
        if check is not None:
            check(cfg)
    failed = []

    @functools.wraps(task)
    def job(job_cfg) -> None:
        try:
            task(job_cfg)
        except Exception as err:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # Hydra names the job that failed, runs the others, then raises it
            failed.append(err)  # one run: raised below, without Hydra's line about the job

    # hydra.main takes its command line from sys.argv (its public API has no other way in), and
    # leaves its job config in the HydraConfig singleton: both are put back afterwards.
    saved = sys.argv, os.environ.get("HYDRA_FULL_ERROR"), HydraConfig.instance().cfg
    sys.argv = [sys.argv[0], *hydra_args]
    # Without HYDRA_FULL_ERROR, Hydra prints an error itself and exits with status 1; with it,
    # the error is raised, and stage_main prints it as one line with status 2.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(job)()
    except (HydraException, OmegaConfBaseException) as err:
        raise override_error(err, overrides) from None
    finally:
        sys.argv = saved[0]
        if saved[1] is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved[1]
        HydraConfig.instance().cfg = saved[2]  # a later run in this process is no Hydra job
    if failed:
        raise failed[0]


def global_rank(environ=os.environ) -> int:
    """This process's rank in a distributed run, from the variables its launcher sets (torchrun,
    Lightning, SLURM, LSF), as Lightning's ``rank_zero_only`` reads them; 0 when alone."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if environ.get(key) is not None:
            return int(environ[key])
    return 0


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    # conf/config.yaml's hydra.run.dir; cached, so every look-up in one run gives the same folder
    if not OmegaConf.has_resolver("lmlab.run_stamp"):
        OmegaConf.register_new_resolver("lmlab.run_stamp", lambda: run_stamp(os.environ), use_cache=True)


_register_resolvers()  # at import: a sweep's job, in a process of its own, resolves it as well
