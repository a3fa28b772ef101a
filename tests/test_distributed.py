"""Two CPU processes (gloo) under Hydra: DDP and FSDP train a small GPT exactly like one process with the same
global batch, in one run directory, with Hydra never creating a second one."""
from __future__ import annotations

import subprocess

import pytest
import torch

from builder.metrics_csv import read_metrics

GPT = ["experiment=gpt_char", "model.n_layer=2", "model.n_head=2", "model.d_model=32", "model.block_size=32",
       "data.max_val_windows=8", "task.sample_tokens=0", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "trainer.max_steps=5",
       "trainer.val_check_interval=5", "optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def single(compose, tmp_path_factory):
    """The reference: one process, global batch 8."""
    from builder.train import train
    run = tmp_path_factory.mktemp("single")
    train(compose([*GPT, "data.batch_size=8", f"run_dir={run}", f"data.cache_dir={run.parent / 'cache'}"]))
    return run


def final(run):
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    val = [r["val/loss"] for r in read_metrics(run / "metrics.csv") if "val/loss" in r]
    return ckpt, val[-1]


@pytest.mark.parametrize("preset", ["ddp", "fsdp"])
def test_two_processes_match_one(preset, single, cli_env, tmp_path):
    # the working directory is empty: any directory Hydra or a child process made by itself would show up
    cmd = [cli_env.python, "-m", "builder.cli.train", *GPT, f"trainer={preset}", "trainer.devices=2",
           "data.batch_size=4", "run_dir=run", f"data.cache_dir={single.parent / 'cache'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env.env, cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert "Starting with 2 processes" in r.stdout + r.stderr
    (ckpt, val), (ref, ref_val) = final(tmp_path / "run"), final(single)
    assert ckpt["global_step"] == ref["global_step"] == 5
    assert ckpt["state_dict"].keys() == ref["state_dict"].keys()  # FSDP checkpoints hold whole tensors
    for key, value in ref["state_dict"].items():
        assert torch.allclose(ckpt["state_dict"][key], value, atol=1e-5, rtol=0), key
    assert val == pytest.approx(ref_val, abs=1e-5)
