"""Conversions between the two ragged-set index forms: ``batch`` (set id per point) and ``ptr``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_to_ptr", "ptr_to_batch", "set_sizes", "infer_batch_size", "local_index"]


def infer_batch_size(batch: Tensor, batch_size: int | None = None) -> int:
    """Return ``batch_size`` if given, else ``batch.max() + 1`` (0 for no points).

    Shapes:
        batch: [N] sorted set id per point; return: a Python int B.
    """
    if batch_size is not None:
        return int(batch_size)
    return int(batch.max()) + 1 if batch.numel() else 0


def set_sizes(batch: Tensor, batch_size: int | None = None) -> Tensor:
    """Number of points in each set.

    Shapes:
        batch: [N] sorted set index.
        return: [B] int64.
    """
    b = infer_batch_size(batch, batch_size)
    return torch.bincount(batch, minlength=b)[:b] if b else batch.new_zeros(0)


def batch_to_ptr(batch: Tensor, batch_size: int | None = None) -> Tensor:
    """Turn a sorted ``batch`` vector into ``ptr`` offsets.

    Shapes:
        batch: [N] sorted set index.
        return: [B+1] int64 with a leading 0.
    """
    sizes = set_sizes(batch, batch_size)
    ptr = batch.new_zeros(sizes.numel() + 1, dtype=torch.long)
    torch.cumsum(sizes, 0, out=ptr[1:])
    return ptr


def ptr_to_batch(ptr: Tensor, num_points: int | None = None) -> Tensor:
    """Turn ``ptr`` offsets into a set index per point.

    Shapes:
        ptr: [B+1] with a leading 0.
        return: [N] int64 sorted, N = ``ptr[-1]``.
    """
    sizes = ptr[1:] - ptr[:-1]
    ids = torch.arange(sizes.numel(), device=ptr.device)
    return torch.repeat_interleave(ids, sizes, output_size=num_points)


def local_index(batch: Tensor, ptr: Tensor) -> Tensor:
    """Rank of each point inside its own set (0 for the first point of every set).

    Shapes:
        batch: [N]; ptr: [B+1].
        return: [N] int64.
    """
    return torch.arange(batch.numel(), device=batch.device) - ptr[batch]
