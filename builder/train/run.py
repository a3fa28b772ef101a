"""train(cfg): one training run from a composed config; returns the task's monitored metric (for sweeps).

This module imports torch and Lightning: builder-train checks the config first (builder/train/check.py) and
imports it after, so a typo fails in about a second.
A run directory (builder/train/rundir.py) holds config.yaml (resolved), overrides.yaml, train.log, metrics.csv,
checkpoints/{best,last}.ckpt, result.yaml and the dashboards' files. `resume=` continues a run in place
(builder/train/resume.py); several processes (trainer=ddp|fsdp; builder/train/distributed.py and launch.py)
write from rank 0 only.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy
from omegaconf import DictConfig, OmegaConf

from builder.contract import binding
from builder.errors import ConfigError, RunStopped
from builder.graph.build import build_model
from builder.graph.prepare import prepare_model_config
from builder.train.adapters import starting_weights
from builder.train.attention_callback import AttentionMaps
from builder.train.check import check_adapter_targets, checked_config
from builder.train.data import datamodule
from builder.train.data.order import make_resumable
from builder.train.distributed import collective_failure, fsdp_task, make_strategy
from builder.train.internals import ProgressBar
from builder.train.launch import finish_launch, is_rank_zero, launch_env, use_config_launcher
from builder.train.loggers import finish, log_run_info, make_loggers, record_status
from builder.train.progress import LastCheckpoint, ValidateAtEnd
from builder.train.resume import check_changes, first_difference, model_changed, open_resume
from builder.train.resume_state import rng_callback
from builder.train.rundir import (check_own, choose_run_dir, effective_resume, hydra_job, point_latest, write_overrides,
                                  write_result)
from builder.train.safety import AtomicCheckpointIO, Interrupted, StopOnNonFinite, StopOnSignal
from builder.train.tasks import task_class


def train(cfg: DictConfig, overrides: list[str] | None = None, callbacks: tuple[Any, ...] = (),
          checked: bool = False) -> float:
    """Train; `overrides` is what overrides.yaml records (default: Hydra's), `callbacks` are added to Lightning's;
    `checked`: cfg is already checked_config's result (builder-train checks it before importing this module)."""
    overrides = list(overrides if overrides is not None else hydra_job()[1])
    if not checked:
        cfg = checked_config(cfg, overrides)
    check_adapter_targets(cfg)
    rank0 = is_rank_zero()
    run_dir = choose_run_dir(cfg)
    resume = effective_resume(cfg, run_dir)
    if rank0:
        check_own(run_dir, resume)
    resumed = None
    if resume:  # refused here, before a file of the run is touched
        resumed = open_resume(run_dir, resume)
        cfg = check_changes(resumed, cfg)
    elif cfg.get("seed") is None:
        cfg.seed = random_seed()
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_overrides(run_dir, overrides, resumed=resume is not None)
    run = Run(cfg, run_dir, rank0, overrides, resumed)
    start = run.started
    try:
        value = run.fit(callbacks)
    except BaseException as e:
        stopped = collective_failure(e, run.trainer, OmegaConf.select(cfg, "trainer.process_group_timeout"))
        if rank0:
            interrupted = isinstance(e, Interrupted) or not isinstance(e, Exception)
            run.record("interrupted" if interrupted else "failed", time.perf_counter() - start, error=stopped or e)
            record_status(run_dir)
        if stopped is not None:
            raise stopped from e
        raise
    status = "interrupted" if run.trainer.interrupted else "completed"
    if rank0:
        run.record(status, time.perf_counter() - start, value=value)
        record_status(run_dir)
        print(f"{run.task.monitor} = {value:.4f} (best; mode {run.task.mode}) after {run.trainer.global_step} steps, "
              f"{time.perf_counter() - start:.1f} s; run directory: {run_dir}")
    return value


class Run:
    """The pieces of one run, built in order: data, model, task, loggers, trainer."""

    def __init__(self, cfg: DictConfig, run_dir: Path, rank0: bool, overrides: list[str], resumed: Any):
        self.cfg, self.run_dir, self.rank0, self.overrides, self.resumed = cfg, run_dir, rank0, overrides, resumed
        self.trainer: Any = None
        self.task: Any = None
        self.started = time.perf_counter()

    def fit(self, extra_callbacks: tuple[Any, ...]) -> float:
        cfg, run_dir, resumed = self.cfg, self.run_dir, self.resumed
        quiet_lightning_twins()
        if resumed:
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        plain = OmegaConf.to_container(cfg, resolve=True)
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))  # more threads than free cores make tiny ops wait on each other
        data = datamodule(plain["data"], seed=int(cfg.seed))
        make_resumable(data, int(cfg.seed))
        # `auto` model sizes (e.g. vocab_size) come from the data; the checkpoint keeps the filled-in model config
        sizes = data.model_sizes() if hasattr(data, "model_sizes") else {}  # by role: {"vocab": 65}
        bound = binding(plain["task"])["sizes"]  # role -> the model variable it fills
        plain["model"] = prepare_model_config(cfg, sizes={bound[r]: n for r, n in sizes.items() if bound.get(r)})
        ckpt_path, resume_step = (resumed.path, resumed.step) if resumed else (None, None)
        if resumed and (diff := first_difference(resumed.config["model"], plain["model"], "model")):
            raise model_changed(resumed.path, diff)  # the same settings, but the data gave other sizes
        if self.rank0:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
            point_latest(run_dir, cfg.get("outputs_dir") or "outputs")  # a run whose data and model are ready
        model = build_model(plain["model"])
        model, extra = starting_weights(model, plain, resumed is not None, self.rank0)  # init_from, adapters
        trainer_cfg = plain["trainer"]
        strategy, bound = make_strategy(trainer_cfg.get("strategy", "auto"), trainer_cfg.get("process_group_timeout"),
                                        trainer_cfg.get("startup_timeout"))
        self.task = task = task_for(cfg.task.name, strategy)(model, plain)
        task.strict_loading = not any(getattr(c, "partial", False) for c in extra)  # adapters-only checkpoints
        extra_callbacks = (*extra, *bound, *extra_callbacks)
        loggers = make_loggers(plain.get("logger"), run_dir, task.columns(), resume_step=resume_step,
                               rank=0 if self.rank0 else 1)
        with run_log(run_dir if self.rank0 else None):
            self.trainer = trainer = self.make_trainer(plain, strategy, loggers, extra_callbacks)
            child = dict(plain, run_dir=str(run_dir), resume=str(ckpt_path) if ckpt_path else None)
            saved_env = launch_env()
            abandon = (lambda why: self.record("failed", time.perf_counter() - self.started, error=RunStopped(why))
                       ) if self.rank0 else None  # a failed child left this process stuck: killed after this
            launcher = use_config_launcher(trainer, child, cfg.get("threads"), abandon)
            if self.rank0:
                log_run_info(loggers, plain)
            try:
                trainer.fit(task, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
            finally:
                finish_launch(launcher, saved_env, failed=trainer.state.status != "finished")
                finish(failed=trainer.state.status != "finished")
        score = self.best.best_model_score
        return float(score) if score is not None else float(trainer.callback_metrics.get(task.monitor, float("nan")))

    def make_trainer(self, plain: dict[str, Any], strategy: Any, loggers: list[Any], extra: tuple[Any, ...]) -> Any:
        ckpt_dir = self.run_dir / "checkpoints"
        self.best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=self.task.monitor, mode=self.task.mode,
                                    save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
        last = LastCheckpoint(ckpt_dir / "last.ckpt", self.cfg.get("ckpt_every_n_steps"))
        # the loss check runs first: a NaN step raises before any checkpoint could be written after it
        callbacks: list[Any] = [StopOnNonFinite(ckpt_dir / "last.ckpt"), ValidateAtEnd(), self.best, last,
                                rng_callback(), StopOnSignal(last.save, self.run_dir), *extra]
        skip = ("_target_", "callbacks", "logger", "strategy", "plugins", "use_distributed_sampler",
                "process_group_timeout", "startup_timeout", "peak_flops")
        kwargs = {k: v for k, v in plain["trainer"].items() if k not in skip}
        if kwargs.get("enable_progress_bar", True) and self.rank0:
            callbacks.append(ProgressBar())
        if self.cfg.get("attention_maps"):
            callbacks.append(AttentionMaps(self.run_dir))
        # every rank draws its own share of each global batch (builder/train/data/order.py), so no DistributedSampler
        return get_class(plain["trainer"]["_target_"])(
            **kwargs, strategy=strategy, plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
            callbacks=callbacks, logger=loggers, default_root_dir=str(self.run_dir))

    def record(self, status: str, seconds: float, value: float | None = None,
               error: BaseException | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "monitor": getattr(self.task, "monitor", None),
                                  "mode": getattr(self.task, "mode", None), "value": value, "seed": self.cfg.seed,
                                  "steps": int(self.trainer.global_step) if self.trainer is not None else 0,
                                  "seconds": round(seconds, 2), "overrides": self.overrides}
        if error is not None:
            fields["error"] = in_words(error)
        write_result(self.run_dir, **fields)


def in_words(error: BaseException) -> str:
    """What stopped a run, for result.yaml: our own one-line messages as they are, anything else with its kind."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted by Ctrl-C"
    if isinstance(error, SystemExit):
        return f"stopped with exit status {error.code}"
    lines = str(error).strip().splitlines() or [""]
    text = lines[0]
    if isinstance(error, (RunStopped, ConfigError)):
        return text
    if text.startswith("Caught ") and "DataLoader worker" in text:  # the worker's own error is its last line
        return f"{text.removeprefix('Caught ').split(' in ', 1)[-1].rstrip('.')}: {lines[-1].strip()}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def random_seed() -> int:
    """A seed for `seed=null`, recorded in config.yaml and result.yaml so the run can be repeated. Processes
    started by a cluster would each draw their own, so they need a seed given."""
    if any(os.environ.get(k) for k in ("NODE_RANK", "RANK", "LOCAL_RANK", "SLURM_PROCID")):
        raise ConfigError("seed: null draws a seed in each process, and these processes were started apart "
                          "(NODE_RANK, RANK, LOCAL_RANK or SLURM_PROCID is set); give seed=N")
    return secrets.randbelow(2**31)


def task_for(name: str, strategy: Any) -> type:
    cls = task_class(name)
    return fsdp_task(cls) if isinstance(strategy, ModelParallelStrategy) else cls


def quiet_lightning_twins() -> None:
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs newer torch
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")  # every rank validates the whole set
    # a sharded layer (a Graph) returns its table of node values, views among them; blocks never write into
    # a value in place, which is the case the warning is about
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    if logging.getLogger().handlers:
        # Hydra configured the root logger; Lightning has its own console handler too: print each message once
        logging.getLogger("lightning").propagate = False


class run_log:
    """Lightning's messages also go to the run directory's train.log (Hydra's own lines go there too)."""
    names = ("lightning.pytorch", "lightning.fabric")  # Lightning's loggers do not propagate to the root

    def __init__(self, run_dir: Path | None):
        self.handler = None
        if run_dir is not None:
            self.handler = logging.FileHandler(run_dir / "train.log")
            self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))

    def __enter__(self) -> None:
        if self.handler is not None:
            for name in self.names:
                logging.getLogger(name).addHandler(self.handler)

    def __exit__(self, *exc: Any) -> None:
        if self.handler is not None:
            for name in self.names:
                logging.getLogger(name).removeHandler(self.handler)
            self.handler.close()
