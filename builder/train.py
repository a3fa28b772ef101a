"""train(cfg): one training run from a composed config; returns the task's monitored metric (for sweeps).

The config is checked before torch or Lightning is imported, so a typo fails in well under a second.
A run directory holds config.yaml (resolved), overrides.yaml, metrics.csv and checkpoints/{best,last}.ckpt.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from builder.errors import ConfigError

SECTIONS = ("data", "model", "task", "optim", "trainer")


def check(cfg: DictConfig) -> None:
    """Every problem in the config we can find without torch, raised together as one ConfigError."""
    from builder.data import check_data
    from builder.graph import check_structure
    from builder.prepare import prepare_model_config
    from builder.tasks import check_task
    problems = [f"{s}: missing (the defaults list in conf/train.yaml selects it)" for s in SECTIONS if s not in cfg]
    if "model" in cfg:
        try:
            check_structure(prepare_model_config(cfg))  # `auto` sizes get placeholders until the data is known
        except ConfigError as e:
            problems += e.problems
    if "task" in cfg:
        problems += check_task(cfg.task)
    if "data" in cfg:
        problems += check_data(cfg.data)
    if "trainer" in cfg and not OmegaConf.select(cfg, "trainer._target_"):
        problems.append("trainer._target_: missing; the trainer config holds lightning.Trainer arguments")
    if "optim" in cfg and not OmegaConf.select(cfg, "optim.optimizer._target_"):
        problems.append("optim.optimizer._target_: missing (e.g. torch.optim.AdamW with _partial_: true)")
    if problems:
        raise ConfigError(problems)


def run_dir_and_overrides(cfg: DictConfig) -> tuple[Path, list[str]]:
    """`run_dir` from the config, else Hydra's run directory, else outputs/<date>/<time> (plain Python calls)."""
    from hydra.core.hydra_config import HydraConfig
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    overrides = list(hydra.overrides.task) if hydra is not None else []
    if cfg.get("run_dir"):
        return Path(cfg.run_dir), overrides
    if hydra is not None and OmegaConf.select(hydra, "runtime.output_dir"):
        return Path(hydra.runtime.output_dir), overrides
    return Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S"), overrides


def make_loggers(cfg: DictConfig, run_dir: Path, columns: list[str]) -> list[Any]:
    """metrics.csv always, plus the dashboard the `logger` config names, if any."""
    from hydra.utils import instantiate

    from builder.metrics_csv import MetricsCSV
    loggers: list[Any] = []
    logger_cfg = cfg.get("logger")
    if logger_cfg is not None and logger_cfg.get("_target_"):
        extra = {"columns": columns} if logger_cfg._target_.endswith("MetricsCSV") else {}
        loggers.append(instantiate(logger_cfg, save_dir=str(run_dir), **extra))
    if not any(isinstance(lg, MetricsCSV) for lg in loggers):
        loggers.insert(0, MetricsCSV(run_dir, columns=columns))
    return loggers


def train(cfg: DictConfig, overrides: list[str] | None = None) -> float:
    check(cfg)
    import logging
    import warnings

    import lightning as L
    import torch
    from hydra.utils import get_class
    from lightning.pytorch.callbacks import ModelCheckpoint

    from builder.data import datamodule
    from builder.graph import build_model
    from builder.prepare import prepare_model_config
    from builder.progress import LastCheckpoint, ProgressBar, ValidateAtEnd
    from builder.tasks import task_class

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs newer torch
    if logging.getLogger().handlers:
        # Hydra configured the root logger; Lightning has its own console handler too: print each message once
        logging.getLogger("lightning").propagate = False
    run_dir, hydra_overrides = run_dir_and_overrides(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides or hydra_overrides))))
    plain = OmegaConf.to_container(cfg, resolve=True)

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))  # more threads than free cores make tiny ops wait on each other
    data = datamodule(plain["data"], seed=int(cfg.seed))
    # `auto` model sizes (e.g. vocab_size) come from the data; the checkpoint keeps the filled-in model config
    plain["model"] = prepare_model_config(cfg, sizes=data.model_sizes() if hasattr(data, "model_sizes") else None)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))  # resolved, sizes filled in
    model = build_model(plain["model"])
    task = task_class(cfg.task.name)(model, plain)

    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=task.monitor, mode=task.mode, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    last = LastCheckpoint(ckpt_dir / "last.ckpt", cfg.get("ckpt_every_n_steps"))
    callbacks: list[Any] = [ValidateAtEnd(), best, last]
    trainer_kwargs = {k: v for k, v in plain["trainer"].items() if k not in ("_target_", "callbacks", "logger")}
    if trainer_kwargs.get("enable_progress_bar", True):
        callbacks.append(ProgressBar())
    trainer = get_class(plain["trainer"]["_target_"])(
        **trainer_kwargs, callbacks=callbacks, logger=make_loggers(cfg, run_dir, task.columns()),
        default_root_dir=str(run_dir))

    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    seconds = time.perf_counter() - start
    score = best.best_model_score
    value = float(score) if score is not None else float(trainer.callback_metrics.get(task.monitor, float("nan")))
    print(f"{task.monitor} = {value:.4f} (best; mode {task.mode}) after {trainer.global_step} steps, "
          f"{seconds:.1f} s; run directory: {run_dir}")
    return value
