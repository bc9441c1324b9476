"""Hole filling on dense grids by pull-push: every empty cell takes the nearest data's value."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FilledGrid", "fill_holes", "fill_holes_naive"]


class FilledGrid(NamedTuple):
    """Output of :func:`fill_holes`.

    Attributes:
        values: the filled grids; cells with data keep their values.
        level: per cell, the pyramid level its value came from: 0 for a cell with data, ``l``
            for a hole filled from ``2^l x 2^l`` blocks; ``levels`` where a grid has no data.
    """

    values: Tensor
    level: Tensor


def _check(values: Tensor, known: Tensor) -> None:
    if not isinstance(values, Tensor) or values.dim() != 4 or not values.is_floating_point():
        raise ValueError(f"`values` must be a float tensor [B, C, H, W], got {values!r:.80}")
    b, _, h, w = values.shape
    if not isinstance(known, Tensor) or known.dtype != torch.bool or known.shape != (b, h, w):
        raise ValueError(f"`known` must be a bool tensor [B, H, W] = {[b, h, w]}, got "
                         f"{getattr(known, 'dtype', None)} {list(getattr(known, 'shape', []))}")


def _levels(h: int, w: int) -> list[tuple[int, int]]:
    sizes = [(h, w)]
    while sizes[-1] != (1, 1):
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    return sizes


def fill_holes(values: Tensor, known: Tensor) -> FilledGrid:
    """Fill the cells without data from the nearest cells with data, by pull-push.

    Pull: the mean of the known values over ``2 x 2`` blocks, level by level up to one cell.
    Push: from the top down, a hole takes the bilinear upsampling of the level above; a cell
    with data keeps its value. Linear in the number of cells; holes of any size are filled.

    Args:
        values: grids of values (those of holes are ignored).
        known: which cells hold data.

    Shapes:
        values: [B, C, H, W]; known: [B, H, W]; return: values [B, C, H, W], level [B, H, W].
    """
    _check(values, known)
    sizes = _levels(values.shape[2], values.shape[3])
    tiny = torch.finfo(values.dtype).tiny
    wsum = known.unsqueeze(1).to(values.dtype)
    pyramid = [(torch.where(wsum > 0, values, 0), wsum)]
    for _ in sizes[1:]:  # pull: block means of value * weight and of weight
        pyramid.append(tuple(F.avg_pool2d(t, 2, ceil_mode=True, count_include_pad=False)
                             for t in pyramid[-1]))
    filled = pyramid[-1][0] / pyramid[-1][1].clamp_min(tiny)
    level = torch.zeros_like(known[:, :1, :1], dtype=torch.long).unsqueeze(1)
    for (vsum, wsum), size in zip(reversed(pyramid[:-1]), reversed(sizes[:-1])):  # push
        up = F.interpolate(filled, size=size, mode="bilinear", align_corners=False)
        has = wsum > 0
        filled = torch.where(has, vsum / wsum.clamp_min(tiny), up)
        parent = level.repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :size[0], :size[1]]
        level = torch.where(has, 0, parent + 1)
    empty = ~known.flatten(1).any(1).view(-1, 1, 1)
    return FilledGrid(filled, torch.where(empty, len(sizes), level.squeeze(1)))


def _resize_matrix(n_in: int, n_out: int, dtype) -> Tensor:
    """Bilinear weights [n_out, n_in] along one axis (half-pixel centers, clamped at borders)."""
    a = torch.zeros(n_out, n_in, dtype=dtype)
    for i in range(n_out):
        x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        a[i, int(x)] += 1 - (x - int(x))
        a[i, min(int(x) + 1, n_in - 1)] += x - int(x)
    return a


def fill_holes_naive(values: Tensor, known: Tensor) -> FilledGrid:
    """Reference :func:`fill_holes`: one grid at a time, explicit loops over levels and blocks.

    Shapes:
        values: [B, C, H, W]; known: [B, H, W]; return: values [B, C, H, W], level [B, H, W].
    """
    _check(values, known)
    sizes = _levels(values.shape[2], values.shape[3])
    out_v, out_l = torch.zeros_like(values), torch.full(known.shape, len(sizes))
    for g in torch.nonzero(known.flatten(1).any(1)).flatten().tolist():
        means, weights = [values[g] * known[g]], [known[g].to(values.dtype)]
        for hh, ww in sizes[1:]:  # weighted block means of the level below
            m, w = means[-1], weights[-1]
            mean, weight = m.new_zeros(m.shape[0], hh, ww), m.new_zeros(hh, ww)
            for i in range(hh):
                for j in range(ww):
                    bw = w[2 * i:2 * i + 2, 2 * j:2 * j + 2]
                    weight[i, j] = bw.mean()
                    if bw.sum() > 0:
                        block = m[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                        mean[:, i, j] = (block * bw).sum((1, 2)) / bw.sum()
            means.append(mean)
            weights.append(weight)
        filled, level = means[-1], torch.zeros(1, 1, dtype=torch.long)
        for lvl in reversed(range(len(sizes) - 1)):
            (h, w), (hh, ww) = sizes[lvl], sizes[lvl + 1]
            up = torch.einsum("ij,cjk,lk->cil", _resize_matrix(hh, h, values.dtype), filled,
                              _resize_matrix(ww, w, values.dtype))
            has = weights[lvl] > 0
            filled = torch.where(has, means[lvl], up)
            parent = level[torch.arange(h) // 2][:, torch.arange(w) // 2]
            level = torch.where(has, 0, parent + 1)
        out_v[g], out_l[g] = filled, level
    return FilledGrid(out_v, out_l)
