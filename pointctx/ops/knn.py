"""k nearest neighbours between two packed ragged point sets.

For every query row of ``y_pos`` the ``k`` nearest rows of ``x_pos`` *in the same set*, nearest
first, ties broken by the lower index. Where a set has fewer than ``k`` points of ``x_pos`` the
missing slots hold index ``-1`` and distance ``inf``.

Native path and memory: ``x_pos`` and ``y_pos`` are padded per set to ``[B, Nmax, D]`` and
``[B, Mmax, D]`` (``Nmax``/``Mmax`` the largest set sizes). Squared distances are computed for
blocks of sets and query slots ``[b, q, Nmax]`` holding at most ``max(chunk_size, Nmax)``
entries (default ``chunk_size``: ``2**18`` on CPU, small enough to stay in cache; ``2**24`` on
CUDA; ``2**22`` elsewhere), each followed by a top-k in the same block. The blocks are the only
Python loop, and there is a single block whenever ``B * Mmax * Nmax <= chunk_size``. Peak extra
memory is about ``3 * chunk_size`` values (two distance buffers and a comparison mask) plus the
padded copies and the ``[B, Mmax, k]`` results; no dense ``[M, N]`` matrix is ever built. The
work is brute force, ``B * Mmax * Nmax`` distances in all (padding included, so strongly
uneven set sizes cost extra): on CPU torch-cluster's kd-tree is much faster for large sets
(see ``bench/ops.py``). For ``D <= 16`` distances are exact coordinate differences summed in
coordinate order (bit-identical to :func:`knn_naive`); for larger ``D`` they use the
``|y|^2 + |x|^2 - 2 y.x`` expansion (batched matmul, clamped at 0), which can reorder
neighbours whose distances agree to within rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_pos, check_positive_int
from ._backend import get_backend, require_cluster, resolve_backend
from ._common import _pad, _setup, _sqdist

__all__ = ["KNN", "knn", "knn_naive"]

# default distance entries per block: cache-sized on CPU, large blocks on GPUs
_DEFAULT_CHUNK = {"cpu": 2**18, "cuda": 2**24}
_EXACT_MAX_DIM = 16
_CUDA_CLUSTER_MAX_K = 100  # torch-cluster's CUDA kernel keeps at most 100 neighbours


class KNN(NamedTuple):
    """Result of :func:`knn`.

    Attributes:
        index: [M, k] int64 rows of ``x_pos``, nearest first; ``-1`` where the query's set has
            fewer than ``k`` points.
        dist2: [M, k] squared Euclidean distances (dtype of the positions); ``inf`` where
            ``index`` is ``-1``.
    """

    index: Tensor
    dist2: Tensor


def _check_pair(x_pos, y_pos):
    x_pos = check_pos(x_pos, "x_pos")
    y_pos = check_pos(y_pos, "y_pos")
    if x_pos.shape[1] != y_pos.shape[1]:
        raise ValueError(
            f"`x_pos` and `y_pos` must have the same number of coordinates D, got "
            f"{x_pos.shape[1]} and {y_pos.shape[1]}"
        )
    if x_pos.dtype != y_pos.dtype or x_pos.device != y_pos.device:
        raise ValueError(
            f"`x_pos` and `y_pos` must share dtype and device, got {x_pos.dtype} on "
            f"{x_pos.device} and {y_pos.dtype} on {y_pos.device}"
        )
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


def knn(
    x_pos: Tensor,
    y_pos: Tensor,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    batch_size: int | None = None,
    backend: str | None = None,
    chunk_size: int | None = None,
) -> KNN:
    """The ``k`` nearest points of ``x_pos`` (same set) for every row of ``y_pos``.

    Args:
        x_pos: the points searched.
        y_pos: the query points.
        k: neighbours per query (>= 1; may exceed a set's size, see padding below).
        batch_x: sorted set index per ``x_pos`` row; None means one set.
        batch_y: sorted set index per ``y_pos`` row; None means one set.
        batch_size: number of sets B (avoids a host sync).
        backend: ``"auto"``, ``"native"`` or ``"cluster"`` (None: the global default).
        chunk_size: native path only: most distance entries held at once (default ``2**18``
            on CPU, ``2**24`` on CUDA); see the module docs for the memory bound.

    Returns:
        :class:`KNN` ``(index, dist2)``: nearest first, ties by lower index; ``-1`` / ``inf``
        pad the slots beyond the size of the query's set (all of them for a set with no
        ``x_pos`` points).

    Shapes:
        x_pos: [N, D]; y_pos: [M, D]; batch_x: [N]; batch_y: [M]; return: index, dist2 [M, k].
    """
    x_pos, y_pos = _check_pair(x_pos, y_pos)
    k = check_positive_int(k, "k", minimum=1)
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size", minimum=1)
    bx, by, b, sx, px, sy, py = _batches(x_pos, y_pos, batch_x, batch_y, batch_size)
    which = resolve_backend(backend, "knn", x_pos.device)
    if which == "cluster" and x_pos.device.type == "cuda" and k > _CUDA_CLUSTER_MAX_K:
        if (backend if backend is not None else get_backend()) == "cluster":
            raise ValueError(
                f"backend='cluster' on CUDA supports k <= {_CUDA_CLUSTER_MAX_K} (torch-cluster "
                f"limit), got k = {k}; use backend='native'"
            )
        which = "native"
    if which == "cluster":
        return _knn_cluster(x_pos, y_pos, k, bx, by, b)
    chunk = chunk_size or _DEFAULT_CHUNK.get(x_pos.device.type, 2**22)
    return _knn_native(x_pos, y_pos, k, bx, by, b, sx, px, sy, py, chunk)


def _empty_result(m: int, k: int, like: Tensor) -> KNN:
    return KNN(
        torch.full((m, k), -1, dtype=torch.long, device=like.device),
        torch.full((m, k), float("inf"), dtype=like.dtype, device=like.device),
    )


def _sort_selection(val: Tensor, idx: Tensor):
    """Order a small selection by (value, index): two stable sorts, least significant first."""
    order = torch.argsort(idx, dim=-1)
    val, idx = val.gather(-1, order), idx.gather(-1, order)
    order = torch.argsort(val, dim=-1, stable=True)
    return val.gather(-1, order), idx.gather(-1, order)


def _topk_lexi(d: Tensor, kk: int):
    """Smallest ``kk`` entries of ``d`` along the last dim, ordered by (value, index).

    A plain top-k does not promise which of several equal values it returns, nor their order.
    So the selection is re-sorted by (value, index), and rows where a value equal to the largest
    selected one ``t`` was left out (a tie across the cut) are selected again: all entries
    ``< t`` plus the lowest-index entries ``== t``. Infinite values (padding) are not ordered.
    """
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
                d = torch.baddbmm(
                    xsq[b0:b1, None, :] + yb.square().sum(-1, keepdim=True),
                    yb, xp[b0:b1].transpose(1, 2), alpha=-2.0,
                ).clamp_(min=0)
                d.masked_fill_(x_invalid[b0:b1, None, :], float("inf"))
            val, idx = _topk_lexi(d, kk)
            out_d[b0:b1, j0:j1, :kk] = val
            out_i[b0:b1, j0:j1, :kk] = idx
    missing = torch.arange(k, device=x_pos.device) >= sx.view(-1, 1, 1)  # [B, 1, k]
    out_i = (out_i + px[:-1].view(-1, 1, 1)).masked_fill_(missing, -1)
    out_d.masked_fill_(missing, float("inf"))
    slot_valid = torch.arange(mmax, device=x_pos.device) < sy.unsqueeze(1)  # [B, Mmax]
    return KNN(out_i[slot_valid], out_d[slot_valid])


def _knn_cluster(x_pos, y_pos, k, bx, by, b) -> KNN:
    tc = require_cluster()
    m = y_pos.shape[0]
    if m == 0 or x_pos.shape[0] == 0:
        return _empty_result(m, k, x_pos)
    row, col = tc.knn(x_pos, y_pos, k, bx, by, batch_size=b)
    d = _sqdist(y_pos[row], x_pos[col])
    # order each query's neighbours by (distance, index): stable sorts, least significant first
    perm = torch.argsort(col, stable=True)
    perm = perm[torch.argsort(d[perm], stable=True)]
    perm = perm[torch.argsort(row[perm], stable=True)]
    row, col, d = row[perm], col[perm], d[perm]
    first = torch.cumsum(torch.bincount(row, minlength=m), 0) - torch.bincount(row, minlength=m)
    rank = torch.arange(row.numel(), device=row.device) - first[row]
    keep = rank < k
    out = _empty_result(m, k, x_pos)
    out.index[row[keep], rank[keep]] = col[keep]
    out.dist2[row[keep], rank[keep]] = d[keep]
    return out


def knn_naive(
    x_pos: Tensor,
    y_pos: Tensor,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    batch_size: int | None = None,
) -> KNN:
    """Per-query Python loop version of :func:`knn` (slow, obviously correct; for tests).

    Each query sorts the distances to all points of its set with a stable sort.

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
