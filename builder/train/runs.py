"""Run directories read back: their overrides, results and summary rows, for the sweep summary, the
comparison picture (builder/train/compare.py) and the dashboards' hyperparameters. Free of torch."""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

NOT_PARAMS = ("run_dir", "resume", "outputs_dir")  # where a run lives, not what it is


def run_overrides(run_dir: Path) -> list[str]:
    file = Path(run_dir) / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(file)] if file.is_file() else []


def override_values(overrides: list[str]) -> dict[str, str]:
    """key -> value of `key=value` overrides, without where the run lives (run_dir, resume, hydra.*)."""
    pairs = (o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    return {k: v for k, v in pairs if k not in NOT_PARAMS and not k.startswith("hydra")}


def summary_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per trial directory that holds a result.yaml, best first (see run_rows)."""
    trials = sorted((p for p in sweep_dir.iterdir() if (p / "result.yaml").is_file()), key=lambda p: natural(p.name))
    return run_rows({d.name: d for d in trials}, "trial") if trials else []


def run_rows(runs: dict[str, Path], first: str = "trial") -> list[dict[str, Any]]:
    """One row per named run directory: name, status, monitor value, steps, seconds, the overrides that differ
    between the runs, error; best first by the task's monitor and mode, failed runs last. A run without
    result.yaml is still running."""
    trials = []
    for name, d in runs.items():
        if (d / "result.yaml").is_file():
            result = OmegaConf.to_container(OmegaConf.load(d / "result.yaml"))
        else:
            result = {"status": "running", "overrides": run_overrides(d)}
        trials.append((name, result, override_values([str(o) for o in (result.get("overrides") or [])])))
    # parameters that differ between trials (the fixed ones, such as the experiment, would only repeat)
    keys = sorted({k for _, _, o in trials for k in o})
    varying = [k for k in keys if len({o.get(k) for _, _, o in trials}) > 1]
    monitor = next((r["monitor"] for _, r, _ in trials if r.get("monitor")), "value")
    mode = next((r["mode"] for _, r, _ in trials if r.get("mode")), "min")
    rows = []
    for name, r, o in trials:
        value = r.get("value")
        ok = r.get("status") == "completed" and value is not None and math.isfinite(float(value))
        rows.append({first: name, "status": r.get("status") if ok or r.get("status") != "completed" else "nan",
                     monitor: float(value) if ok else None, "steps": r.get("steps"), "seconds": r.get("seconds"),
                     **{k: o.get(k) for k in varying}, "error": r.get("error") or ""})
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda row: (row[monitor] is None, sign * float(row[monitor] or 0), natural(row[first])))
    return rows


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_table(rows: list[dict[str, Any]], title: str = "sweep summary", noun: str = "trial") -> str:
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
    return f"{title} ({n} {noun}{'s' if n != 1 else ''}, best first):\n" + "\n".join(lines)


def natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
