"""metrics.csv: one row per logging event, a fixed file name in the run directory.

A Lightning logger (not CSVLogger, which writes into versioned sub-directories): columns are `step`, then
the task's declared metrics in a stable order, then anything else in order of first appearance. Empty cells
mean "not logged at this event" (validation metrics appear only on validation rows). A resumed run appends
to the file, after dropping the rows the interrupted run logged past its checkpoint (they are logged again).
Only rank 0 writes.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only


class MetricsCSV(Logger):
    def __init__(self, save_dir: str | Path, filename: str = "metrics.csv", columns: list[str] | tuple[str, ...] = (),
                 resume_step: int | None = None):
        """resume_step: continue an existing file, keeping its rows logged before this step."""
        super().__init__()
        self._save_dir = str(save_dir)
        self.path = Path(save_dir) / filename
        self.columns = ["step"] + [c for c in columns if c != "step"]
        self.rows: list[dict[str, Any]] = []
        if rank_zero_only.rank != 0:
            return
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns += [c for c in reader.fieldnames or () if c not in self.columns]
                self.rows = [r for r in reader if r.get("step") and int(r["step"]) < resume_step]
        self._rewrite()  # the file exists (with its header) even if a run logs nothing

    @property
    def name(self) -> str:
        return "metrics_csv"

    @property
    def version(self) -> None:
        return None  # nothing to show on the progress bar ("v_num")

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run directory's config.yaml holds the whole configuration

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step, **{k: _scalar(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self.columns]
        self.rows.append(row)
        if new:
            self.columns += new  # a new column: rewrite so every row lines up with the header
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                f.write(self._format([row]))

    def _format(self, rows: list[dict[str, Any]], header: bool = False) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self._format(self.rows, header=True))


def _scalar(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:.7g}" if isinstance(value, float) else value  # float32 values without float64 noise digits


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv, with numbers as floats and empty cells left out."""
    with Path(path).open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
