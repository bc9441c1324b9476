"""Private helpers shared by the point ops (fps, knn, grid, random_sample)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch, check_positive_int
from .segment import batch_to_ptr, set_sizes


def _setup(pos: Tensor, batch: Tensor | None, batch_size: int | None, name: str = "batch"):
    """Validate ``batch`` against ``pos`` and return ``(batch, B, sizes, ptr)``."""
    n = pos.shape[0]
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size", minimum=0)
    if batch is None:
        b = 1 if batch_size is None else batch_size
        if n and b < 1:
            raise ValueError(f"`batch_size` must be >= 1 when there are points, got {b}")
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    else:
        check_batch(batch, n, batch_size, name)
        if batch.device != pos.device:
            raise ValueError(f"`{name}` must be on the same device as the positions "
                             f"({pos.device}), got {batch.device}")
        batch = batch.long()
        b = batch_size if batch_size is not None else (int(batch[-1]) + 1 if n else 0)
    sizes = set_sizes(batch, b)
    ptr = batch_to_ptr(batch, b)
    return batch, b, sizes, ptr


def _pad(pos: Tensor, batch: Tensor, ptr: Tensor, b: int, nmax: int, fill: float = 0.0):
    """Scatter packed rows into a padded ``[B, Nmax, D]`` tensor; also return the local index."""
    local = torch.arange(pos.shape[0], device=pos.device) - ptr[batch]
    out = pos.new_full((b, nmax, pos.shape[1]), fill)
    out[batch, local] = pos
    return out, local


def _sqdist(a: Tensor, b: Tensor, dim: int = -1, out: Tensor | None = None,
            tmp: Tensor | None = None) -> Tensor:
    """Squared Euclidean distance over the coordinate dim ``dim``, summed in coordinate order."""
    first = torch.sub(a.select(dim, 0), b.select(dim, 0), out=out) if out is not None else (
        a.select(dim, 0) - b.select(dim, 0))
    out = first.square_()
    for d in range(1, a.shape[dim]):
        if tmp is None:
            out += (a.select(dim, d) - b.select(dim, d)).square_()
        else:
            out += torch.sub(a.select(dim, d), b.select(dim, d), out=tmp).square_()
    return out
