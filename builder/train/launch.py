"""Starting the other processes of a node, and watching them.

Lightning starts the extra processes of a node by re-running the command line (under Hydra with
`hydra.run.dir` added). That re-runs a whole sweep under `-m`, re-runs pytest inside a test, and makes
every process a Hydra job. Instead, `use_config_launcher` starts each extra process as
`python -m builder.train.child` with this run's resolved config in an environment variable: the children
train the same config in the same run directory, and only rank 0 writes files or talks to dashboards.
Processes created by a cluster (SLURM, torchrun) are left alone: Lightning only launches when the
environment has not already created them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import torch.distributed as dist
from omegaconf import OmegaConf

from builder.train.internals import SubprocessScriptLauncher, launcher, set_launcher, set_threads_for

CONFIG_ENV = "BUILDER_DISTRIBUTED_CONFIG"
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


class ChildWatch(threading.Thread):
    """Watches the processes this one started. Lightning's own watch kills this process the moment a child
    fails, also when this process has failed first and is only waiting to record why (its run then ends
    killed, with no result). Ours gives this process `grace` seconds to stop by itself (a dead peer fails
    gloo's collectives at once) and `stop()` calls the watch off; only a process still stuck after the grace
    (NCCL waits out its timeout) is killed, with its children, after `on_abandon(reason)` records the run."""

    def __init__(self, procs: list[subprocess.Popen], this_rank: int,
                 on_abandon: Callable[[str], None] | None, grace_s: float = 10.0, period_s: float = 1.0):
        super().__init__(daemon=True, name="builder-child-watch")  # ends with this process
        self.procs, self.this_rank, self.on_abandon = procs, this_rank, on_abandon
        self.grace_s, self.period_s = grace_s, period_s
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        failed_at = None
        while not self.stopped.wait(self.period_s):
            codes = [p.poll() for p in self.procs]
            if all(code == 0 for code in codes):
                return
            failed = [(self.this_rank + 1 + i, code) for i, code in enumerate(codes) if code]
            if not failed:
                continue
            failed_at = failed_at or time.monotonic()
            if time.monotonic() - failed_at < self.grace_s:
                continue
            rank, code = failed[0]
            reason = (f"rank {rank} ended with code {code} and rank {self.this_rank} was still waiting "
                      f"{self.grace_s:g} s later; every process of this node is stopped")
            print(f"builder-train: {reason}", file=sys.stderr, flush=True)
            if self.on_abandon is not None:
                self.on_abandon(reason)
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
            os.kill(os.getpid(), signal.SIGKILL)


class ConfigLauncher(SubprocessScriptLauncher):
    def __init__(self, base: SubprocessScriptLauncher, config_yaml: str, threads: int | None,
                 on_abandon: Callable[[str], None] | None = None):
        super().__init__(base.cluster_environment, base.num_processes, base.num_nodes)
        self.config_yaml, self.threads, self.on_abandon = config_yaml, threads, on_abandon
        self.watch: ChildWatch | None = None

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if self.threads and trainer is not None and trainer.strategy.root_device.type == "cpu":
            os.environ["OMP_NUM_THREADS"] = str(self.threads)  # N CPU ranks share the cores: no oversubscription
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            this_rank = self.cluster_environment.node_rank() * self.num_processes  # local rank 0 of this node
            self.watch = ChildWatch(self.procs, this_rank, self.on_abandon)
            self.watch.start()
        set_threads_for(self.num_processes)
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank), CONFIG_ENV: self.config_yaml}
            self.procs.append(subprocess.Popen([sys.executable, "-m", "builder.train.child"], env=child_env))


def use_config_launcher(trainer: Any, config: dict[str, Any], threads: int | None,
                        on_abandon: Callable[[str], None] | None = None) -> ConfigLauncher | None:
    """Swap Lightning's script launcher for ours; None when this process needs no children. `on_abandon`
    records the run when a failed child leaves this process stuck (ChildWatch)."""
    base = launcher(trainer.strategy)
    if type(base) is not SubprocessScriptLauncher or base.cluster_environment.creates_processes_externally:
        return None
    ours = ConfigLauncher(base, OmegaConf.to_yaml(OmegaConf.create(config)), threads, on_abandon)
    set_launcher(trainer.strategy, ours)
    return ours


def finish_launch(ours: ConfigLauncher | None, saved_env: dict[str, str | None], failed: bool = False) -> None:
    """After fit: wait for the children (briefly when this process failed: a stuck child is killed), close
    the process group, and undo the launcher's environment, so the next run in this process (a sweep's next
    trial, a test) starts clean."""
    if ours is not None:
        if ours.watch is not None:
            ours.watch.stop()  # this process ends its run itself, and records how
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


def launch_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in LAUNCH_ENV}


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, before any Trainer exists (set by a launcher or a cluster)."""
    keys = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK", "NODE_RANK")
    return all(os.environ.get(k, "0") == "0" for k in keys)
