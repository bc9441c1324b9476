"""Improved Cluster Pooling (ICP), CLUENet's reducer between stages, on packed ragged sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_channels, check_positive_int
from ..ops.scatter import scatter_count, scatter_mean, scatter_sum
from ..ops.segment import infer_batch_size
from .layers import conv_init, linear_as_conv
from .reducer import PointReducer, Reduced
from .soft_aggregation import nearest_center

__all__ = ["ImprovedClusterPool"]


class ImprovedClusterPool(nn.Module):
    """CLUENet's Improved Cluster Pooling (ICP): a clustering reducer with a convolutional skip.

    Args:
        in_dim: input channels.
        out_dim: output channels.
        kernel_size, stride, padding: the skip reducer (official 3, 2, 1).
        norm_out: LayerNorm after the MLP (official ``pool_norm2``).
        lattice_dim: lattice axes of pixel sets (2).
        validate: value checks in the skip reducer.
        backend: point-op backend (FPS / kNN) for point sets.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; coords: [N, 2]; return:
        :class:`~pointctx.nn.reducer.Reduced` with ``x [M, out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, norm_out: bool = False, lattice_dim: int = 2,
                 validate: bool = False, backend: str | None = None):
        super().__init__()
        self.in_dim = check_positive_int(in_dim, "in_dim")
        self.out_dim, self.backend = check_positive_int(out_dim, "out_dim"), backend
        self.skip = PointReducer(in_dim, out_dim, kernel_size, stride, padding,
                                 lattice_dim=lattice_dim, validate=validate, backend=backend)
        conv_init(self.skip.proj.weight, self.skip.slots * out_dim)
        nn.init.zeros_(self.skip.proj.bias)
        self.f, self.norm1 = linear_as_conv(in_dim, in_dim), nn.LayerNorm(in_dim)
        self.fc1, self.act = linear_as_conv(in_dim, in_dim), nn.GELU()
        self.fc2 = linear_as_conv(in_dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim) if norm_out else nn.Identity()

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"{self.in_dim}, {self.out_dim}"

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None,
                coords: Tensor | None = None, grid_size: Sequence[int] | None = None,
                return_cluster: bool = False):
        """Reduce every set (lattice mode with ``coords``/``grid_size``, else point mode).

        Args:
            x: point features.
            pos: point positions.
            batch: sorted set id per point.
            batch_size: number of sets B.
            coords: lattice coordinates ``(row, col)`` of pixel sets.
            grid_size: lattice size ``(H, W)``.
            return_cluster: also return the center each input point joined.
        """
        check_channels(x, self.in_dim)
        b = infer_batch_size(batch, batch_size)
        red = self.skip(x, pos, batch, b, coords, grid_size)
        m = red.x.shape[0]
        n = x.shape[0]
        cell = red.assignment
        if cell is None:
            from ..ops.knn import knn

            if n and m:
                cell = knn(red.pos, pos, 1, batch_x=red.batch, batch_y=batch, batch_size=b,
                           backend=self.backend).index[:, 0].long()
            else:
                cell = torch.full((n,), -1, dtype=torch.long, device=x.device)
        f = self.f(x)
        has_cell = cell >= 0
        safe_cell = torch.where(has_cell, cell, torch.full_like(cell, m))
        center = scatter_mean(f, safe_cell, m + 1)[:m]
        chosen = nearest_center(f.unsqueeze(1), batch.long(), center.unsqueeze(1), red.batch,
                                b)[:, 0]
        route = torch.where(chosen >= 0, chosen, torch.full_like(chosen, m))
        total = scatter_sum(f, route, m + 1)[:m] + center
        count = scatter_count(route, m + 1)[:m].to(total.dtype)
        pooled = total / (count + 1).unsqueeze(1)
        y = self.fc2(self.act(self.fc1(self.norm1(pooled))))
        out = red.x + self.norm2(y)
        res = Reduced(out, red.pos, red.batch, red.coords, red.grid_size, red.index, red.assignment)
        return (res, chosen) if return_cluster else res
