"""Several processes: DDP and FSDP on one machine or many, under Hydra or from Python.

Lightning starts the extra processes of a node by re-running the command line (under Hydra with
`hydra.run.dir` added). That re-runs a whole sweep under `-m`, re-runs pytest inside a test, and makes
every process a Hydra job. Instead, `use_config_launcher` starts each extra process as
`python -m builder.distributed` with this run's resolved config in an environment variable: the children
train the same config in the same run directory, and only rank 0 writes files or talks to dashboards.
Processes created by a cluster (SLURM, torchrun) are left alone: Lightning only launches when the
environment has not already created them.

`FSDP` is Lightning's ModelParallelStrategy with every process in one data-parallel dimension (pure
fully_shard FSDP2, CPU with gloo included), and `fsdp_task` gives a task the `configure_model` hook that
shards each repeat copy (a transformer layer) and then the root module.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

CONFIG_ENV = "BUILDER_DISTRIBUTED_CONFIG"
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


class ConfigLauncher(_SubprocessScriptLauncher):
    def __init__(self, base: _SubprocessScriptLauncher, config_yaml: str, threads: int | None):
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
            self.procs.append(subprocess.Popen([sys.executable, "-m", "builder.distributed"], env=child_env))


def use_config_launcher(trainer: Any, config: dict[str, Any], threads: int | None) -> ConfigLauncher | None:
    """Swap Lightning's script launcher for ours; None when this process needs no children."""
    launcher = getattr(trainer.strategy, "_launcher", None)
    if type(launcher) is not _SubprocessScriptLauncher or launcher.cluster_environment.creates_processes_externally:
        return None
    from omegaconf import OmegaConf
    ours = ConfigLauncher(launcher, OmegaConf.to_yaml(OmegaConf.create(config)), threads)
    trainer.strategy._launcher = ours
    return ours


def finish_launch(launcher: ConfigLauncher | None, saved_env: dict[str, str | None]) -> None:
    """After fit: wait for the children, close the process group, and undo the launcher's environment, so the
    next run in this process (a sweep's next trial, a test) starts clean."""
    import torch.distributed as dist
    if launcher is not None:
        for proc in launcher.procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()


def fsdp_task(cls: type) -> type:
    """The task class with `configure_model` sharding each repeat copy, then the whole model."""

    class Sharded(cls):  # type: ignore[valid-type, misc]
        def configure_model(self) -> None:
            from torch.distributed.fsdp import fully_shard

            from builder.assemble import Repeat
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


def main() -> None:
    """A child process: train the parent's config as one more rank."""
    from omegaconf import OmegaConf

    from builder.config import register_resolvers
    from builder.train import train
    register_resolvers()
    train(OmegaConf.create(os.environ.pop(CONFIG_ENV)))


if __name__ == "__main__":
    main()
