"""Resume and faults: a SIGKILLed run resumed ends exactly where an uninterrupted one does; checkpoints are
written atomically; a NaN loss stops with the last good checkpoint kept; bad resumes fail in one line."""
from __future__ import annotations

import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from builder.serve.checkpoint import CheckpointError
from builder.train.metrics_csv import read_metrics

# checkpoints at steps 5, 8 (after validation) and 10; the run dies at step 13, mid-epoch, and is resumed
STEPS = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
         "ckpt_every_n_steps=5", "trainer.val_check_interval=8", "trainer.check_val_every_n_epoch=null"]
GPT = ["experiment=gpt_char", "model.n_layer=2", "model.n_head=2", "model.d_model=32", "model.block_size=32",
       "model.dropout=0.2", "data.max_val_windows=8", "task.sample_tokens=20", "optim.warmup_steps=2",
       "trainer.max_steps=25", *STEPS]
TOY = ["experiment=toy_classifier", "data.bayes_samples=0", "data.n_train=256", "data.n_val=64", "optim=sgd",
       "trainer.max_steps=30", *STEPS]  # 4 batches per epoch: the resumed epoch continues its permutation

KILLER = """
import os, signal, sys
from lightning.pytorch.callbacks import Callback
from builder.config import compose
from builder.train.run import train

class KillAt(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 13:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save: as if the machine died

overrides = sys.argv[1:]
train(compose(overrides), overrides=overrides, callbacks=(KillAt(),))
"""


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_run(full, resumed):
    a, b = _weights(full), _weights(resumed)
    assert a["global_step"] == b["global_step"]
    for key in a["state_dict"]:
        assert torch.allclose(a["state_dict"][key], b["state_dict"][key], atol=1e-6, rtol=0), key
    # metrics.csv continues: rows the dead process logged after its checkpoint are replaced, not repeated
    def rows(run):
        return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in read_metrics(run / "metrics.csv")]
    assert rows(resumed) == rows(full)
    assert OmegaConf.load(resumed / "result.yaml").status == "completed"


def test_killed_gpt_run_resumes_to_the_same_weights(compose, cli_env, tmp_path):
    """SIGKILL mid-epoch; dropout on: the generator states and the data stream must both resume exactly."""
    from builder.train.run import train
    base = [*GPT, f"data.cache_dir={tmp_path / 'cache'}"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = subprocess.run([cli_env.python, "-c", KILLER, *base, f"run_dir={killed}"], capture_output=True,
                       text=True, env=cli_env.env, cwd=cli_env.cwd, timeout=180)
    assert r.returncode == -9, r.stderr[-2000:]
    assert _weights(killed)["global_step"] == 10  # the periodic checkpoint before the kill
    assert not list((killed / "checkpoints").glob(".*tmp"))  # no half-written file left beside it

    value = train(compose([*base, f"run_dir={killed}", f"resume={killed}"]))
    assert value == pytest.approx(train(compose([*base, f"run_dir={full}"])), abs=1e-6)
    assert_same_run(full, killed)
    assert (killed / "samples.txt").read_text().count("--- step") == 4  # 8, 16, 24 and the final 25, no repeats


def test_crashed_toy_run_resumes_to_the_same_weights(compose, tmp_path):
    from lightning.pytorch.callbacks import Callback

    from builder.train.run import train

    class CrashAt(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 13:
                raise RuntimeError("simulated crash")

    full, crashed = tmp_path / "full", tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose([*TOY, f"run_dir={crashed}"]), callbacks=(CrashAt(),))
    assert _weights(crashed)["global_step"] == 10
    train(compose([*TOY, f"run_dir={crashed}", f"resume={crashed}"]))
    train(compose([*TOY, f"run_dir={full}"]))
    assert_same_run(full, crashed)


def test_extending_a_finished_run_equals_the_longer_run(compose, tmp_path):
    """resume=RUN trainer.max_steps=40 after 20 steps: the decay follows the new length, as if run at once."""
    from builder.train.run import train
    base = [*TOY[:-len(STEPS) - 1], "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "trainer.log_every_n_steps=1"]
    short, long_ = tmp_path / "short", tmp_path / "long"
    train(compose([*base, "trainer.max_steps=20", f"run_dir={short}"]))
    train(compose([*base, "trainer.max_steps=40", f"run_dir={short}", f"resume={short}"]))
    train(compose([*base, "trainer.max_steps=40", f"run_dir={long_}"]))
    a, b = _weights(short), _weights(long_)
    assert a["global_step"] == b["global_step"] == 40
    for key in a["state_dict"]:
        assert torch.allclose(a["state_dict"][key], b["state_dict"][key], atol=1e-6, rtol=0), key


def test_atomic_save_keeps_the_old_file(tmp_path, monkeypatch):
    import builder.train.safety as safety
    target = tmp_path / "last.ckpt"
    safety.atomic_torch_save({"step": 1}, target)

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # stands in for a kill during the write

    monkeypatch.setattr(safety.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        safety.atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(compose, tmp_path):
    from lightning.pytorch.callbacks import Callback

    from builder.train.safety import NonFiniteLoss

    class PoisonAt(Callback):  # a weight turns NaN before step 8: its loss is the first non-finite one
        def on_train_batch_start(self, trainer, pl_module, *args):
            if trainer.global_step == 7:
                next(pl_module.parameters()).data.fill_(float("nan"))

    from builder.train.run import train
    run_dir = tmp_path / "nan_run"
    overrides = ["experiment=toy_classifier", "trainer.enable_progress_bar=false", "data.bayes_samples=0",
                 "trainer.enable_model_summary=false", "trainer.max_steps=20", "ckpt_every_n_steps=5",
                 f"run_dir={run_dir}"]
    with pytest.raises(NonFiniteLoss, match=r"train/loss is nan at step 8; .* last good checkpoint is .*last.ckpt "
                                            r"\(step 5\)"):
        train(compose(overrides), callbacks=(PoisonAt(),))
    ckpt = _weights(run_dir)
    assert ckpt["global_step"] == 5 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    result = OmegaConf.load(run_dir / "result.yaml")
    assert result.status == "failed" and result.error.startswith("train/loss is nan at step 8")


def test_resume_refuses_a_changed_model_and_a_truncated_file(toy_run, compose, tmp_path):
    import shutil

    from builder.train.run import train
    run = tmp_path / "copy"
    shutil.copytree(toy_run.dir, run)
    base = ["experiment=toy_classifier", "data.bayes_samples=0", f"run_dir={run}", f"resume={run}"]
    with pytest.raises(CheckpointError, match=r"^resume: .*last.ckpt was trained with a different model "
                                              r"\(model.hidden is 3 there and 8 here\)"):
        train(compose([*base, "model.hidden=8"]))
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"^resume: .*last.ckpt is a damaged checkpoint, cut off or corrupted"):
        train(compose(base))


def test_resume_auto_continues_only_a_run_with_a_checkpoint(tmp_path):
    from builder.train.rundir import effective_resume
    cfg = OmegaConf.create({"resume": "auto"})
    assert effective_resume(cfg, tmp_path) is None  # a first start
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert effective_resume(cfg, tmp_path) == str(tmp_path)  # a requeued job


def test_resume_reuses_the_original_command_line(tmp_path):
    from builder.train.resume import with_original_overrides
    from builder.train.rundir import point_latest, resume_dir
    run = tmp_path / "outputs" / "2025-01-01" / "12-00-00"
    run.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["experiment=gpt_char", "trainer.max_steps=100", "run_dir=x"]),
                   run / "overrides.yaml")
    link = point_latest(run, tmp_path / "outputs")
    point_latest(run, tmp_path / "outputs")  # replacing the link is atomic and idempotent
    assert link.is_symlink() and not link.readlink().is_absolute() and link.resolve() == run.resolve()
    assert resume_dir("latest", str(tmp_path / "outputs")) == run.resolve()
    args = with_original_overrides(["resume=latest", "trainer.max_steps=200"], str(tmp_path / "outputs"))
    assert args == ["experiment=gpt_char", "resume=latest", "trainer.max_steps=200"]


# Tiny GPTs validated at steps 2, 4, ..., 12; high learning rates make val/loss go up and down, so the test
# looks for a learning rate whose uninterrupted run shows the case, instead of trusting one run's numbers
# (they change with the processor's kernels).
SEQUENCE = ["experiment=gpt_char", "trainer.val_check_interval=2", "data.max_val_windows=10", "model.n_layer=2",
            "optim.warmup_steps=2", "optim.decay_steps=30", "task.sample_tokens=0", "trainer.max_steps=12",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
LRS = (0.5, 0.3, 1.0, 0.2, 0.1, 0.05, 0.03)


def stop_for(case: str, losses: dict[int, float]) -> int | None:
    """Where to stop a run with these val losses by step so that the resume meets `case`, or None."""
    steps = sorted(losses)
    best = min(steps, key=losses.get)
    if case == "better-then-worse":  # the best comes before the stop, every later validation is worse
        return best if best < steps[-1] else None
    for stop in steps[1:-1]:  # worse-then-better: at the stop the best is an earlier step, the overall best later
        if min((s for s in steps if s <= stop), key=losses.get) != stop and best > stop:
            return stop
    return None


@pytest.mark.parametrize("case", ["better-then-worse", "worse-then-better"])
def test_best_checkpoint_after_a_resume_is_the_uninterrupted_runs(case, compose, tmp_path):
    from builder.train.run import train
    for lr in LRS:
        base = [*SEQUENCE, f"optim.lr={lr}", f"data.cache_dir={tmp_path / 'cache'}"]
        full, split = tmp_path / f"full{lr}", tmp_path / f"split{lr}"
        train(compose([*base, f"run_dir={full}"]))
        losses = {int(r["step"]) + 1: r["val/loss"] for r in read_metrics(full / "metrics.csv") if "val/loss" in r}
        stop = stop_for(case, losses)
        if stop is not None:
            break
    else:
        pytest.fail(f"no learning rate of {LRS} gave a run that is {case}")
    best_step = min(losses, key=losses.get)
    train(compose([*base, f"trainer.max_steps={stop}", f"run_dir={split}"]))
    train(compose([*base, f"run_dir={split}", f"resume={split}"]))
    a, b = (torch.load(r / "checkpoints" / "best.ckpt", weights_only=True) for r in (full, split))
    assert a["global_step"] == b["global_step"] == best_step
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert OmegaConf.load(split / "result.yaml").value == pytest.approx(OmegaConf.load(full / "result.yaml").value)
    train(compose([*base, f"run_dir={split}", f"resume={split}"]))  # a no-op resume of the finished run
    assert OmegaConf.load(split / "result.yaml").value == OmegaConf.load(full / "result.yaml").value


def test_stop_for_finds_each_case():
    assert stop_for("better-then-worse", {2: 5.0, 4: 3.0, 6: 4.0}) == 4
    assert stop_for("better-then-worse", {2: 5.0, 4: 4.0, 6: 3.0}) is None
    assert stop_for("worse-then-better", {2: 4.0, 4: 5.0, 6: 4.5, 8: 3.0}) == 4
    assert stop_for("worse-then-better", {2: 5.0, 4: 4.0, 6: 3.0}) is None


def test_a_resume_applies_a_new_schedule_and_records_it(compose, tmp_path):
    """resume with a new lr and length = the run trained with the new schedule from the resumed step on."""
    from builder.train.optim import WarmupCosine
    from builder.train.run import train
    base = [*TOY[:-len(STEPS) - 1], *STEPS[:3], "optim.warmup_steps=0"]
    run = tmp_path / "run"
    first, more = [*base, "trainer.max_steps=10", f"run_dir={run}"], ["trainer.max_steps=20", "optim.lr=0.5"]
    train(compose(first), overrides=first)
    train(compose([*first, *more, f"resume={run}"]), overrides=more)
    lrs = {int(r["step"]): r["lr"] for r in read_metrics(run / "metrics.csv") if "lr" in r}
    expected = WarmupCosine(0, 20, OmegaConf.load(run / "config.yaml").optim.min_lr / 0.5)
    for step in range(10, 20):
        assert lrs[step] == pytest.approx(0.5 * expected(step), rel=1e-6), step
    assert OmegaConf.load(run / "config.yaml").optim.lr == 0.5
    assert list(OmegaConf.load(run / "overrides.yaml")) == [*first, *more]


def test_a_resume_refuses_what_it_cannot_apply_and_writes_nothing(compose, toy_run, tmp_path):
    import shutil

    from builder.train.run import train
    run = tmp_path / "copy"
    shutil.copytree(toy_run.dir, run)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"^resume: .*last.ckpt was trained with settings a resume cannot "
                                              r"change: data.batch_size is \d+ there and 7 here, seed is 0 there "
                                              r"and 3 here; a resume may change trainer.\*, .*optim.lr"):
        train(compose(["experiment=toy_classifier", "data.bayes_samples=0", f"run_dir={run}", f"resume={run}",
                       "data.batch_size=7", "seed=3", "data.n_train=1000", "data.n_val=1000"]))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_a_null_seed_is_drawn_recorded_and_kept_on_resume(compose, tmp_path):
    from builder.train.run import train
    base = [*TOY[:-len(STEPS) - 1], *STEPS[:3], "seed=null", "trainer.max_steps=4"]
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        train(compose([*base, f"run_dir={run}"]))
    seeds = [OmegaConf.load(r / "config.yaml").seed for r in runs]
    assert all(isinstance(s, int) for s in seeds) and seeds[0] != seeds[1]
    assert [OmegaConf.load(r / "result.yaml").seed for r in runs] == seeds
    train(compose([*base, "trainer.max_steps=8", f"run_dir={runs[0]}", f"resume={runs[0]}"]))
    assert OmegaConf.load(runs[0] / "config.yaml").seed == seeds[0]


def test_the_progress_bar_counts_the_runs_optimizer_steps(compose, tmp_path):
    """Accumulation counts optimizer steps, and a resumed run's bar starts where the run stood."""
    from lightning.pytorch.callbacks import Callback

    from builder.train.run import train

    class Seen(Callback):
        bars: list[tuple[float, float]] = []

        def on_train_end(self, trainer, *args):
            bar = trainer.progress_bar_callback
            task = bar.progress.tasks[bar.train_progress_bar_id]
            self.bars.append((task.completed, task.total))

    base = ["experiment=toy_classifier", "data.bayes_samples=0", "data.n_train=256", "data.n_val=64",
            "data.batch_size=16", "trainer.accumulate_grad_batches=2", "trainer.enable_model_summary=false",
            f"run_dir={tmp_path}"]
    train(compose([*base, "trainer.max_epochs=2"]), callbacks=(Seen(),))
    train(compose([*base, "trainer.max_epochs=3", f"resume={tmp_path}"]), callbacks=(Seen(),))
    assert Seen.bars == [(16, 16), (24, 24)]  # 8 optimizer steps an epoch
