"""builder-compare: the train and validation curves of several runs, or of every trial of a sweep, in one
PNG, above a table (the legend) of each run's status, monitored value, steps and the overrides that differ.

    builder-compare outputs/multirun/2026-01-02/10-00-00             # every trial of a sweep
    builder-compare outputs/2026-01-02/10-00-00 outputs/2026-01-02/11-30-00 out=lr.png
    builder-compare SWEEP_DIR metrics=[train/loss,val/acc]            # the panels, by metric name

Writes out= (default: compare.png inside the one directory given, outputs/compare.png for several) and
prints the table. Every multirun draws this picture at its end, beside summary.csv.
"""
from __future__ import annotations

from pathlib import Path

from builder.cli import command
from builder.cli.args import parse_args
from builder.errors import ConfigError
from builder.train.compare import compare

SPEC = {"out": None, "metrics": None}


def main(argv: list[str] | None = None) -> None:
    command("builder-compare", __doc__, _main, argv)


def _main(argv: list[str]) -> None:
    dirs = [a for a in argv if "=" not in a]
    args = parse_args([a for a in argv if "=" in a], SPEC)
    if not dirs:
        raise ConfigError("RUN_OR_SWEEP_DIR: give one or more run or sweep directories")
    metrics = args["metrics"]
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    out = Path(args["out"]) if args["out"] else (Path(dirs[0]) if len(dirs) == 1 else Path("outputs")) / "compare.png"
    picture, table = compare(dirs, out, metrics)
    print(table)
    print(f"picture: {picture}")


if __name__ == "__main__":
    main()
