"""Exact k nearest neighbours on packed ragged sets, accelerated by a uniform grid of cells."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_positive_int, is_number
from ._backend import resolve_backend
from ._common import _sqdist
from .knn import KNN, _batches, _brute_force, _check_pair, _empty_result, knn

__all__ = ["grid_knn"]

_CHUNK = 2**18
# auto cells: mean source points per cell, as a fraction of k, per dimension D, and the window
# half-widths in cell sides (first and second try): a window then reaches ~1.3x the distance of
# the k-th neighbour at a uniform density
_PER_CELL = {1: 0.33, 2: 0.134, 3: 0.065}
_REACH = (2.0, 4.0)


def _cell_size(cell_size, dim: int, like: Tensor, name: str = "cell_size",
               positive: bool = True) -> Tensor:
    if isinstance(cell_size, Tensor):
        cs = cell_size.to(device=like.device, dtype=like.dtype).reshape(-1)
    elif is_number(cell_size):
        cs = torch.full((1,), float(cell_size), device=like.device, dtype=like.dtype)
    else:
        try:
            vals = [float(v) for v in cell_size]
        except TypeError:
            raise TypeError(f"`{name}` must be a number or one number per coordinate, got "
                            f"{type(cell_size).__name__}") from None
        cs = torch.tensor(vals, device=like.device, dtype=like.dtype)
    if cs.numel() == 1:
        cs = cs.expand(dim)
    if cs.numel() != dim:
        raise ValueError(
            f"`{name}` must have one entry per coordinate (D = {dim}), got {cs.numel()}")
    if (positive and not bool((cs > 0).all())) or not bool(torch.isfinite(cs).all()):
        raise ValueError(f"`{name}` entries must be finite" + (" and > 0" if positive else "")
                         + f", got {cs.tolist()}")
    return cs.contiguous()


def _ravel(cells: Tensor, dims: Tensor) -> Tensor:
    """Row-major cell number of ``cells [..., D]`` in grids of ``dims [..., D]`` cells."""
    key = torch.zeros(cells.shape[:-1], dtype=torch.long, device=cells.device)
    for a in range(cells.shape[-1]):
        key = key * dims[..., a] + cells[..., a]
    return key


def grid_knn(x_pos: Tensor, y_pos: Tensor, k: int, batch_x: Tensor | None = None,
             batch_y: Tensor | None = None, *, cell_size, origin=None, radius: int = 2,
             batch_size: int | None = None, backend: str | None = None,
             chunk_size: int | None = None) -> KNN:
    """The ``k`` nearest points of ``x_pos`` (same set) for every row of ``y_pos``, via cells.

    Args:
        x_pos: the points searched.
        y_pos: the query points.
        k: neighbours per query (>= 1).
        batch_x: sorted set index per ``x_pos`` row; None means one set.
        batch_y: sorted set index per ``y_pos`` row; None means one set.
        cell_size: side of the grid cells, one number or one per coordinate (> 0).
        origin: a grid corner, one number or one per coordinate (default: the lowest point).
        radius: first window radius in cells (>= 1; 2 settles a lattice for ``k <= 8``).
        batch_size: number of sets B (avoids a host sync).
        backend: kNN backend for the queries the windows cannot settle.
        chunk_size: most candidate entries held at once (default ``2**18``).

    Shapes:
        x_pos: [N, D]; y_pos: [M, D]; return: index, dist2 [M, k].
    """
    x_pos, y_pos = _check_pair(x_pos, y_pos)
    k = check_positive_int(k, "k", minimum=1)
    radius = check_positive_int(radius, "radius", minimum=1)
    chunk = _CHUNK if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    bx, by, b, sx, px, sy, py = _batches(x_pos, y_pos, batch_x, batch_y, batch_size)
    dim = x_pos.shape[1]
    cs = _cell_size(cell_size, dim, x_pos)
    m, n = y_pos.shape[0], x_pos.shape[0]
    if m == 0 or n == 0:
        return _empty_result(m, k, x_pos)
    lowest = torch.minimum(x_pos.amin(0), y_pos.amin(0))
    if origin is None:
        origin = lowest
    else:
        origin = _cell_size(origin, dim, x_pos, "origin", positive=False)
        if bool((origin > lowest).any()):
            raise ValueError("`origin` must not exceed the smallest coordinates of the points "
                             f"{lowest.tolist()}, got {origin.tolist()}")
    hi = _set_bounds(x_pos, bx, b)[1]
    dims = torch.floor((hi - origin) / cs).long().clamp_(min=0) + 1  # [B, D]
    if math.prod(int(g) for g in dims.amax(0)) * max(b, 1) >= 2**62:
        raise ValueError(f"`cell_size` {cs.tolist()} is too small for the extent of the points "
                         f"(grid of {dims.amax(0).tolist()} cells per set); use larger cells")
    cells = _Cells.build(x_pos, bx, cs.expand(b, dim), origin.expand(b, dim), dims)
    reach = (radius, 4 * radius)
    return _search(cells, x_pos, y_pos, k, by, b, sx, reach, backend, chunk)


def _set_bounds(pos: Tensor, batch: Tensor, b: int):
    """Smallest and largest coordinates of every set, ``[B, D]`` each (0 for empty sets)."""
    idx = batch.unsqueeze(1).expand_as(pos)
    lo = pos.new_zeros(b, pos.shape[1]).scatter_reduce_(0, idx, pos, "amin", include_self=False)
    hi = pos.new_zeros(b, pos.shape[1]).scatter_reduce_(0, idx, pos, "amax", include_self=False)
    return lo, hi


def _auto_grid_knn(x_pos, y_pos, k, bx, by, b, sx, chunk) -> KNN:
    """Native exact kNN on cells sized per set from its bounding box and size (see ``knn``)."""
    dim = x_pos.shape[1]
    lo, hi = _set_bounds(x_pos, bx, b)
    ext, _ = (hi - lo).sort(1, descending=True)
    rho = max(0.5, _PER_CELL[dim] * k)
    per = torch.log(rho / sx.clamp(min=1).to(x_pos.dtype)).unsqueeze(1)
    d = torch.arange(1, dim + 1, device=x_pos.device)
    side = torch.exp((torch.log(ext).cumsum(1) + per) / d)  # the cell side binning d axes
    fits = (ext > 0) & (ext >= side)
    best = torch.where(fits, d, 0).amax(1, keepdim=True)  # most axes at least one cell wide
    cs = torch.where(best > 0, side.gather(1, (best - 1).clamp(min=0)), ext[:, :1])
    cs = torch.where(cs > 0, cs, 1.0).expand(b, dim)
    dims = torch.floor((hi - lo) / cs).long().clamp_(min=0) + 1
    cells = _Cells.build(x_pos, bx, cs, lo, dims)
    return _search(cells, x_pos, y_pos, k, by, b, sx, _REACH, "native", chunk)


class _Cells(NamedTuple):
    """Source points binned per set."""

    cs: Tensor
    origin: Tensor
    dims: Tensor
    base: Tensor
    keys: Tensor
    order: Tensor
    table: Tensor | None

    @staticmethod
    def build(x_pos, bx, cs, origin, dims):
        count = dims.prod(1)
        base = torch.cumsum(count, 0) - count
        cells = _Cells(cs.contiguous(), origin.contiguous(), dims, base, bx, bx, None)
        total = int(count.sum())
        xkey = cells.key(cells.bin(x_pos, bx), bx)
        if total < 2**31:
            xkey = xkey.int()  # a faster sort
        keys, order = torch.sort(xkey, stable=True)
        table = None
        if total <= 4 * x_pos.shape[0] + 2**16:  # first sorted row of every cell
            table = torch.zeros(total + 1, dtype=torch.long, device=keys.device)
            torch.cumsum(torch.bincount(keys, minlength=total), 0, out=table[1:])
        return cells._replace(keys=keys.long() if table is None else keys, order=order, table=table)

    def bin(self, pos, batch, reach=None):
        """Cell coordinates ``[N, D]`` of ``pos``, clamped to the set's grid."""
        u = (pos - self.origin.index_select(0, batch)) / self.cs.index_select(0, batch)
        top = self.dims.index_select(0, batch) - 1
        if reach is None:
            return torch.minimum(torch.floor(u).long().clamp_(min=0), top)
        return tuple(torch.minimum(torch.floor(u + a).long().clamp_(min=0), top)
                     for a in (-reach, reach))

    def key(self, cells, batch):
        return self.base.index_select(0, batch) + _ravel(cells, self.dims.index_select(0, batch))


def _search(cells, x_pos, y_pos, k, by, b, sx, reach, backend, chunk) -> KNN:
    """Windows reaching ``reach`` cell sides around each query, then the fallback."""
    m, n, dim = y_pos.shape[0], x_pos.shape[0], x_pos.shape[1]
    out = _empty_result(m, k, x_pos)
    if m == 0 or n == 0:
        return out
    cy = cells.bin(y_pos, by)
    scale = torch.maximum(x_pos.abs().amax(), y_pos.abs().amax()) + cells.cs.amax()
    tol = 64 * torch.finfo(x_pos.dtype).eps * scale
    # coordinate-major sources with a padding column n at infinity
    xc = torch.cat([x_pos, x_pos.new_full((1, dim), float("inf"))]).t().contiguous()
    todo = torch.arange(m, device=y_pos.device)
    ncells = int(cells.base[-1] + cells.dims[-1].prod())
    far = []  # queries without any candidate in the first window: straight to the fallback
    for r in reach:
        done = []
        for t0 in range(0, todo.numel(), max(1, chunk // 16)):  # blocks of queries
            t = todo[t0:t0 + max(1, chunk // 16)]
            bq = by[t]
            lo, hi = cells.bin(y_pos[t], bq, r)  # window corners [T, D]
            # queries with the same window share its candidate list
            span = hi - lo
            wide = int(span.max()) + 1
            wkey = cells.key(lo, bq)
            if ncells * wide**dim < 2**62:
                wkey = wkey * wide**dim + _ravel(span, torch.full_like(span, wide))
            wins, inv = torch.unique(wkey, return_inverse=True)
            first = torch.empty_like(wins).scatter_(0, inv, torch.arange(len(t), device=t.device))
            start, length = _ranges(cells, lo[first], hi[first], bq[first])  # [U, R]
            # queries by decreasing candidate count (each sub-block is padded to its first
            # one), those of a window together
            total = length.sum(1)[inv]
            order = torch.argsort((total.max() - total) * wins.numel() + inv)
            t, inv, lo, hi, total = (v[order] for v in (t, inv, lo, hi, total))
            counts = total.tolist()
            q0 = 0
            while q0 < t.numel():
                s = slice(q0, q0 + max(1, chunk // max(1, counts[q0])))
                q = t[s]
                u, uinv = torch.unique_consecutive(inv[s], return_inverse=True)
                ok, idx, d2 = _window(q, start[u], length[u], uinv, lo[s], hi[s], cells, xc,
                                      y_pos, by, sx, k, tol)
                out.index[q[ok]] = idx[ok]
                out.dist2[q[ok]] = d2[ok]
                if r == reach[0]:
                    far.append(q[~ok & (total[s] == 0)])
                    done.append(q[~ok & (total[s] > 0)])
                else:
                    done.append(q[~ok])
                q0 = s.stop
        todo = torch.cat(done) if done else todo
    todo = torch.cat([todo, *far]).sort().values
    if todo.numel() and resolve_backend(backend, "knn", x_pos.device) == "cluster":
        bx = torch.repeat_interleave(torch.arange(b, device=x_pos.device), sx, output_size=n)
        rest = knn(x_pos, y_pos[todo], k, bx, by[todo], batch_size=b, backend=backend)
        out.index[todo] = rest.index
        out.dist2[todo] = rest.dist2
    elif todo.numel():  # native: brute force restricted by a bound per query cell
        _cell_bound(todo, out, cells, x_pos, y_pos, cy, cells.key(cy, by), by, b, sx, k, tol, chunk)
    return out


def _ranges(cells, lo, hi, bq):
    """Sorted-source ranges ``(start, length) [T, R]`` of the windows of cells ``lo..hi``."""
    dim = lo.shape[1]
    dims = cells.dims.index_select(0, bq)  # [T, D]
    if dim > 1:
        span = torch.arange(int((hi - lo)[:, :-1].amax()) + 1, device=lo.device)
        grids = torch.meshgrid(*[span] * (dim - 1), indexing="ij")
        offsets = torch.stack([g.reshape(-1) for g in grids], 1)  # [R, D - 1]
    else:
        offsets = lo.new_zeros(1, 0)
    head = lo[:, None, :-1] + offsets  # [T, R, D - 1]
    inside = (head <= hi[:, None, :-1]).all(-1)
    head = torch.where(inside.unsqueeze(-1), head, 0)
    row = cells.base.index_select(0, bq).unsqueeze(1) \
        + _ravel(head, dims[:, None, :-1]) * dims[:, None, -1]
    first, last = row + lo[:, -1:], row + hi[:, -1:]
    if cells.table is not None:
        start = cells.table.index_select(0, first.view(-1)).view(first.shape)
        length = cells.table.index_select(0, last.view(-1) + 1).view(first.shape) - start
    else:
        start = torch.searchsorted(cells.keys, first)
        length = torch.searchsorted(cells.keys, last, right=True) - start
    return start, length.masked_fill_(~inside, 0)


def _window(q, start, length, uinv, lo, hi, cells, xc, y_pos, by, sx, k, tol):
    """Search the windows of the queries ``q``."""
    nq, nu, n, dim = q.numel(), start.shape[0], xc.shape[1] - 1, xc.shape[0]
    total = length.sum(1)
    width, pairs = int(total.max()), int(total.sum())
    # candidate lists, concatenated per window and padded with n (an infinitely far column)
    step = torch.arange(pairs, device=q.device)
    lens = length.view(-1)
    rows = torch.repeat_interleave(start.view(-1) - (torch.cumsum(lens, 0) - lens), lens,
                                   output_size=pairs) + step
    slot = torch.repeat_interleave(torch.arange(nu, device=q.device) * width
                                   - (torch.cumsum(total, 0) - total), total,
                                   output_size=pairs) + step
    cand = torch.full((nu * width,), n, dtype=torch.long, device=q.device)
    cand.index_copy_(0, slot, cells.order.index_select(0, rows))
    cand = cand.view(nu, width)
    if nu < nq:
        cand, total = cand.index_select(0, uinv), total.index_select(0, uinv)
    yq = y_pos[q]
    near = xc.index_select(1, cand.view(-1)).view(dim, nq, -1)
    d = _sqdist(yq.t().unsqueeze(2), near, dim=0)
    idx, d2 = _select_k(cand, d, k, n)
    # exact when the window holds the whole set, or the k-th distance is below the squared
    # distance from the query to the window's border (sides at the grid's border: infinite)
    bq = by[q]
    cs, origin = cells.cs.index_select(0, bq), cells.origin.index_select(0, bq)
    below = torch.where(lo <= 0, float("inf"), yq - (origin + lo.to(yq.dtype) * cs))
    above = torch.where(hi + 1 >= cells.dims.index_select(0, bq), float("inf"),
                        origin + (hi + 1).to(yq.dtype) * cs - yq)
    gap = torch.minimum(below, above).amin(1) - tol
    ok = (total == sx[bq]) | ((gap > 0) & (d2[:, k - 1] < gap * gap))
    return ok, idx, d2


def _select_k(cand: Tensor, d: Tensor, k: int, n: int):
    """The ``k`` smallest ``(distance, index)`` pairs of each row (``-1`` / ``inf`` padding)."""
    nq = cand.shape[0]
    kk = min(k, cand.shape[1])
    if d.dtype == torch.float32 and n < 2**31:
        # (distance, index) packed in one int64: non-negative float32 bits order like values
        packed = d.view(torch.int32).long().bitwise_left_shift_(32).bitwise_or_(cand)
        sel = torch.topk(packed, kk, dim=1, largest=False, sorted=True).values
        cand = sel & 0xFFFFFFFF
        d = (sel >> 32).int().view(torch.float32)
    else:  # order by (distance, index): stable sorts, least significant key first
        s1 = torch.argsort(cand, dim=1)
        cand, d = cand.gather(1, s1), d.gather(1, s1)
        s2 = torch.argsort(d, dim=1, stable=True)[:, :kk]
        cand, d = cand.gather(1, s2), d.gather(1, s2)
    idx = torch.full((nq, k), -1, dtype=torch.long, device=cand.device)
    d2 = torch.full((nq, k), float("inf"), dtype=d.dtype, device=cand.device)
    idx[:, :kk] = torch.where(torch.isfinite(d), cand, -1)
    d2[:, :kk] = d
    return idx, d2


def _cell_bound(todo, out, cells, x_pos, y_pos, cy, ykey, by, b, sx, k, tol, chunk):
    """Exact kNN of queries far from every source, one candidate list per query cell."""
    n = x_pos.shape[0]
    ucell, inv = torch.unique(ykey[todo], return_inverse=True)
    nu = ucell.numel()
    cu = torch.empty(nu, cy.shape[1], dtype=cy.dtype, device=cy.device)
    cu[inv] = cy[todo]
    bu = torch.empty(nu, dtype=torch.long, device=by.device)
    bu[inv] = by[todo]  # sorted: cell numbers grow with the set
    centre = cells.origin[bu] + (cu.to(x_pos.dtype) + 0.5) * cells.cs[bu]
    h = torch.linalg.vector_norm(y_pos[todo] - centre[inv], dim=1)
    h = h.new_zeros(nu).scatter_reduce_(0, inv, h, "amax")
    px = torch.cat([sx.new_zeros(1), torch.cumsum(sx, 0)])
    bx = torch.repeat_interleave(torch.arange(b, device=sx.device), sx, output_size=n)
    dk = _brute_force(x_pos, centre, k, bx, bu, b, chunk).dist2[:, k - 1]
    reach = dk.sqrt() + 2 * h + 2 * tol  # inf: the set has < k points
    order = torch.argsort(inv, stable=True)  # queries grouped by cell
    qstart = torch.searchsorted(inv[order], torch.arange(nu + 1, device=inv.device))
    xp = torch.cat([x_pos, x_pos.new_zeros(1, x_pos.shape[1])], 0)
    for s in torch.unique(bu).tolist():  # sets, one at a time
        lo, hi = int(px[s]), int(px[s + 1])
        ucs = (bu == s).nonzero().view(-1)  # contiguous: cells are sorted by set
        xs = x_pos[lo:hi]
        step = max(1, chunk // max(hi - lo, 1))
        for c0 in range(0, ucs.numel(), step):
            cc = ucs[c0:c0 + step]
            d = _sqdist(centre[cc].unsqueeze(1), xs.unsqueeze(0))  # [C, Ns]
            within = d <= reach[cc].unsqueeze(1).square()
            count = within.sum(1)
            width = max(int(count.max()), 1)
            # rows of the candidates in index order, padded with n
            row, col = within.nonzero().unbind(1)  # row-major: columns ascending per row
            rank = torch.arange(row.numel(), device=row.device) - (torch.cumsum(count, 0)
                                                                   - count)[row]
            cand = torch.full((cc.numel(), width), n, dtype=torch.long, device=row.device)
            cand[row, rank] = col + lo
            # the queries of these cells: contiguous in `order`
            at = order[int(qstart[int(cc[0])]):int(qstart[int(cc[-1]) + 1])]
            q, local = todo[at], inv[at] - cc[0]
            qstep = max(1, chunk // width)
            for q0 in range(0, q.numel(), qstep):
                qq = q[q0:q0 + qstep]
                cq = cand.index_select(0, local[q0:q0 + qstep])
                near = xp.index_select(0, cq.view(-1)).view(cq.shape[0], width, -1)
                dq = _sqdist(y_pos[qq].unsqueeze(1), near).masked_fill_(cq == n, float("inf"))
                out.index[qq], out.dist2[qq] = _select_k(cq, dq, k, n)
