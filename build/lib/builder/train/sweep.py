"""Sweeps (`builder-train -m ...`): every trial checked before the first one starts, a summary at the end.

Two Hydra callbacks, set in conf/train.yaml:

SweepCheck (on_multirun_start) composes each trial's config exactly as the launcher will and runs
`builder.train.run.check_shapes` on it (structure, then shapes on the meta device). For a grid that is every
combination; for Optuna (conf/sweep) it is every choice and both ends of every range, one parameter at a time.
Any problem stops the sweep before it launches, each line naming the trial's overrides. It also makes an
Optuna sweep resumable: the sweep directory exists before Optuna opens its sqlite file there, and the trials
of a resumed study are numbered after the existing ones instead of overwriting their directories.

SweepSummary (on_multirun_end) reads each trial directory's result.yaml and overrides.yaml, prints a table
(best first by the task's monitor and mode, failed trials last) and writes it as summary.csv in the sweep
directory.
"""
from __future__ import annotations

import csv
import math
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def is_optuna(config: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_") or "").lower()


class SweepCheck(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from builder.config import register_resolvers
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
        if is_optuna(config):
            prepare_optuna(config)


def grid(parsed: list[Any]) -> list[list[str]]:
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
    from builder.errors import ConfigError
    from builder.train.run import check_shapes
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


def summary_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per trial directory: trial, status, monitor value, steps, seconds, swept parameters, error."""
    trials = []
    for d in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: _natural(p.name)):
        if not (d / "result.yaml").is_file():
            continue
        result = OmegaConf.to_container(OmegaConf.load(d / "result.yaml"))
        overrides = [str(o) for o in (result.get("overrides") or [])]
        trials.append((d, result, dict(o.split("=", 1) for o in overrides if "=" in o)))
    if not trials:
        return []
    # parameters that differ between trials (the fixed ones, such as the experiment, would only repeat)
    keys = sorted({k for _, _, o in trials for k in o})
    varying = [k for k in keys if len({o.get(k) for _, _, o in trials}) > 1]
    monitor = next((r["monitor"] for _, r, _ in trials if r.get("monitor")), "value")
    mode = next((r["mode"] for _, r, _ in trials if r.get("mode")), "min")
    rows = []
    for d, r, o in trials:
        value = r.get("value")
        ok = r.get("status") == "completed" and value is not None and math.isfinite(float(value))
        rows.append({"trial": d.name, "status": r.get("status") if ok or r.get("status") != "completed" else "nan",
                     monitor: float(value) if ok else None, "steps": r.get("steps"), "seconds": r.get("seconds"),
                     **{k: o.get(k) for k in varying}, "error": r.get("error") or ""})
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda row: (row[monitor] is None, sign * float(row[monitor] or 0), _natural(row["trial"])))
    return rows


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = [c for c in rows[0] if c != "error" or any(r["error"] for r in rows)]

    def cell(column: str, v: Any) -> str:
        if v is None:
            return ""
        if column == "seconds":
            return f"{float(v):.1f}"
        if isinstance(v, float):
            return f"{v:.4f}"
        try:  # swept numbers as they were written on the command line, shortened (summary.csv keeps them whole)
            return f"{float(v):.4g}" if any(c in str(v) for c in ".eE") else str(v)
        except ValueError:
            return str(v)
    cells = [[cell(c, r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    n = len(rows)
    return f"sweep summary ({n} trial{'s' if n != 1 else ''}, best first):\n" + "\n".join(lines)


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
