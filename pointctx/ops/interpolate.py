"""k-nearest-neighbour inverse-distance interpolation between packed ragged point sets."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_features, check_number, check_pos, check_positive_int, check_tensor
from .grid_knn import grid_knn
from .knn import knn
from .segment import infer_batch_size

__all__ = ["knn_interpolate", "knn_interpolate_naive"]


def _check_eps(eps) -> float:
    return check_number(eps, "eps", 0.0, min_open=True,
                        must="be {bounds} (it keeps 1 / (d2 + eps) finite)")


def _check_x(x, n: int) -> Tensor:
    check_tensor(x, "x")
    check_features(x, n, "x")
    if not x.is_floating_point():
        raise ValueError(f"`x` must be a floating point tensor, got dtype {x.dtype}")
    return x


def _weight_dtype(dtype: torch.dtype) -> torch.dtype:
    """Weights in at least float32: 1 / (0 + 1e-16) overflows half precision."""
    return torch.promote_types(dtype, torch.float32)


def knn_interpolate(x: Tensor, pos: Tensor, pos_query: Tensor, batch: Tensor | None = None,
                    batch_query: Tensor | None = None, k: int = 3, *, batch_size: int | None = None,
                    eps: float = 1e-16, backend: str | None = None, cell_size=None,
                    cell_origin=None) -> Tensor:
    """Interpolate source features onto query positions of the same sets (inverse squared distance).

    Args:
        x: source features.
        pos: source positions.
        pos_query: query positions.
        batch: sorted set id per source row; None: one set.
        batch_query: sorted set id per query row; None: one set.
        k: neighbours per query (PointNet++ / PointMLP: 3).
        batch_size: number of sets B (saves a host sync).
        eps: added to the squared distances before inverting (PointMLP: 1e-8).
        backend: kNN backend (see :mod:`pointctx.ops`).
        cell_size: search with :func:`~pointctx.ops.grid_knn` on cells of this side (same result).
        cell_origin: a corner of that grid.

    Shapes:
        x: [N, C]; pos: [N, D]; pos_query: [Nq, D]; batch: [N]; batch_query: [Nq];
        return: [Nq, C] (0 where the set has no source point).
    """
    pos = check_pos(pos, "pos")
    x = _check_x(x, pos.shape[0])
    k = check_positive_int(k, "k", minimum=1)
    eps = _check_eps(eps)
    if x.device != pos.device:
        raise ValueError(f"`x` must be on the device of `pos` ({pos.device}), got {x.device}")
    if cell_size is None:
        nbr = knn(pos, pos_query, k, batch, batch_query, batch_size=batch_size, backend=backend)
    else:
        nbr = grid_knn(pos, pos_query, k, batch, batch_query, cell_size=cell_size,
                       origin=cell_origin, batch_size=batch_size, backend=backend)
    nq = nbr.index.shape[0]
    out = x.new_zeros(nq, x.shape[1])
    if nq == 0 or x.shape[0] == 0 or x.shape[1] == 0:
        return out
    wd = _weight_dtype(nbr.dist2.dtype)
    w = (nbr.dist2.to(wd) + eps).reciprocal_()  # inf (missing neighbour) -> weight 0
    total = w.sum(1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp(min=torch.finfo(wd).tiny), torch.zeros_like(w))
    w = w.to(x.dtype)
    idx = nbr.index.clamp(min=0)
    for j in range(nbr.index.shape[1]):
        out = out.addcmul(x.index_select(0, idx[:, j]), w[:, j : j + 1])
    return out


# the same signature as knn_interpolate: the tests call the op and its naive reference alike
def knn_interpolate_naive(x: Tensor, pos: Tensor, pos_query: Tensor, batch: Tensor | None = None,
                          batch_query: Tensor | None = None, k: int = 3, *,
                          batch_size: int | None = None, eps: float = 1e-16) -> Tensor:
    """Per-query Python loop version of :func:`knn_interpolate` (slow, obviously correct).

    Shapes:
        x: [N, C]; pos: [N, D]; pos_query: [Nq, D]; return: [Nq, C].
    """
    pos = check_pos(pos, "pos")
    pos_query = check_pos(pos_query, "pos_query")
    x = _check_x(x, pos.shape[0])
    k = check_positive_int(k, "k", minimum=1)
    eps = _check_eps(eps)
    n, nq = pos.shape[0], pos_query.shape[0]
    batch = torch.zeros(n, dtype=torch.long) if batch is None else batch.long()
    batch_query = torch.zeros(nq, dtype=torch.long) if batch_query is None else batch_query.long()
    infer_batch_size(batch, batch_size)  # same signature as the fast path
    wd = _weight_dtype(pos.dtype)
    rows = []
    for i in range(nq):
        src = (batch == batch_query[i]).nonzero().view(-1)
        if src.numel() == 0:
            rows.append(x.new_zeros(x.shape[1]))
            continue
        d2 = ((pos[src] - pos_query[i]) ** 2).sum(1)
        order = torch.argsort(d2, stable=True)[:k]
        w = 1.0 / (d2[order].to(wd) + eps)
        w = (w / w.sum()).to(x.dtype)
        rows.append((x[src[order]] * w[:, None]).sum(0))
    return torch.stack(rows) if rows else x.new_zeros(0, x.shape[1])
