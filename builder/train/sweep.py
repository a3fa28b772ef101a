"""Sweeps (`builder-train -m ...`): every trial checked before the first one starts, a summary at the end.

Two Hydra callbacks, set in conf/train.yaml:

SweepCheck (on_multirun_start) composes each trial's config exactly as the launcher will and runs
`builder.train.check.check_shapes` on it (structure, then shapes on the meta device). For a grid that is every
combination; for Optuna (conf/sweep) it is every choice and both ends of every range, one parameter at a time.
Any problem stops the sweep before it launches, each line naming the trial's overrides. It also makes an
Optuna sweep resumable: the sweep directory exists before Optuna opens its sqlite file there, and the trials
of a resumed study are numbered after the existing ones instead of overwriting their directories.

SweepSummary (on_multirun_end) reads each trial directory's result.yaml and overrides.yaml, prints a table
(best first by the task's monitor and mode, failed trials last), writes it as summary.csv in the sweep
directory and draws the trials' curves beside it as compare.png (builder/train/compare.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from builder.config import register_resolvers
from builder.errors import ConfigError
from builder.train.check import check_shapes
from builder.train.compare import compare
from builder.train.runs import format_table, summary_rows, write_summary


def is_optuna(config: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_") or "").lower()


class SweepCheck(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        register_resolvers()
        loader = GlobalHydra.instance().config_loader()
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        trials = optuna_probes(parsed) if is_optuna(config) else grid(parsed)
        swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
        problems: list[str] = []
        for overrides in trials:
            name = " ".join(o for o in overrides if o.split("=", 1)[0] in swept) or " ".join(overrides)
            problems += [f"trial {name}: {p}" for p in trial_problems(loader, config, overrides)]
        if is_optuna(config) and not problems:
            problems += direction_problems(config, loader, trials[0])
        if problems:
            n = len(problems)
            print(f"builder-train: {n} problem{'s' if n != 1 else ''} in the sweep; no trial was started:",
                  file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            sys.exit(2)
        print(f"builder-train: {len(trials)} trial configuration{'s' if len(trials) != 1 else ''} checked "
              f"({'each choice and range end' if is_optuna(config) else 'the whole grid'}), shapes included")
        if os.environ.get("BUILDER_CHECK_ONLY"):  # builder-train --check -m ...: nothing is launched
            sys.exit(0)
        if is_optuna(config):
            prepare_optuna(config)


def grid(parsed: list[Any]) -> list[list[str]]:
    # deferred: internals imports Lightning, and builder-train loads this module before it checks the config
    from builder.train.internals import grid_trials
    return grid_trials(parsed)


def optuna_probes(parsed: list[Any]) -> list[list[str]]:
    """Overrides that try each choice and each range end once, the other parameters at their first value."""
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    values: dict[str, list[str]] = {}
    for o in parsed:
        if not o.is_sweep_override():
            continue
        v = o.value()
        if o.is_choice_sweep():
            values[o.get_key_element()] = list(o.sweep_string_iterator())
        elif o.is_range_sweep():  # Optuna draws from start..stop inclusive
            values[o.get_key_element()] = [str(v.start), str(v.stop)]
        else:
            values[o.get_key_element()] = [str(v.start), str(v.end)]
    first = {k: vs[0] for k, vs in values.items()}
    probes = [fixed + [f"{k}={v}" for k, v in first.items()]]
    for key, vs in values.items():
        for v in vs[1:]:
            probes.append(fixed + [f"{k}={v if k == key else first[k]}" for k in first])
    return probes


def trial_config(loader: Any, config: DictConfig, overrides: list[str]) -> DictConfig:
    cfg = loader.load_sweep_config(config, list(overrides))
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def trial_problems(loader: Any, config: DictConfig, overrides: list[str]) -> list[str]:
    try:
        check_shapes(trial_config(loader, config, overrides))
    except ConfigError as e:
        return e.problems
    except Exception as e:  # noqa: BLE001 - a composition error (unknown key or option): one line
        return [str(e).strip().splitlines()[0]]
    return []


def direction_problems(config: DictConfig, loader: Any, overrides: list[str]) -> list[str]:
    task = trial_config(loader, config, overrides).task
    direction = str(OmegaConf.select(config, "hydra.sweeper.direction")).split(".")[-1]
    want = "maximize" if task.get("mode") == "max" else "minimize"
    if direction != want:
        return [f"hydra.sweeper.direction: {direction}, but the objective {task.get('monitor')} is best when "
                f"{'highest' if want == 'maximize' else 'lowest'} (task.mode={task.get('mode')}); "
                f"set hydra.sweeper.direction={want}"]
    return []


def prepare_optuna(config: DictConfig) -> None:
    """Create the sweep directory (Optuna's sqlite file lives there) and number a resumed study's new trials
    after the directories already present."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    done = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if done and raw == "${hydra.job.num}":
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            config.hydra.overrides.hydra.append(f"hydra.sweep.subdir='${{calc:${{hydra.job.num}}+{max(done) + 1}}}'")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = summary_rows(sweep_dir)
        if not rows:
            return
        path = write_summary(rows, sweep_dir / "summary.csv")
        print(format_table(rows))
        print(f"summary: {path}")
        picture, _ = compare([sweep_dir], sweep_dir / "compare.png")
        print(f"curves: {picture}")
