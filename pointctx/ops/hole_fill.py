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
        raise ValueError(f"`values` must be a float tensor [B, C, H, W], got "
                         f"{getattr(values, 'shape', type(values).__name__)}")
    b, _, h, w = values.shape
    if not isinstance(known, Tensor) or known.dtype != torch.bool or known.shape != (b, h, w):
        raise ValueError(f"`known` must be a bool tensor [B, H, W] = {[b, h, w]}, got "
                         f"{getattr(known, 'dtype', type(known).__name__)} "
                         f"{list(getattr(known, 'shape', []))}")


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
    wsum = known.unsqueeze(1).to(values.dtype)
    vsum = torch.where(wsum > 0, values, 0)
    pyramid = [(vsum, wsum)]
    for _ in sizes[1:]:  # pull: block sums of value * weight and of weight
        vsum = F.avg_pool2d(vsum, 2, ceil_mode=True, count_include_pad=False)
        wsum = F.avg_pool2d(wsum, 2, ceil_mode=True, count_include_pad=False)
        pyramid.append((vsum, wsum))
    top_v, top_w = pyramid[-1]
    filled = top_v / top_w.clamp_min(torch.finfo(values.dtype).tiny)
    level = torch.where(top_w > 0, 0, 1).to(torch.long) * (len(sizes) - 1)
    for (vsum, wsum), size in zip(reversed(pyramid[:-1]), reversed(sizes[:-1])):  # push
        up = F.interpolate(filled, size=size, mode="bilinear", align_corners=False)
        has = wsum > 0
        filled = torch.where(has, vsum / wsum.clamp_min(torch.finfo(values.dtype).tiny), up)
        parent = level.repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :size[0], :size[1]]
        level = torch.where(has, 0, parent + 1)
    return FilledGrid(filled, level.squeeze(1).clamp_max(len(sizes) - 1)
                      + (~known.flatten(1).any(1)).view(-1, 1, 1).long())


def _bilinear_naive(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize [C, h, w] -> [C, H, W], half-pixel centers, clamped at the border."""
    c, h, w = grid.shape
    out = grid.new_zeros(c, *size)
    for i in range(size[0]):
        y = min(max((i + 0.5) * h / size[0] - 0.5, 0.0), h - 1)
        y0 = int(y)
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(size[1]):
            x = min(max((j + 0.5) * w / size[1] - 0.5, 0.0), w - 1)
            x0 = int(x)
            x1, fx = min(x0 + 1, w - 1), x - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * grid[:, y0, x0] + fx * grid[:, y0, x1])
                            + fy * ((1 - fx) * grid[:, y1, x0] + fx * grid[:, y1, x1]))
    return out


def fill_holes_naive(values: Tensor, known: Tensor) -> FilledGrid:
    """Reference :func:`fill_holes`: explicit loops over grids, levels and cells."""
    _check(values, known)
    b, c, h, w = values.shape
    sizes = _levels(h, w)
    out_v, out_l = values.new_zeros(b, c, h, w), torch.zeros(b, h, w, dtype=torch.long)
    for g in range(b):
        means = [values[g] * known[g]]  # mean of the known cells' values per block
        counts = [known[g].to(values.dtype)]  # fraction of known cells per block
        for hh, ww in sizes[1:]:
            m, n = means[-1], counts[-1]
            mean, count = values.new_zeros(c, hh, ww), values.new_zeros(hh, ww)
            for i in range(hh):
                for j in range(ww):
                    rows, cols = slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2)
                    cells = n[rows, cols].numel()
                    count[i, j] = n[rows, cols].sum() / cells
                    if count[i, j] > 0:  # weighted mean of the children's means
                        mean[:, i, j] = ((m[:, rows, cols] * n[rows, cols]).sum((1, 2))
                                         / n[rows, cols].sum())
            means.append(mean)
            counts.append(count)
        filled = means[-1]
        level = torch.full(sizes[-1], 0 if counts[-1].item() > 0 else len(sizes) - 1)
        for lvl in reversed(range(len(sizes) - 1)):
            up = _bilinear_naive(filled, sizes[lvl])
            has = counts[lvl] > 0
            filled = torch.where(has, means[lvl], up)
            parent = level.repeat_interleave(2, 0).repeat_interleave(2, 1)[:sizes[lvl][0],
                                                                           :sizes[lvl][1]]
            level = torch.where(has, 0, parent + 1)
        out_v[g] = filled
        out_l[g] = level.clamp_max(len(sizes) - 1) + int(not known[g].any())
    return FilledGrid(out_v, out_l)
