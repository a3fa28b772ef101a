"""Dashboards: the `logger` config group -> Lightning loggers, next to metrics.csv (always written).

Each preset in conf/logger puts its settings under its own key, so several can be chosen at once:
    logger=tensorboard            logger.tensorboard.* settings
    'logger=[tensorboard,wandb]'  both (a Hydra list of options; quoted for the shell)
    logger=none                   metrics.csv only
Only the chosen logger's package is imported. Every dashboard gets the resolved config, the metrics, the
model's plan table and, through `log_text(key, columns, data)`, tables of samples or translations (tasks
call it on every logger that has it). Weights & Biases runs online when an API key and its server are
reachable, else offline (files under the run directory, `wandb sync` uploads them later); its run id is
kept in the run directory so that a resumed run continues the same W&B run (MLflow likewise).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from builder.errors import ConfigError

KINDS = ("csv", "tensorboard", "wandb", "mlflow")
EXTRA = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # pip install 'builder[EXTRA]'


def check_loggers(logger_cfg: Any) -> list[str]:
    problems = []
    for key, value in dict(logger_cfg or {}).items():
        if key not in KINDS and not (hasattr(value, "get") and value.get("_target_")):
            problems.append(f"logger.{key}: unknown logger; available: {', '.join(KINDS)} "
                            "(or a mapping with a Lightning logger's _target_)")
    return problems


def make_loggers(logger_cfg: dict[str, Any] | None, run_dir: Path, columns: list[str], *,
                 resume_step: int | None = None, rank: int = 0) -> list[Any]:
    """metrics.csv first, then the chosen dashboards (rank 0 only: other ranks never write)."""
    from builder.train.metrics_csv import MetricsCSV
    loggers: list[Any] = [MetricsCSV(run_dir, columns=columns, resume_step=resume_step)]
    if rank != 0:
        return loggers
    for kind, settings in (logger_cfg or {}).items():
        settings = dict(settings or {})
        if kind == "csv":
            continue
        if kind in FACTORIES:
            loggers.append(FACTORIES[kind](settings, run_dir))
        else:
            from hydra.utils import instantiate
            loggers.append(instantiate(settings, save_dir=str(run_dir)))
    return loggers


def _require(kind: str, module: str) -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"logger.{kind}: needs the {module} package (pip install 'builder[{EXTRA[kind]}]')")


def _run_id(run_dir: Path, name: str, new: Any) -> str:
    """The id stored in the run directory, or a new one stored there: a resumed run reuses it."""
    file = run_dir / name
    if file.is_file() and file.read_text().strip():
        return file.read_text().strip()
    value = str(new())
    file.write_text(value + "\n")
    return value


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", "<br>")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


# --- TensorBoard ----------------------------------------------------------------------------------------

def tensorboard(settings: dict[str, Any], run_dir: Path) -> Any:
    _require("tensorboard", "tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    class TensorBoard(TensorBoardLogger):
        def log_text(self, key: str, columns: list[str], data: list[list[Any]], step: int | None = None) -> None:
            if step is None and columns and columns[0] == "step" and data:
                step = int(data[0][0])
            self.experiment.add_text(key, markdown_table(columns, data), step)

    # version="" keeps the event files directly in run_dir/<name>; a resumed run adds a file beside them
    return TensorBoard(save_dir=str(run_dir), name=settings.get("name", "tensorboard"), version="",
                       default_hp_metric=False, log_graph=False)


# --- Weights & Biases ----------------------------------------------------------------------------------

def wandb_mode(requested: str) -> str:
    """auto: online when logged in (WANDB_API_KEY or ~/.netrc) and the server answers; else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):  # the user's own choice; wandb's old name for offline is dryrun
        return {"dryrun": "offline", "run": "online"}.get(os.environ["WANDB_MODE"], os.environ["WANDB_MODE"])
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = base.split("://")[-1].split("/")[0].split(":")[0]
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            import netrc
            key = (netrc.netrc().authenticators(host) or (None, None, None))[2]
        except (OSError, netrc.NetrcParseError):
            key = None
    if not key:
        return "offline"
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError:
        return "offline"
    return "online"


def wandb(settings: dict[str, Any], run_dir: Path) -> Any:
    _require("wandb", "wandb")
    from lightning.pytorch.loggers import WandbLogger

    class Wandb(WandbLogger):
        """Sample tables grow over the run: each log shows every row so far (W&B keeps the latest table)."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb; passing None still warns

        def log_text(self, key: str, columns: list[str] | None = None, data: list[list[Any]] | None = None,
                     dataframe: Any = None, step: int | None = None) -> None:
            rows = self.__dict__.setdefault("_rows", {}).setdefault(key, [])
            rows += list(data or [])
            super().log_text(key, columns=columns, data=rows, dataframe=dataframe, step=step)

    mode = wandb_mode(str(settings.get("mode", "auto")))
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.wandb.mode: must be auto, online, offline or disabled, got '{mode}'")
    import secrets
    run_id = _run_id(run_dir, "wandb_id.txt", lambda: secrets.token_hex(4))  # not `random`: seeded per run
    extra = {k: settings[k] for k in ("entity", "group", "tags", "notes", "job_type") if settings.get(k) is not None}
    return Wandb(save_dir=str(run_dir), project=settings.get("project") or "builder", id=run_id, mode=mode,
                 name=settings.get("name") or run_dir.name, log_model=False, **extra)


# --- MLflow --------------------------------------------------------------------------------------------

def mlflow(settings: dict[str, Any], run_dir: Path) -> Any:
    _require("mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    class MLflow(MLFlowLogger):
        def log_text(self, key: str, columns: list[str], data: list[list[Any]], step: int | None = None) -> None:
            rows = self.__dict__.setdefault("_rows", {}).setdefault(key, [])
            rows += list(data or [])
            self.experiment.log_text(self.run_id, markdown_table(columns, rows), f"{key}.md")

    uri = str(settings.get("tracking_uri") or "outputs/mlruns")
    uri = uri if ":" in uri.split("/")[0] else Path(uri).resolve().as_uri()  # a plain path: a local file store
    previous = run_dir / "mlflow_id.txt"
    logger = MLflow(experiment_name=settings.get("experiment_name") or "builder", tracking_uri=uri,
                    run_name=settings.get("run_name") or run_dir.name,
                    run_id=previous.read_text().strip() if previous.is_file() else None)
    previous.write_text(f"{logger.run_id}\n")  # creates the run; a resumed run logs into the same one
    return logger


FACTORIES = {"tensorboard": tensorboard, "wandb": wandb, "mlflow": mlflow}


# --- what every dashboard receives once --------------------------------------------------------------

def log_run_info(loggers: list[Any], config: dict[str, Any]) -> None:
    """The resolved config and the model's plan table, on every dashboard (not metrics.csv)."""
    dashboards = [lg for lg in loggers if type(lg).__name__ != "MetricsCSV"]
    if not dashboards:
        return
    from builder.graph.build import check_structure
    from builder.graph.plan import make_plan, rows
    columns = ["node", "block", "output shape", "parameters"]
    plan = [list(r) for r in rows(make_plan(check_structure(config["model"])))]
    for lg in dashboards:
        lg.log_hyperparams(config)
        if hasattr(lg, "log_table"):  # W&B: a real table
            lg.log_table(key="model/plan", columns=columns, data=plan)
        elif hasattr(lg, "log_text"):
            lg.log_text("model/plan", columns, plan, step=0)


def finish(failed: bool = False) -> None:
    """Close W&B's run so the next run in this process (a sweep's next trial) starts its own."""
    import sys
    wb = sys.modules.get("wandb")
    if wb is not None and wb.run is not None:
        wb.finish(exit_code=1 if failed else 0)
