"""One training run end to end: data, model, resume plan, Lightning ``Trainer``, and the exported
model file with the run summary."""

from __future__ import annotations

import os
import secrets
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from lmlab.config import Config, ConfigError
from lmlab.data.tokenizer import PAD, load_tokenizer, tokenizer_hash
from lmlab.files import atomic_outputs, check_output_dir, write_json
from lmlab.model.checkpoint import average_state_dicts, checkpoint_weights, save_model, stable_summary
from lmlab.model.loss import MaskRule, eval_generator, loss_sums, masked_batch
from lmlab.model.transformer import ModelConfig, Transformer
from lmlab.model.warmstart import InitError, check_architecture, freeze, read_init, warm_start
from lmlab.tracking import define_step_axis, display_name
from lmlab.train.callbacks import AtomicCheckpointIO, CurveWriter, FinalValidation, Snapshots, snapshot_files
from lmlab.train.data import TokenDataModule
from lmlab.train.hardware import Plan, check_machine, gpu_name
from lmlab.train.loggers import make_logger
from lmlab.train.module import TrainingDiverged, TransformerLitModule
from lmlab.train.resume import (
    RESUME_ENV,
    WANDB_ID_ENV,
    check_resume_file,
    fingerprint,
    last_good_checkpoint,
    resume_plan,
    supersede,
    write_state,
)


@dataclass(frozen=True)
class RunDirs:
    """Where a run writes: ``model.pt`` and ``run.json`` in ``out``, checkpoints in ``ckpt``,
    the curves for DVC plots in ``curves``."""

    out: Path
    ckpt: Path
    curves: Path


def train(cfg: Config, prepared_dir: str | Path, out_dir: str | Path, curves_dir: str | Path,
          ckpt_dir: str | Path | None = None, run_name: str | None = None,
          callbacks: Sequence[pl.Callback] = ()) -> dict:
    """Train on ``prepared_dir``; write ``model.pt`` and ``run.json`` to ``out_dir``, checkpoints to
    ``ckpt_dir`` (default ``out_dir/checkpoints``) and the curves to ``curves_dir``. ``callbacks``
    join lmlab's own (the throughput bench times the steps with one). Returns the run summary
    (empty on ranks other than 0)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    dirs = RunDirs(out_dir, Path(ckpt_dir) if ckpt_dir is not None else out_dir / "checkpoints",
                   Path(curves_dir))
    tc = cfg.trainer
    plan = check_machine(tc)  # before anything is read, moved or written
    export_layout(dirs)  # and the places the export will publish to
    tok_path = prepared_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(f"{tok_path} not found: run the prepare stage (`dvc repro prepare`)")
    tokenizer_json = tok_path.read_text()
    vocab_size = load_tokenizer(tokenizer_json).get_vocab_size()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    mcfg = ModelConfig.of(cfg, vocab_size, PAD)
    module = TransformerLitModule(mcfg.to_dict(), tc.__dict__ | {"betas": list(tc.betas), "seed": cfg.seed})
    module.tokenizer_json, module.task = tokenizer_json, cfg.data.task
    init_report = start_from(cfg, module, tokenizer_json, tok_path)  # before anything is moved or written
    block = tc.block_size if cfg.data.task == "language_modeling" else None
    data = TokenDataModule(prepared_dir, tc.batch_size, cfg.seed, mcfg.max_len,
                           mcfg.arch == "decoder-only", tc.max_tokens, tc.num_workers,
                           tc.accumulate_grad_batches, block, tc.block_stride)

    data.setup()
    fp = fingerprint(cfg, tokenizer_json, len(data.train_set))
    is_rank_zero = rank_zero_only.rank == 0
    handed = os.environ.get(RESUME_ENV)
    if is_rank_zero or handed is None:
        resume_from, run_id, why = resume_plan(cfg.ckpt_path, dirs.ckpt, fp)
    else:  # a DDP rank Lightning started: rank 0's plan (rank 0 may have moved the file)
        resume_from, run_id, why = handed or None, None, ""
    if resume_from is not None:  # checked before anything is moved or written
        check_resume_file(resume_from, mcfg.to_dict(), tokenizer_json, tok_path)
    if is_rank_zero:
        print(f"train: {why}", flush=True)
        resume_from = supersede(dirs.ckpt, resume_from)
    inherited_id = os.environ.get(WANDB_ID_ENV)
    if run_id is None and cfg.logger.kind == "wandb":
        run_id = inherited_id or secrets.token_hex(4)  # W&B's own ids are 8 characters too
    if run_id is not None:
        os.environ[WANDB_ID_ENV] = run_id  # DDP ranks that Lightning starts later agree on it
    hardware = plan.describe(gpu_name())
    if is_rank_zero:
        print(f"train: {hardware}", flush=True)
    if is_rank_zero and init_report is not None:
        print("\n".join(init_report.lines()), flush=True)
    try:
        os.environ[RESUME_ENV] = resume_from or ""  # DDP ranks that Lightning starts later follow it
        if is_rank_zero:
            dirs.ckpt.mkdir(parents=True, exist_ok=True)
            write_state(dirs.ckpt, fp, run_id, finished=False)
        try:
            trainer, summary = _fit(cfg, module, data, dirs, resume_from, run_id, run_name, callbacks,
                                    init_report.to_dict() if init_report else None, plan, hardware)
        except TrainingDiverged as err:
            raise TrainingDiverged(f"{err}{last_good_checkpoint(dirs.ckpt, resume_from)}") from None
        if trainer.is_global_zero:
            write_state(dirs.ckpt, fp, run_id, finished=True)
        return summary
    finally:
        if inherited_id is None:
            os.environ.pop(WANDB_ID_ENV, None)
        if handed is None:
            os.environ.pop(RESUME_ENV, None)


def start_from(cfg: Config, module: TransformerLitModule, tokenizer_json: str, tok_path: Path):
    """Fine-tuning: load ``cfg.init_from``'s matching tensors into the module's model (their
    names then train at ``trainer.init_lr_scale`` × lr) and freeze ``trainer.freeze``. The data
    must have been encoded with the pre-trained model's tokenizer. Returns the ``InitReport``,
    or None without ``init_from``; every check runs before anything is written."""
    report = None
    if cfg.init_from:
        weights, init_model, init_tokenizer, _ = read_init(cfg.init_from)
        if cfg.init_weights:
            check_architecture(vars(cfg.model), init_model, cfg.init_from)
        if tokenizer_hash(init_tokenizer) != tokenizer_hash(tokenizer_json):
            raise InitError(f"init_from={cfg.init_from!r} was trained with another tokenizer than {tok_path}: "
                            "rerun the prepare stage with the same init_from (it encodes with that model's tokenizer)")
        # init_weights=false: the tokenizer only, every tensor new
        report = warm_start(module.model, weights if cfg.init_weights else {}, cfg.init_from)
        module.init_loaded = set(report.loaded)
    if cfg.trainer.freeze:
        frozen = freeze(module.model, cfg.trainer.freeze)
        if report is not None:
            report.frozen = frozen
    if cfg.trainer.lora_rank:  # the config makes sure init_from is set
        from lmlab.model.lora import add_lora

        report.lora = add_lora(module.model, vars(cfg.trainer))
    return report


def plain_weights(mcfg: ModelConfig, weights: dict, tc) -> dict:
    """The weights the model file holds: a LoRA run's adapters merged into the layers they adapt."""
    if not tc.lora_rank:
        return weights
    from lmlab.model.lora import merged_weights

    return merged_weights(mcfg.to_dict(), weights, vars(tc))


def _fit(cfg: Config, module: TransformerLitModule, data: TokenDataModule, dirs: RunDirs,
         resume_from: str | None, run_id: str | None, run_name: str | None,
         extra_callbacks: Sequence[pl.Callback], init: dict | None, plan: Plan, hardware: str):
    """Run the Lightning ``Trainer`` on ``plan`` (``hardware`` says it in words), then export the
    model (rank 0). Returns (trainer, summary)."""
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    tc = cfg.trainer
    logger = make_logger(cfg, run_name or display_name(dirs.out), run_id)
    best = ModelCheckpoint(dirpath=dirs.ckpt, filename="best", monitor="val/loss",
                           mode="min", save_top_k=1, auto_insert_metric_name=False)
    # last.ckpt every N steps, what `ckpt_path=last` resumes from after a crash
    last = ModelCheckpoint(dirpath=dirs.ckpt, save_top_k=0, save_last=True,
                           every_n_train_steps=tc.checkpoint_every_n_steps)
    curves = CurveWriter(tc.log_every_n_steps)
    # Validation every N steps whatever the epoch length, and once more at the very end.
    val_every = min(tc.val_check_interval, tc.max_steps)
    callbacks = [best, last, curves, TQDMProgressBar(refresh_rate=tc.log_every_n_steps),
                 FinalValidation(val_every)]
    if tc.average_last > 1:
        callbacks.append(Snapshots(dirs.ckpt / "snapshots", tc.checkpoint_every_n_steps, tc.average_last))
    callbacks += extra_callbacks
    trainer = pl.Trainer(
        accelerator=plan.accelerator, devices=plan.devices, strategy=make_strategy(tc.strategy),
        num_nodes=tc.num_nodes, precision=plan.precision, max_steps=tc.max_steps, max_epochs=-1,
        val_check_interval=val_every * tc.accumulate_grad_batches, check_val_every_n_epoch=None,
        accumulate_grad_batches=tc.accumulate_grad_batches,
        limit_val_batches=tc.limit_val_batches, gradient_clip_val=tc.gradient_clip_val or None,
        log_every_n_steps=tc.log_every_n_steps, logger=logger, callbacks=callbacks,
        default_root_dir=str(dirs.out), deterministic=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, enable_model_summary=True, plugins=[AtomicCheckpointIO()],
    )
    if logger:
        logger.log_hyperparams({"n_parameters": module.model.num_parameters(), "hardware": hardware})
        if cfg.logger.kind == "wandb":
            define_step_axis(logger.experiment)  # a no-op stand-in on ranks other than 0
    with warnings.catch_warnings():
        # our batch sampler is deliberate; the data loader needs no worker processes on CPU
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*batch_size.*could not be inferred.*")
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")  # it holds our state.json
        start = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
        train_seconds = time.perf_counter() - start
    if trainer.global_step < tc.max_steps and trainer.interrupted:
        raise RuntimeError("training was interrupted")
    if not trainer.is_global_zero:
        return trainer, {}

    best_score = best.best_model_score
    mcfg = module.model.cfg
    summary = {
        "arch": mcfg.arch,
        "global_step": trainer.global_step,
        "best_val_loss": float(best_score) if best_score is not None else None,
        "n_parameters": module.model.num_parameters(),
        "world_size": trainer.world_size,
        "train_seconds": round(train_seconds, 2),
        # every rank reads batches of the same size on average
        "train_tokens_per_second": round(curves.tokens * trainer.world_size / max(train_seconds, 1e-9), 1),
    }
    if init is not None:  # which tensors came from the pre-trained model, which are new, which were left out
        summary["init"] = init
    if tc.average_last > 1:
        paths = snapshot_files(dirs.ckpt / "snapshots")
        weights = plain_weights(mcfg, average_state_dicts(paths), tc)
        summary["averaged_checkpoints"] = [p.name for p in paths]
        summary["averaged_val_loss"] = _val_loss(mcfg, weights, data, MaskRule.of(tc))
    else:
        weights = plain_weights(mcfg, checkpoint_weights(best.best_model_path) if best.best_model_path else
                                module.model.state_dict(), tc)
    if logger and cfg.logger.kind == "wandb":
        exp = logger.experiment
        summary["wandb"] = {"id": exp.id, "project": cfg.logger.project, "entity": cfg.logger.entity,
                            "dir": str(exp.dir), "mode": cfg.logger.mode}
        exp.summary.update({k: v for k, v in summary.items() if k != "wandb"})
    # The run's outputs are published together (lmlab.files.atomic_outputs): the curves folder
    # with its summary.json first, model.pt last.
    with atomic_outputs() as staged:
        curves_tmp = staged.dir(dirs.curves)
        curves.write(curves_tmp)
        # parameters, training time and throughput per experiment, a DVC metric for `dvc exp show`
        write_json(curves_tmp / "summary.json", {k: v for k, v in summary.items() if k != "wandb"})
        layout = export_layout(dirs)
        if layout != "files":  # the model's own folder, or the curves' when they share one
            model_dir = curves_tmp if layout == "curves" else staged.dir(dirs.out)
            run_json, model_pt = model_dir / "run.json", model_dir / "model.pt"
        else:
            run_json, model_pt = staged.file(dirs.out / "run.json"), staged.file(dirs.out / "model.pt")
        write_json(run_json, summary)
        save_model(mcfg.to_dict(), weights, module.tokenizer_json, cfg.to_dict(), model_pt,
                   {"summary": stable_summary(summary)})
    if logger and cfg.logger.kind == "wandb":
        import wandb

        wandb.finish()
    return trainer, summary


def export_layout(dirs: RunDirs) -> str:
    """How the export publishes model.pt and run.json beside the curves folder (which is replaced
    whole): ``own``, their own folder replaced whole (``dirs.out`` is missing or holds nothing else:
    the DVC stage's data/model); ``curves``, inside the curves folder (the two are one folder);
    ``files``, two files renamed into a folder that holds more (a Hydra run's, with its checkpoints
    and logs). Refuses, before training (``train`` calls it first), what it could not publish."""
    out, curves = dirs.out.resolve(), dirs.curves.resolve()
    for option, path in (("--out-dir", dirs.out), ("--ckpt-dir", dirs.ckpt)):
        if curves in path.resolve().parents or (option == "--ckpt-dir" and curves == path.resolve()):
            raise ConfigError(f"{option} {path} lies inside --curves-dir {dirs.curves}, which is replaced whole "
                              "at the end: give them separate folders")
    check_output_dir(dirs.curves)
    if out == curves:
        return "curves"
    if any(out == d or out in d.parents for d in (dirs.ckpt.resolve(), curves)):
        return "files"
    own = not out.exists() or all(p.name in ("model.pt", "run.json") or p.name.endswith(".tmp")
                                  for p in out.iterdir())
    return "own" if own else "files"


def _val_loss(mcfg: ModelConfig, weights: dict, data: TokenDataModule, rule: MaskRule) -> float:
    """Validation loss of ``weights`` on this process (the averaged model is not in the trainer),
    on the batches and masks validation uses."""
    model = Transformer(mcfg)
    model.load_state_dict(weights)
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for i, batch in enumerate(data.loader(data.val_set, shuffle=False)):
            loss, count = loss_sums(model, masked_batch(model, batch, rule, eval_generator(i)))
            total, n = total + float(loss), n + int(count)
    return round(total / max(n, 1), 6)


def make_strategy(name: str):
    """Lightning strategy for ``trainer.strategy``. ``fsdp`` shards every Transformer block (and
    saves full, unsharded checkpoints, which export and averaging read)."""
    if name != "fsdp":
        return name
    from pytorch_lightning.strategies import FSDPStrategy

    from lmlab.model.transformer import Block

    return FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full")
