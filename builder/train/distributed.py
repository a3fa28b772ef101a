"""Several processes: DDP and FSDP on one machine or many, under Hydra or from Python.

Lightning starts the extra processes of a node by re-running the command line (under Hydra with
`hydra.run.dir` added). That re-runs a whole sweep under `-m`, re-runs pytest inside a test, and makes
every process a Hydra job. Instead, `use_config_launcher` starts each extra process as
`python -m builder.train.child` with this run's resolved config in an environment variable: the children
train the same config in the same run directory, and only rank 0 writes files or talks to dashboards.
Processes created by a cluster (SLURM, torchrun) are left alone: Lightning only launches when the
environment has not already created them.

`FSDP` is Lightning's ModelParallelStrategy with every process in one data-parallel dimension (pure
fully_shard FSDP2, CPU with gloo included), and `fsdp_task` gives a task the `configure_model` hook that
shards each repeat copy (a transformer layer) and then the root module.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import traceback
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from hydra.utils import get_class, instantiate
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry
from omegaconf import OmegaConf
from torch.distributed.fsdp import FSDPModule, fully_shard

from builder.errors import RunStopped
from builder.graph.assemble import Repeat
from builder.serve.checkpoint import model_with_weights
from builder.train.internals import (
    SubprocessScriptLauncher,
    launcher,
    set_launcher,
    set_parallel_sizes,
)

CONFIG_ENV = "BUILDER_DISTRIBUTED_CONFIG"
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


class ConfigLauncher(SubprocessScriptLauncher):
    def __init__(self, base: SubprocessScriptLauncher, config_yaml: str, threads: int | None):
        super().__init__(base.cluster_environment, base.num_processes, base.num_nodes)
        self.config_yaml, self.threads = config_yaml, threads

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if self.threads and trainer is not None and trainer.strategy.root_device.type == "cpu":
            os.environ["OMP_NUM_THREADS"] = str(self.threads)  # N CPU ranks share the cores: no oversubscription
        return super().launch(function, *args, trainer=trainer, **kwargs)

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank), CONFIG_ENV: self.config_yaml}
            self.procs.append(subprocess.Popen([sys.executable, "-m", "builder.train.child"], env=child_env))


def use_config_launcher(trainer: Any, config: dict[str, Any], threads: int | None) -> ConfigLauncher | None:
    """Swap Lightning's script launcher for ours; None when this process needs no children."""
    base = launcher(trainer.strategy)
    if type(base) is not SubprocessScriptLauncher or base.cluster_environment.creates_processes_externally:
        return None
    ours = ConfigLauncher(base, OmegaConf.to_yaml(OmegaConf.create(config)), threads)
    set_launcher(trainer.strategy, ours)
    return ours


def finish_launch(ours: ConfigLauncher | None, saved_env: dict[str, str | None], failed: bool = False) -> None:
    """After fit: wait for the children (briefly when this process failed: a stuck child is killed), close
    the process group, and undo the launcher's environment, so the next run in this process (a sweep's next
    trial, a test) starts clean."""
    if ours is not None:
        for proc in ours.procs:
            try:
                proc.wait(timeout=10 if failed else 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_strategy(spec: Any, timeout_s: float | None = None) -> Any:
    """Lightning's strategy from `trainer.strategy`: a registered name ("ddp") or a mapping with `_target_`
    (conf/trainer/fsdp.yaml); strategies that start a process group get `trainer.process_group_timeout`."""

    extra = {"timeout": timedelta(seconds=float(timeout_s))} if timeout_s else {}
    if isinstance(spec, dict) and spec.get("_target_"):
        accepts = "timeout" in inspect.signature(get_class(spec["_target_"])).parameters
        return instantiate(spec, **(extra if accepts and "timeout" not in spec else {}))
    if isinstance(spec, str) and spec in StrategyRegistry and extra:
        entry = StrategyRegistry[spec]
        if "timeout" in inspect.signature(entry["strategy"]).parameters:
            return entry["strategy"](**entry["init_params"], **extra)
    return spec


def collective_failure(error: BaseException, trainer: Any, timeout_s: float | None) -> Any:
    """A RunStopped naming this rank and the operation, when `error` came from a collective that could not
    complete (another process died, stopped answering or called a different collective); else None."""


    frames = traceback.extract_tb(error.__traceback__)
    ops = [f.name for f in frames if f.filename.endswith("distributed_c10d.py") and not f.name.startswith("_")]
    backend = isinstance(error, getattr(dist, "DistError", ())) or any(
        word in str(error) for word in ("gloo", "NCCL", "Connection reset by peer", "Timed out waiting",
                                        "pair closure"))  # gloo's timeout inside DDP's buffer broadcast
    if not ops and not backend:
        return None
    if ops:
        op = f"the collective {ops[-1]}"
    elif any(f.name == "backward" for f in frames):
        op = "the gradient all-reduce of the backward pass"
    else:
        op = "a collective operation"
    rank = trainer.global_rank if trainer is not None else int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    reason = reason.split("] ", 1)[-1] if reason.startswith("[") else reason  # gloo's "[file.cc:123] " prefix
    bound = f"trainer.process_group_timeout={timeout_s:g} s bounds the wait" if timeout_s else ""
    return RunStopped(f"rank {rank}: {op} did not complete ({reason}); another process failed, stopped or is "
                      f"stuck{'; ' + bound if bound else ''}")


def launch_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in LAUNCH_ENV}


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, before any Trainer exists (set by a launcher or a cluster)."""
    keys = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK", "NODE_RANK")
    return all(os.environ.get(k, "0") == "0" for k in keys)


class FSDP(ModelParallelStrategy):
    """fully_shard over every process (data_parallel_size = world size, no tensor parallelism); checkpoints
    are gathered into one file on rank 0, so builder.load and resume read them like any other."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("save_distributed_checkpoint", False)
        super().__init__(**kwargs)

    def setup_environment(self) -> None:
        set_parallel_sizes(self, self.num_nodes * self.num_processes, 1)
        super().setup_environment()


def is_sharded(module: Any) -> bool:
    """Whether `module` holds only this rank's shard of its weights (FSDP2 `fully_shard`)."""
    return isinstance(module, FSDPModule)


@contextmanager
def rank_zero_model(task: Any) -> Iterator[Any]:
    """The model, in eval mode, for work that rank 0 does alone (validation samples, attention pictures);
    None on the other ranks. Every rank must enter this block.

    With whole weights on every rank (one process, DDP) it is the task's own model. Under FSDP rank 0
    alone cannot call the sharded model: its forward all-gathers each layer's weights, the other ranks
    never join, and gloo aborts where NCCL hangs. So every rank takes part in gathering one full state
    dict (the collective a checkpoint save makes) and rank 0 runs a plain copy built from it."""
    trainer = task.trainer
    if is_sharded(task.model):
        state = trainer.strategy.lightning_module_state_dict()  # a collective: whole tensors on rank 0 only
        model = None
        if trainer.global_rank == 0:
            model = model_with_weights(task.cfg["model"], state).to(task.device)
        was_training = False
    else:
        model = task.model if trainer.global_rank == 0 else None
        was_training = task.model.training
    if model is None:
        yield None
        return
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def all_ranks(flag: bool, device: Any) -> bool:
    """True when `flag` is True on every rank: a collective, so processes that decode a sharded model
    (which all-gathers weights at every step) stop at the same step even if one finished earlier."""
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def fsdp_task(cls: type) -> type:
    """The task class with `configure_model` sharding each repeat copy, then the whole model."""

    class Sharded(cls):  # type: ignore[valid-type, misc]
        def configure_model(self) -> None:

            if getattr(self, "_sharded", False):
                return
            mesh = self.device_mesh["data_parallel"]
            for module in list(self.model.modules()):
                if isinstance(module, Repeat):
                    for copy in module:  # one layer at a time is gathered in forward and backward
                        fully_shard(copy, mesh=mesh)
            fully_shard(self.model, mesh=mesh)
            self._sharded = True

    Sharded.__name__ = Sharded.__qualname__ = cls.__name__
    return Sharded
