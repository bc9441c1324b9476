"""k nearest neighbours between two packed ragged point sets."""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_pos, check_positive_int
from ._backend import get_backend, opaque, require_cluster, resolve_backend
from ._common import _pad, _setup, _sqdist
from .segment import batch_to_ptr, set_sizes

__all__ = ["KNN", "knn", "knn_naive"]

# default distance entries per block: cache-sized on CPU, large blocks on GPUs
_DEFAULT_CHUNK = {"cpu": 2**18, "cuda": 2**24}
# torch-cluster path: (query, neighbour) pairs handled at once
_CLUSTER_CHUNK = 2**22
_EXACT_MAX_DIM = 16
_CUDA_CLUSTER_MAX_K = 100  # torch-cluster's CUDA kernel keeps at most 100 neighbours
_CELL_DTYPES = (torch.float32, torch.float64)
# the cell search for D <= 3 when the brute force would compare each query with more points
# than this on average (CPU crossover measured with bench/ops.py-like sets, k = 4..32)
_CELL_MIN = {1: 64, 2: 128, 3: 512}


class KNN(NamedTuple):
    """Result of :func:`knn`.

    Attributes:
        index: [M, k] int64 rows of ``x_pos``, nearest first; ``-1`` past the set's size.
        dist2: [M, k] squared distances (dtype of the positions); ``inf`` where ``index`` is -1.
    """

    index: Tensor
    dist2: Tensor


def _check_pair(x_pos, y_pos):
    x_pos = check_pos(x_pos, "x_pos")
    y_pos = check_pos(y_pos, "y_pos")
    if x_pos.shape[1] != y_pos.shape[1]:
        raise ValueError("`x_pos` and `y_pos` must have the same number of coordinates D, got "
                         f"{x_pos.shape[1]} and {y_pos.shape[1]}")
    if x_pos.dtype != y_pos.dtype or x_pos.device != y_pos.device:
        raise ValueError(f"`x_pos` and `y_pos` must share dtype and device, got {x_pos.dtype} on "
                         f"{x_pos.device} and {y_pos.dtype} on {y_pos.device}")
    return x_pos, y_pos


def _batches(x_pos, y_pos, batch_x, batch_y, batch_size):
    """Validate both set vectors; return them with a common B, sizes and ptrs."""
    if batch_size is None:
        bx = _setup(x_pos, batch_x, None, "batch_x")[1]
        by = _setup(y_pos, batch_y, None, "batch_y")[1]
        batch_size = max(bx, by)
    bx_, b, sx, px = _setup(x_pos, batch_x, batch_size, "batch_x")
    by_, _, sy, py = _setup(y_pos, batch_y, batch_size, "batch_y")
    return bx_, by_, b, sx, px, sy, py


def knn(x_pos: Tensor, y_pos: Tensor, k: int, batch_x: Tensor | None = None,
        batch_y: Tensor | None = None, batch_size: int | None = None, backend: str | None = None,
        chunk_size: int | None = None) -> KNN:
    """The ``k`` nearest points of ``x_pos`` (same set) for every row of ``y_pos``.

    Args:
        x_pos: the points searched.
        y_pos: the query points.
        k: neighbours per query (>= 1; may exceed a set's size, see padding below).
        batch_x: sorted set index per ``x_pos`` row; None means one set.
        batch_y: sorted set index per ``y_pos`` row; None means one set.
        batch_size: number of sets B (avoids a host sync).
        backend: ``"auto"``, ``"native"`` or ``"cluster"`` (None: the global default).
        chunk_size: most distance entries (native) or pairs (torch-cluster) held at once.

    Shapes:
        x_pos: [N, D]; y_pos: [M, D]; batch_x: [N]; batch_y: [M]; return: index, dist2 [M, k].
    """
    x_pos, y_pos = _check_pair(x_pos, y_pos)
    k = check_positive_int(k, "k", minimum=1)
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size", minimum=1)
    _check_result_fits(y_pos.shape[0], k, x_pos)
    bx, by, b, sx, px, sy, py = _batches(x_pos, y_pos, batch_x, batch_y, batch_size)
    which = resolve_backend(backend, "knn", x_pos.device)
    if which == "cluster" and x_pos.device.type == "cuda" and k > _CUDA_CLUSTER_MAX_K:
        if (backend if backend is not None else get_backend()) == "cluster":
            raise ValueError(f"backend='cluster' on CUDA supports k <= {_CUDA_CLUSTER_MAX_K} "
                             f"(torch-cluster limit), got k = {k}; use backend='native'")
        which = "native"
    if which == "cluster":
        return _knn_cluster(x_pos, y_pos, k, bx, by, b, chunk_size or _CLUSTER_CHUNK)
    chunk = chunk_size or _DEFAULT_CHUNK.get(x_pos.device.type, 2**22)
    if _use_cells(x_pos, sx, sy):
        from .grid_knn import _auto_grid_knn  # grid_knn imports this module

        return _auto_grid_knn(x_pos, y_pos, k, bx, by, b, sx, chunk)
    return _knn_native(x_pos, y_pos, k, bx, by, b, sx, px, sy, py, chunk)


def _use_cells(x_pos, sx, sy) -> bool:
    """Whether the cell search beats the brute force (CPU, D <= 3, large sets)."""
    dim = x_pos.shape[1]
    if x_pos.device.type != "cpu" or dim not in _CELL_MIN or x_pos.dtype not in _CELL_DTYPES:
        return False
    return int((sx * sy).sum()) > _CELL_MIN[dim] * int(sy.sum())


def _brute_force(x_pos, y_pos, k, bx, by, b, chunk) -> KNN:
    """The native brute force for sets given by sorted set vectors."""
    sx, sy = set_sizes(bx, b), set_sizes(by, b)
    px, py = batch_to_ptr(bx, b), batch_to_ptr(by, b)
    return _knn_native(x_pos, y_pos, k, bx, by, b, sx, px, sy, py, chunk)


def _memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` (physical RAM for the CPU), or None when unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):  # pragma: no cover
        return None
    return None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _check_result_fits(m: int, k: int, like: Tensor) -> None:
    """Refuse a result [M, k] that could never fit in the memory of ``like``'s device."""
    need = m * k * (8 + like.element_size())
    have = _memory_bytes(like.device)
    if have is not None and need > have:
        raise ValueError(f"knn: the result [M, k] = [{m}, {k}] needs {_fmt_bytes(need)} (int64 "
                         f"index + {like.dtype} dist2), more than the {_fmt_bytes(have)} of memory "
                         f"of {like.device}; lower `k` (slots beyond a set's size are only -1 "
                         "padding) or query fewer points at a time")


def _empty_result(m: int, k: int, like: Tensor) -> KNN:
    return KNN(torch.full((m, k), -1, dtype=torch.long, device=like.device),
               torch.full((m, k), float("inf"), dtype=like.dtype, device=like.device))


def _sort_selection(val: Tensor, idx: Tensor):
    """Order a small selection by (value, index): two stable sorts, least significant first."""
    order = torch.argsort(idx, dim=-1)
    val, idx = val.gather(-1, order), idx.gather(-1, order)
    order = torch.argsort(val, dim=-1, stable=True)
    return val.gather(-1, order), idx.gather(-1, order)


def _topk_lexi(d: Tensor, kk: int):
    """Smallest ``kk`` entries of ``d`` along the last dim, ordered by (value, index)."""
    val, idx = _sort_selection(*torch.topk(d, kk, dim=-1, largest=False, sorted=False))
    last = val[..., -1:]
    cut_tie = ((d <= last).sum(-1) > kk) & torch.isfinite(last[..., 0])
    if bool(cut_tie.any()):
        dt, t = d[cut_tie], last[cut_tie]
        n = d.shape[-1]
        # column index as the score of the tied entries (exact in float32 below 2**24)
        sdt = torch.float32 if n < 2**24 else torch.float64
        pos = torch.arange(n, device=d.device, dtype=sdt)
        score = torch.where(dt == t, pos, float("inf")).masked_fill_(dt < t, -1.0)
        sel = torch.topk(score, kk, dim=-1, largest=False, sorted=False).indices
        val[cut_tie], idx[cut_tie] = _sort_selection(dt.gather(-1, sel), sel)
    return val, idx


def _knn_native(x_pos, y_pos, k, bx, by, b, sx, px, sy, py, chunk) -> KNN:
    m = y_pos.shape[0]
    if m == 0 or x_pos.shape[0] == 0 or b <= 1:
        return _knn_padded(x_pos, y_pos, k, bx, by, b, sx, px, sy, py, chunk)
    work = sx * sy
    padded = b * int(sx.max()) * int(sy.max())
    if padded <= 2 * int(work.sum()) + chunk:
        return _knn_padded(x_pos, y_pos, k, bx, by, b, sx, px, sy, py, chunk)
    # uneven sizes: search buckets of sets of similar sizes separately
    out = _empty_result(m, k, x_pos)
    active = ((sx > 0) & (sy > 0)).nonzero().flatten()
    sxa, sya = sx[active], sy[active]
    key = _log2_bucket(sxa) * 64 + _log2_bucket(sya)
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    for group in torch.split(active[order], counts.tolist()):
        xrows, xb, gsx, gpx = _gather_sets(group, sx, px)
        yrows, yb, gsy, gpy = _gather_sets(group, sy, py)
        res = _knn_padded(x_pos[xrows], y_pos[yrows], k, xb, yb, group.numel(), gsx, gpx, gsy,
                          gpy, chunk)
        found = res.index >= 0
        out.index[yrows] = torch.where(found, xrows[res.index.clamp(min=0)], res.index)
        out.dist2[yrows] = res.dist2
    return out


def _log2_bucket(sizes: Tensor) -> Tensor:
    """``ceil(log2(size))`` of sizes >= 1 (exact for integers, no float rounding)."""
    n = (sizes - 1).clamp(min=0)
    bits = torch.zeros_like(n)
    while bool((n > 0).any()):
        bits += (n > 0).long()
        n = n >> 1
    return bits


def _gather_sets(sets: Tensor, sizes: Tensor, ptr: Tensor):
    """Rows of the (sorted) ``sets``, their new set ids 0.., sizes and ptr."""
    sz = sizes[sets]
    sub_ptr = torch.zeros(sets.numel() + 1, dtype=torch.long, device=sizes.device)
    torch.cumsum(sz, 0, out=sub_ptr[1:])
    new_batch = torch.repeat_interleave(torch.arange(sets.numel(), device=sizes.device), sz)
    rows = ptr[sets][new_batch] + torch.arange(new_batch.numel(), device=sizes.device) \
        - sub_ptr[:-1][new_batch]
    return rows, new_batch, sz, sub_ptr


def _knn_padded(x_pos, y_pos, k, bx, by, b, sx, px, sy, py, chunk) -> KNN:
    """The brute-force search with every set padded to the largest (see docs/knn.md)."""
    m = y_pos.shape[0]
    nmax = int(sx.max()) if b else 0
    if m == 0 or nmax == 0:
        return _empty_result(m, k, x_pos)
    mmax = int(sy.max())
    dim = x_pos.shape[1]
    exact = dim <= _EXACT_MAX_DIM
    if exact:
        # padding at +inf gives padded entries an infinite distance without a mask pass;
        # coordinate-first layout: one contiguous [B, Nmax] plane per coordinate
        xc = _pad(x_pos, bx, px, b, nmax, fill=float("inf"))[0].permute(2, 0, 1).contiguous()
        yc = _pad(y_pos, by, py, b, mmax)[0].permute(2, 0, 1).contiguous()
    else:
        xp = _pad(x_pos, bx, px, b, nmax)[0]
        yp = _pad(y_pos, by, py, b, mmax)[0]
        xsq = xp.square().sum(-1)
        x_invalid = torch.arange(nmax, device=x_pos.device) >= sx.unsqueeze(1)  # [B, Nmax]
    kk = min(k, nmax)
    out_i = torch.full((b, mmax, k), -1, dtype=torch.long, device=x_pos.device)
    out_d = torch.full((b, mmax, k), float("inf"), dtype=x_pos.dtype, device=x_pos.device)
    sets_per_chunk = max(1, min(b, chunk // nmax))
    slots = max(1, min(mmax, chunk // (sets_per_chunk * nmax)))
    buf = tmp = None
    # Blocks of whole sets and query slots, each holding at most max(chunk, Nmax) distances.
    for b0 in range(0, b, sets_per_chunk):
        b1 = min(b, b0 + sets_per_chunk)
        for j0 in range(0, mmax, slots):
            j1 = min(mmax, j0 + slots)
            if exact:
                shape = (b1 - b0, j1 - j0, nmax)
                if buf is None or buf.shape != shape:
                    buf, tmp = xc.new_empty(shape), xc.new_empty(shape)
                d = _sqdist(yc[:, b0:b1, j0:j1, None], xc[:, b0:b1, None, :], dim=0,
                            out=buf, tmp=tmp)
            else:
                yb = yp[b0:b1, j0:j1]
                d = torch.baddbmm(xsq[b0:b1, None, :] + yb.square().sum(-1, keepdim=True), yb,
                                  xp[b0:b1].transpose(1, 2), alpha=-2.0).clamp_(min=0)
                d.masked_fill_(x_invalid[b0:b1, None, :], float("inf"))
            val, idx = _topk_lexi(d, kk)
            out_d[b0:b1, j0:j1, :kk] = val
            out_i[b0:b1, j0:j1, :kk] = idx
    missing = torch.arange(k, device=x_pos.device) >= sx.view(-1, 1, 1)  # [B, 1, k]
    out_i = (out_i + px[:-1].view(-1, 1, 1)).masked_fill_(missing, -1)
    out_d.masked_fill_(missing, float("inf"))
    slot_valid = torch.arange(mmax, device=x_pos.device) < sy.unsqueeze(1)  # [B, Mmax]
    return KNN(out_i[slot_valid], out_d[slot_valid])


def _knn_cluster(x_pos, y_pos, k, bx, by, b, chunk) -> KNN:
    tc = require_cluster()
    m = y_pos.shape[0]
    out = _empty_result(m, k, x_pos)
    if m == 0 or x_pos.shape[0] == 0:
        return out
    step = max(1, chunk // k)  # queries per call: at most ~chunk (query, neighbour) pairs
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        yq = y_pos[lo:hi]
        row, col = opaque(tc.knn)(x_pos, yq, k, bx, by[lo:hi], batch_size=b)
        d = _sqdist(yq[row], x_pos[col])
        # order each query's neighbours by (distance, index): stable sorts, least significant
        # first
        perm = torch.argsort(col, stable=True)
        perm = perm[torch.argsort(d[perm], stable=True)]
        perm = perm[torch.argsort(row[perm], stable=True)]
        row, col, d = row[perm], col[perm], d[perm]
        del perm
        count = torch.bincount(row, minlength=hi - lo)
        rank = torch.arange(row.numel(), device=row.device) - (torch.cumsum(count, 0) - count)[row]
        keep = rank < k
        out.index[lo + row[keep], rank[keep]] = col[keep]
        out.dist2[lo + row[keep], rank[keep]] = d[keep]
    return out


# the same signature as knn: the tests call the op and its naive reference alike
def knn_naive(x_pos: Tensor, y_pos: Tensor, k: int, batch_x: Tensor | None = None,
              batch_y: Tensor | None = None, batch_size: int | None = None) -> KNN:
    """Per-query Python loop version of :func:`knn` (slow, obviously correct; for tests).

    Shapes:
        x_pos: [N, D]; y_pos: [M, D]; return: index, dist2 [M, k].
    """
    x_pos, y_pos = _check_pair(x_pos, y_pos)
    k = check_positive_int(k, "k", minimum=1)
    bx, by, b, sx, px, sy, py = _batches(x_pos, y_pos, batch_x, batch_y, batch_size)
    out = _empty_result(y_pos.shape[0], k, x_pos)
    for i in range(y_pos.shape[0]):
        s = int(by[i])
        lo, hi = int(px[s]), int(px[s + 1])
        d = _sqdist(x_pos[lo:hi], y_pos[i])
        order = torch.argsort(d, stable=True)[:k]  # nearest first, ties: lower index first
        out.index[i, : order.numel()] = lo + order
        out.dist2[i, : order.numel()] = d[order]
    return out
