"""``PointReducer``: fewer points with more channels, for pixel sets and general point sets."""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._checks import (
    check_features,
    check_finite_features,
    check_number,
    check_pos,
    check_positive_int,
    check_tensor,
)
from ..ops.grid import lattice_sites, pixel_coords, pixel_index
from ..ops.linear import linear
from ..ops.segment import infer_batch_size
from .layers import Linear
from .norm import SetGroupNorm

__all__ = ["PointReducer", "Reduced"]


def _eager_under_compile(fn):
    """``torch.compiler.disable(fn)``, applied at the first call: it imports torch._dynamo."""
    disabled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call


class Reduced(NamedTuple):
    """Output of :class:`PointReducer`: the reduced point sets (M anchors).

    Attributes:
        x: [M, out_dim] fused features.
        pos: [M, D] anchor positions (lattice mode: mean of the anchor's cell).
        batch: [M] sorted set id of each anchor.
        coords: [M, L] lattice coordinates (lattice mode), else None.
        grid_size: output lattice size ``ceil(size / stride)`` (lattice mode), else None.
        index: [M, S] input point in each slot, -1 for a missing slot.
        assignment: [N] anchor whose cell holds each input point (lattice mode), else None.
    """

    x: Tensor
    pos: Tensor
    batch: Tensor
    coords: Tensor | None
    grid_size: tuple[int, ...] | None
    index: Tensor
    assignment: Tensor | None


class _Plan(NamedTuple):
    """Gather pattern of a lattice reduction (depends on coordinates only, not on features)."""

    index: Tensor  # [M, S] input point per slot, -1 when missing / outside the lattice
    own: Tensor  # [M, s**L] points of the anchor's own cell, N (the pad row) when missing
    own_count: Tensor  # [M, 1] points in the own cell (>= 1)
    batch: Tensor  # [M] set of each anchor
    coords: Tensor  # [M, L] anchor lattice coordinates
    grid_size: tuple  # output lattice size
    assignment: Tensor  # [N] anchor whose own cell holds each point
    expected: Tensor  # [M] float32 slots inside the lattice
    memo: dict  # cached full-lattice plans: the last anchor positions (see _anchor_positions)


def _anchor_positions(pos: Tensor, plan: _Plan, memo: bool = True) -> Tensor | None:
    """Mean position of each anchor's own cell, summed in slot order (not point order)."""
    plain = memo and not pos.requires_grad and not pos.is_inference()
    if plain:
        hit = plan.memo.get("pos")
        if (hit is not None and hit[0] is pos and hit[1] == pos._version
                and hit[2]._version == hit[3]):
            return hit[2]
    m, d = plan.own.shape[0], pos.shape[1]
    pos_pad = torch.cat([pos, pos.new_zeros(1, d)], 0)
    own_pos = pos_pad.index_select(0, plan.own.reshape(-1)).view(m, -1, d)
    out = own_pos.sum(1) / plan.own_count.to(pos.dtype)
    if plain and not out.is_inference():
        plan.memo["pos"] = (pos, pos._version, out, out._version)
    return out


_PLANS: OrderedDict = OrderedDict()  # full-lattice plans, keyed on shape, kernel and device
_PLANS_MAX = 16


class PointReducer(nn.Module):
    """Reduce point sets: anchors gather neighbours, concatenated and fused by one linear layer.

    Args:
        in_dim: input channels C.
        out_dim: output channels.
        kernel_size: neighbourhood width per lattice axis (``kernel_size**L`` slots).
        stride: anchor spacing per lattice axis (default ``kernel_size``).
        padding: lattice padding per axis (``kernel_size - padding >= stride``).
        ratio: point mode: share of each set's points kept (default ``1 / stride**L``).
        lattice_dim: lattice axes L (2 for images).
        norm: :class:`~pointctx.nn.norm.SetGroupNorm` on the output (official: off).
        bias: learn an output bias.
        validate: check ``coords`` values (host syncs).
        backend: point-op backend for FPS and kNN in point mode.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; coords: [N, L] int64; return: :class:`Reduced`.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 2, stride: int | None = None,
                 padding: int = 0, ratio: float | None = None, lattice_dim: int = 2,
                 norm: bool = False, bias: bool = True, validate: bool = True,
                 backend: str | None = None):
        super().__init__()
        self.in_dim = check_positive_int(in_dim, "in_dim")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else check_positive_int(stride, "stride")
        self.padding = check_positive_int(padding, "padding", minimum=0)
        if self.kernel_size - self.padding < self.stride:
            raise ValueError("`kernel_size - padding` must be >= `stride` so that every anchor's "
                             f"own cell lies in its window, got kernel_size={self.kernel_size}, "
                             f"padding={self.padding}, stride={self.stride}")
        self.lattice_dim = check_positive_int(lattice_dim, "lattice_dim")
        if ratio is None:
            ratio = 1.0 / self.stride ** self.lattice_dim
        self.ratio = check_number(ratio, "ratio", 0.0, 1.0, min_open=True, type_error=ValueError)
        self.slots = self.kernel_size ** self.lattice_dim
        self.validate, self.backend = bool(validate), backend
        self.proj = Linear(self.in_dim * self.slots, self.out_dim, bias=bias)
        self.norm = SetGroupNorm(self.out_dim) if norm else nn.Identity()
        # kernel offsets [S, L], row-major (axis 0 slowest), like a conv weight's spatial dims
        grids = torch.meshgrid(*[torch.arange(self.kernel_size)] * self.lattice_dim, indexing="ij")
        offsets = torch.stack([g.reshape(-1) for g in grids], 1)
        self.register_buffer("_offsets", offsets, persistent=False)
        # slots of the anchor's own stride cell (offsets p .. p + s - 1 on every axis)
        own = ((offsets >= self.padding) & (offsets < self.padding + self.stride)).all(1)
        self.register_buffer("_own_slots", own.nonzero().view(-1), persistent=False)

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return (f"{self.in_dim}, {self.out_dim}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, ratio={self.ratio:g}, "
                f"lattice_dim={self.lattice_dim}")


    def _check(self, x, pos, batch, coords, grid_size):
        check_tensor(x, "x")
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"`x` must have shape [N, {self.in_dim}] (in_dim = {self.in_dim}), "
                             f"got {tuple(x.shape)}")
        n = x.shape[0]
        check_pos(pos, "pos", allow_nonfinite=not self.validate)
        check_features(pos, n, "pos")
        check_tensor(batch, "batch")
        if batch.dim() != 1 or batch.numel() != n:
            raise ValueError(f"`batch` must have shape [N] = [{n}], got {tuple(batch.shape)}")
        if self.validate:
            check_finite_features(x, batch)
        if (coords is None) != (grid_size is None):
            raise ValueError("`coords` and `grid_size` must be given together (lattice mode) or "
                             "both left None (point mode)")
        if coords is None:
            return None
        check_tensor(coords, "coords")
        if coords.dim() != 2 or coords.shape != (n, self.lattice_dim):
            raise ValueError(f"`coords` must have shape [N, L] = [{n}, {self.lattice_dim}], got "
                             f"{tuple(coords.shape)}")
        if coords.is_floating_point() or coords.dtype == torch.bool:
            raise ValueError(f"`coords` must be an integer tensor, got dtype {coords.dtype}")
        if isinstance(grid_size, int) or not isinstance(grid_size, Sequence) or len(
                grid_size) != self.lattice_dim:
            raise ValueError(
                f"`grid_size` must be a sequence of {self.lattice_dim} ints, got {grid_size!r}")
        sizes = tuple(check_positive_int(int(g), "grid_size") for g in grid_size)
        if self.validate and n:
            lo = coords.amin(0)
            hi = coords.amax(0)
            size_t = torch.tensor(sizes, device=coords.device)
            if bool((lo < 0).any()) or bool((hi >= size_t).any()):
                raise ValueError(f"`coords` must lie in [0, grid_size) = [0, {sizes}) per axis, "
                                 f"got range [{lo.tolist()}, {hi.tolist()}]")
        return sizes

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None,
                coords: Tensor | None = None, grid_size: Sequence[int] | None = None) -> Reduced:
        """Reduce every set (lattice mode with ``coords``/``grid_size``, else point mode).

        Args:
            x: point features.
            pos: point positions.
            batch: sorted set id per point.
            batch_size: number of sets B (saves a host sync).
            coords: integer lattice coordinates (e.g. ``(row, col)``), unique within a set.
            grid_size: lattice size per axis (e.g. ``(H, W)``).
        """
        sizes = self._check(x, pos, batch, coords, grid_size)
        b = infer_batch_size(batch, batch_size)
        if sizes is None:
            index, anchor_pos, anchor_batch = self._point_neighbours(pos, batch, b)
            expected = torch.full((index.shape[0],), float(self.slots), device=x.device)
            out = self._fuse(x, index, expected)
            red = Reduced(out, anchor_pos, anchor_batch, None, None, index, None)
        else:
            plan, dense = self._lattice_plan(batch, b, coords, sizes)
            if dense:
                out = self._dense_conv(x, b, sizes, plan.grid_size)
            else:
                out = self._fuse(x, plan.index, plan.expected)
            anchor_pos = _anchor_positions(pos, plan) if dense else None
            if anchor_pos is None:
                anchor_pos = _anchor_positions(pos, plan, memo=False)
            red = Reduced(out, anchor_pos, plan.batch, plan.coords, plan.grid_size, plan.index,
                          plan.assignment)
        if isinstance(self.norm, SetGroupNorm):
            red = red._replace(x=self.norm(red.x, red.batch, b))
        return red

    def _fuse(self, x: Tensor, index: Tensor, expected: Tensor) -> Tensor:
        """Gather the slots, fuse them with ``proj`` and rescale for missing slots."""
        m, s = index.shape
        c = x.shape[1]
        present = (index >= 0).sum(1)
        x_pad = torch.cat([x, x.new_zeros(1, c)], 0)
        safe = torch.where(index >= 0, index, torch.full_like(index, x.shape[0]))
        gathered = x_pad.index_select(0, safe.reshape(-1)).view(m, s * c)  # slot-major
        out = linear(gathered, self.proj.weight.view(-1, c, s).transpose(1, 2).reshape(-1, s * c))
        scale = expected.to(out.dtype) / present.clamp(min=1).to(out.dtype)
        out = out * scale.unsqueeze(1)
        if self.proj.bias is not None:
            out = out + self.proj.bias
        return out

    # Eager under torch.compile (a graph break around one convolution): torch 2.13's inductor
    # generates code that references an undefined size symbol for this view + conv2d when the
    # lattice sizes are symbolic (NameError at run time, CLUENet at 32x32, dynamic shapes).
    @_eager_under_compile
    def _dense_conv(self, x: Tensor, b: int, sizes, out_sizes) -> Tensor:
        """Full lattices in raster order: the reduction is exactly a strided convolution."""
        k, s, p = self.kernel_size, self.stride, self.padding
        dim, c = len(sizes), x.shape[1]
        xv = x.reshape(b, *sizes, c).movedim(-1, 1)  # [B, C, *sizes], channels-last strides
        extra = [max(0, (o - 1) * s + k - 2 * p - g) for g, o in zip(sizes, out_sizes)]
        if any(extra):
            pads = []
            for e in reversed(extra):
                pads += [0, e]
            xv = nn.functional.pad(xv, pads)
        weight = self.proj.weight.view(self.out_dim, c, *(k,) * dim)
        conv = (nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d)[dim - 1]
        out = conv(xv, weight, self.proj.bias, stride=s, padding=p)
        for axis, o in enumerate(out_sizes):
            if out.shape[2 + axis] != o:
                out = out.narrow(2 + axis, 0, o)
        return out.movedim(1, -1).reshape(-1, self.out_dim)


    def _point_neighbours(self, pos: Tensor, batch: Tensor, b: int):
        from ..ops.fps import fps
        from ..ops.knn import knn

        idx = fps(pos, batch, ratio=self.ratio, batch_size=b, backend=self.backend)
        anchor_pos = pos.index_select(0, idx)
        anchor_batch = batch.index_select(0, idx).long()
        m = idx.numel()
        if m == 0:
            return (torch.zeros(0, self.slots, dtype=torch.long, device=pos.device), anchor_pos,
                    anchor_batch)
        res = knn(pos, anchor_pos, self.slots, batch_x=batch, batch_y=anchor_batch,
                  batch_size=b, backend=self.backend)
        index = res.index.long()  # nearest first (ties: lower index), -1 after the set's points
        if index.shape[1] < self.slots:
            pad = index.new_full((m, self.slots - index.shape[1]), -1)
            index = torch.cat([index, pad], 1)
        return index, anchor_pos, anchor_batch

    def _lattice_plan(self, batch: Tensor, b: int, coords: Tensor, sizes: tuple):
        """The gather pattern of a lattice reduction: ``(plan, dense)``."""
        coords = coords.long()
        batch = batch.long()
        n = coords.shape[0]
        if n and self.lattice_dim <= 3 and n == b * math.prod(sizes):
            full_coords, full_batch = lattice_sites(b, sizes, coords.device)
            if ((coords is full_coords or torch.equal(coords, full_coords))
                    and (batch is full_batch or torch.equal(batch, full_batch))):
                key = (b, sizes, self.kernel_size, self.stride, self.padding, coords.device)
                plan = _PLANS.pop(key, None)  # re-inserted last: least recently used first
                if plan is None:
                    with torch.inference_mode(False), torch.no_grad():  # usable in training too
                        plan = self._build_plan(full_batch, b, full_coords, sizes)
                # share the cached site tensors (all anchors exist): the next reducer knows them
                out_coords, out_batch = lattice_sites(b, plan.grid_size, coords.device)
                _PLANS[key] = plan = plan._replace(coords=out_coords, batch=out_batch)
                if len(_PLANS) > _PLANS_MAX:
                    _PLANS.popitem(last=False)
                return plan, True
        return self._build_plan(batch, b, coords, sizes), False

    def _build_plan(self, batch, b, coords, sizes) -> _Plan:
        device = coords.device
        n, dim = coords.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        out_sizes = tuple(-(-g // s) for g in sizes)
        per_set = math.prod(out_sizes)
        cell = torch.div(coords, s, rounding_mode="floor")
        key = pixel_index(cell, out_sizes, batch)
        space = max(b * per_set, 1)
        used = torch.zeros(space, dtype=torch.bool, device=device)
        used[key] = True
        kept = used.nonzero().view(-1)  # sorted: by set, then row-major cell
        m = kept.numel()
        table = torch.cumsum(used, 0) - 1
        assignment = table.index_select(0, key)
        table = torch.where(used, table, torch.full_like(table, -1))
        anchor_batch = torch.div(kept, per_set, rounding_mode="floor")
        new_coords = pixel_coords(kept, out_sizes)

        # Candidate (point, anchor) pairs: per axis the offsets d = coord + p - a*s in [0, k)
        # with d == (coord + p) mod s, i.e. d = r + j*s for j < ceil(k / s).
        reach = -(-k // s)
        r = torch.remainder(coords + p, s)  # [N, L]
        js = torch.meshgrid(*[torch.arange(reach, device=device)] * dim, indexing="ij")
        js = torch.stack([j.reshape(-1) for j in js], 1)  # [J, L]
        d = r.unsqueeze(1) + js.unsqueeze(0) * s  # [N, J, L]
        t = coords.unsqueeze(1) + p - d  # = a * s
        a = torch.div(t, s, rounding_mode="floor")
        out_t = torch.tensor(out_sizes, device=device)
        valid = ((d < k) & (t >= 0) & (a < out_t)).all(2)
        akey = pixel_index(a.clamp(min=0).minimum(out_t - 1), out_sizes, batch.view(n, 1))
        aid = table.index_select(0, akey.reshape(-1)).view(akey.shape)
        valid = valid & (aid >= 0)
        pt, jj = valid.nonzero().unbind(1)
        slot = pixel_index(d[pt, jj], (k,) * dim)
        index = torch.full((m * self.slots,), -1, dtype=torch.long, device=device)
        index[aid[pt, jj] * self.slots + slot] = pt
        index = index.view(m, self.slots)

        own = index.index_select(1, self._own_slots.to(device))  # [M, s**L]
        own_count = (own >= 0).sum(1, keepdim=True).clamp(min=1)
        own = torch.where(own >= 0, own, n)  # row n: the zero pad row

        # slots inside the lattice per anchor (the rest is the convolution's zero padding)
        lo = new_coords * s - p  # [M, L]
        size_t = torch.tensor(sizes, device=device)
        inside = ((lo + k).minimum(size_t) - lo.clamp(min=0)).clamp(min=0)
        expected = inside.prod(1).to(torch.float32)
        return _Plan(index, own, own_count, anchor_batch, new_coords, out_sizes, assignment,
                     expected, {})
