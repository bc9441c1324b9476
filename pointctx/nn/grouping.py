"""kNN grouping on ragged sets, PointMLP's geometric affine and the in-group Context Cluster."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from .._checks import check_choice, check_positive_int
from ..ops.fps import fps
from ..ops.knn import knn
from ..ops.scatter import scatter_max, scatter_mean, scatter_sum
from ..ops.segment import batch_to_ptr
from .layers import Linear, chunk_rows

__all__ = ["Groups", "fps_start_points", "sample_and_group", "gather_groups", "GeometricAffine",
           "GroupContextCluster"]

FPS_STARTS = ("first", "canonical", "random")


class Groups(NamedTuple):
    """kNN groups around FPS anchors (see :func:`sample_and_group`).

    Attributes:
        anchor: [M] int64 input row of each group's anchor (by set, then FPS pick order).
        index: [M, k] int64 neighbour rows, nearest first; slots past the set's size repeat
            slot 0, so every entry is a valid row.
        mask: [M, k] bool, ``False`` on the filled slots; None when no slot was filled.
        batch: [M] int64 set id of each group (sorted).
    """

    anchor: Tensor
    index: Tensor
    mask: Tensor | None
    batch: Tensor


def fps_start_points(pos: Tensor, batch: Tensor, batch_size: int) -> Tensor:
    """Order-independent FPS start: each set's point farthest from the set's centroid.

    Shapes:
        pos: [N, D]; batch: [N]; return: [B] int64 rows of ``pos`` (-1 for empty sets).
    """
    centroid = scatter_mean(pos, batch, batch_size)
    d2 = (pos - centroid.index_select(0, batch)).square().sum(1)
    return scatter_max(d2, batch, batch_size).argmax


def _fps(pos, batch, batch_size, ratio, start, backend, generator):
    if start == "first":
        return fps(pos, batch, ratio=ratio, batch_size=batch_size, backend=backend)
    if start == "random":
        return fps(pos, batch, ratio=ratio, random_start=True, batch_size=batch_size,
                   backend=backend, generator=generator)
    # "canonical": swap each set's start point to the front of the set, run FPS, map back.
    ptr = batch_to_ptr(batch, batch_size)
    first = ptr[:-1]
    chosen = fps_start_points(pos, batch, batch_size)
    nonempty = chosen >= 0
    first, chosen = first[nonempty], chosen[nonempty]
    perm = torch.arange(pos.shape[0], device=pos.device)
    perm[first] = chosen
    perm[chosen] = first
    idx = fps(pos[perm], batch, ratio=ratio, batch_size=batch_size, backend=backend)
    return perm[idx]


def sample_and_group(pos: Tensor, batch: Tensor, k: int, ratio: float = 0.5,
                     batch_size: int | None = None, fps_start: str = "first",
                     backend: str | None = None,
                     generator: torch.Generator | None = None) -> Groups:
    """FPS anchors in every set, then the ``k`` nearest points of each anchor in its set.

    Args:
        pos: point positions.
        batch: sorted set id per point.
        k: neighbours per anchor (the anchor itself normally first).
        ratio: share of each set kept as anchors (``ceil(ratio * n)``).
        batch_size: number of sets B (saves a host sync).
        fps_start: ``"first"`` (the set's first point, as the official CUDA FPS),
            ``"canonical"`` (farthest from the centroid: order independent) or ``"random"``.
        backend: point-op backend for FPS and kNN.
        generator: random generator for ``fps_start="random"``.

    Shapes:
        pos: [N, D]; batch: [N]; return: anchor [M], index [M, k], mask [M, k], batch [M].
    """
    k = check_positive_int(k, "k")
    fps_start = check_choice(fps_start, "fps_start", FPS_STARTS)
    if batch_size is None:
        batch_size = int(batch[-1]) + 1 if batch.numel() else 0
    with record_function("pointctx.fps"):
        anchor = _fps(pos, batch, batch_size, ratio, fps_start, backend, generator)
    anchor_batch = batch.index_select(0, anchor)
    with record_function("pointctx.knn"):
        nn_index = knn(pos, pos.index_select(0, anchor), k, batch, anchor_batch,
                       batch_size=batch_size, backend=backend).index
        missing = nn_index < 0
        mask = None
        if bool(missing.any()):
            nn_index = torch.where(missing, nn_index[:, :1], nn_index)
            mask = ~missing
    return Groups(anchor, nn_index, mask, anchor_batch)


def gather_groups(x: Tensor, groups: Groups) -> tuple[Tensor, Tensor]:
    """Gather point features into neighbour blocks and anchor rows.

    Shapes:
        x: [N, C]; return: (grouped [M, k, C], anchor [M, C]).
    """
    with record_function("pointctx.group"):
        m, k = groups.index.shape
        grouped = x.index_select(0, groups.index.reshape(-1)).view(m, k, x.shape[1])
        return grouped, x.index_select(0, groups.anchor)


def _masked_sum_groups(t: Tensor, mask: Tensor | None) -> Tensor:
    """Sum of ``t [M, k, C]`` over the valid slots and channels of each group -> [M]."""
    return t.sum((1, 2)) if mask is None else (t * mask.unsqueeze(-1).to(t.dtype)).sum((1, 2))


class GeometricAffine(nn.Module):
    """PointMLP's geometric affine module with one standard deviation per sample.

    Args:
        channels: feature channels C.
        mode: ``"anchor"`` or ``"center"``.
        eps: added to the standard deviation (official 1e-5).

    Shapes:
        grouped: [M, k, C]; anchor: [M, C]; mask: [M, k] or None; batch: [M] set id of each
        group; return: [M, k, C].
    """

    def __init__(self, channels: int, mode: str = "anchor", eps: float = 1e-5):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.mode, self.eps = check_choice(mode, "mode", ("anchor", "center")), float(eps)
        self.alpha = nn.Parameter(torch.ones(self.channels))
        self.beta = nn.Parameter(torch.zeros(self.channels))

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"channels={self.channels}, mode={self.mode!r}, eps={self.eps}"

    def forward(self, grouped: Tensor, anchor: Tensor, mask: Tensor | None, batch: Tensor,
                batch_size: int) -> Tensor:
        """Normalise the groups (see the class docstring)."""
        if grouped.dim() != 3 or grouped.shape[-1] != self.channels:
            raise ValueError(
                f"`grouped` must have shape [M, k, {self.channels}], got {tuple(grouped.shape)}")
        with record_function("pointctx.group"):
            if self.mode == "anchor":
                ref = anchor
            elif mask is None:
                ref = grouped.mean(1)
            else:
                w = mask.unsqueeze(-1).to(grouped.dtype)
                ref = (grouped * w).sum(1) / w.sum(1).clamp(min=1)
            return _GeometricAffine.apply(grouped, ref, self.alpha, self.beta, mask, batch,
                                          batch_size, self.eps)


def geometric_affine_naive(grouped: Tensor, ref: Tensor, alpha: Tensor, beta: Tensor,
                           mask: Tensor | None, batch: Tensor, batch_size: int,
                           eps: float) -> Tensor:
    """Reference of :class:`GeometricAffine` after the reference ``ref``: plain autograd ops.

    Shapes:
        grouped: [M, k, C]; ref: [M, C]; alpha, beta: [C]; mask: [M, k] or None; batch: [M];
        return: [M, k, C].
    """
    m = grouped.shape[0]
    diff = grouped - ref.unsqueeze(1)
    count = _set_counts(grouped, mask, batch, batch_size)
    mean = scatter_sum(_masked_sum_groups(diff, mask), batch, batch_size)
    mean = mean / count.clamp(min=1)
    dev = diff - mean.index_select(0, batch).view(m, 1, 1)
    var = scatter_sum(_masked_sum_groups(dev.square(), mask), batch, batch_size)
    var = var / (count - 1).clamp(min=1)
    # sqrt has an infinite derivative at 0: keep zero-variance sets out of it
    positive = var > 0
    std = torch.where(positive, torch.where(positive, var, 1.0).sqrt(), 0.0)
    scale = (std + eps).reciprocal().index_select(0, batch).view(m, 1, 1)
    return torch.addcmul(beta, diff, scale * alpha)


def _set_counts(grouped: Tensor, mask: Tensor | None, batch: Tensor, batch_size: int) -> Tensor:
    """Number of valid entries (slots x channels) of each set, in ``grouped``'s dtype -> [B]."""
    m, k, c = grouped.shape
    valid = k if mask is None else mask.sum(1)
    return scatter_sum(
        torch.as_tensor(valid, device=grouped.device).expand(m).to(grouped.dtype) * c, batch,
        batch_size)


def _slot_sums(t: Tensor, mask: Tensor | None) -> Tensor:
    """Sum of ``t [M, k, C]`` over the valid slots and channels of each group -> [M]."""
    per_slot = t.sum(2)
    if mask is not None:
        per_slot = per_slot * mask.to(t.dtype)
    return per_slot.sum(1)


def _by_chunks(fn, a: Tensor, b: Tensor, mask: Tensor | None) -> Tensor:
    """``fn(a, b, mask)`` for a reduction over dims 1+, run over cache-sized chunks of rows.

    Shapes:
        a: [M, k, C]; b: broadcastable to a; mask: [M, k] or None; return: fn's rows joined.
    """
    m = a.shape[0]
    step = chunk_rows("auto", a[0].numel(), a.device)
    if step is None or m <= step:
        return fn(a, b, mask)
    masks = [None] * -(-m // step) if mask is None else mask.split(step)
    return torch.cat([fn(pa, pb, pm) for pa, pb, pm in zip(a.split(step), b.split(step), masks)])


class _GeometricAffine(torch.autograd.Function):
    """:func:`geometric_affine_naive` with a hand-written backward and fewer full-size tensors."""

    @staticmethod
    def forward(ctx, grouped, ref, alpha, beta, mask, batch, batch_size, eps):
        m = grouped.shape[0]
        diff = grouped - ref.unsqueeze(1)
        count = _set_counts(grouped, mask, batch, batch_size)
        mean = scatter_sum(_slot_sums(diff, mask), batch, batch_size) / count.clamp(min=1)
        mean_m = mean.index_select(0, batch).view(m, 1, 1)
        # squared deviations summed per group in cache-sized chunks (no full-size temporary)
        sq = _by_chunks(lambda d, mu, mk: _slot_sums((d - mu).square_(), mk), diff, mean_m, mask)
        var = scatter_sum(sq, batch, batch_size) / (count - 1).clamp(min=1)
        positive = var > 0
        std = torch.where(positive, torch.where(positive, var, 1.0).sqrt(), 0.0)
        inv = (std + eps).reciprocal()
        inv_m = inv.index_select(0, batch)
        out = torch.addcmul(beta, diff, inv_m.view(m, 1, 1) * alpha)
        ctx.save_for_backward(diff, alpha, mask, batch, mean, std, inv, count, positive)
        ctx.batch_size = batch_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        diff, alpha, mask, batch, mean, std, inv, count, positive = ctx.saved_tensors
        need_grouped, need_ref, need_alpha, need_beta = ctx.needs_input_grad[:4]
        m = diff.shape[0]
        inv_m = inv.index_select(0, batch)
        d_beta = g.sum((0, 1)) if need_beta else None
        d_alpha = d_grouped = d_ref = None
        if need_alpha or need_grouped or need_ref:
            gd = _by_chunks(lambda a, b, _: (a * b).sum(1), g, diff, None)  # [M, C]
            if need_alpha:
                d_alpha = (gd * inv_m.unsqueeze(1)).sum(0)
        if need_grouped or need_ref:
            d_inv = scatter_sum((gd * alpha).sum(1), batch, ctx.batch_size)  # [B]
            d_std = -d_inv * inv * inv
            d_var = torch.where(positive, d_std / (2 * torch.where(positive, std, 1.0)), 0.0)
            r = 2 * d_var / (count - 1).clamp(min=1)  # [B]
            r_m = r.index_select(0, batch).view(m, 1, 1)
            d_diff = g * (inv_m.view(m, 1, 1) * alpha)
            shift = r_m * mean.index_select(0, batch).view(m, 1, 1)
            if mask is None:
                d_diff.addcmul_(diff, r_m).sub_(shift)
            else:
                w = mask.unsqueeze(-1).to(diff.dtype)
                d_diff.addcmul_(diff, r_m * w).sub_(shift * w)
            d_grouped = d_diff if need_grouped else None
            d_ref = d_diff.sum(1).neg_() if need_ref else None
        return d_grouped, d_ref, d_alpha, d_beta, None, None, None, None


class GroupContextCluster(nn.Module):
    """Context Cluster inside each kNN group, as in the official PointMLP-CoC (residual).

    Args:
        dim: channels C.
        heads: number of heads (official 1).
        head_dim: channels per head (official ``max(C // 4, 32)``; None selects that).

    Shapes:
        x: [M, k, C]; mask: [M, k] bool or None; return: [M, k, C].
    """

    def __init__(self, dim: int, heads: int = 1, head_dim: int | None = None):
        super().__init__()
        self.dim, self.heads = check_positive_int(dim, "dim"), check_positive_int(heads, "heads")
        self.head_dim = (max(dim // 4, 32) if head_dim is None
                         else check_positive_int(head_dim, "head_dim"))
        inner = self.heads * self.head_dim
        # the layers of ContextCluster under the official PointMLP-CoC names (state_dict keys)
        self.fc1, self.fc_v, self.fc2 = Linear(dim, inner), Linear(dim, inner), Linear(inner, dim)
        self.alpha, self.beta = nn.Parameter(torch.ones(1)), nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"dim={self.dim}, heads={self.heads}, head_dim={self.head_dim}"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mix each group's neighbours through its context cluster."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have shape [M, k, {self.dim}], got {tuple(x.shape)}")
        with record_function("pointctx.coc"):
            m, k, _ = x.shape
            h, d = self.heads, self.head_dim
            f = self.fc1(x).view(m, k, h, d)
            v = self.fc_v(x).view(m, k, h, d)
            if mask is None:
                center = f.mean(1, keepdim=True)
                v_center = v.mean(1)
            else:
                w = mask.to(x.dtype).view(m, k, 1, 1)
                cnt = w.sum(1).clamp(min=1)
                center = ((f * w).sum(1) / cnt).unsqueeze(1)
                v_center = (v * w).sum(1) / cnt
            cos = (F.normalize(f, dim=-1) * F.normalize(center, dim=-1)).sum(-1)  # [M, k, h]
            sim = torch.sigmoid(self.beta + self.alpha * cos)
            sim_in = sim if mask is None else sim * mask.to(x.dtype).unsqueeze(-1)
            agg = (torch.einsum("mkh,mkhd->mhd", sim_in, v) + v_center) / (
                sim_in.sum(1).unsqueeze(-1) + 1.0)
            out = sim.unsqueeze(-1) * agg.unsqueeze(1)  # [M, k, h, d]
            return x + self.fc2(out.reshape(m, k, h * d))
