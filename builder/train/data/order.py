"""The training batch order as a pure function of (seed, epoch, batch index), on any number of processes.

A resumed run must see exactly the batches the interrupted run would have seen next. Samplers that draw
from a torch.Generator depend on how many draws came before (including the draw every DataLoader iterator
makes for its worker seed), so a fresh process cannot reproduce the middle of a stream. `resumable` rebuilds
a data module's training DataLoader around a batch sampler whose epoch e is computed from (seed, e) alone
and which starts at the batch the trainer has reached (Lightning's progress counter after a restore).

With several processes, global batch k is split across ranks: rank r takes rows [r*B, (r+1)*B) of it, so N
processes with batch B see the same data as one process with batch N*B (a DDP run equals a single run). An
epoch's last, partial global batch of m rows is split as evenly as the ranks allow (a rank left without a
row repeats one with weight 0), and `loss_weight` scales each rank's mean loss by N * rows / m, so the
averaged gradient is that of the mean over all m rows: epochs match one process too.
Samplers of other kinds (e.g. length buckets) are listed per epoch, dealt to ranks in turn and resumed the
same way, provided their order depends only on their seed and `set_epoch`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from builder.train.internals import batches_done_this_epoch


class StepBatchSampler:
    """Batches of indices into a dataset of `n` items; `num_samples` draws per epoch (with or without
    replacement, or in order), global batches of `batch_size * world` split by rank."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, replacement: bool = False,
                 num_samples: int | None = None, drop_last: bool = False, seed: int = 0, rank: int = 0,
                 world: int = 1, position: Callable[[], int] = lambda: 0):
        self.n, self.batch_size, self.shuffle, self.replacement = n, batch_size, shuffle, replacement
        self.num_samples = num_samples if num_samples is not None else n
        self.drop_last = drop_last
        self.seed, self.rank, self.world, self.position = seed, rank, world, position
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples) % self.n
        rng = np.random.default_rng([self.seed, epoch])  # the same numbers on every machine and process
        if self.replacement:
            return rng.integers(0, self.n, self.num_samples)
        rounds = -(-self.num_samples // self.n)  # more samples than items: whole permutations, one after another
        return np.concatenate([rng.permutation(self.n) for _ in range(rounds)])[: self.num_samples]

    def __len__(self) -> int:
        g = self.batch_size * self.world
        return self.num_samples // g if self.drop_last else -(-self.num_samples // g)

    def share(self, k: int) -> tuple[int, int]:
        """(first row, number of rows) of global batch k that this rank takes, and the batch's size m."""
        g, b = self.batch_size * self.world, self.batch_size
        m = min(g, self.num_samples - k * g)
        if m == g:
            return self.rank * b, b
        q, extra = divmod(m, self.world)
        return self.rank * q + min(self.rank, extra), q + (self.rank < extra)

    def loss_weight(self, k: int) -> float:
        """What this rank's mean loss on batch k is multiplied by: 1 for full batches (see the module docstring)."""
        g = self.batch_size * self.world
        m = min(g, self.num_samples - k * g)
        return 1.0 if m == g else self.world * self.share(k)[1] / m

    def __iter__(self) -> Iterator[list[int]]:
        order, g = self.order(self.epoch), self.batch_size * self.world
        for k in range(self.position(), len(self)):
            start, n = self.share(k)
            rows = order[k * g + start: k * g + start + n] if n else order[k * g: k * g + 1]  # weight 0 if n == 0
            yield rows.tolist()


class EpochBatches:
    """Any per-epoch deterministic batch sampler, dealt round-robin to ranks and resumable mid-epoch."""

    def __init__(self, inner: Any, rank: int = 0, world: int = 1, position: Callable[[], int] = lambda: 0):
        self.inner, self.rank, self.world, self.position = inner, rank, world, position

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner) // self.world

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.inner)[self.rank::self.world][: len(self)]
        return iter(batches[self.position():])


class ResumableLoader(DataLoader):
    """Marks the loader as resumable for Lightning; the position itself comes from the trainer's counters."""

    def state_dict(self) -> dict[str, Any]:
        return {"order": "a function of (seed, epoch, batch)"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def resumable(loader: DataLoader, seed: int, rank: int = 0, world: int = 1,
              position: Callable[[], int] = lambda: 0) -> DataLoader:
    """The same data, batch size and collation, in an order that a restarted process can continue."""
    sampler, batch_sampler = loader.sampler, loader.batch_sampler
    if isinstance(batch_sampler, BatchSampler) and isinstance(sampler, (RandomSampler, SequentialSampler)):
        shuffle = isinstance(sampler, RandomSampler)
        order = StepBatchSampler(
            len(loader.dataset), batch_sampler.batch_size, shuffle=shuffle,
            replacement=shuffle and sampler.replacement, num_samples=sampler.num_samples if shuffle else None,
            drop_last=batch_sampler.drop_last, seed=seed, rank=rank, world=world, position=position)
    elif batch_sampler is not None and not isinstance(batch_sampler, BatchSampler):
        order = EpochBatches(batch_sampler, rank, world, position)
    else:
        return loader  # an iterable dataset or a sampler we cannot see into: left as it is
    # a private generator for the workers' base seed: creating an iterator must not draw from the global
    # generator, or a resumed run (one extra iterator) would see different dropout masks than the original
    return ResumableLoader(loader.dataset, batch_sampler=order, generator=torch.Generator().manual_seed(seed),
                           num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                           worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers,
                           timeout=loader.timeout, multiprocessing_context=loader.multiprocessing_context)


def make_resumable(data: Any, seed: int) -> None:
    """Wrap `data.train_dataloader` so every loader it returns is resumable (see the module docstring)."""
    original = data.train_dataloader

    def train_dataloader() -> DataLoader:
        trainer = data.trainer
        loader = original()
        if trainer is None:
            return loader

        def position() -> int:
            return batches_done_this_epoch(trainer)
        return resumable(loader, seed, trainer.global_rank, trainer.world_size, position)

    data.train_dataloader = train_dataloader
