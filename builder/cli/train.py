"""builder-train: train a model from configuration (Hydra).

    builder-train                                   # experiment=gpt_char: a small GPT on built-in text
    builder-train experiment=toy_classifier trainer.max_steps=50 optim=sgd
    builder-train experiment=gpt_char 'logger=[tensorboard,wandb]'
    builder-train experiment=gpt_char trainer=ddp trainer.devices=2
    builder-train resume=latest                     # continue the newest run from its last.ckpt
    builder-train --check experiment=gpt2_small     # compose and check everything (shapes too), train nothing
    builder-train -m optim.lr=0.01,0.03             # a grid, under outputs/multirun/<date>/<time>/<trial>
    builder-train -m experiment=toy_classifier sweep=toy_optuna   # an Optuna search (conf/sweep)

The run directory (outputs/<date>/<time>, `outputs/latest` points at the newest) receives config.yaml,
overrides.yaml, train.log, metrics.csv, checkpoints/{best,last}.ckpt and result.yaml.
"""
from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from builder.config import CONF_DIR, compose, config_dirs, register_resolvers
from builder.errors import ConfigError, RunStopped, friendly_errors
from builder.train.check import check_shapes, checked_config
from builder.train.resume import with_original_overrides
from builder.train.rundir import hydra_job, register_run_dir_resolver, write_result


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _run(cfg: DictConfig) -> float:
    register_resolvers()  # also in a launcher's worker process (joblib, submitit), which never ran main()
    _, overrides, multirun = hydra_job()
    if multirun:
        return trial(cfg, overrides)
    with friendly_errors("builder-train"):
        cfg = checked_config(cfg, overrides)
        from builder.train.run import train  # deferred: config errors are reported before torch is imported
        return train(cfg, overrides, checked=True)


def trial(cfg: DictConfig, overrides: list[str]) -> float:
    """One trial of a sweep. A config problem or a diverging loss is recorded (result.yaml, summary) and the
    sweep goes on: Optuna marks an exception as a failed trial; a grid gets NaN (Hydra's grid stops on errors)."""
    from builder.train.run import train  # deferred: config errors are reported before torch is imported
    try:
        return train(cfg)
    except (ConfigError, RunStopped) as e:
        problem = "; ".join(getattr(e, "problems", None) or [str(e)])
        message = f"trial {' '.join(overrides)}: {problem}"
        print(f"builder-train: {message}", file=sys.stderr)
        job_dir = hydra_job()[0]
        if job_dir is not None and not (job_dir / "result.yaml").is_file():  # failed before training started
            job_dir.mkdir(parents=True, exist_ok=True)
            write_result(job_dir, status="failed", error=problem.splitlines()[0], overrides=overrides)
        if "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower():
            raise RuntimeError(message) from None
        return float("nan")


DEFAULT_EXPERIMENT = "gpt_char"
GROUPS = ("experiment", "model", "data", "task")


def with_default_experiment(args: list[str]) -> list[str]:
    """A command line that picks no experiment, model, data or task (nor resumes) runs the default experiment."""
    chosen = {a.lstrip("+~").split("=", 1)[0] for a in args if "=" in a}
    if chosen & {*GROUPS, "resume"}:
        return args
    return [*args, f"experiment={DEFAULT_EXPERIMENT}"]


CHECK_ONLY = "BUILDER_CHECK_ONLY"  # set by --check for a multirun: the sweep check exits after checking


def main() -> None:
    register_resolvers()
    register_run_dir_resolver()
    check_only = "--check" in sys.argv[1:]
    args = with_default_experiment([a for a in sys.argv[1:] if a != "--check"])
    with friendly_errors("builder-train"):
        dirs, plain = config_dirs(args)  # --config-dir DIR: the user's own configs, searched before ours
        full = with_original_overrides(args)  # resume=RUN: that run's command line, then the new overrides
        multirun = any(a in ("-m", "--multirun") for a in plain)
        if not any(a.startswith("-") for a in plain):
            cfg = compose(with_original_overrides(plain), dirs=dirs)  # a misspelt key: one line, a did-you-mean
            if check_only:
                check_shapes(cfg)
                print("builder-train: the configuration is valid, shapes included; --check trains nothing")
                return
    if check_only and multirun:
        os.environ[CHECK_ONLY] = "1"
    sys.argv = [sys.argv[0], *full]
    _run()


if __name__ == "__main__":
    main()
