"""Dashboards: the `logger` config group -> Lightning loggers, next to metrics.csv (always written).

Each preset in conf/logger puts its settings under its own key, so several can be chosen at once:
    logger=tensorboard            logger.tensorboard.* settings
    'logger=[tensorboard,wandb]'  both (a Hydra list of options; quoted for the shell)
    logger=none                   metrics.csv only
Only the chosen logger's package is imported; the section is checked with the config (builder/train/check.py).
Every dashboard gets the resolved config, every metric by step, the model's plan table, attention pictures
(attention_callback.py) and, through `log_text(key, columns, data)`, tables of generated samples. TensorBoard
also gets an HParams session (the overrides, best/<monitor>); W&B runs offline when not logged in; MLflow writes
to an SQLite store unless tracking_uri names a server, and tags the run's status. W&B and MLflow keep their run id in the run directory: a resumed run continues the same run.
"""
from __future__ import annotations

import importlib.util
import netrc
import os
import secrets
import socket
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from hydra.utils import instantiate
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import OmegaConf

from builder.errors import ConfigError
from builder.graph.build import check_structure
from builder.graph.plan import make_plan, rows
from builder.train.check import MLFLOW_DEFAULT
from builder.train.metrics_csv import MetricsCSV
from builder.train.runs import override_values, run_overrides

EXTRA = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # pip install 'builder[EXTRA]'
_current: list[Any] = []  # this process's dashboards of the run being trained, for record_status


def make_loggers(logger_cfg: dict[str, Any] | None, run_dir: Path, columns: list[str], *,
                 resume_step: int | None = None, rank: int = 0) -> list[Any]:
    """metrics.csv first, then the chosen dashboards (rank 0 only: other ranks never write)."""
    loggers: list[Any] = [MetricsCSV(run_dir, columns=columns, resume_step=resume_step)]
    _current.clear()
    if rank != 0:
        return loggers
    for kind, settings in (logger_cfg or {}).items():
        settings = dict(settings or {})
        if kind == "csv":
            continue
        if kind in FACTORIES:
            loggers.append(FACTORIES[kind](settings, run_dir))
        else:
            loggers.append(instantiate(settings, save_dir=str(run_dir)))
    _current.extend(loggers[1:])
    return loggers


def record_status(run_dir: Path) -> None:
    """The status result.yaml holds (completed, failed, interrupted), to the dashboards that keep one."""
    status = str(OmegaConf.load(Path(run_dir) / "result.yaml").status)
    for lg in [lg for lg in _current if hasattr(lg, "record_status")]:
        try:
            lg.record_status(status)
        except Exception as e:  # noqa: BLE001 - an unreachable server must not hide the run's own outcome
            warnings.warn(f"{type(lg).__name__}: status '{status}' not recorded: {e}", stacklevel=2)
    _current.clear()


def _require(kind: str, module: str) -> None:
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


def run_name(run_dir: Path) -> str:
    """The run directory's last two parts: <date>/<time> for a run, <time>/<trial> for a sweep's trial."""
    return "/".join(Path(run_dir).resolve().parts[-2:])


def _number(value: str) -> Any:
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return value.strip("'\"")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", "<br>")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


# --- TensorBoard ----------------------------------------------------------------------------------------

def tensorboard(settings: dict[str, Any], run_dir: Path) -> Any:
    _require("tensorboard", "tensorboard")

    class TensorBoard(TensorBoardLogger):
        best: Any = None  # the ModelCheckpoint that tracks task.monitor
        step = 0

        def log_hyperparams(self, params: Any, *args: Any) -> None:
            """hparams.yaml, the config as text and an HParams session of the overrides (with no experiment summary
            TensorBoard lists the hyperparameters of every run it reads, and each scalar as a result)."""
            # optional dependency: only with logger=tensorboard
            from torch.utils.tensorboard.summary import hparams
            super().log_hyperparams(params)
            config = yaml.safe_dump(dict(params), sort_keys=False)
            self.experiment.add_text("config", "    " + config.replace("\n", "\n    "))  # indented: shown as code
            _, session, _ = hparams({k: _number(v) for k, v in override_values(run_overrides(run_dir)).items()}, {})
            self.experiment._get_file_writer().add_summary(session)

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.step = max(self.step, step or 0)
            super().log_metrics(metrics, step)

        def log_text(self, key: str, columns: list[str], data: list[list[Any]], step: int | None = None) -> None:
            if step is None and columns and columns[0] == "step" and data:
                step = int(data[0][0])
            self.experiment.add_text(key, markdown_table(columns, data), step)

        def after_save_checkpoint(self, checkpoint: Any) -> None:
            if getattr(checkpoint, "monitor", None):
                self.best = checkpoint

        def finalize(self, status: str) -> None:
            score = getattr(self.best, "best_model_score", None)
            if score is not None:  # the HParams result: the value a sweep optimises
                self.experiment.add_scalar(f"best/{self.best.monitor}", float(score), self.step)
            super().finalize(status)

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

    class Wandb(WandbLogger):
        """Sample tables grow over the run: each log shows every row so far (W&B keeps the latest table)."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb; passing None still warns

        def log_hyperparams(self, params: Any) -> None:
            super().log_hyperparams(params)
            if (run_dir / "config.yaml").is_file():  # the run's own file, among the W&B run's files
                self.experiment.save(str(run_dir / "config.yaml"), base_path=str(run_dir), policy="now")

        def log_text(self, key: str, columns: list[str] | None = None, data: list[list[Any]] | None = None,
                     dataframe: Any = None, step: int | None = None) -> None:
            rows = self.__dict__.setdefault("_rows", {}).setdefault(key, [])
            rows += list(data or [])
            super().log_text(key, columns=columns, data=rows, dataframe=dataframe, step=step)

    mode = wandb_mode(str(settings.get("mode", "auto")))
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.wandb.mode: must be auto, online, offline or disabled, got '{mode}'")
    run_id = _run_id(run_dir, "wandb_id.txt", lambda: secrets.token_hex(4))  # not `random`: seeded per run
    extra = {k: settings[k] for k in ("entity", "group", "tags", "notes", "job_type") if settings.get(k) is not None}
    return Wandb(save_dir=str(run_dir), project=settings.get("project") or "builder", id=run_id, mode=mode,
                 name=settings.get("name") or run_name(run_dir), log_model=False, **extra)


# --- MLflow --------------------------------------------------------------------------------------------

def mlflow_store(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact root): an SQLite file becomes an absolute path, its artifacts in mlartifacts/
    beside it; a server keeps its own artifacts, and must answer now (MLflow would retry for minutes)."""
    if uri.startswith(("http://", "https://")):
        address = urlsplit(uri)
        port = address.port or (443 if address.scheme == "https" else 80)
        try:
            socket.create_connection((address.hostname, port), timeout=5).close()
        except OSError as e:
            raise ConfigError(f"logger.mlflow.tracking_uri: no server answers at {uri} ({e.strerror or e})") from None
    if not uri.startswith("sqlite:///"):
        return uri, None
    db = Path(uri[len("sqlite:///"):]).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}", (db.parent / "mlartifacts").as_uri()


def mlflow(settings: dict[str, Any], run_dir: Path) -> Any:
    _require("mlflow", "mlflow")

    class MLflow(MLFlowLogger):
        def log_hyperparams(self, params: Any) -> None:
            """The config as flattened params (a resumed run keeps the values it started with) and config.yaml."""
            from mlflow.entities import Param  # optional dependency: only with logger=mlflow
            known = self.experiment.get_run(self.run_id).data.params
            new = [Param(k, str(v)[:500]) for k, v in flatten(dict(params)).items() if k not in known]
            for i in range(0, len(new), 100):  # MLflow takes at most 100 params a call
                self.experiment.log_batch(self.run_id, params=new[i:i + 100])
            if (run_dir / "config.yaml").is_file():
                self.experiment.log_artifact(self.run_id, str(run_dir / "config.yaml"))

        def log_text(self, key: str, columns: list[str], data: list[list[Any]], step: int | None = None) -> None:
            """A file per step (sample/step_300.md), so a resumed run adds to the earlier ones."""
            if step is None and columns and columns[0] == "step" and data:
                step = int(data[0][0])
            name = f"{key}/step_{step}.md" if step else f"{key}.md"
            self.experiment.log_text(self.run_id, markdown_table(columns, data), name)

        def record_status(self, status: str) -> None:
            self.experiment.set_tag(self.run_id, "status", status)
            state = {"completed": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
            self.experiment.set_terminated(self.run_id, state)

    uri, artifacts = mlflow_store(str(settings.get("tracking_uri") or MLFLOW_DEFAULT))
    name, overrides = settings.get("experiment_name") or "builder", run_overrides(run_dir)
    previous = run_dir / "mlflow_id.txt"
    logger = MLflow(experiment_name=name, tracking_uri=uri, run_name=settings.get("run_name") or run_name(run_dir),
                    run_id=previous.read_text().strip() if previous.is_file() else None,
                    artifact_location=artifacts and f"{artifacts}/{name}")
    from mlflow.entities import RunTag  # optional dependency: only with logger=mlflow
    tags = {"status": "running", "run_dir": str(run_dir.resolve()), "overrides": " ".join(overrides)[:5000],
            "experiment": override_values(overrides).get("experiment")}
    client, run_id = logger.experiment, logger.run_id  # creates the run, or finds the one being resumed
    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items() if v is not None])
    previous.write_text(f"{run_id}\n")
    return logger


FACTORIES = {"tensorboard": tensorboard, "wandb": wandb, "mlflow": mlflow}


# --- what every dashboard receives once --------------------------------------------------------------

def log_run_info(loggers: list[Any], config: dict[str, Any]) -> None:
    """The resolved config and the model's plan table, on every dashboard (not metrics.csv)."""
    dashboards = [lg for lg in loggers if type(lg).__name__ != "MetricsCSV"]
    if not dashboards:
        return
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
    wb = sys.modules.get("wandb")
    if wb is not None and wb.run is not None:
        wb.finish(exit_code=1 if failed else 0)
