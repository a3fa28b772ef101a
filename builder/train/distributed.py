"""Several processes: DDP and FSDP on one machine or many, under Hydra or from Python (the processes of a
node are started by builder/train/launch.py).

`make_strategy` builds the strategy with two timeouts: start-up (every process joins) and each collective
after; `collective_failure` turns a collective that could not complete into one line naming the rank.

`FSDP` is Lightning's ModelParallelStrategy with every process in one data-parallel dimension (pure
fully_shard FSDP2, CPU with gloo included), and `fsdp_task` gives a task the `configure_model` hook that
shards each repeat copy (a transformer layer) and then the root module.
"""
from __future__ import annotations

import inspect
import os
import traceback
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry
from torch.distributed.fsdp import FSDPModule, fully_shard

from builder.errors import RunStopped
from builder.graph.assemble import Repeat
from builder.serve.checkpoint import model_with_weights
from builder.train.internals import set_group_timeouts, set_parallel_sizes


def make_strategy(spec: Any, timeout_s: float | None = None, startup_s: float | None = None) -> tuple[Any, list[Any]]:
    """Lightning's strategy from `trainer.strategy`: a registered name ("ddp") or a mapping with `_target_`
    (conf/trainer/fsdp.yaml), and the callbacks it needs. A strategy that starts a process group waits
    `trainer.startup_timeout` for every process to join (imports and model builds take their time on a busy
    node), and from the first step on each collective waits `trainer.process_group_timeout` (BoundCollectives)."""
    first = startup_s or timeout_s
    extra = {"timeout": timedelta(seconds=float(first))} if first else {}
    bound = [BoundCollectives(float(timeout_s))] if timeout_s and startup_s else []
    if isinstance(spec, dict) and spec.get("_target_"):
        accepts = "timeout" in inspect.signature(get_class(spec["_target_"])).parameters
        if accepts and "timeout" not in spec:
            return instantiate(spec, **extra), bound
        return instantiate(spec), []  # the strategy's own timeout, or none to set
    if isinstance(spec, str) and spec in StrategyRegistry and extra:
        entry = StrategyRegistry[spec]
        if "timeout" in inspect.signature(entry["strategy"]).parameters:
            return entry["strategy"](**entry["init_params"], **extra), bound
    return spec, []


class BoundCollectives(Callback):
    """Once every process has joined and the model is set up (sanity validation or the first step, whichever
    comes first), collectives wait `timeout_s`, not the longer start-up timeout the process group began with."""

    def __init__(self, timeout_s: float):
        self.timeout = timedelta(seconds=timeout_s)

    def bound(self) -> None:
        if dist.is_available() and dist.is_initialized():
            set_group_timeouts(self.timeout)

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self.bound()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.bound()


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
