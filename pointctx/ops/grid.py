"""Voxel-grid clustering and pooling of packed ragged point sets.

A point at ``p`` of set ``b`` falls in the cell with integer coordinates
``floor((p - origin_b) / size)``, so a point exactly on a cell boundary goes to the upper cell.
Cells are numbered ``0..K-1`` consecutively in this order: by set first, then by cell
coordinates compared lexicographically with the **last** coordinate most significant (for image
pixels with ``pos = (x, y)`` this is raster order: row by row). torch-cluster's linear voxel ids
follow the same order, so both backends give identical cluster ids.

``origin`` defaults to the per-set minimum of the positions, so the cells of a set do not depend
on the other sets in the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_features, check_pos
from ._backend import require_cluster, resolve_backend
from ._common import _setup
from .scatter import scatter_mean

__all__ = ["GridCluster", "GridPool", "grid_cluster", "grid_pool", "grid_cluster_naive"]

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
        org = pos.new_full((b, d), float("inf"))
        if pos.shape[0]:
            org = org.scatter_reduce(
                0, batch.unsqueeze(1).expand_as(pos), pos, reduce="amin", include_self=True
            )
        org = torch.where(torch.isfinite(org), org, torch.zeros_like(org))  # empty sets
    elif isinstance(origin, Tensor) and origin.dim() == 2:
        if origin.shape != (b, d):
            raise ValueError(
                f"a per-set `origin` must have shape [B, D] = [{b}, {d}], got "
                f"{tuple(origin.shape)}"
            )
        org = origin.to(device=pos.device, dtype=pos.dtype)
        if not bool(torch.isfinite(org).all()):
            raise ValueError("`origin` must be finite")
    else:
        org = _as_vector(origin, "origin", d, pos).expand(b, d)
    return pos, batch, b, size_t, org


def grid_cluster(
    pos: Tensor,
    batch: Tensor | None = None,
    size=None,
    origin=None,
    batch_size: int | None = None,
    backend: str | None = None,
) -> GridCluster:
    """Assign every point to a cell of a regular grid laid over its own set.

    Args:
        pos: point positions.
        batch: sorted set index per point; None means one set.
        size: cell edge length: a float or [D] numbers (tensor or sequence), all > 0.
        origin: grid origin: None (per-set minimum of ``pos``), a float or [D] numbers (one
            global origin) or a tensor [B, D] (one origin per set).
        batch_size: number of sets B (avoids a host sync).
        backend: ``"auto"``, ``"native"`` or ``"cluster"`` (torch-cluster's ``grid`` computes the
            per-point voxel ids; numbering and coordinates are done here).

    Returns:
        :class:`GridCluster` ``(cluster, batch, coords)``.

    Shapes:
        pos: [N, D]; batch: [N]; return: cluster [N], batch [K], coords [K, D].
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


def _number_cells(key: Tensor, total: int):
    """Consecutive ids for int64 cell keys in ``[0, total)``, in key order.

    Returns ``(cluster [N], keys [K])``. When the key space is not much larger than the number
    of points an occupancy table replaces the sort of ``torch.unique``.
    """
    if total <= max(4 * key.numel(), 2**16):
        occupied = torch.zeros(total, dtype=torch.bool, device=key.device)
        occupied.index_fill_(0, key, True)
        ids = torch.cumsum(occupied, 0) - 1
        return ids.index_select(0, key), occupied.nonzero().flatten()
    keys, cluster = torch.unique(key, sorted=True, return_inverse=True)
    return cluster, keys


def _decode(keys: Tensor, ext, offset):
    """Invert ``key = ((batch * e[D-1] + c[D-1]) * e[D-2] + ...) * e[0] + c[0]``."""
    coords = []
    rest = keys
    for k in range(len(ext)):
        coords.append(rest % ext[k] + offset[k])
        rest = rest // ext[k]
    return torch.stack(coords, 1), rest


def _grid_native(shifted: Tensor, batch: Tensor, b: int, size_t: Tensor) -> GridCluster:
    cell = torch.floor(shifted / size_t).long()  # [N, D]
    lo = cell.amin(0)
    ext = (cell.amax(0) - lo + 1).tolist()
    total = b
    for e in ext:
        total *= e
    if total < _INT63:
        # one int64 key per point: set, then coordinates with the last one most significant
        key = batch.clone()
        for k in reversed(range(cell.shape[1])):
            key.mul_(ext[k]).add_(cell[:, k] - lo[k])
        cluster, keys = _number_cells(key, total)
        coords, cell_batch = _decode(keys, ext, lo)
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
    voxel = tc.grid_cluster(shifted, size_t, start, end)  # first coordinate least significant
    nv = (((end - start) / size_t).long() + 1).tolist()  # as torch-cluster computes it
    per_set = 1
    for e in nv:
        per_set *= e
    if per_set * b >= _INT63:
        raise ValueError(
            f"grid too fine for backend='cluster': {per_set} cells per set x {b} sets overflows "
            "int64; use backend='native'"
        )
    cluster, keys = _number_cells(batch * per_set + voxel, per_set * b)
    coords, cell_batch = _decode(keys, nv, base.tolist())
    return GridCluster(cluster, cell_batch, coords)


def grid_pool(
    pos: Tensor,
    batch: Tensor | None = None,
    size=None,
    x: Tensor | None = None,
    origin=None,
    batch_size: int | None = None,
    backend: str | None = None,
) -> GridPool:
    """Voxel-grid pooling: average the positions (and features) of the points of each cell.

    Args:
        pos: point positions.
        batch: sorted set index per point; None means one set.
        size: cell edge length (float or [D]); see :func:`grid_cluster`.
        x: optional point features to average per cell.
        origin: grid origin; see :func:`grid_cluster`.
        batch_size: number of sets B (avoids a host sync).
        backend: backend of the clustering step.

    Returns:
        :class:`GridPool` ``(pos, x, batch, cluster)`` with cells in :func:`grid_cluster` order.

    Shapes:
        pos: [N, D]; x: [N, C]; return: pos [K, D], x [K, C] or None, batch [K], cluster [N].
    """
    pos = check_pos(pos)
    x = check_features(x, pos.shape[0], "x")
    gc = grid_cluster(pos, batch, size=size, origin=origin, batch_size=batch_size,
                      backend=backend)
    k = gc.batch.shape[0]
    out_x = scatter_mean(x, gc.cluster, k) if x is not None else None
    return GridPool(scatter_mean(pos, gc.cluster, k), out_x, gc.batch, gc.cluster)


def grid_cluster_naive(
    pos: Tensor,
    batch: Tensor | None = None,
    size=None,
    origin=None,
    batch_size: int | None = None,
) -> GridCluster:
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
    return GridCluster(
        cluster.to(dev),
        torch.tensor(cell_batch, dtype=torch.long, device=dev),
        torch.tensor(coords, dtype=torch.long, device=dev).view(-1, d),
    )
