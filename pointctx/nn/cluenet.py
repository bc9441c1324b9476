"""CLUENet layers (Song, Huang et al., "Cluster Attention Makes Neural Networks Have Eyes") on sets.

CLUENet replaces the local Context Cluster mixer of CoC with a *global* one and the strided
convolutions between stages with a clustering reducer. Rebuilt here on packed ragged point sets
(``x [N, C]``, ``pos [N, D]``, sorted ``batch [N]``), without flash-attn or torch-scatter:

* :class:`GlobalFeatureClustering` (GFC), the token mixer. With ``K = k(x)``, ``V = v(x)``
  split into ``heads`` heads of ``head_dim`` channels:

  1. centers from a proposal on the positions (a grid of ``h x w`` cells per set, the paper's
     ``AdaptiveAvgPool2d``; or fps / random centers for non-grid sets); pooled centers
     ``k_m``, ``v_m`` are the mean of ``K`` / ``V`` over the center's members;
  2. soft global aggregation: every center attends over *all* points of its set,
     ``soft_m = sum_i softmax_i(cos(k_m, K_i) / tau) V_i`` with ``tau = exp(t)``, ``t``
     learnable and clamped below at ``log(min_tau)``. It runs through
     :func:`torch.nn.functional.scaled_dot_product_attention` (``scale=1``, unit keys and
     ``unit centers / tau``) on per-set padded blocks with a key mask, so it follows autocast
     (half precision on CUDA) and needs no flash-attn;
  3. gated fusion ``g = sigmoid(MLP_h([soft_m, v_m]))`` per head (a two-layer MLP of its own per
     head, hidden ``head_dim // 2``), ``c_m = (1 - g) soft_m + g v_m``;
  4. hard dispatch: ``q_m = W_q concat_h(c_m)``, ``S_im = sigmoid(alpha cos(K_i, q_m) + beta)``
     over the centers of ``i``'s set; every point keeps only its best center ``m(i)`` (ties:
     the lowest center index) and receives ``S_{i m(i)} c_{m(i)}``; heads are concatenated and
     projected. The assignment (center and weight per point and head) of the first block of a
     stage can be shared by the following blocks (:class:`GFCStage` ``share_assignment``, on by
     default as in the paper); a layer built with ``assign=False`` has no ``W_q``, ``alpha``,
     ``beta`` and needs that assignment.

* :class:`GFCBlock`: pre-norm residual block ``x + mixer(LN(x))``, ``x + mlp(LN(x))`` with the
  official per-point ``LayerNorm`` and the official MLP ``fc1 -> depthwise 3x3 -> GELU -> fc2``
  (:class:`DepthwiseMlp`).
* :class:`ImprovedClusterPool` (ICP), the reducer between stages: a skip path (the official
  3x3 stride-2 convolution, here :class:`~pointctx.nn.reducer.PointReducer`) plus a clustering
  path: ``f = W_f x``; centers are the reduced points with the mean of ``f`` over their own
  cell; every point joins its most cosine-similar center among *all* centers of its set; each
  center becomes ``(center + sum of its members) / (count + 1)``, is layer-normed and mapped to
  the output width by a two-layer MLP (``Linear, GELU, Linear``) and added to the skip path.
* :class:`SetDepthwiseConv`: the depthwise 3x3 convolution of the MLP and of the positional
  embedding (PosCNN). On pixel sets (lattice coordinates known) it is exactly the zero-padded
  depthwise convolution of the image holding the set's points (missing pixels are zeros). On
  non-grid sets (the point-wise alternative) the same 9 weights act on each point's 9 nearest
  neighbours of its set in rank order: rank 0 (the point itself) takes the centre tap, ranks
  1..8 the other taps in raster order.

Everything is batch independent: a set's output never depends on the other sets of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_point_inputs, check_positive_int, check_tensor
from ..ops.scatter import scatter_count, scatter_mean, scatter_sum
from ..ops.segment import infer_batch_size
from .blocks import MixerBlock, mlp_hidden
from .proposal import (
    Centers,
    _check_counts,
    build_proposal,
    pool_centers,
)
from .reducer import PointReducer, Reduced

__all__ = [
    "ClusterAssignment",
    "GlobalFeatureClustering",
    "GFCBlock",
    "GFCStage",
    "ImprovedClusterPool",
    "SetDepthwiseConv",
    "DepthwiseMlp",
    "HeadGate",
    "knn_slots",
    "soft_aggregate",
    "nearest_center",
]

# most elements of one padded [sets, heads, centers, points] block (bounds the scratch memory)
_BLOCK_ELEMENTS = 1 << 24


class ClusterAssignment(NamedTuple):
    """The hard assignment of one :class:`GlobalFeatureClustering` call.

    Attributes:
        center: [N, heads] int64 center (row of ``centers``) each point joined per head; -1 for
            a point of a set without centers.
        similarity: [N, heads] the weight ``S_{i m(i)}`` of each point (0 without a center);
            differentiable, so blocks sharing it also train the layer that computed it.
        centers: the :class:`~pointctx.nn.proposal.Centers` (M centers) the indices refer to.
    """

    center: Tensor
    similarity: Tensor
    centers: Centers


# ----------------------------------------------------------------------------------------------
# ragged <-> padded helpers
# ----------------------------------------------------------------------------------------------


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


def soft_aggregate(
    q: Tensor,
    center_batch: Tensor,
    k: Tensor,
    v: Tensor,
    batch: Tensor,
    batch_size: int | None = None,
) -> Tensor:
    """Attention of every center over all points of its set: ``softmax_i(q_m . k_i) v_i``.

    The scaling is the caller's (GFC passes unit centers divided by ``tau`` and unit keys). Sets
    are padded per block of consecutive sets and run through
    :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale=1`` and a boolean key
    mask; the attention runs in ``v``'s dtype (``q`` and ``k`` are cast to it), so under CUDA
    autocast it is half precision. A center of an empty set cannot exist; centers of sets
    without points are not produced by any proposal.

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
def nearest_center(
    f: Tensor,
    batch: Tensor,
    c: Tensor,
    center_batch: Tensor,
    batch_size: int | None = None,
    alpha: Tensor | float = 1.0,
    beta: Tensor | float = 0.0,
) -> Tensor:
    """Index of the best center of each point's set: ``argmax_m alpha cos(f_i, c_m) + beta``.

    Equivalent to the argmax of ``sigmoid(alpha cos + beta)``; ties take the lowest center
    index. Computed per block of padded sets (no gradient: the choice is piecewise constant).

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


def knn_slots(pos: Tensor, batch: Tensor, batch_size: int | None = None, k: int = 9,
              backend: str | None = None) -> Tensor:
    """The ``k`` nearest points of each point's set, nearest first (the point itself first).

    The neighbourhood of :class:`SetDepthwiseConv` on non-grid sets. Slots beyond the set's size
    hold -1.

    Shapes:
        pos: [N, D]; batch: [N]; return: [N, k] int64.
    """
    from ..ops.knn import knn

    if pos.shape[0] == 0:
        return torch.zeros(0, k, dtype=torch.long, device=pos.device)
    res = knn(pos, pos, k, batch_x=batch, batch_y=batch, batch_size=batch_size, backend=backend)
    index = res.index.long()
    if index.shape[1] < k:
        index = torch.cat([index, index.new_full((index.shape[0], k - index.shape[1]), -1)], 1)
    return index


def _conv_init(weight: Tensor, fan_out: int) -> None:
    """The official init of CLUENet's convolutions: normal(0, sqrt(2 / fan_out))."""
    nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out))


def _linear_as_conv(in_dim: int, out_dim: int) -> nn.Linear:
    """A point-wise linear layer standing for an official 1x1 convolution (and its init)."""
    lin = nn.Linear(in_dim, out_dim)
    _conv_init(lin.weight, out_dim)
    nn.init.zeros_(lin.bias)
    return lin


def _trunc_linear(in_dim: int, out_dim: int) -> nn.Linear:
    lin = nn.Linear(in_dim, out_dim)
    nn.init.trunc_normal_(lin.weight, std=0.02)
    nn.init.zeros_(lin.bias)
    return lin


def _check_x(x, dim: int, name: str = "x") -> None:
    check_tensor(x, name)
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"`{name}` must have shape [N, {dim}] (dim = {dim}), got "
                         f"{tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"`{name}` must be a floating point tensor, got dtype {x.dtype}")


# ----------------------------------------------------------------------------------------------
# depthwise convolution on sets
# ----------------------------------------------------------------------------------------------


class SetDepthwiseConv(nn.Module):
    """Depthwise ``kernel_size x kernel_size`` convolution (with bias) on pixel or point sets.

    * Pixel sets (``coords`` and ``grid_size`` given): the points are written into a zero image
      ``[B, C, H, W]`` at their lattice coordinates, convolved with zero padding
      ``kernel_size // 2`` and read back: on a full image exactly the official
      ``nn.Conv2d(C, C, 3, 1, 1, groups=C)``; a missing pixel counts as 0.
    * Other sets (``neighbors`` given, e.g. from :func:`knn_slots`): the point-wise alternative;
      the ``kernel_size**2`` weights of a channel act on the point's neighbours in rank order
      (rank 0, the point itself, on the centre tap; the other ranks on the remaining taps in
      raster order); a missing neighbour (-1) counts as 0.

    Args:
        channels: channels C.
        kernel_size: odd kernel width (official 3).

    Attributes:
        weight: [C, 1, k, k] (the depthwise ``nn.Conv2d`` layout); bias: [C].

    Shapes:
        x: [N, C]; batch: [N]; coords: [N, 2] int64 ``(row, col)``; neighbors: [N, k*k];
        return: [N, C].
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
        k = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.channels, 1, k, k))
        self.bias = nn.Parameter(torch.zeros(self.channels))
        _conv_init(self.weight, k * k)  # fan_out = k * k * C / groups
        taps = list(range(k * k))
        centre = taps.pop(k * k // 2)
        self.register_buffer("_rank_to_tap", torch.tensor([centre] + taps), persistent=False)

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"{self.channels}, kernel_size={self.kernel_size}"

    def forward(
        self,
        x: Tensor,
        batch: Tensor,
        batch_size: int | None = None,
        coords: Tensor | None = None,
        grid_size: Sequence[int] | None = None,
        neighbors: Tensor | None = None,
    ) -> Tensor:
        """Convolve (lattice mode with ``coords``/``grid_size``, else over ``neighbors``).

        Shapes:
            x: [N, C]; batch: [N]; coords: [N, 2]; neighbors: [N, S]; return: [N, C].
        """
        _check_x(x, self.channels)
        n, c = x.shape
        k = self.kernel_size
        if coords is not None:
            if grid_size is None or len(grid_size) != 2:
                raise ValueError(f"`grid_size` must be (H, W) with `coords`, got {grid_size!r}")
            if coords.shape != (n, 2):
                raise ValueError(f"`coords` must have shape [N, 2] = [{n}, 2], got "
                                 f"{tuple(coords.shape)}")
            h, w = (int(v) for v in grid_size)
            b = infer_batch_size(batch, batch_size)
            row = (batch.long() * h + coords[:, 0].long()) * w + coords[:, 1].long()
            img = _dense(x, row, b * h * w).view(b, h, w, c).permute(0, 3, 1, 2)
            out = F.conv2d(img, self.weight.to(img.dtype), self.bias.to(img.dtype),
                           padding=k // 2, groups=c)
            return out.permute(0, 2, 3, 1).reshape(b * h * w, c).index_select(0, row)
        if neighbors is None:
            raise ValueError("give `coords` and `grid_size` (pixel sets) or `neighbors` (point "
                             "sets, e.g. from knn_slots)")
        s = k * k
        if neighbors.dim() != 2 or neighbors.shape[0] != n or neighbors.shape[1] > s:
            raise ValueError(f"`neighbors` must have shape [N, S] = [{n}, <= {s}], got "
                             f"{tuple(neighbors.shape)}")
        w_rank = self.weight.view(c, s).index_select(1, self._rank_to_tap).to(x.dtype)
        x_pad = torch.cat([x, x.new_zeros(1, c)], 0)
        idx = torch.where(neighbors >= 0, neighbors, torch.full_like(neighbors, n))
        out = self.bias.to(x.dtype).expand(n, c)
        for r in range(neighbors.shape[1]):
            out = out + x_pad.index_select(0, idx[:, r]) * w_rank[:, r]
        return out


class DepthwiseMlp(nn.Module):
    """The CLUENet MLP: ``fc1 -> depthwise conv -> act -> drop -> fc2 -> drop``.

    Args:
        in_features: channels C.
        hidden_features: hidden channels.
        act_layer: activation class.
        drop: dropout probability.
        dwconv: use the depthwise convolution (official); False gives a plain MLP.

    Shapes:
        x: [N, C]; return: [N, C]. The convolution needs ``coords``/``grid_size`` or
        ``neighbors`` (see :class:`SetDepthwiseConv`).
    """

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU,
                 drop: float = 0.0, dwconv: bool = True):
        super().__init__()
        self.fc1 = _trunc_linear(in_features, hidden_features)
        self.dwconv = SetDepthwiseConv(hidden_features) if dwconv else None
        self.act = act_layer()
        self.fc2 = _trunc_linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, batch: Tensor, batch_size: int | None = None, coords=None,
                grid_size=None, neighbors=None) -> Tensor:
        """Apply the MLP (see the class docstring)."""
        x = self.fc1(x)
        if self.dwconv is not None:
            x = self.dwconv(x, batch, batch_size, coords, grid_size, neighbors)
        return self.drop(self.fc2(self.drop(self.act(x))))


# ----------------------------------------------------------------------------------------------
# Global Feature Clustering
# ----------------------------------------------------------------------------------------------


class HeadGate(nn.Module):
    """Per-head gate ``sigmoid(fc2_h(GELU(fc1_h([a, b]))))``, one small MLP per head.

    Args:
        head_dim: channels d of each of ``a`` and ``b``.
        heads: number of heads H.
        hidden: hidden width per head (default ``head_dim // 2``, as official).

    Shapes:
        a, b: [M, H, d]; return: [M, H, 1].
    """

    def __init__(self, head_dim: int, heads: int, hidden: int | None = None):
        super().__init__()
        d = check_positive_int(head_dim, "head_dim")
        h = check_positive_int(heads, "heads")
        hid = max(1, d // 2) if hidden is None else check_positive_int(hidden, "hidden")
        self.w1 = nn.Parameter(torch.empty(h, hid, 2 * d))
        self.b1 = nn.Parameter(torch.zeros(h, hid))
        self.w2 = nn.Parameter(torch.empty(h, 1, hid))
        self.b2 = nn.Parameter(torch.zeros(h, 1))
        for w in (self.w1, self.w2):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Gate values in (0, 1) per center and head."""
        z = torch.cat([a, b], -1)
        z = F.gelu(torch.einsum("mhc,hoc->mho", z, self.w1.to(z.dtype)) + self.b1.to(z.dtype))
        z = torch.einsum("mhc,hoc->mho", z, self.w2.to(z.dtype)) + self.b2.to(z.dtype)
        return torch.sigmoid(z)


class GlobalFeatureClustering(nn.Module):
    """Global Feature Clustering token mixer of CLUENet on packed ragged sets.

    See the module docstring for the math (pooled centers, soft global aggregation with the
    clamped temperature, gated fusion, hard dispatch).

    Args:
        dim: input channels C.
        out_dim: output channels (default ``dim``).
        heads: heads H.
        head_dim: channels per head d.
        proposal: center proposal: ``"grid"`` (default, ``centers`` cells per axis over
            ``bounds``), ``"fps"`` / ``"random"`` (``prod(centers)`` centers per set), another
            registered name, a :class:`~pointctx.nn.proposal.CenterProposal` instance or class.
        centers: cells per axis for the grid (official 7, i.e. 7x7), or a count per axis whose
            product is the number of fps / random centers.
        bounds: grid box: None (each set's bounding box) or ``(lo, hi)``; use ``(-0.5, 0.5)`` for
            image-plane pixel positions.
        assign: compute the hard assignment (owns ``q``, ``alpha``, ``beta``). False: the layer
            reuses an earlier layer's :class:`ClusterAssignment` (official ``sim_share`` blocks,
            which have no such parameters).
        min_tau: lower clamp of the temperature ``tau = exp(t)`` (official 1e-4).
        tau_init: initial temperature (official 2.13: ``t = log 2.13``).
        proposal_kwargs: extra keyword arguments for a proposal built by name or class.
        validate: check value-dependent input properties (host syncs).

    Attributes:
        k, v: ``nn.Linear(dim, H * d)`` (similarity and value spaces); q:
        ``nn.Linear(H * d, H * d)`` or None; proj: ``nn.Linear(H * d, out_dim)``; gate:
        :class:`HeadGate`; t: the log-temperature; alpha (init 1), beta (init 0) or None.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; return: [N, out_dim] (and the
        :class:`ClusterAssignment` with ``return_assignment=True``).
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        heads: int = 4,
        head_dim: int = 24,
        proposal="grid",
        centers=7,
        bounds=None,
        assign: bool = True,
        min_tau: float = 1e-4,
        tau_init: float = 2.13,
        *,
        proposal_kwargs: dict | None = None,
        validate: bool = True,
    ):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.out_dim = self.dim if out_dim is None else check_positive_int(out_dim, "out_dim")
        self.heads = check_positive_int(heads, "heads")
        self.head_dim = check_positive_int(head_dim, "head_dim")
        for name, val in (("min_tau", min_tau), ("tau_init", tau_init)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not val > 0:
                raise ValueError(f"`{name}` must be a number > 0, got {val!r}")
        self.min_tau = float(min_tau)
        self.centers = _check_counts(centers, "centers")
        self.assign = bool(assign)
        self.validate = bool(validate)
        inner = self.heads * self.head_dim
        self.k = _linear_as_conv(self.dim, inner)
        self.v = _linear_as_conv(self.dim, inner)
        self.proj = _linear_as_conv(inner, self.out_dim)
        self.gate = HeadGate(self.head_dim, self.heads)
        self.t = nn.Parameter(torch.tensor(math.log(float(tau_init))))
        if self.assign:
            self.q = _trunc_linear(inner, inner)
            self.alpha = nn.Parameter(torch.ones(1))
            self.beta = nn.Parameter(torch.zeros(1))
        else:
            self.q = self.alpha = self.beta = None
        self.proposal = build_proposal(proposal, self.centers, bounds, proposal_kwargs)

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return (f"dim={self.dim}, out_dim={self.out_dim}, heads={self.heads}, "
                f"head_dim={self.head_dim}, centers={self.centers}, assign={self.assign}, "
                f"min_tau={self.min_tau:g}")

    @property
    def tau(self) -> Tensor:
        """The temperature ``exp(max(t, log(min_tau)))`` (0-dim tensor)."""
        return torch.clamp(self.t, min=math.log(self.min_tau)).exp()

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor,
        batch_size: int | None = None,
        centers: Centers | None = None,
        assignment: ClusterAssignment | None = None,
        return_assignment: bool = False,
    ):
        """Cluster globally and dispatch the fused centers back to the points.

        Args:
            x: point features.
            pos: point positions (for the proposal only).
            batch: sorted set id per point.
            batch_size: number of sets B, if known.
            centers: precomputed :class:`~pointctx.nn.proposal.Centers` (e.g. shared by the
                blocks of a stage); default: this layer's proposal on ``pos``.
            assignment: a :class:`ClusterAssignment` to reuse (its centers are used); required
                when the layer was built with ``assign=False``.
            return_assignment: also return the (computed or reused) assignment.

        Shapes:
            x: [N, C]; pos: [N, D]; batch: [N]; return: [N, out_dim].
        """
        b = infer_batch_size(batch, check_point_inputs(x, pos, batch, batch_size, self.dim,
                                                       self.validate))
        n = x.shape[0]
        heads, hd = self.heads, self.head_dim
        if assignment is not None:
            if not isinstance(assignment, ClusterAssignment):
                raise TypeError(f"`assignment` must be a ClusterAssignment, got "
                                f"{type(assignment).__name__}")
            if tuple(assignment.center.shape) != (n, heads):
                raise ValueError(
                    f"`assignment` must hold [N, heads] = [{n}, {heads}] centers, got "
                    f"{tuple(assignment.center.shape)}"
                )
            centers = assignment.centers
        elif not self.assign:
            raise ValueError("this layer was built with assign=False (it reuses the assignment "
                             "of an earlier layer); pass `assignment`")
        if centers is None:
            centers = self.proposal(pos, batch, b)
        elif not isinstance(centers, Centers):
            raise TypeError(f"`centers` must be a Centers tuple, got {type(centers).__name__}")
        m = centers.pos.shape[0]
        batch = batch.long()

        k_all = self.k(x)
        v_all = self.v(x)
        if self.proposal.mean_pooling:
            px = pool_centers(x, centers)  # the mean commutes with the linear maps
            kc, vc = self.k(px), self.v(px)
            if centers.assignment is None and m:
                members = scatter_count(centers.member_center, m)
                keep = (members > 0).to(kc.dtype).unsqueeze(1)
                kc, vc = kc * keep, vc * keep
        else:
            kc, vc = self.proposal.pool(k_all, centers), self.proposal.pool(v_all, centers)
        out_dtype = v_all.dtype
        cdt = torch.promote_types(out_dtype, torch.float32)
        kn = F.normalize(k_all.to(cdt).view(n, heads, hd), dim=-1)
        kcn = F.normalize(kc.to(cdt).view(m, heads, hd), dim=-1)
        vc = vc.to(cdt).view(m, heads, hd)
        if n == 0 or m == 0:
            chosen = torch.full((n, heads), -1, dtype=torch.long, device=x.device)
            sim = x.new_zeros(n, heads, dtype=cdt)
            out = self.proj(x.new_zeros(n, heads * hd, dtype=out_dtype))
            res = ClusterAssignment(chosen, sim, centers)
            return (out, res) if return_assignment else out

        soft = soft_aggregate(kcn / self.tau.to(cdt), centers.batch, kn,
                              v_all.view(n, heads, hd), batch, b).to(cdt)
        g = self.gate(soft, vc)
        fused = (1 - g) * soft + g * vc  # [M, H, d]

        if assignment is None:
            qc = self.q(fused.reshape(m, heads * hd).to(out_dtype)).to(cdt).view(m, heads, hd)
            qn = F.normalize(qc, dim=-1)
            alpha, beta = self.alpha.to(cdt), self.beta.to(cdt)
            chosen = nearest_center(kn.detach(), batch, qn.detach(), centers.batch, b,
                                    alpha.detach(), beta.detach())
            has = chosen >= 0
            sel = chosen.clamp(min=0)
            q_sel = qn.reshape(m * heads, hd).index_select(
                0, (sel * heads + torch.arange(heads, device=x.device)).view(-1)
            ).view(n, heads, hd)
            sim = torch.sigmoid(beta + alpha * (kn * q_sel).sum(-1)) * has.to(cdt)
            assignment = ClusterAssignment(chosen, sim, centers)
        chosen, sim = assignment.center, assignment.similarity
        sel = chosen.clamp(min=0) * heads + torch.arange(heads, device=x.device)
        c_sel = fused.reshape(m * heads, hd).index_select(0, sel.view(-1)).view(n, heads, hd)
        mixed = sim.to(cdt).unsqueeze(-1) * c_sel
        out = self.proj(mixed.reshape(n, heads * hd).to(out_dtype))
        return (out, assignment) if return_assignment else out


class GFCBlock(MixerBlock):
    """Pre-norm residual CLUENet block with the GFC mixer and the depthwise MLP.

    ::

        x = x + drop_path(ls1(gfc(LN(x))))
        x = x + drop_path(ls2(mlp(LN(x))))

    A :class:`~pointctx.nn.blocks.MixerBlock` with per-point ``LayerNorm``, a
    :class:`GlobalFeatureClustering` token mixer and a :class:`DepthwiseMlp`.

    Args:
        dim: channels C.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        heads, head_dim, proposal, centers, bounds, assign, min_tau: see
            :class:`GlobalFeatureClustering`.
        drop: dropout in the MLP.
        drop_path: stochastic depth (whole sets, training only).
        layer_scale_init: LayerScale init; None (official with LayerNorm) disables it.
        dwconv: depthwise convolution in the MLP (official).
        act_layer: MLP activation.
        norm_eps: LayerNorm eps.
        mixer_kwargs: extra keyword arguments for :class:`GlobalFeatureClustering`.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; return: [N, C] (and the assignment with
        ``return_assignment=True``). The MLP convolution uses ``coords``/``grid_size`` (pixel
        sets) or ``neighbors``; with neither, the 9 nearest neighbours of ``pos`` are used.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        heads: int = 4,
        head_dim: int = 24,
        proposal="grid",
        centers=7,
        bounds=None,
        assign: bool = True,
        min_tau: float = 1e-4,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = None,
        dwconv: bool = True,
        act_layer=nn.GELU,
        norm_eps: float = 1e-5,
        mixer_kwargs: dict | None = None,
    ):
        dim = check_positive_int(dim, "dim")
        hidden = mlp_hidden(dim, mlp_ratio)
        mixer = GlobalFeatureClustering(
            dim, dim, heads=heads, head_dim=head_dim, proposal=proposal, centers=centers,
            bounds=bounds, assign=assign, min_tau=min_tau, **(mixer_kwargs or {}))
        mlp = DepthwiseMlp(dim, hidden, act_layer=act_layer, drop=drop, dwconv=dwconv)
        super().__init__(dim, mixer, mlp, set_norm=False, norm_eps=norm_eps,
                         drop_path=drop_path, layer_scale_init=layer_scale_init)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor,
        batch_size: int | None = None,
        *,
        centers: Centers | None = None,
        assignment: ClusterAssignment | None = None,
        coords: Tensor | None = None,
        grid_size: Sequence[int] | None = None,
        neighbors: Tensor | None = None,
        return_assignment: bool = False,
    ):
        """Run the two residual branches (arguments as :class:`GlobalFeatureClustering`).

        Shapes:
            x: [N, C]; pos: [N, D]; batch: [N]; coords: [N, 2]; neighbors: [N, 9];
            return: [N, C].
        """
        _check_x(x, self.dim)
        if (self.mlp.dwconv is not None and coords is None and neighbors is None):
            neighbors = knn_slots(pos, batch, batch_size)
        x, assignment = self.residual(
            x, batch, batch_size, (pos, batch, batch_size),
            {"centers": centers, "assignment": assignment, "return_assignment": True},
            (batch, batch_size, coords, grid_size, neighbors))
        return (x, assignment) if return_assignment else x


class GFCStage(nn.Module):
    """A stack of :class:`GFCBlock` sharing centers, neighbourhoods and (optionally) assignments.

    The positions do not change within a stage, so the centers (the first block's proposal) and
    the depthwise-convolution neighbourhood are computed once. With ``share_assignment`` (the
    paper's default) only the first block computes the hard assignment; the others reuse it and
    are built without ``q``, ``alpha``, ``beta``.

    Args:
        dim: channels C.
        depth: number of blocks.
        share_assignment: reuse the first block's assignment in the following blocks.
        drop_path: one rate for all blocks or one per block.
        **block_kwargs: keyword arguments of :class:`GFCBlock`.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; return: [N, C].
    """

    def __init__(self, dim: int, depth: int, share_assignment: bool = True, drop_path=0.0,
                 **block_kwargs):
        super().__init__()
        depth = check_positive_int(depth, "depth")
        self.share_assignment = bool(share_assignment)
        rates = list(drop_path) if isinstance(drop_path, Sequence) else [drop_path] * depth
        if len(rates) != depth:
            raise ValueError(f"`drop_path` must have one rate per block ({depth}), got "
                             f"{len(rates)}")
        self.blocks = nn.ModuleList([
            GFCBlock(dim, assign=(i == 0 or not self.share_assignment), drop_path=rates[i],
                     **block_kwargs)
            for i in range(depth)
        ])

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None, *,
                centers: Centers | None = None, coords: Tensor | None = None,
                grid_size: Sequence[int] | None = None, neighbors: Tensor | None = None,
                return_assignment: bool = False):
        """Run the blocks (``centers`` default: the first block's proposal on ``pos``).

        Shapes:
            x: [N, C]; pos: [N, D]; batch: [N]; return: [N, C] (and the list of the blocks'
            assignments with ``return_assignment=True``).
        """
        b = infer_batch_size(batch, batch_size)
        if centers is None:
            centers = self.blocks[0].token_mixer.proposal(pos, batch, b)
        if self.blocks[0].mlp.dwconv is not None and coords is None and neighbors is None:
            neighbors = knn_slots(pos, batch, b)
        assignment = None
        seen = []
        for block in self.blocks:
            x, res = block(x, pos, batch, b, centers=centers,
                           assignment=assignment if self.share_assignment else None,
                           coords=coords, grid_size=grid_size, neighbors=neighbors,
                           return_assignment=True)
            assignment = res if assignment is None else assignment
            seen.append(res)
        return (x, seen) if return_assignment else x


# ----------------------------------------------------------------------------------------------
# Improved Cluster Pooling
# ----------------------------------------------------------------------------------------------


class ImprovedClusterPool(nn.Module):
    """CLUENet's Improved Cluster Pooling (ICP): a clustering reducer with a convolutional skip.

    1. skip: :class:`~pointctx.nn.reducer.PointReducer` (official 3x3, stride 2, padding 1
       convolution) gives the reduced points (M anchors) and the skip features;
    2. ``f = W_f x`` (similarity and value space are shared, as official); the center of every
       anchor is the mean of ``f`` over its own cell (pixel sets: the anchor's stride cell, the
       official ``adaptive_avg_pool2d``; point sets: the input points whose nearest anchor it
       is);
    3. every point joins its most cosine-similar center among all centers of its set;
       ``pooled_m = (center_m + sum_{i in m} f_i) / (count_m + 1)``;
    4. ``out = skip + norm2(mlp(norm1(pooled)))`` with ``norm1 = LayerNorm(in_dim)``,
       ``mlp = Linear(in, in), GELU, Linear(in, out)`` and ``norm2 = LayerNorm(out_dim)`` when
       ``norm_out`` (official CLUE-mini) else identity.

    Args:
        in_dim: input channels.
        out_dim: output channels.
        kernel_size, stride, padding: the skip reducer (official 3, 2, 1).
        norm_out: LayerNorm after the MLP (official ``pool_norm2``).
        lattice_dim: lattice axes of pixel sets (2).
        validate: value checks in the skip reducer.
        backend: point-op backend (FPS / kNN) for point sets.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; coords: [N, 2]; return:
        :class:`~pointctx.nn.reducer.Reduced` with ``x [M, out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, norm_out: bool = False, lattice_dim: int = 2,
                 validate: bool = False, backend: str | None = None):
        super().__init__()
        self.in_dim = check_positive_int(in_dim, "in_dim")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        self.backend = backend
        self.skip = PointReducer(in_dim, out_dim, kernel_size, stride, padding,
                                 lattice_dim=lattice_dim, validate=validate, backend=backend)
        _conv_init(self.skip.proj.weight, self.skip.slots * out_dim)
        nn.init.zeros_(self.skip.proj.bias)
        self.f = _linear_as_conv(in_dim, in_dim)
        self.norm1 = nn.LayerNorm(in_dim)
        self.fc1 = _linear_as_conv(in_dim, in_dim)
        self.act = nn.GELU()
        self.fc2 = _linear_as_conv(in_dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim) if norm_out else nn.Identity()

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"{self.in_dim}, {self.out_dim}"

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None,
                coords: Tensor | None = None, grid_size: Sequence[int] | None = None,
                return_cluster: bool = False):
        """Reduce every set (lattice mode with ``coords``/``grid_size``, else point mode).

        Args:
            x: point features.
            pos: point positions.
            batch: sorted set id per point.
            batch_size: number of sets B, if known.
            coords: lattice coordinates ``(row, col)`` of pixel sets.
            grid_size: lattice size ``(H, W)``.
            return_cluster: also return the center each input point joined ([N], -1 none).

        Shapes:
            x: [N, C]; return: Reduced (x [M, out_dim], pos [M, D], batch [M], ...).
        """
        _check_x(x, self.in_dim)
        b = infer_batch_size(batch, batch_size)
        red = self.skip(x, pos, batch, b, coords, grid_size)
        m = red.x.shape[0]
        n = x.shape[0]
        cell = red.assignment
        if cell is None:
            from ..ops.knn import knn

            if n and m:
                cell = knn(red.pos, pos, 1, batch_x=red.batch, batch_y=batch, batch_size=b,
                           backend=self.backend).index[:, 0].long()
            else:
                cell = torch.full((n,), -1, dtype=torch.long, device=x.device)
        f = self.f(x)
        has_cell = cell >= 0
        safe_cell = torch.where(has_cell, cell, torch.full_like(cell, m))
        center = scatter_mean(f, safe_cell, m + 1)[:m]
        chosen = nearest_center(f.unsqueeze(1), batch.long(), center.unsqueeze(1), red.batch,
                                b)[:, 0]
        route = torch.where(chosen >= 0, chosen, torch.full_like(chosen, m))
        total = scatter_sum(f, route, m + 1)[:m] + center
        count = scatter_count(route, m + 1)[:m].to(total.dtype)
        pooled = total / (count + 1).unsqueeze(1)
        y = self.fc2(self.act(self.fc1(self.norm1(pooled))))
        out = red.x + self.norm2(y)
        res = Reduced(out, red.pos, red.batch, red.coords, red.grid_size, red.index,
                      red.assignment)
        return (res, chosen) if return_cluster else res
