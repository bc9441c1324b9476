"""Data-parallel helpers: process-group set-up from ``torchrun``, samplers that shard and resume."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "all_reduce_sum",
           "all_gather_objects", "any_across_ranks", "barrier", "ResumableBatchSampler",
           "ShardedEvalSampler"]


class DistInfo(NamedTuple):
    """Where this process stands in the (possibly trivial) process group.

    Attributes:
        rank: global rank, 0-based.
        world_size: number of processes.
        local_rank: rank on this machine (the CUDA device index).
        device: the device this process computes on.
        distributed: whether a process group was initialised.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that logs and writes files."""
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: ``cuda:<local_rank>`` when CUDA exists, else ``cpu``; ``"cuda"``: per rank."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"`device` must be one of ['auto', 'cpu', 'cuda'], got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`device` 'cuda' was asked for, but torch.cuda.is_available() is False")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by ``torchrun``'s environment, or run alone.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see :func:`resolve_device`).
        timeout_s: collective timeout.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        import datetime

        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **kwargs)
    return DistInfo(rank, world, local_rank, dev, world > 1)


def cleanup_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes in place (no-op alone); returns ``t``."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_across_ranks(flag: bool, device=None) -> bool:
    """Whether ``flag`` is true on any process (a tiny all-reduce; plain ``flag`` alone)."""
    if not _active():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_objects(obj) -> list:
    """Every process's ``obj`` (picklable), indexed by rank; ``[obj]`` alone."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for all processes (no-op alone)."""
    if _active():
        dist.barrier()


class ResumableBatchSampler(Sampler[list[int]]):
    """Seeded, epoch-keyed, rank-sharded training batches that can restart mid-epoch.

    Args:
        num_samples: dataset size.
        batch_size: batch size per process.
        shuffle: permute each epoch.
        seed: base seed.
        rank: this process's rank.
        world_size: number of processes.
        drop_last: drop the last incomplete batch.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError(
                f"`num_samples` and `batch_size` must be >= 1, got {num_samples}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"`rank` must lie in [0, world_size = {world_size}), got {rank}")
        self.num_samples, self.batch_size, self.shuffle = num_samples, batch_size, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last, self.epoch, self.start_batch = drop_last, 0, 0
        per_rank = -(-num_samples // world_size)
        self.num_batches = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
        if self.num_batches == 0:
            raise ValueError(f"no full batch: {per_rank} samples per process < batch_size = "
                             f"{batch_size} with drop_last=True")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and the first batch to yield."""
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(
                f"`start_batch` must lie in [0, {self.num_batches}], got {start_batch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def indices(self) -> np.ndarray:
        """This rank's sample indices for the current epoch, before batching."""
        n = self.num_samples
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(n)
        else:
            order = np.arange(n)
        total = -(-n // self.world_size) * self.world_size
        if total > n:
            order = np.concatenate([order, order[: total - n]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.indices()
        bs = self.batch_size
        for b in range(self.start_batch, self.num_batches):
            yield idx[b * bs : (b + 1) * bs].tolist()

    def __len__(self) -> int:
        return self.num_batches - self.start_batch


class ShardedEvalSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, without padding or shuffling."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"`rank` must lie in [0, world_size = {world_size}), got {rank}")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))
