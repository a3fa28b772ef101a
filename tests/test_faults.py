"""Faults a run survives: SIGTERM and Ctrl-C end it at a batch boundary with last.ckpt saved there and resume
exactly; a full disk keeps the previous last.ckpt and stops in one line; a crashing logger or data loader
worker leaves the last checkpoint whole and resumable; result.yaml says in words what happened."""
from __future__ import annotations

import errno
import signal
import subprocess
import time

import pytest
import torch
from omegaconf import OmegaConf

from builder.train.metrics_csv import read_metrics

TOY = ["experiment=toy_classifier", "data.bayes_samples=0", "data.n_train=256", "data.n_val=64",
       "data.batch_size=16", "trainer.max_epochs=-1", "trainer.max_steps=400",
       "trainer.val_check_interval=100", "trainer.check_val_every_n_epoch=null", "trainer.log_every_n_steps=1",
       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def weights(run):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(compose, tmp_path_factory):
    from builder.train.run import train
    run = tmp_path_factory.mktemp("uninterrupted")
    train(compose([*TOY, f"run_dir={run}"]))
    return run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_saves_the_step_and_resume_continues_exactly(sig, uninterrupted, compose, cli_env, tmp_path):
    from builder.train.run import train
    run = tmp_path / "run"
    overrides = TOY
    # a script's background job ignores SIGINT: the child restores the default, as a terminal's foreground job has
    proc = subprocess.Popen([cli_env.python, "-m", "builder.cli.train", *overrides, f"run_dir={run}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env.env,
                            cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        rows = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else []
        if any(r.get("step", 0) >= 20 for r in rows):
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    result = OmegaConf.load(run / "result.yaml")
    name = "SIGTERM" if sig == signal.SIGTERM else r"Ctrl-C \(SIGINT\)"
    assert result.status == "interrupted"
    step = weights(run)["global_step"]
    assert 20 <= step < 400 and result.steps == step
    import re
    assert re.fullmatch(rf"interrupted by {name} at step {step}; checkpoints/last.ckpt holds that step; "
                        rf"resume=.*run continues", result.error), result.error
    assert f"builder-train: {result.error}" in err and "Traceback" not in err
    train(compose([*overrides, f"run_dir={run}", f"resume={run}"]))
    a, b = weights(uninterrupted), weights(run)
    assert a["global_step"] == b["global_step"] == 400
    for key in a["state_dict"]:
        assert torch.allclose(a["state_dict"][key], b["state_dict"][key], atol=1e-6, rtol=0), key


def test_a_full_disk_keeps_the_previous_checkpoint(compose, tmp_path, monkeypatch):
    import builder.train.safety as safety
    from builder.train.run import train
    real, calls = safety.torch.save, []

    def save(obj, f):
        calls.append(obj.get("global_step"))
        if len(calls) > 1:
            f.write(b"PK\x03\x04 the start of a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, f)
    monkeypatch.setattr(safety.torch, "save", save)
    with pytest.raises(safety.DiskFull, match=r"^cannot write .*last.ckpt: no space left on the device \(or over "
                                              r"quota\); the previous last.ckpt is intact"):
        train(compose([*TOY, "ckpt_every_n_steps=10", f"run_dir={tmp_path}"]))
    monkeypatch.undo()
    assert weights(tmp_path)["global_step"] == 10
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]  # no temporary left
    result = OmegaConf.load(tmp_path / "result.yaml")
    assert result.status == "failed" and result.error.startswith("cannot write ")


def test_a_crashing_logger_leaves_a_checkpoint_to_resume(compose, tmp_path, uninterrupted):
    from lightning.pytorch.callbacks import Callback

    from builder.train.run import train

    class Unreachable(Callback):  # stands in for a dashboard whose server went away
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 37:
                raise ConnectionError("wandb.ai unreachable")

    with pytest.raises(ConnectionError):
        train(compose([*TOY, "ckpt_every_n_steps=10", f"run_dir={tmp_path}"]), callbacks=(Unreachable(),))
    assert weights(tmp_path)["global_step"] == 30
    result = OmegaConf.load(tmp_path / "result.yaml")
    assert result.status == "failed" and result.error == "ConnectionError: wandb.ai unreachable"
    train(compose([*TOY, "ckpt_every_n_steps=10", f"run_dir={tmp_path}", f"resume={tmp_path}"]))
    a, b = weights(uninterrupted), weights(tmp_path)
    assert a["global_step"] == b["global_step"] == 400
    for key in a["state_dict"]:
        assert torch.allclose(a["state_dict"][key], b["state_dict"][key], atol=1e-6, rtol=0), key


def test_a_crashing_data_loader_worker_leaves_the_last_checkpoint(compose, tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import TensorDataset

    from builder.train.run import train
    broken = {"on": False}
    real = TensorDataset.__getitem__

    def getitem(self, i):
        if broken["on"]:
            raise OSError("the data disk went away")
        return real(self, i)
    monkeypatch.setattr(TensorDataset, "__getitem__", getitem)

    class BreakAfterEpoch(Callback):  # workers are forked at each epoch start: the next ones see the flag
        def on_train_epoch_end(self, trainer, *args):
            broken["on"] = True

    with pytest.raises(Exception, match="the data disk went away"):
        train(compose([*TOY, "data.num_workers=2", "ckpt_every_n_steps=5", f"run_dir={tmp_path}"]),
              callbacks=(BreakAfterEpoch(),))
    assert weights(tmp_path)["global_step"] == 15  # the last periodic save before the epoch (16 steps) ended
    assert "OSError: the data disk went away" in OmegaConf.load(tmp_path / "result.yaml").error
