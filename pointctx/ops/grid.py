"""Voxel-grid clustering and pooling of packed ragged point sets, and the grid helpers."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_features, check_pos
from ._backend import opaque, require_cluster, resolve_backend
from ._common import _setup
from .scatter import scatter_mean
from .segment import infer_batch_size

__all__ = ["GridCluster", "GridPool", "SetBounds", "cell_coords", "grid_box", "grid_cell_coords",
           "grid_cluster", "grid_cluster_naive", "grid_pool", "image_plane", "lattice_plane",
           "lattice_sites", "linear_index", "pixel_coords", "pixel_index", "plane_cells",
           "relabel", "set_bounds", "unravel_index"]

_INT63 = 2**62


class GridCluster(NamedTuple):
    """Result of :func:`grid_cluster`.

    Attributes:
        cluster: [N] int64 cell id of each point, consecutive ``0..K-1`` (ordered by set, then
            by cell coordinates with the last coordinate most significant).
        batch: [K] int64 set of each cell (sorted).
        coords: [K, D] int64 integer cell coordinates relative to the set's origin.
    """

    cluster: Tensor
    batch: Tensor
    coords: Tensor


class GridPool(NamedTuple):
    """Result of :func:`grid_pool`.

    Attributes:
        pos: [K, D] mean position of the points in each cell.
        x: [K, C] mean feature of each cell, or None when no features were given.
        batch: [K] int64 set of each cell (sorted).
        cluster: [N] int64 cell of each input point.
    """

    pos: Tensor
    x: Tensor | None
    batch: Tensor
    cluster: Tensor


class SetBounds(NamedTuple):
    """Result of :func:`set_bounds`.

    Attributes:
        lo: [B, D] per-set minimum of the positions (0 for an empty set).
        hi: [B, D] per-set maximum of the positions (0 for an empty set).
    """

    lo: Tensor
    hi: Tensor


def set_bounds(pos: Tensor, batch: Tensor, batch_size: int) -> SetBounds:
    """Per-set bounding box (minimum and maximum of every coordinate).

    Args:
        pos: point positions.
        batch: sorted set id per point.
        batch_size: number of sets B (empty sets get a zero box).

    Shapes:
        pos: [N, D]; batch: [N]; return: lo [B, D], hi [B, D].
    """
    n, d = pos.shape
    idx = batch.view(-1, 1).expand(n, d)
    lo = pos.new_full((batch_size, d), float("inf"))
    hi = pos.new_full((batch_size, d), float("-inf"))
    if n:
        lo = lo.scatter_reduce(0, idx, pos, reduce="amin", include_self=True)
        hi = hi.scatter_reduce(0, idx, pos, reduce="amax", include_self=True)
    empty = torch.isinf(lo) & (lo > 0)
    return SetBounds(lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0))


def _broadcast_axes(value, d: int, name: str) -> tuple:
    """An int/float for every axis, or a sequence of ``d`` entries."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != d:
            raise ValueError(
                f"`{name}` has {len(value)} entries but the positions have D = {d} coordinates")
        return tuple(value)
    return (value,) * d


def grid_box(pos: Tensor, batch: Tensor, bounds="set", batch_size: int | None = None):
    """Lower corner and extent ``(lo, ext)`` of the box a grid spans, per point.

    Args:
        pos: point positions.
        batch: sorted set id per point.
        bounds: ``"set"`` (each set's bounding box) or a fixed ``(lo, hi)`` pair.
        batch_size: number of sets B (saves a host sync).

    Shapes:
        pos: [N, D]; batch: [N]; return: lo, ext [N, D] each (``"set"``) or [1, D] each.
    """
    d = pos.shape[1]
    if isinstance(bounds, str):
        if bounds != "set":
            raise ValueError(f"`bounds` must be 'set' or a (lo, hi) pair, got {bounds!r}")
        box = set_bounds(pos, batch, infer_batch_size(batch, batch_size))
        lo = box.lo.index_select(0, batch)
        return lo, box.hi.index_select(0, batch) - lo
    lo, hi = bounds
    lo_t = pos.new_tensor(_broadcast_axes(lo, d, "bounds lo")).view(1, d)
    hi_t = pos.new_tensor(_broadcast_axes(hi, d, "bounds hi")).view(1, d)
    return lo_t, hi_t - lo_t


def cell_coords(pos: Tensor, origin: Tensor, size: Tensor, counts=None) -> Tensor:
    """Integer cell coordinates ``floor((pos - origin) / size)`` (clamped to ``[0, counts)``).

    Args:
        pos: point positions.
        origin: grid origin per point ([N, D]) or for all ([1, D] / [D]).
        size: cell edge length per axis.
        counts: optional cells per axis; coordinates are then clamped to ``[0, counts_d - 1]``.

    Shapes:
        pos: [N, D]; origin: [N, D] or [D]; size: [D]; return: [N, D] int64.
    """
    cell = torch.floor((pos - origin) / size).long()
    if counts is not None:
        top = torch.tensor([int(c) - 1 for c in counts], dtype=torch.long, device=pos.device)
        cell = cell.clamp_(min=0).minimum(top.view(1, -1))
    return cell


def grid_cell_coords(pos: Tensor, batch: Tensor, counts: Sequence[int], bounds="set",
                     batch_size: int | None = None) -> Tensor:
    """Integer cell coordinates of every point in a grid of ``counts`` cells per axis.

    Shapes:
        pos: [N, D]; batch: [N]; return: [N, D] int64.
    """
    d = pos.shape[1]
    work = pos.to(torch.promote_types(pos.dtype, torch.float32))
    lo, ext = grid_box(work, batch, bounds, batch_size)
    cnt = torch.tensor(list(counts), dtype=work.dtype, device=pos.device).view(1, d)
    safe = torch.where(ext > 0, ext, torch.ones_like(ext))
    u = torch.where(ext > 0, (work - lo) / safe, torch.zeros_like(work))
    c = torch.floor(u * cnt)
    top = torch.tensor([c_ - 1 for c_ in counts], dtype=torch.long, device=pos.device)
    return c.long().clamp_(min=0).minimum(top.view(1, d))


def linear_index(coords: Tensor, sizes: Sequence[int]) -> Tensor:
    """Linear index of integer coordinates, **axis 0 varying fastest** (last axis slowest).

    Shapes:
        coords: [N, D] int64 with ``0 <= c_d < sizes[d]``; return: [N] int64.
    """
    lin = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)
    for axis in reversed(range(len(sizes))):
        lin = lin * int(sizes[axis]) + coords[:, axis]
    return lin


def unravel_index(lin: Tensor, sizes: Sequence[int]) -> Tensor:
    """Inverse of :func:`linear_index` (axis 0 fastest); the part above ``prod(sizes)`` is dropped.

    Shapes:
        lin: [K] int64; return: [K, D] int64.
    """
    coords = []
    for size in sizes:
        coords.append(torch.remainder(lin, int(size)))
        lin = torch.div(lin, int(size), rounding_mode="floor")
    return torch.stack(coords, 1)


def pixel_coords(pixel: Tensor, size: Sequence[int]) -> Tensor:
    """Row-major lattice coordinates: ``(row, col)`` of pixel indices ``row * W + col``.

    Shapes:
        pixel: [N] int64; size: ``(H, W)`` (or L sizes); return: [N, 2] (or [N, L]) int64.
    """
    return unravel_index(pixel, tuple(size)[::-1]).flip(1)


def pixel_index(coords: Tensor, size: Sequence[int], batch: Tensor | None = None) -> Tensor:
    """Inverse of :func:`pixel_coords`: ``row * W + col`` (plus ``batch * H * W`` with ``batch``).

    Shapes:
        coords: [..., L] int64; batch: [...]; return: [...] int64.
    """
    lin = coords.new_zeros(coords.shape[:-1], dtype=torch.long) if batch is None else batch
    for axis, n in enumerate(size):
        lin = lin * int(n) + coords[..., axis]
    return lin


def image_plane(coords: Tensor, size: Sequence[int], dtype=None, cells: bool = False) -> Tensor:
    """Image-plane ``(x, y)`` of pixels ``(row, col)`` of an ``H x W`` image, in ``[-0.5, 0.5]``.

    Pixel centers span it (Context Cluster convention), or (``cells``) ``1/W x 1/H`` cells tile it.

    Shapes:
        coords: [N, 2] int64; return: [N, 2].
    """
    dtype = dtype or torch.get_default_dtype()
    out = []
    for axis in (1, 0):
        c, n = coords[:, axis].to(dtype), int(size[axis])
        out.append((c + 0.5) / n - 0.5 if cells else c / (n - 1) - 0.5 if n > 1 else c * 0)
    return torch.stack(out, 1)


def plane_cells(stride: Sequence[int], size: Sequence[int], cells: bool = False) -> tuple:
    """``(cell_size, origin)``, each ``(x, y)``, of ``stride`` pixel cells in :func:`image_plane`.

    Without ``cells``, cell borders lie half a pixel before each cell's first pixel (a stage
    point, the mean of its cell's pixels, is inside its cell); with it, the pixel pitch.
    """
    h, w = size
    if cells:
        return (stride[1] / w, stride[0] / h), (-0.5, -0.5)
    px, py = (1.0 / (w - 1) if w > 1 else 1.0), (1.0 / (h - 1) if h > 1 else 1.0)
    return (stride[1] * px, stride[0] * py), (-0.5 - 0.5 * px, -0.5 - 0.5 * py)


def relabel(key: Tensor, key_space: int) -> tuple[Tensor, Tensor]:
    """Consecutive relabelling: the used values of ``key`` become ``0..K-1`` in increasing order.

    Args:
        key: int64 keys in ``[0, key_space)``.
        key_space: upper bound of the keys.

    Shapes:
        key: [N]; return: [N], [K].
    """
    if key_space <= max(4 * key.numel(), 2**16):
        occupied = torch.zeros(key_space, dtype=torch.bool, device=key.device)
        occupied.index_fill_(0, key, True)
        ids = torch.cumsum(occupied, 0) - 1
        return ids.index_select(0, key), occupied.nonzero().flatten()
    keys, ids = torch.unique(key, sorted=True, return_inverse=True)
    return ids, keys


_LATTICES: OrderedDict = OrderedDict()
_LATTICES_MAX = 24


def _cached(key: tuple, build):
    """LRU cache of full-lattice tensors (built outside inference mode: they serve autograd too)."""
    hit = _LATTICES.get(key)
    if hit is None:
        with torch.inference_mode(False):
            hit = _LATTICES[key] = build()
        if len(_LATTICES) > _LATTICES_MAX:
            _LATTICES.popitem(last=False)
    else:
        _LATTICES.move_to_end(key)
    return hit


def lattice_sites(batch_size: int, sizes: Sequence[int], device=None) -> tuple[Tensor, Tensor]:
    """Every site of ``batch_size`` full lattices of ``sizes``: integer coordinates and set ids.

    Shapes:
        return: coords [N, L], batch [N].
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    b, sizes = int(batch_size), tuple(int(g) for g in sizes)
    per_set = math.prod(sizes)
    return _cached((b, sizes, device), lambda: (
        pixel_coords(torch.arange(per_set, device=device), sizes).repeat(b, 1),
        torch.arange(b, device=device).repeat_interleave(per_set)))


def lattice_plane(batch_size: int, size: Sequence[int], device=None, dtype=None) -> Tensor:
    """Image-plane positions of every pixel of ``batch_size`` full ``(H, W)`` images.

    Shapes:
        return: [B * H * W, 2].
    """
    coords, dtype = lattice_sites(batch_size, size, device)[0], dtype or torch.get_default_dtype()
    return _cached((int(batch_size), tuple(size), coords.device, dtype, "plane"),
                   lambda: image_plane(coords, size, dtype))


def _as_vector(value, name: str, d: int, like: Tensor) -> Tensor:
    """A float, a sequence of D numbers or a tensor [D] (or scalar) as a [D] tensor."""
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number, a sequence or a tensor, got bool")
    t = value if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.float64)
    t = t.to(device=like.device, dtype=like.dtype)
    if t.dim() == 0:
        t = t.expand(d)
    if t.shape != (d,):
        raise ValueError(f"`{name}` must be a scalar or have shape [D] = [{d}], got "
                         f"{tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"`{name}` must be finite, got {t.tolist()}")
    return t


def _prepare(pos, batch, size, origin, batch_size):
    """Shared argument handling: returns batch, B, size [D], per-set origin [B, D], sizes."""
    pos = check_pos(pos)
    batch, b, sizes, _ = _setup(pos, batch, batch_size)
    d = pos.shape[1]
    if size is None:
        raise ValueError("`size` (cell edge length, float or [D]) is required")
    size_t = _as_vector(size, "size", d, pos)
    if bool((size_t <= 0).any()):
        raise ValueError(f"`size` must be > 0 in every dimension, got {size_t.tolist()}")
    if origin is None:
        org = set_bounds(pos, batch, b).lo  # empty sets: 0
    elif isinstance(origin, Tensor) and origin.dim() == 2:
        if origin.shape != (b, d):
            raise ValueError(f"a per-set `origin` must have shape [B, D] = [{b}, {d}], got "
                             f"{tuple(origin.shape)}")
        org = origin.to(device=pos.device, dtype=pos.dtype)
        if not bool(torch.isfinite(org).all()):
            raise ValueError("`origin` must be finite")
    else:
        org = _as_vector(origin, "origin", d, pos).expand(b, d)
    return pos, batch, b, size_t, org


def grid_cluster(pos: Tensor, batch: Tensor | None = None, size=None, origin=None,
                 batch_size: int | None = None, backend: str | None = None) -> GridCluster:
    """Assign every point to a cell of a regular grid laid over its own set.

    Args:
        pos: point positions.
        batch: sorted set index per point; None: one set.
        size: cell edge length: a float or [D] numbers, all > 0.
        origin: None (per-set minimum), a float or [D] numbers, or [B, D] per set.
        batch_size: number of sets B (saves a host sync).
        backend: ``"auto"``, ``"native"`` or ``"cluster"``.

    Shapes:
        pos: [N, D]; batch: [N]; return: :class:`GridCluster` (cluster [N], batch [K],
        coords [K, D]).
    """
    pos, batch, b, size_t, org = _prepare(pos, batch, size, origin, batch_size)
    n, d = pos.shape
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pos.device)
        return GridCluster(empty, empty, torch.zeros(0, d, dtype=torch.long, device=pos.device))
    shifted = pos - org.index_select(0, batch)
    if resolve_backend(backend, "grid", pos.device) == "cluster":
        return _grid_cluster_tc(shifted, batch, b, size_t)
    return _grid_native(shifted, batch, b, size_t)


def _decode(keys: Tensor, ext, offset):
    """Cell coordinates and set of the keys ``batch * prod(ext) + linear_index(c - offset)``."""
    per_set = math.prod(int(e) for e in ext)
    coords = unravel_index(keys, ext) + torch.tensor(offset, device=keys.device).view(1, -1)
    return coords, torch.div(keys, per_set, rounding_mode="floor")


def _grid_native(shifted: Tensor, batch: Tensor, b: int, size_t: Tensor) -> GridCluster:
    cell = cell_coords(shifted, 0.0, size_t)  # [N, D]
    lo = cell.amin(0)
    ext = (cell.amax(0) - lo + 1).tolist()
    total = b
    for e in ext:
        total *= e
    if total < _INT63:
        # one int64 key per point: set, then coordinates with the last one most significant
        key = batch * (total // b) + linear_index(cell - lo, ext)
        cluster, keys = relabel(key, total)
        coords, cell_batch = _decode(keys, ext, lo.tolist())
        return GridCluster(cluster, cell_batch, coords)
    # coordinates too spread out for one int64 key: lexicographic unique on rows
    rows = torch.cat([batch.unsqueeze(1), cell.flip(1)], 1)
    _, cluster = torch.unique(rows, dim=0, sorted=True, return_inverse=True)
    k_cells = int(cluster.max()) + 1
    coords = cell.new_zeros(k_cells, cell.shape[1])
    coords[cluster] = cell  # all points of a cell share its coordinates
    cell_batch = batch.new_zeros(k_cells)
    cell_batch[cluster] = batch
    return GridCluster(cluster, cell_batch, coords)


def _grid_cluster_tc(shifted: Tensor, batch: Tensor, b: int, size_t: Tensor) -> GridCluster:
    tc = require_cluster()
    # torch-cluster truncates toward zero; move every point to non-negative offsets by a whole
    # number of cells first (a no-op for the default per-set-minimum origin).
    base = torch.floor(shifted.amin(0) / size_t).clamp(max=0)
    if bool((base < 0).any()):
        shifted = shifted - base * size_t
    base = base.long()
    start = torch.zeros_like(size_t)
    end = shifted.amax(0)
    # first coordinate least significant
    voxel = opaque(tc.grid_cluster)(shifted, size_t, start, end)
    nv = (((end - start) / size_t).long() + 1).tolist()  # as torch-cluster computes it
    per_set = 1
    for e in nv:
        per_set *= e
    if per_set * b >= _INT63:
        raise ValueError(f"grid too fine for backend='cluster': {per_set} cells per set x {b} sets "
                         "overflows int64; use backend='native'")
    cluster, keys = relabel(batch * per_set + voxel, per_set * b)
    coords, cell_batch = _decode(keys, nv, base.tolist())
    return GridCluster(cluster, cell_batch, coords)


def grid_pool(pos: Tensor, batch: Tensor | None = None, size=None, x: Tensor | None = None,
              origin=None, batch_size: int | None = None, backend: str | None = None) -> GridPool:
    """Voxel-grid pooling: average the positions (and features) of the points of each cell.

    Args:
        pos: point positions.
        batch: sorted set index per point; None means one set.
        size: cell edge length (float or [D]); see :func:`grid_cluster`.
        x: optional point features to average per cell.
        origin: grid origin; see :func:`grid_cluster`.
        batch_size: number of sets B (avoids a host sync).
        backend: backend of the clustering step.

    Shapes:
        pos: [N, D]; x: [N, C]; return: pos [K, D], x [K, C] or None, batch [K], cluster [N].
    """
    pos = check_pos(pos)
    x = check_features(x, pos.shape[0], "x")
    gc = grid_cluster(pos, batch, size=size, origin=origin, batch_size=batch_size, backend=backend)
    k = gc.batch.shape[0]
    out_x = scatter_mean(x, gc.cluster, k) if x is not None else None
    return GridPool(scatter_mean(pos, gc.cluster, k), out_x, gc.batch, gc.cluster)


def grid_cluster_naive(pos: Tensor, batch: Tensor | None = None, size=None, origin=None,
                       batch_size: int | None = None) -> GridCluster:
    """Per-set Python loop version of :func:`grid_cluster` (slow, obviously correct; for tests).

    Shapes:
        pos: [N, D]; return: cluster [N], batch [K], coords [K, D].
    """
    pos, batch, b, size_t, org = _prepare(pos, batch, size, origin, batch_size)
    n, d = pos.shape
    cluster = torch.zeros(n, dtype=torch.long)
    cell_batch, coords = [], []
    for s in range(b):
        rows = (batch == s).nonzero().flatten()
        cells = [tuple(c) for c in torch.floor((pos[rows] - org[s]) / size_t).long().tolist()]
        # cells of this set, last coordinate most significant
        ordered = sorted(set(cells), key=lambda c: tuple(reversed(c)))
        ids = {c: len(coords) + j for j, c in enumerate(ordered)}
        cluster[rows.cpu()] = torch.tensor([ids[c] for c in cells], dtype=torch.long)
        coords.extend(ordered)
        cell_batch.extend([s] * len(ordered))
    dev = pos.device
    return GridCluster(cluster.to(dev), torch.tensor(cell_batch, dtype=torch.long, device=dev),
                       torch.tensor(coords, dtype=torch.long, device=dev).view(-1, d))
