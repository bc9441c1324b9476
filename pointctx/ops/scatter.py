"""Scatter reductions over ragged segments, in native PyTorch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ScatterMax", "scatter_count", "scatter_sum", "scatter_mean", "scatter_max",
           "scatter_argmax", "scatter_softmax", "scatter_sum_naive", "scatter_mean_naive",
           "scatter_max_naive", "scatter_softmax_naive"]


class ScatterMax(NamedTuple):
    """Result of :func:`scatter_max`.

    Attributes:
        values: [M, *] the max of each segment (0 for empty segments).
        argmax: [M, *] int64 row of ``src`` holding the max (first one on ties; -1 if empty).
    """

    values: Tensor
    argmax: Tensor


def _dim_size(index: Tensor, dim_size: int | None) -> int:
    return int(dim_size) if dim_size is not None else (int(index.max()) + 1 if index.numel() else 0)


def _check(src: Tensor, index: Tensor) -> None:
    if index.dim() != 1:
        raise ValueError(f"`index` must have shape [N], got shape {tuple(index.shape)}")
    if src.shape[0] != index.shape[0]:
        raise ValueError(f"`src` and `index` must have the same number of rows, got {src.shape[0]} "
                         f"and {index.shape[0]}")


def _expand(index: Tensor, src: Tensor) -> Tensor:
    return index.view((-1,) + (1,) * (src.dim() - 1)).expand_as(src)


def scatter_count(index: Tensor, dim_size: int | None = None) -> Tensor:
    """Number of rows in each segment.

    Shapes:
        index: [N]; return: [M] int64.
    """
    m = _dim_size(index, dim_size)
    return torch.bincount(index, minlength=m)[:m] if m else index.new_zeros(0)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Sum the rows of each segment.

    Shapes:
        src: [N, *]; index: [N] segment id per row; return: [M, *].
    """
    _check(src, index)
    m = _dim_size(index, dim_size)
    out = src.new_zeros((m,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Mean of the rows of each segment (0 for empty segments).

    Shapes:
        src: [N, *]; index: [N]; return: [M, *].
    """
    m = _dim_size(index, dim_size)
    total = scatter_sum(src, index, m)
    count = scatter_count(index, m).clamp_(min=1).to(total.dtype)
    return total / count.view((-1,) + (1,) * (src.dim() - 1))


def scatter_max(src: Tensor, index: Tensor, dim_size: int | None = None) -> ScatterMax:
    """Max of each segment and the row holding it.

    Shapes:
        src: [N, *]; index: [N]; return: values [M, *], argmax [M, *] (rows of src, -1 if empty).
    """
    _check(src, index)
    m = _dim_size(index, dim_size)
    shape = (m,) + tuple(src.shape[1:])
    idx = _expand(index, src)
    values = src.new_full(
        shape, float("-inf")).scatter_reduce(0, idx, src, reduce="amax", include_self=True)
    # argmax: the smallest row whose value equals its segment's max.
    n = src.shape[0]
    rows = torch.arange(n, device=src.device).view((-1,) + (1,) * (src.dim() - 1)).expand_as(src)
    hit = src.detach() == values.detach().gather(0, idx)
    cand = torch.where(hit, rows, torch.full_like(rows, n))
    argmax = torch.full(shape, n, dtype=torch.long, device=src.device).scatter_reduce(
        0, idx, cand, reduce="amin", include_self=True)
    empty = argmax == n
    argmax = argmax.masked_fill(empty, -1)
    values = values.masked_fill(empty, 0.0)
    return ScatterMax(values, argmax)


def scatter_argmax(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Row of ``src`` holding each segment's max (first on ties, -1 for empty segments).

    Shapes:
        src: [N, *]; index: [N]; return: [M, *] int64.
    """
    return scatter_max(src, index, dim_size).argmax


def scatter_softmax(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Softmax over the rows of each segment, returned per row.

    Shapes:
        src: [N, *]; index: [N]; return: [N, *].
    """
    _check(src, index)
    m = _dim_size(index, dim_size)
    idx = _expand(index, src)
    shape = (m,) + tuple(src.shape[1:])
    seg_max = src.detach().new_full(shape, float("-inf")).scatter_reduce(
        0, idx, src.detach(), reduce="amax", include_self=True)
    e = (src - seg_max.gather(0, idx)).exp()
    denom = e.new_zeros(shape).index_add(0, index, e)
    return e / denom.gather(0, idx)


# Naive references: one Python loop over segments. Slow and obviously right; used by the tests.


def scatter_sum_naive(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Per-segment loop version of :func:`scatter_sum` (the readable reference).

    Shapes:
        as :func:`scatter_sum`.
    """
    out = [src[index == s].sum(0) for s in range(dim_size)]
    return torch.stack(out) if out else src.new_zeros((0,) + tuple(src.shape[1:]))


def scatter_mean_naive(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Per-segment loop version of :func:`scatter_mean` (the readable reference).

    Shapes:
        as :func:`scatter_mean`.
    """
    out = []
    for s in range(dim_size):
        rows = src[index == s]
        out.append(rows.mean(0) if len(rows) else src.new_zeros(src.shape[1:]))
    return torch.stack(out) if out else src.new_zeros((0,) + tuple(src.shape[1:]))


def scatter_max_naive(src: Tensor, index: Tensor, dim_size: int) -> ScatterMax:
    """Per-segment loop version of :func:`scatter_max` (the readable reference).

    Shapes:
        as :func:`scatter_max`.
    """
    vals, args = [], []
    for s in range(dim_size):
        rows = (index == s).nonzero().flatten()
        if len(rows) == 0:
            vals.append(src.new_zeros(src.shape[1:]))
            args.append(torch.full(src.shape[1:], -1, dtype=torch.long))
            continue
        v, a = src[rows].max(0)  # torch.max returns the first index on ties
        vals.append(v)
        args.append(rows[a])
    if not vals:
        shape = (0,) + tuple(src.shape[1:])
        return ScatterMax(src.new_zeros(shape), torch.zeros(shape, dtype=torch.long))
    return ScatterMax(torch.stack(vals), torch.stack(args))


def scatter_softmax_naive(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Per-segment loop version of :func:`scatter_softmax` (the readable reference).

    Shapes:
        as :func:`scatter_softmax`.
    """
    out = torch.empty_like(src)
    for s in range(dim_size):
        rows = index == s
        if rows.any():
            out[rows] = torch.softmax(src[rows], dim=0)
    return out
