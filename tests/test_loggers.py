"""Loggers as a config group, read back from what each one wrote: TensorBoard event files (HParams included),
offline W&B run files (still syncable), MLflow's SQLite default store and a real `mlflow server`; resumed
runs continue the same dashboard run; one-line errors; only the chosen logger's package is imported."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest

from builder.errors import ConfigError

TINY = ["experiment=toy_classifier", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "data.bayes_samples=0", "data.n_train=256", "data.n_val=64", "trainer.log_every_n_steps=1"]
TINY_GPT = ["experiment=gpt_char", "model.n_layer=1", "model.n_head=2", "model.d_model=32", "model.block_size=32",
            "data.max_val_windows=16", "task.sample_tokens=20", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "optim.warmup_steps=2",
            "trainer.val_check_interval=3", "attention_maps=true"]
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="needs mlflow")


@pytest.fixture(scope="module")
def gpt_run(compose, tmp_path_factory):
    """A tiny GPT (attention maps on) trained 6 steps with all three dashboards, W&B offline and MLflow in its
    SQLite default under outputs_dir, then resumed to 9 steps: SimpleNamespace(dir, outputs)."""
    for module in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(module)
    from builder.train.run import train
    root = tmp_path_factory.mktemp("dashboards")
    common = [*TINY_GPT, f"data.cache_dir={root / 'cache'}", f"run_dir={root / 'run'}", f"outputs_dir={root}",
              "logger=[tensorboard,wandb,mlflow]"]
    with pytest.MonkeyPatch.context() as env:
        for var in ("WANDB_MODE", "WANDB_API_KEY"):
            env.delenv(var, raising=False)
        env.setenv("NETRC", str(root / "none"))  # not logged in to W&B: offline
        env.setenv("WANDB_SILENT", "true")
        for overrides in ([*common, "trainer.max_steps=6"], [*common, "trainer.max_steps=9", f"resume={root / 'run'}"]):
            train(compose(overrides), overrides=overrides)
    return SimpleNamespace(dir=root / "run", outputs=root)


def samples(run_dir):
    """step -> text of the samples in samples.txt (each is `--- step N`, then the text and a newline)."""
    chunks = (run_dir / "samples.txt").read_text().split("--- step ")[1:]
    return {int(c.split("\n", 1)[0]): c.split("\n", 1)[1][:-1] for c in chunks}


def test_group_selects_one_several_or_none(compose):
    assert set(compose(["logger=[tensorboard,wandb]"]).logger) == {"tensorboard", "wandb"}
    assert set(compose([]).logger) == {"csv"}
    assert dict(compose(["logger=none"]).logger) == {}
    assert compose(["logger=wandb", "logger.wandb.project=p"]).logger.wandb.project == "p"
    assert compose(["logger=mlflow"]).logger.mlflow.tracking_uri == "sqlite:///outputs/mlflow.db"


def test_unknown_and_missing_loggers_are_one_line(tmp_path):
    from builder.train.check import check_loggers
    from builder.train.loggers import make_loggers, mlflow_store
    assert check_loggers({"tensorbord": {}}) == [
        "logger.tensorbord: unknown logger; available: csv, tensorboard, wandb, mlflow "
        "(or a mapping with a Lightning logger's _target_)"]
    assert check_loggers({"mlflow": {"tracking_uri": "outputs/mlruns"}}) == [
        "logger.mlflow.tracking_uri: 'outputs/mlruns' is a file store, which MLflow has put in maintenance mode; "
        "give sqlite:///PATH/mlflow.db or a server's http://HOST:PORT"]
    assert check_loggers({"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}) == []
    if importlib.util.find_spec("mlflow") is None:
        message = r"^logger.mlflow: needs the mlflow package \(pip install 'builder\[mlflow\]'\)$"
        with pytest.raises(ConfigError, match=message):
            make_loggers({"mlflow": {}}, tmp_path, [])
    else:
        with socket.socket() as s:  # a port nobody listens on once this socket is closed
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        message = rf"^logger.mlflow.tracking_uri: no server answers at http://127.0.0.1:{port} \(Connection refused\)$"
        with pytest.raises(ConfigError, match=message):
            mlflow_store(f"http://127.0.0.1:{port}")


def test_wandb_mode_auto(monkeypatch, tmp_path):
    from builder.train.loggers import wandb_mode
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"
    assert wandb_mode("online") == "online"


def test_only_the_chosen_loggers_package_is_imported(cli_env, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    script = f"""
import sys
from hydra import compose, initialize_config_dir
from builder.config import register_resolvers
from builder.errors import ConfigError
from builder.train.check import check
register_resolvers()
with initialize_config_dir(config_dir="{cli_env.cwd / 'conf'}", version_base="1.3"):
    cfg = compose(config_name="train", overrides=["logger=[mlflow,wandb]", "model.activation=relux"])
try:
    check(cfg)
except ConfigError as e:
    print(e.problems[0])
print(sorted(m for m in ("mlflow", "wandb", "tensorboard", "torch") if m in sys.modules))
"""
    out = subprocess.run([cli_env.python, "-c", script], env=cli_env.env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("model.nodes.act.block: unknown block 'relux'")
    assert out.stdout.splitlines()[1] == "[]"  # a config error is found before any of them is imported

    from builder.train.loggers import make_loggers
    for other in ("mlflow", "wandb"):
        monkeypatch.setitem(sys.modules, other, None)  # importing it now raises ImportError
    _, board = make_loggers({"tensorboard": {}}, tmp_path, [])
    board.experiment.add_scalar("x", 1.0, 0)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def wandb_records(path):
    """The records of an offline W&B run file (LevelDB-style log: 32 KiB blocks of CRC, length, type, data)."""
    from wandb.proto import wandb_internal_pb2
    data, pos, part = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or its last piece
            yield wandb_internal_pb2.Record.FromString(part)
            part = b""


@pytest.mark.usefixtures("mlflow_server")  # the server of a later test boots while this one's run trains
def test_offline_wandb_run_files_and_resume(gpt_run):
    run = gpt_run.dir
    run_id = (run / "wandb_id.txt").read_text().strip()
    first, second = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))  # the same W&B run, continued
    records = list(wandb_records(next(first.glob("*.wandb"))))
    config = {u.key: json.loads(u.value_json) for r in records if r.HasField("config") for u in r.config.update}
    assert config["model"]["d_model"] == 32 and config["trainer"]["max_steps"] == 6
    history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
               for r in records if r.HasField("history")]
    assert [h["trainer/global_step"] for h in history if "val/loss" in h] == ["2", "5"]  # steps 3 and 6
    assert sum("train/loss" in h for h in history) == 6
    files = [f.path for r in records if r.HasField("files") for f in r.files.files]
    assert "config.yaml" in files and (first / "files" / "config.yaml").read_text().startswith("data:")
    assert sum(f.startswith("media/images/attention/") for f in files) == 2  # one picture per validation
    table = json.loads((first / "files" / [f for f in files if f.startswith("media/table/sample_")][-1]).read_text())
    assert table["data"] == [[3, samples(run)[3]], [6, samples(run)[6]]]
    assert [r.exit.exit_code for r in records if r.HasField("exit")] == [0]
    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(first), str(second)],
                          capture_output=True, text=True, timeout=60)
    assert sync.returncode == 0 and "Would sync 2 run(s)" in sync.stdout + sync.stderr


def test_tensorboard_event_files_and_hparams(gpt_run):
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    run = gpt_run.dir
    assert (run / "metrics.csv").is_file()  # always, next to the dashboards
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one directory, both sessions
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    assert {"train/loss", "val/loss", "best/val/loss"} <= set(events.Tags()["scalars"])
    assert {"config/text_summary", "model/plan/text_summary", "sample/text_summary"} <= set(events.Tags()["tensors"])
    assert events.Tags()["images"] == ["attention/layers.0.attn"]
    best = events.Scalars("best/val/loss")
    assert [b.step for b in best] == [5, 8]  # each session's best so far, at its last step
    assert best[-1].value == pytest.approx(OmegaConf.load(run / "result.yaml").value)
    session = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["experiment"].string_value == "gpt_char"
    assert session.hparams["model.d_model"].number_value == 32
    assert "run_dir" not in session.hparams and "data.cache_dir" in session.hparams


def mlflow_runs(uri, experiment="builder"):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], order_by=["start_time"])
    return client, runs


def artifacts(client, run_id, path=None):
    return sorted(p for a in client.list_artifacts(run_id, path)
                  for p in (artifacts(client, run_id, a.path) if a.is_dir else [a.path]))


def metric_steps(run_dir, key):
    from builder.train.metrics_csv import read_metrics
    rows = read_metrics(run_dir / "metrics.csv")
    return [(int(r["step"]), pytest.approx(r[key], rel=1e-5)) for r in rows if key in r]


def test_mlflow_sqlite_default_store_resume_and_status(gpt_run, compose):
    import yaml

    from builder.train.loggers import flatten
    from builder.train.run import train
    run, outputs = gpt_run.dir, gpt_run.outputs
    client, [mlrun] = mlflow_runs(f"sqlite:///{outputs / 'mlflow.db'}")  # one run, continued
    run_id = mlrun.info.run_id
    assert (run / "mlflow_id.txt").read_text().strip() == run_id
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == f"{outputs.name}/run"
    assert (mlrun.data.tags["status"], mlrun.data.tags["experiment"]) == ("completed", "gpt_char")
    config = flatten(yaml.safe_load((run / "config.yaml").read_text()))
    config.update({"trainer.max_steps": 6, "resume": None})  # a param keeps the value the run started with
    assert mlrun.data.params == {k: str(v)[:500] for k, v in config.items()}
    for key in ("train/loss", "val/loss"):  # both sessions' values, in one history
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        assert history == metric_steps(run, key) and history[-1][0] == 8
    assert artifacts(client, run_id) == [*(f"attention/step_{n}/layers.0.attn.png" for n in (3, 6, 9)), "config.yaml",
                                         "model/plan.md", *(f"sample/step_{n}.md" for n in (3, 6, 9))]
    local = client.download_artifacts(run_id, "", str(outputs / "download"))
    assert open(f"{local}/config.yaml").read() == (run / "config.yaml").read_text()  # the resumed run's
    assert open(f"{local}/attention/step_9/layers.0.attn.png", "rb").read() == \
        (run / "attention/step_9/layers.0.attn.png").read_bytes()
    assert samples(run)[9].replace("\n", "<br>") in open(f"{local}/sample/step_9.md").read()
    assert "| node | block | output shape | parameters |" in open(f"{local}/model/plan.md").read()

    failed = [*TINY, "optim.lr=1e30", "trainer.max_steps=4", "logger=mlflow", f"outputs_dir={outputs}",
              f"run_dir={outputs / 'nan'}"]
    with pytest.raises(Exception, match="nan"):
        train(compose(failed), overrides=failed)
    _, runs = mlflow_runs(f"sqlite:///{outputs / 'mlflow.db'}")
    assert [(r.data.tags["status"], r.info.status) for r in runs] == [("completed", "FINISHED"), ("failed", "FAILED")]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """An `mlflow server` (SQLite store, served artifacts) on a free port of 127.0.0.1, started when first asked
    for (it takes seconds to boot) and stopped after this module; gives a function that waits until it answers
    and returns its URL."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "served")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    url = f"http://127.0.0.1:{port}"

    def ready() -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                return url
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start:\n" + (root / "server.log").read_text()[-3000:])
                time.sleep(0.2)
    try:
        yield ready
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@needs_mlflow
def test_mlflow_server_and_resume_continue_one_run(mlflow_server, compose, tmp_path):
    from builder.train.run import train
    url, run = mlflow_server(), tmp_path / "run"
    overrides = [*TINY, "logger=mlflow", f"logger.mlflow.tracking_uri={url}", f"run_dir={run}"]
    train(compose([*overrides, "trainer.max_steps=6"]), overrides=[*overrides, "trainer.max_steps=6"])
    train(compose([*overrides, "trainer.max_steps=10", f"resume={run}"]),
          overrides=[*overrides, "trainer.max_steps=10", f"resume={run}"])
    client, [mlrun] = mlflow_runs(url)  # one run, continued
    run_id = mlrun.info.run_id
    assert (run / "mlflow_id.txt").read_text().strip() == run_id
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags["status"] == "completed"
    assert mlrun.data.params["trainer.max_steps"] == "6"  # a param keeps the value the run started with
    assert mlrun.data.params["model.hidden"] == "3"
    for key in ("train/loss", "val/acc"):  # both sessions' values, in one history
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == metric_steps(run, key) and history[0][0] < 6 <= history[-1][0]
    assert artifacts(client, run_id) == ["config.yaml", "model/plan.md"]
    assert client.get_experiment(mlrun.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    local = client.download_artifacts(run_id, "config.yaml", str(tmp_path / "download"))
    assert open(local).read() == (run / "config.yaml").read_text()  # the resumed run's config
