"""CLUENet's soft global aggregation and hard nearest-center choice on ragged sets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.segment import infer_batch_size

__all__ = ["soft_aggregate", "nearest_center"]

# most elements of one padded [sets, heads, centers, points] block (bounds the scratch memory)
_BLOCK_ELEMENTS = 1 << 24


def _layout(batch: Tensor, center_batch: Tensor, b: int):
    """Host lists of points and centers per set, plus local ranks (one host sync)."""
    n_cnt = torch.bincount(batch, minlength=b)[:b] if b else batch.new_zeros(0)
    m_cnt = torch.bincount(center_batch, minlength=b)[:b] if b else batch.new_zeros(0)
    both = torch.stack([n_cnt, m_cnt]).tolist() if b else [[], []]
    n_ptr = torch.cumsum(n_cnt, 0) - n_cnt
    m_ptr = torch.cumsum(m_cnt, 0) - m_cnt
    n_local = torch.arange(batch.numel(), device=batch.device) - n_ptr.index_select(0, batch)
    m_local = (torch.arange(center_batch.numel(), device=batch.device)
               - m_ptr.index_select(0, center_batch))
    return both[0], both[1], n_local, m_local


def _chunks(n_list: list, m_list: list, per_pair: int):
    """Split the sets into consecutive runs whose padded block stays under the element budget."""
    b = len(n_list)
    lo = 0
    p0 = c0 = 0
    while lo < b:
        hi, nmax, mmax = lo, 0, 0
        while hi < b:
            nn_, mm_ = max(nmax, n_list[hi]), max(mmax, m_list[hi])
            if hi > lo and (hi - lo + 1) * nn_ * mm_ * per_pair > _BLOCK_ELEMENTS:
                break
            nmax, mmax = nn_, mm_
            hi += 1
        p1 = p0 + sum(n_list[lo:hi])
        c1 = c0 + sum(m_list[lo:hi])
        yield lo, hi, p0, p1, c0, c1, max(nmax, 1), max(mmax, 1)
        lo, p0, c0 = hi, p1, c1


def _dense(t: Tensor, row: Tensor, size: int) -> Tensor:
    """Scatter rows of ``t`` into a zero tensor of ``size`` rows (differentiable)."""
    out = t.new_zeros((size,) + tuple(t.shape[1:]))
    return out.index_copy(0, row, t)


def soft_aggregate(q: Tensor, center_batch: Tensor, k: Tensor, v: Tensor, batch: Tensor,
                   batch_size: int | None = None) -> Tensor:
    """Attention of every center over all points of its set: ``softmax_i(q_m . k_i) v_i``.

    Args:
        q: center queries, per head.
        center_batch: sorted set id per center.
        k: point keys, per head.
        v: point values, per head.
        batch: sorted set id per point.
        batch_size: number of sets B, if known.

    Shapes:
        q: [M, H, d]; center_batch: [M]; k: [N, H, d]; v: [N, H, dv]; batch: [N];
        return: [M, H, dv].
    """
    m, heads, _ = q.shape
    b = infer_batch_size(batch, batch_size)
    if b == 0 or m == 0:
        return v.new_zeros(m, heads, v.shape[-1])
    n_list, m_list, n_local, m_local = _layout(batch, center_batch, b)
    dtype = v.dtype
    q, k = q.to(dtype), k.to(dtype)
    outs = []
    for lo, hi, p0, p1, c0, c1, nmax, mmax in _chunks(n_list, m_list, heads):
        bc = hi - lo
        if c1 == c0:
            continue
        prow = (batch[p0:p1] - lo) * nmax + n_local[p0:p1]
        crow = (center_batch[c0:c1] - lo) * mmax + m_local[c0:c1]
        kd = _dense(k[p0:p1], prow, bc * nmax).view(bc, nmax, heads, -1).transpose(1, 2)
        vd = _dense(v[p0:p1], prow, bc * nmax).view(bc, nmax, heads, -1).transpose(1, 2)
        qd = _dense(q[c0:c1], crow, bc * mmax).view(bc, mmax, heads, -1).transpose(1, 2)
        key_ok = torch.zeros(bc * nmax, dtype=torch.bool, device=q.device)
        key_ok[prow] = True
        key_ok = key_ok.view(bc, 1, 1, nmax)
        # a set without points would give a fully masked row (NaN); it has no centers, so let
        # its padded rows attend to one zero key instead
        key_ok[:, :, :, 0] = True
        out = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=key_ok, scale=1.0)
        out = out.transpose(1, 2).reshape(bc * mmax, heads, -1)
        outs.append(out.index_select(0, crow))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


@torch.no_grad()
def nearest_center(f: Tensor, batch: Tensor, c: Tensor, center_batch: Tensor,
                   batch_size: int | None = None, alpha: Tensor | float = 1.0,
                   beta: Tensor | float = 0.0) -> Tensor:
    """Index of the best center of each point's set: ``argmax_m alpha cos(f_i, c_m) + beta``.

    Shapes:
        f: [N, H, d]; batch: [N]; c: [M, H, d]; center_batch: [M]; return: [N, H] int64 global
        center index, -1 for points of sets without centers.
    """
    n, heads, _ = f.shape
    m = c.shape[0]
    b = infer_batch_size(batch, batch_size)
    out = torch.full((n, heads), -1, dtype=torch.long, device=f.device)
    if n == 0 or m == 0 or b == 0:
        return out
    n_list, m_list, n_local, m_local = _layout(batch, center_batch, b)
    cdt = torch.promote_types(f.dtype, torch.float32)
    fn = F.normalize(f.to(cdt), dim=-1)
    cn = F.normalize(c.to(cdt), dim=-1)
    m_cnt = torch.tensor(m_list, device=f.device)
    m_ptr = torch.cumsum(m_cnt, 0) - m_cnt
    for lo, hi, p0, p1, c0, c1, nmax, mmax in _chunks(n_list, m_list, heads):
        if c1 == c0 or p1 == p0:
            continue
        bc = hi - lo
        pb = batch[p0:p1] - lo
        prow = pb * nmax + n_local[p0:p1]
        crow = (center_batch[c0:c1] - lo) * mmax + m_local[c0:c1]
        fd = _dense(fn[p0:p1], prow, bc * nmax).view(bc, nmax, heads, -1).transpose(1, 2)
        cd = _dense(cn[c0:c1], crow, bc * mmax).view(bc, mmax, heads, -1).transpose(1, 2)
        score = alpha * torch.matmul(fd, cd.transpose(-1, -2)) + beta  # [bc, H, nmax, mmax]
        valid = torch.zeros(bc * mmax, dtype=torch.bool, device=f.device)
        valid[crow] = True
        score = score.masked_fill(~valid.view(bc, 1, 1, mmax), float("-inf"))
        arg = score.argmax(-1)  # first maximum on ties
        arg = arg.transpose(1, 2).reshape(bc * nmax, heads).index_select(0, prow)
        cnt = m_cnt[lo:hi].index_select(0, pb).unsqueeze(1)
        glob = arg + m_ptr[lo:hi].index_select(0, pb).unsqueeze(1)
        out[p0:p1] = torch.where(cnt > 0, glob, torch.full_like(glob, -1))
    return out
