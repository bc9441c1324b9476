"""Center proposals for Context Clusters: where the cluster centers of a point set come from."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._checks import (
    check_bounds,
    check_choice,
    check_counts,
    check_int,
    check_number,
    is_number,
    per_axis,
)
from .._resolver import normalize_name, resolve
from ..ops.grid import cell_coords, grid_box, grid_cell_coords, linear_index, relabel
from ..ops.scatter import scatter_mean, scatter_sum
from ..ops.segment import infer_batch_size

__all__ = ["Centers", "RegionCenters", "CenterProposal", "GridProposal", "FPSProposal",
           "RandomProposal", "grid_cell_coords", "pool_centers", "sort_by_group", "build_proposal",
           "register_proposal", "resolve_proposal", "list_proposals"]


class Centers(NamedTuple):
    """Cluster centers proposed for a batch of ragged point sets.

    Attributes:
        pos: [M, D] center positions.
        batch: [M] group of each center (set, or ``set * num_regions + region``), sorted.
        member_point: [P] point of each membership pair.
        member_center: [P] center of each membership pair (a center pools its members' mean).
        assignment: [N] primary center of every point (the first N pairs), or None.
    """

    pos: Tensor
    batch: Tensor
    member_point: Tensor
    member_center: Tensor
    assignment: Tensor | None


def pool_centers(feat: Tensor, centers: Centers) -> Tensor:
    """Mean of the member points' features for every center (0 for a center without members).

    Args:
        feat: point features.
        centers: the proposal's output.

    Shapes:
        feat: [N, C]; return: [M, C] with M = ``centers.pos.shape[0]``.
    """
    m = centers.pos.shape[0]
    if centers.assignment is not None:
        if centers.member_point.numel() == centers.assignment.numel():  # a partition
            return scatter_mean(feat, centers.assignment, m)
        return _pool_pairs(feat, centers.assignment, centers.member_point, centers.member_center, m)
    src = feat.index_select(0, centers.member_point)
    return scatter_mean(src, centers.member_center, m)


def _pool_pairs(feat, assignment, member_point, member_center, m):
    """Mean over the pairs whose first N are (i, assignment[i]): sum those without a gather."""
    n = assignment.numel()
    total = scatter_sum(feat, assignment, m)
    total = total.index_add(0, member_center[n:], feat.index_select(0, member_point[n:]))
    count = torch.bincount(member_center, minlength=m)[:m].clamp_(min=1).to(total.dtype)
    return total / count.view((-1,) + (1,) * (feat.dim() - 1))


class RegionCenters(NamedTuple):
    """Centers proposed per set or per region, with each point's candidate group.

    Attributes:
        centers: the :class:`Centers` (sorted by group; ``centers.batch`` is the group).
        group: [N] int64 group (``set * num_regions + region``) whose centers a point may join.
        num_groups: number of groups (``num_sets * num_regions``).
        region: [N] int64 region of every point in its set (axis 0 fastest), or None.
    """

    centers: Centers
    group: Tensor
    num_groups: int
    region: Tensor | None


class CenterProposal(nn.Module):
    """Base class of center proposals."""

    mean_pooling: bool = True
    sorted_by_group: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "pool" in cls.__dict__ and "mean_pooling" not in cls.__dict__:
            cls.mean_pooling = False

    def forward(self, pos: Tensor, batch: Tensor, batch_size: int | None = None) -> Centers:
        """Propose centers for every set (or group) of a packed batch.

        Args:
            pos: point positions.
            batch: sorted set (group) id per point.
            batch_size: number of sets B, if known (avoids a host sync).

        Shapes:
            pos: [N, D]; batch: [N]; return: :class:`Centers` with M centers.
        """
        raise NotImplementedError

    def propose(self, pos: Tensor, batch: Tensor, batch_size: int | None = None, regions=None,
                bounds="set", spacing=None) -> RegionCenters:
        """Propose centers per set, or per region of every set.

        Args:
            pos: point positions.
            batch: sorted set id per point.
            batch_size: number of sets B, if known (avoids a host sync).
            regions: None, or regions per axis; the proposal runs on each region of each set.
            bounds: the box of the region grid: ``"set"`` or a fixed ``(lo, hi)``.
            spacing: the lattice pitch of pixel-like points (see :class:`GridProposal`).

        Shapes:
            pos: [N, D]; batch: [N]; return: :class:`RegionCenters` (group [N], region [N]).
        """
        num_sets = infer_batch_size(batch, batch_size)
        regs = _regions(regions, pos.shape[1])
        if regs is None:
            centers = self(pos, batch, num_sets)
            group, region, num_groups = batch.long(), None, num_sets
        else:
            num_regions = math.prod(regs)
            num_groups = num_sets * num_regions
            coords = grid_cell_coords(pos, batch, regs, check_bounds(bounds), num_sets)
            region = linear_index(coords, regs)
            group = batch.long() * num_regions + region
            perm = torch.argsort(group, stable=True)
            local = self(pos.index_select(0, perm), group.index_select(0, perm), num_groups)
            assignment = None
            if local.assignment is not None:
                assignment = torch.empty_like(local.assignment)
                assignment[perm] = local.assignment
            centers = Centers(local.pos, local.batch, perm.index_select(0, local.member_point),
                              local.member_center, assignment)
        if not self.sorted_by_group:
            centers = sort_by_group(centers)
        return RegionCenters(centers, group, num_groups, region)

    def pool(self, feat: Tensor, centers: Centers) -> Tensor:
        """Pool point features into center features (mean over members; 0 without members).

        Shapes:
            feat: [N, C]; return: [M, C].
        """
        return pool_centers(feat, centers)


def _regions(regions, dim: int):
    """Regions per axis as a tuple, or None for no regions (or a single region)."""
    if regions is None:
        return None
    regs = per_axis(check_counts(regions, "regions"), dim, "regions")
    return None if math.prod(regs) == 1 else regs


def sort_by_group(centers: Centers) -> Centers:
    """Reorder centers by group (stable) and renumber the membership pairs accordingly."""
    order = torch.argsort(centers.batch, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    assignment = None if centers.assignment is None else rank.index_select(0, centers.assignment)
    return Centers(centers.pos.index_select(0, order), centers.batch.index_select(0, order),
                   centers.member_point, rank.index_select(0, centers.member_center), assignment)


# Grid


def _spacing(spacing, n: int, d: int, like: Tensor) -> Tensor:
    """The lattice pitch as a [1, D] or [N, D] tensor of ``like``'s dtype (checked > 0)."""
    if isinstance(spacing, Tensor):
        t = spacing.to(device=like.device, dtype=like.dtype)
        if t.dim() == 0:
            t = t.expand(d)
        if t.shape not in ((d,), (n, d), (1, d)):
            raise ValueError(f"`spacing` must be a number, {d} numbers, or a tensor [{d}] or "
                             f"[N, {d}] = [{n}, {d}], got shape {tuple(spacing.shape)}")
        t = t.reshape(-1, d)
    else:
        vals = per_axis(spacing, d, "spacing")
        try:
            t = like.new_tensor([float(v) for v in vals]).view(1, d)
        except (TypeError, ValueError):
            raise TypeError(f"`spacing` must be numbers, got {spacing!r}") from None
    if t.numel() and not bool((t > 0).all()):
        raise ValueError("`spacing` must be > 0 on every axis")
    return t


_WINDOWS = ("partition", "adaptive")
# Overlaps below this fraction of a cell are rounding, not overlap (exact for lattices of fewer
# than 1 / _WINDOW_EPS pixels per region and axis).
_WINDOW_EPS = 1e-4


class GridProposal(CenterProposal):
    """Regular-grid centers: one center per non-empty cell (or window), at its points' mean.

    Args:
        cells: cells per axis (an int or one per axis; default 2). Exclusive with ``size``.
        size: cell edge length (a float or one per axis) instead of a count.
        bounds: None / ``"set"`` (each set's box) or a fixed ``(lo, hi)`` (pixel sets).
        windows: ``"partition"`` (the cell holding a point) or ``"adaptive"`` (overlapping
            ``AdaptiveAvgPool2d`` windows at the lattice pitch ``spacing``).

    Shapes:
        pos: [N, D]; batch: [N]; spacing: a number, D numbers, or [D] / [N, D];
        return: :class:`Centers` (``assignment`` [N], P >= N membership pairs).
    """

    sorted_by_group = True

    def __init__(self, cells=None, size=None, bounds=None, windows: str = "partition"):
        super().__init__()
        if cells is not None and size is not None:
            raise ValueError(
                "give either `cells` (count per axis) or `size` (edge length), not both")
        self.windows = check_choice(windows, "windows", _WINDOWS)
        if size is None:
            self.cells, self.size = check_counts(2 if cells is None else cells, "cells"), None
        else:
            if self.windows != "partition":
                raise ValueError(f"`windows={windows!r}` needs a count-based grid (`cells`), "
                                 "not `size`")
            sizes = tuple(size) if isinstance(size, Sequence) else (size,)
            if not all(is_number(s) and s > 0 for s in sizes):
                raise ValueError(f"`size` must be a positive number or a sequence of them, "
                                 f"got {size!r}")
            self.size = tuple(float(s) for s in size) if isinstance(size, Sequence) else float(size)
            self.cells = None
        self.bounds = check_bounds(bounds)

    def extra_repr(self) -> str:
        """Grid settings for ``repr``."""
        grid = f"cells={self.cells}" if self.size is None else f"size={self.size}"
        return f"{grid}, bounds={self.bounds!r}, windows={self.windows!r}"

    def forward(self, pos: Tensor, batch: Tensor, batch_size: int | None = None, regions=None,
                spacing=None) -> Centers:
        """Propose grid centers (see the class docstring); ``regions`` groups them by region."""
        num_sets = infer_batch_size(batch, batch_size)
        regs = None if regions is None else per_axis(regions, pos.shape[1], "regions")
        return self._grid(pos, batch, num_sets, regs, spacing)[0]

    def propose(self, pos, batch, batch_size=None, regions=None, bounds="set", spacing=None):
        """Grid centers per set or per region (see :meth:`CenterProposal.propose`)."""
        num_sets = infer_batch_size(batch, batch_size)
        regs = _regions(regions, pos.shape[1])
        centers, group = self._grid(pos, batch, num_sets, regs, spacing)
        if regs is None:
            return RegionCenters(centers, batch.long(), num_sets, None)
        num_regions = math.prod(regs)
        return RegionCenters(centers, group, num_sets * num_regions,
                             group - batch.long() * num_regions)

    def _grid(self, pos: Tensor, batch: Tensor, num_sets: int, regs, spacing):
        """Centers and the group of every point."""
        n, d = pos.shape
        if self.size is not None:
            if regs is not None:
                raise ValueError("`regions` needs a count-based grid (`cells`), but this "
                                 "GridProposal uses `size`")
            local, cells = self._size_coords(pos, batch, num_sets)
            return self._partition(pos, batch.long(), local, cells, num_sets), batch.long()
        cells = per_axis(self.cells, d, "cells")
        regs = (1,) * d if regs is None else regs
        num_regions = math.prod(regs)
        fine = [r * c for r, c in zip(regs, cells)]
        if self.windows == "adaptive" and spacing is not None:
            return self._adaptive(pos, batch, num_sets, regs, cells, fine, spacing)
        coords = grid_cell_coords(pos, batch, fine, self.bounds, num_sets)
        group = batch.long() * num_regions
        local = coords
        if num_regions > 1:
            reg_t = torch.tensor(cells, dtype=torch.long, device=pos.device).view(1, d)
            group = group + linear_index(torch.div(coords, reg_t, rounding_mode="floor"), regs)
            local = torch.remainder(coords, reg_t)
        return self._partition(pos, group, local, cells, num_sets * num_regions), group

    @staticmethod
    def _partition(pos, group, local, cells, num_groups) -> Centers:
        per_group = math.prod(cells)
        key = group * per_group + linear_index(local, cells)
        assignment, kept = relabel(key, max(num_groups * per_group, 1))
        m = kept.numel()
        center_pos = scatter_mean(pos, assignment, m)
        center_group = torch.div(kept, per_group, rounding_mode="floor")
        member_point = torch.arange(pos.shape[0], device=pos.device)
        return Centers(center_pos, center_group, member_point, assignment, assignment)

    def _adaptive(self, pos, batch, num_sets, regs, cells, fine, spacing):
        """Overlapping windows: every (point, cell of its region overlapped by its footprint)."""
        n, d = pos.shape
        dev = pos.device
        work = pos.to(torch.promote_types(pos.dtype, torch.float32))
        half = _spacing(spacing, n, d, work) * 0.5  # [1, D] or [N, D]
        per_point = half.shape[0] != 1 or self.bounds == "set"
        if self.bounds == "set":  # the box of the footprints, not of the positions
            lo, _ = grid_box(work - half, batch, "set", num_sets)
            lo_hi, ext_hi = grid_box(work + half, batch, "set", num_sets)
            ext = lo_hi + ext_hi - lo
        else:
            lo, ext = grid_box(work, batch, self.bounds, 0)
        if not per_point:  # [1, D] each: per-axis Python numbers
            lo, ext, half = lo.view(-1).tolist(), ext.view(-1).tolist(), half.view(-1).tolist()
        num_regions = math.prod(regs)
        per_group = math.prod(cells)
        key0 = batch.long() * num_regions
        extras, most = [], []
        local, region_lin, stride, r_stride = None, None, 1, 1
        for axis in range(d):
            u_a = work[:, axis].contiguous()
            if per_point:
                e = ext[:, axis]
                scale = torch.where(e > 0, fine[axis] / torch.where(e > 0, e, torch.ones_like(e)),
                                    torch.zeros_like(e))
                u_a = (u_a - lo[:, axis]) * scale
                reach = half[:, axis] * scale
            else:
                scale = fine[axis] / ext[axis]
                u_a = (u_a - lo[axis]) * scale
                reach = half[axis] * scale
            own = torch.floor(u_a).long().clamp_(0, fine[axis] - 1)
            region = torch.div(own, cells[axis], rounding_mode="floor")
            r_lo = region * cells[axis]
            # first / last window: the cells the footprint overlaps by more than the rounding
            # margin, inside the point's region and always holding its own cell
            first = torch.floor(u_a - reach + _WINDOW_EPS).long().maximum(r_lo).minimum(own)
            last = (torch.ceil(u_a + reach - _WINDOW_EPS).long() - 1).minimum(
                r_lo + (cells[axis] - 1)).maximum(own)
            extra = last - first  # further windows along this axis (0: one window)
            extras.append(extra)
            most.append(int(extra.max()) if n else 0)
            term = (first - r_lo) * stride
            local = term if local is None else local + term
            term = region * r_stride
            region_lin = term if region_lin is None else region_lin + term
            stride *= cells[axis]
            r_stride *= regs[axis]
        group = key0 + region_lin
        key0 = group * per_group + local
        strides = [math.prod(cells[:axis]) for axis in range(d)]  # axis 0 fastest
        # pairs: first every point with its first window (so member_center[:N] is the
        # assignment), then per offset combination the points whose windows reach that far
        points, keys = [torch.arange(n, device=dev)], [key0]
        for offset in itertools.product(*[range(e + 1) for e in most]):
            if not any(offset):
                continue
            ok = None
            for axis, o in enumerate(offset):
                if o:
                    hit = extras[axis] >= o
                    ok = hit if ok is None else ok & hit
            idx = ok.nonzero().view(-1)
            points.append(idx)
            keys.append(key0.index_select(0, idx) + sum(o * st for o, st in zip(offset, strides)))
        point = torch.cat(points) if len(points) > 1 else points[0]
        key = torch.cat(keys) if len(keys) > 1 else keys[0]
        member_center, kept = relabel(key, max(num_sets * num_regions * per_group, 1))
        m = kept.numel()
        center_pos = _pool_pairs(pos, member_center[:n], point, member_center, m)
        center_group = torch.div(kept, per_group, rounding_mode="floor")
        return Centers(center_pos, center_group, point, member_center, member_center[:n]), group

    def _size_coords(self, pos: Tensor, batch: Tensor, num_sets: int):
        n, d = pos.shape
        sizes = per_axis(self.size, d, "size")
        work = pos.to(torch.promote_types(pos.dtype, torch.float32))
        lo, ext = grid_box(work, batch, self.bounds, num_sets)
        size_t = work.new_tensor(sizes).view(1, d)
        if self.bounds == "set":
            top = torch.floor(ext / size_t).long()
            counts = [int(v) + 1 for v in (top.amax(0) if n else top.new_zeros(d)).tolist()]
        else:
            counts = [max(1, math.ceil(e / s - 1e-9)) for e, s in zip(ext.view(-1).tolist(), sizes)]
        return cell_coords(work, lo, size_t.view(-1), counts), counts


# Sampled centers (FPS / random) with k-nearest-neighbour membership


class _SampledProposal(CenterProposal):
    """Centers at sampled points; members = the ``k`` nearest points of the same group."""

    sorted_by_group = True

    def __init__(self, num=None, ratio=None, k: int = 16):
        super().__init__()
        if (num is None) == (ratio is None):
            raise ValueError(f"{type(self).__name__} needs exactly one of `num` (centers per set) "
                             f"or `ratio`, got num={num!r}, ratio={ratio!r}")
        if num is not None:
            check_int(num, "num", 1, type_error=ValueError)
        else:
            check_number(ratio, "ratio", 0.0, 1.0, min_open=True, type_error=ValueError)
        check_int(k, "k", 1, type_error=ValueError)
        self.num, self.ratio, self.k = num, ratio, k

    def extra_repr(self) -> str:
        """Sampling settings for ``repr``."""
        amount = f"num={self.num}" if self.num is not None else f"ratio={self.ratio}"
        return f"{amount}, k={self.k}"

    def sample(self, pos: Tensor, batch: Tensor, batch_size: int | None) -> Tensor:
        """Indices of the center points, sorted by set."""
        raise NotImplementedError

    def forward(self, pos: Tensor, batch: Tensor, batch_size: int | None = None) -> Centers:
        """Sample centers and attach the ``k`` nearest points of the same set to each."""
        from ..ops.knn import knn

        idx = self.sample(pos, batch, batch_size)
        center_pos = pos.index_select(0, idx)
        center_batch = batch.index_select(0, idx).long()
        m = idx.numel()
        if m == 0:
            empty = torch.zeros(0, dtype=torch.long, device=pos.device)
            return Centers(center_pos, center_batch, empty, empty, None)
        nbr = knn(pos, center_pos, self.k, batch_x=batch, batch_y=center_batch,
                  batch_size=batch_size).index
        k = nbr.shape[1]
        member_center = torch.arange(m, device=pos.device).repeat_interleave(k)
        member_point = nbr.reshape(-1)
        keep = member_point >= 0
        return Centers(center_pos, center_batch, member_point[keep], member_center[keep], None)


class FPSProposal(_SampledProposal):
    """Centers by farthest point sampling; each center pools its ``k`` nearest points.

    Args:
        num: centers per set (smaller sets keep all points). Exclusive with ``ratio``.
        ratio: fraction of each set's points to keep as centers.
        k: nearest points (of the same set) pooled into each center.
        random_start: start each set's FPS at a random point instead of its first point.
        backend: point-op backend for FPS/kNN (see :mod:`pointctx.ops`).

    Shapes:
        pos: [N, D]; batch: [N]; return: :class:`Centers` (``assignment`` None).
    """

    def __init__(self, num=None, ratio=None, k: int = 16, random_start: bool = False,
                 backend: str | None = None):
        super().__init__(num=num, ratio=ratio, k=k)
        self.random_start, self.backend = bool(random_start), backend

    def sample(self, pos: Tensor, batch: Tensor, batch_size: int | None) -> Tensor:
        """FPS indices, sorted by set."""
        from ..ops.fps import fps

        return fps(pos, batch, ratio=self.ratio, num=self.num, random_start=self.random_start,
                   batch_size=batch_size, backend=self.backend)


class RandomProposal(_SampledProposal):
    """Centers at uniformly random points; each center pools its ``k`` nearest points."""

    def __init__(self, num=None, ratio=None, k: int = 16, generator: torch.Generator | None = None):
        super().__init__(num=num, ratio=ratio, k=k)
        self.generator = generator

    def sample(self, pos: Tensor, batch: Tensor, batch_size: int | None) -> Tensor:
        """Random indices, sorted by set."""
        from ..ops.random import random_sample

        return random_sample(pos, batch, ratio=self.ratio, num=self.num,
                             generator=self.generator, batch_size=batch_size)


# Registry

_PROPOSALS: dict[str, type] = {"grid": GridProposal, "fps": FPSProposal, "random": RandomProposal}


def register_proposal(name: str, cls, overwrite: bool = False) -> None:
    """Make a proposal class (or factory) available by name to :func:`resolve_proposal`.

    Args:
        name: the lookup name (matched case- and underscore-insensitively).
        cls: a :class:`CenterProposal` subclass or a callable returning one.
        overwrite: replace an existing entry of the same name.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty str, got {name!r}")
    if not callable(cls):
        raise TypeError(f"`cls` must be a CenterProposal subclass or factory, got {cls!r}")
    key = normalize_name(name)
    clash = [k for k in _PROPOSALS if normalize_name(k) == key]
    if clash and not overwrite:
        raise ValueError(f"a proposal named {clash[0]!r} is already registered; pass "
                         "overwrite=True to replace it")
    for k in clash:
        del _PROPOSALS[k]
    _PROPOSALS[name] = cls


def list_proposals() -> list[str]:
    """Names of the registered proposals."""
    return sorted(_PROPOSALS)


def resolve_proposal(name_or_module, **kwargs) -> CenterProposal:
    """Return a proposal module: an instance as is, else build it by name or class with kwargs."""
    out = resolve(name_or_module, _PROPOSALS, "proposal", base=CenterProposal, **kwargs)
    if not isinstance(out, CenterProposal):
        raise TypeError(f"a proposal must be a CenterProposal (nn.Module), got {type(out)}")
    return out


# Default center count of the sampled proposals when ``centers`` is None (2 x 2, as before).
_DEFAULT_SAMPLED = 4


def build_proposal(proposal="grid", centers=None, bounds=None, proposal_kwargs=None,
                   ) -> CenterProposal:
    """Build the proposal of a clustering layer from its ``proposal`` / ``centers`` options.

    Args:
        proposal: a registered name, a :class:`CenterProposal` class, factory or instance.
        centers: grid cells per axis (None: 2), or fps / random centers per set or region (4).
        bounds: the grid's box (None / ``"set"`` or ``(lo, hi)``); grid only.
        proposal_kwargs: extra keyword arguments for the proposal (override the above); the only
            ones a user-registered proposal receives.
    """
    kwargs = dict(proposal_kwargs or {})
    counts = None if centers is None else check_counts(centers, "centers")
    cls = proposal
    if isinstance(proposal, str):
        key = normalize_name(proposal)
        cls = next((c for k, c in _PROPOSALS.items() if normalize_name(k) == key), None)
    if isinstance(cls, type) and issubclass(cls, GridProposal):
        kwargs = {"cells": counts, "bounds": bounds, **kwargs}
    elif isinstance(cls, type) and issubclass(cls, _SampledProposal):
        num = _DEFAULT_SAMPLED if counts is None else (
            counts if isinstance(counts, int) else math.prod(counts))
        kwargs = {"num": num, **kwargs}
    return resolve_proposal(proposal, **kwargs)
