"""Runs compared in one picture: the train and validation curves of several runs, or of every trial of a
sweep, one colour per run, above a table that is also the legend: each run's status, monitored value and
steps, and the overrides that differ between the runs. `builder-compare` draws it; every multirun draws it
at its end, as compare.png beside summary.csv.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from builder.errors import ConfigError
from builder.train.runs import format_table, natural, run_rows

CELL = 40  # characters of an override value shown in the table


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Each path is a run directory (it holds metrics.csv) or a sweep directory (its trials are taken)."""
    runs, problems = [], []
    for path in map(Path, paths):
        if (path / "metrics.csv").is_file():
            runs.append(path)
            continue
        trials = [d for d in path.iterdir() if (d / "metrics.csv").is_file()] if path.is_dir() else []
        if not trials:
            problems.append(f"{path}: neither a run directory (no metrics.csv) nor a sweep directory (no trial "
                            "directory holding one)" if path.exists() else f"{path}: does not exist")
        runs += sorted(trials, key=lambda d: natural(d.name))
    if problems:
        raise ConfigError(problems)
    return runs


def names(runs: list[Path]) -> dict[str, Path]:
    """A short, unique name per run: its directory's name, or its last two parts when names repeat."""
    short = [r.name for r in runs]
    if len(set(short)) < len(short):
        short = ["/".join(r.resolve().parts[-2:]) for r in runs]
    if len(set(short)) < len(short):
        short = [str(r) for r in runs]
    return dict(zip(short, runs))


def read_curves(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """metric -> (steps, values) from a metrics.csv, finite values only."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("step"):
                continue
            for key, value in row.items():
                if key != "step" and value not in ("", None) and math.isfinite(v := float(value)):
                    steps, values = curves.setdefault(key, ([], []))
                    steps.append(float(row["step"]))
                    values.append(v)
    return curves


def default_metrics(monitor: str, curves: list[dict[str, Any]]) -> list[str]:
    """train/loss, val/loss and the monitored metric, those that some run logged."""
    wanted = list(dict.fromkeys(["train/loss", "val/loss", monitor]))
    return [m for m in wanted if any(m in c for c in curves)]


def compare(paths: list[str | Path], out: Path, metrics: list[str] | None = None,
            title: str = "runs compared") -> tuple[Path, str]:
    """Draw the runs found under `paths` into `out`; returns the picture's path and the table as text."""
    runs = names(find_runs(paths))
    rows = run_rows(runs, "run")
    curves = {name: read_curves(d / "metrics.csv") for name, d in runs.items()}
    monitor = list(rows[0])[2]
    metrics = metrics or default_metrics(monitor, list(curves.values()))
    missing = [m for m in metrics if not any(m in c for c in curves.values())]
    if missing:
        logged = sorted({m for c in curves.values() for m in c})
        raise ConfigError(f"metrics: {', '.join(missing)} not logged by any of these runs; logged: {', '.join(logged)}")
    draw(rows, curves, metrics, out)
    return out, format_table(rows, title=title, noun="run")


def colours(n: int) -> list[Any]:
    import matplotlib.pyplot as plt  # deferred: draw() chooses the backend first
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("viridis")(i / (n - 1)) for i in range(n)]


def draw(rows: list[dict[str, Any]], curves: dict[str, dict[str, tuple[list[float], list[float]]]],
         metrics: list[str], out: Path) -> Path:
    """One panel per metric (x: step), and the table of `rows` (best first) with each run's colour."""
    import matplotlib  # deferred: pyplot is imported once the Agg backend is chosen, and only to draw
    matplotlib.use("Agg")  # files, never a window
    import matplotlib.pyplot as plt  # deferred: after the backend is chosen

    colour = dict(zip([r["run"] for r in rows], colours(len(rows))))
    table_height = 0.28 * (len(rows) + 1) + 0.2
    fig = plt.figure(figsize=(max(4.6 * len(metrics), 9), 3.4 + table_height), dpi=110)
    grid = fig.add_gridspec(2, len(metrics), height_ratios=[3.4, table_height], hspace=0.35)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(grid[0, i])
        values = []
        for row in reversed(rows):  # the best run drawn last, on top
            steps, ys = curves[row["run"]].get(metric, ([], []))
            few = len(ys) <= 30  # validation points: marked
            ax.plot(steps, ys, color=colour[row["run"]], lw=1.3, marker="o" if few else None, ms=3,
                    ls="-" if row["status"] in ("completed", "running") else "--")
            values += ys
        if values and min(values) > 0 and max(values) / min(values) > 50:
            ax.set_yscale("log")
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[1, :])
    ax.axis("off")
    columns = [c for c in rows[0] if c not in ("seconds", "error")]
    cells = [[""] + [_cell(row[c]) for c in columns] for row in rows]
    table = ax.table(cellText=cells, colLabels=[""] + columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.25)
    table.auto_set_column_width(list(range(1, len(columns) + 1)))
    for i in range(len(rows) + 1):
        table[i, 0].set_width(0.025)
        if i:
            table[i, 0].set_facecolor(colour[rows[i - 1]["run"]])
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    return text if len(text) <= CELL else text[: CELL - 1] + "…"
