"""The Context Cluster token mixer (Ma et al., "Image as Set of Points", ICLR 2023)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._checks import (
    check_bounds,
    check_choice,
    check_counts,
    check_point_inputs,
    check_positive_int,
    per_axis,
)
from ..ops.linear import linear
from ..ops.segment import infer_batch_size
from .layers import Linear, check_chunk_points, chunk_rows
from .proposal import Centers, build_proposal, pool_centers

__all__ = ["ContextCluster", "Assignment"]

# Elements of one gathered candidate block in the assignment step (bounds its scratch memory).
_CHUNK_ELEMENTS = 1 << 20


class Assignment(NamedTuple):
    """How the points were clustered in one :class:`ContextCluster` call.

    Attributes:
        center: [N, heads] center each point joined, per head (-1: no center in its group).
        centers: the :class:`~pointctx.nn.proposal.Centers` used (``batch``: set or region group).
        region: [N] region of each point inside its set, or None without regions.
        similarity: [N, heads] the weight ``s_i`` of each point in its cluster.
    """

    center: Tensor
    centers: Centers
    region: Tensor | None
    similarity: Tensor


class _CenterFeatures(NamedTuple):
    """Center features of one call, per head, in the compute dtype ``cdt``."""

    c_n: Tensor  # [M, heads, d] unit similarity features
    value: Tensor  # [M, heads, d] value centers
    f_all: Tensor | None  # [N, inner] f(x) when the proposal's pooling needed it, else None
    v_all: Tensor | None  # [N, inner] v(x), likewise
    out_dtype: torch.dtype
    cdt: torch.dtype


class _Candidates(NamedTuple):
    """Candidate centers of every point (``start[i] .. start[i] + k_pt[i] - 1``) and chunking."""

    start: Tensor  # [N]
    k_pt: Tensor  # [N]
    k_max: int
    k_min: int
    layout: str  # "padded" or "ragged"
    step: int  # points per chunk
    chunk_pairs: list | None  # pairs per chunk (ragged layout)


def _counts_or_none(value, name: str):
    return None if value is None else check_counts(value, name)


class ContextCluster(nn.Module):
    """Context Cluster token mixer on packed ragged point sets (equations: docs/design.md).

    Args:
        dim: input channels C.
        out_dim: output channels (default ``dim``).
        heads: number of heads.
        head_dim: channels per head in the similarity and value spaces.
        proposal: ``"grid"`` (default), ``"fps"``, ``"random"``, a registered name, or a
            :class:`~pointctx.nn.proposal.CenterProposal` class or instance.
        centers: grid cells per axis, or fps / random centers, per region or set (see
            :func:`~pointctx.nn.proposal.build_proposal`).
        regions: regions per axis (e.g. ``(8, 8)``): a point competes only for the centers of its
            region. None: for every center of its set.
        denominator: ``"sim"`` (``1 + sum s_i``, official) or ``"count"`` (``1 + |members|``).
        bounds: box of the grid and regions: None / ``"set"`` (each set's box) or ``(lo, hi)``
            (``(-0.5, 0.5)`` for pixel sets).
        proposal_kwargs: extra keyword arguments of the proposal (e.g. ``{"k": 8}`` for fps).
        pair_layout: (point, candidate) pairs ``"padded"``, ``"ragged"`` or ``"auto"``.
        validate: check ``batch`` order and finite ``pos`` (host syncs).
        chunk_points: points per chunk (``"auto"``: cache-sized on CPU; None: no chunking).

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N] sorted set id per point.
        return: [N, out_dim], or ``(out, Assignment)`` with ``return_assignment=True``.
    """

    def __init__(self, dim: int, out_dim: int | None = None, heads: int = 4, head_dim: int = 24,
                 proposal="grid", centers=None, regions=None, denominator: str = "sim", bounds=None,
                 *, proposal_kwargs: dict | None = None, pair_layout: str = "auto",
                 validate: bool = True, chunk_points: int | str | None = "auto"):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        out_dim = dim if out_dim is None else check_positive_int(out_dim, "out_dim")
        self.dim, self.out_dim = dim, out_dim
        self.heads = check_positive_int(heads, "heads")
        self.head_dim = check_positive_int(head_dim, "head_dim")
        self.denominator = check_choice(denominator, "denominator", ("sim", "count"))
        self.pair_layout = check_choice(pair_layout, "pair_layout", ("auto", "padded", "ragged"))
        self.bounds = check_bounds(bounds)
        self.centers = None if centers is None else check_counts(centers, "centers")
        self.regions, self.validate = _counts_or_none(regions, "regions"), bool(validate)
        self.chunk_points = check_chunk_points(chunk_points)

        inner = self.heads * self.head_dim
        self.f, self.v, self.proj = Linear(dim, inner), Linear(dim, inner), Linear(inner, out_dim)
        self.alpha, self.beta = nn.Parameter(torch.ones(1)), nn.Parameter(torch.zeros(1))

        self.proposal = build_proposal(proposal, centers, bounds, proposal_kwargs)

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return (f"dim={self.dim}, out_dim={self.out_dim}, heads={self.heads}, "
                f"head_dim={self.head_dim}, centers={self.centers}, regions={self.regions}, "
                f"denominator={self.denominator!r}, bounds={self.bounds!r}")

    # input checks

    def _check_inputs(self, x, pos, batch, batch_size):
        batch_size = check_point_inputs(x, pos, batch, batch_size, self.dim, self.validate)
        d = pos.shape[1]
        if self.regions is not None:
            per_axis(self.regions, d, "regions")
        cells = getattr(self.proposal, "cells", None)
        if cells is not None and self.centers is not None:
            per_axis(cells, d, "centers")
        if self.bounds != "set":
            for side in self.bounds:
                per_axis(side, d, "bounds")
        return batch_size

    # forward, as named steps

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None,
                return_assignment: bool = False, *, spacing=None):
        """Mix point features through context clusters.

        Args:
            x: point features.
            pos: point positions (for the centers and regions only).
            batch: sorted set id per point.
            batch_size: number of sets B (saves a host sync).
            return_assignment: also return the :class:`Assignment`.
            spacing: lattice pitch of pixel sets, for the grid's ``windows="adaptive"``.
        """
        batch_size = self._check_inputs(x, pos, batch, batch_size)
        num_sets = infer_batch_size(batch, batch_size)
        centers, group, num_groups, region = self.proposal.propose(
            pos, batch, num_sets, regions=self.regions, bounds=self.bounds, spacing=spacing)
        feats = self._center_features(x, centers)
        n, m = x.shape[0], centers.pos.shape[0]
        if n == 0 or m == 0:
            chosen = torch.full((n, self.heads), -1, dtype=torch.long, device=x.device)
            sim = feats.value.new_zeros(n, self.heads)
            out = self.proj(feats.value.new_zeros(n, self.heads * self.head_dim)
                            .to(feats.out_dtype))
        else:
            cand = self._candidates(centers, group, num_groups, n, x.device)
            chosen, sim, flat, clusters = self._assign_and_aggregate(x, feats, cand, m)
            out = self._dispatch(sim, flat, clusters, feats.out_dtype)
            if return_assignment:  # the per-chunk pieces are joined only when asked for
                sim = sim[0] if len(sim) == 1 else torch.cat(sim, 0)
                chosen = chosen[0] if len(chosen) == 1 else torch.cat(chosen, 0)
        return (out, Assignment(chosen, centers, region, sim)) if return_assignment else out

    def _center_features(self, x: Tensor, centers: Centers) -> _CenterFeatures:
        """The proposal's pooling of f(x) and v(x) per center, split into heads."""
        f_lin, v_lin = self.f, self.v
        m = centers.pos.shape[0]
        heads, hd = self.heads, self.head_dim
        # For the (affine) mean pooling pool(f(x)) = f(pool(x)), so pool the C input channels
        # instead of 2 * inner.
        f_all = v_all = None
        if self.proposal.mean_pooling:
            px = pool_centers(x, centers)
            c_sim = linear(px, f_lin.weight, f_lin.bias)
            c_val = linear(px, v_lin.weight, v_lin.bias)
            if centers.assignment is None:
                members = torch.bincount(centers.member_center, minlength=m)[:m]
                keep = (members > 0).to(c_sim.dtype).unsqueeze(1)
                c_sim, c_val = c_sim * keep, c_val * keep
        else:
            f_all = linear(x, f_lin.weight, f_lin.bias)
            v_all = linear(x, v_lin.weight, v_lin.bias)
            c_sim = self.proposal.pool(f_all, centers)
            c_val = self.proposal.pool(v_all, centers)
        out_dtype = c_sim.dtype
        cdt = torch.promote_types(out_dtype, torch.float32)
        c_sim = c_sim.to(cdt).reshape(m, heads, hd)
        c_val = c_val.to(cdt).reshape(m, heads, hd)
        # cos(f_i, c_m) = (f_i . c_m / |c_m|) / |f_i|: normalise the few centers, and scale the
        # point dot products by 1 / |f_i| ([N, heads]) instead of normalising [N, heads, d].
        c_n = c_sim / c_sim.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return _CenterFeatures(c_n, c_val, f_all, v_all, out_dtype, cdt)

    def _candidates(self, centers: Centers, group: Tensor, num_groups: int, n: int,
                    dev) -> _Candidates:
        """Each point's candidate centers, the pair layout and the points per chunk."""
        inner = self.heads * self.head_dim
        cnt = torch.bincount(centers.batch, minlength=num_groups)[:num_groups]
        cptr = torch.cumsum(cnt, 0) - cnt
        k_pt = cnt.index_select(0, group)
        start = cptr.index_select(0, group)
        k_max, n_pairs, k_min = torch.stack([k_pt.max(), k_pt.sum(), k_pt.min()]).tolist()
        layout = self.pair_layout
        if layout == "auto":
            layout = "padded" if n * k_max <= 1.25 * n_pairs else "ragged"
        step = chunk_rows(self.chunk_points, inner, dev)
        step = n if step is None else step
        chunk_pairs = None
        if layout == "ragged":  # pairs per chunk, in one host sync
            ends = torch.arange(step, n + step, step, device=dev).clamp_(max=n) - 1
            ends = torch.cumsum(k_pt, 0).index_select(0, ends)
            chunk_pairs = torch.diff(ends, prepend=ends.new_zeros(1)).tolist()
        return _Candidates(start, k_pt, k_max, k_min, layout, step, chunk_pairs)

    def _assign_and_aggregate(self, x: Tensor, feats: _CenterFeatures, cand: _Candidates, m: int):
        """Per chunk of points: features, hard assignment, similarity, aggregation sums."""
        n = x.shape[0]
        heads, hd = self.heads, self.head_dim
        f_lin, v_lin = self.f, self.v
        c_n, cdt, dev = feats.c_n, feats.cdt, x.device
        alpha, beta = self.alpha.to(cdt), self.beta.to(cdt)
        step, layout = cand.step, cand.layout
        head_ids = torch.arange(heads, device=dev)
        rows = m * heads + 1  # one spare row takes the points without a center
        c_n_flat = c_n.reshape(m * heads, hd)
        sims, flats, chosen_parts = [], [], []
        num = F.pad(feats.value.reshape(m * heads, hd), (0, 0, 0, 1))
        den = torch.ones(rows, dtype=cdt, device=dev)
        # torch.split (not slicing) so that autograd joins the chunk gradients with one cat
        f_all, v_all = feats.f_all, feats.v_all
        x_parts = x.split(step) if f_all is None else None
        f_parts = None if f_all is None else f_all.split(step)
        v_parts = None if v_all is None else v_all.split(step)
        for c, lo in enumerate(range(0, n, step)):
            hi = min(n, lo + step)
            if f_all is None:
                f_c = linear(x_parts[c], f_lin.weight, f_lin.bias)
                v_c = linear(x_parts[c], v_lin.weight, v_lin.bias)
            else:
                f_c, v_c = f_parts[c], v_parts[c]
            nc = hi - lo
            f_c = f_c.to(cdt).view(nc, heads, hd)
            v_c = v_c.to(cdt).view(nc, heads, hd)
            # argmax without autograd (piecewise constant); the chosen similarity is recomputed
            # with its gradient below
            with torch.no_grad():
                f_norm = f_c.norm(dim=-1)  # [nc, heads]
                f_inv = 1.0 / f_norm.clamp_min(1e-12)
                args = (f_c.detach(), f_inv, c_n.detach(), alpha.detach(),
                        beta.detach(), cand.start[lo:hi], cand.k_pt[lo:hi])
                if layout == "padded":
                    chosen = _assign_padded(*args, cand.k_max, cand.k_min)
                else:
                    chosen = _assign_ragged(*args, cand.chunk_pairs[c])
            idx = chosen.clamp(min=0) * heads + head_ids  # [nc, heads] row of [M * heads]
            sim = _CHOSEN_SIMILARITY(f_c, c_n_flat, idx.view(-1), f_inv, f_norm, alpha, beta)
            if cand.k_min == 0:  # points without a candidate: weight 0, routed to the spare row
                has = chosen >= 0
                sim = sim * has.to(sim.dtype)
                idx = torch.where(has, idx, torch.full_like(idx, m * heads))
            flat = idx.view(-1)
            if self.denominator == "sim":
                den = den.index_add(0, flat, sim.reshape(-1))
            else:
                den = den + torch.bincount(flat, minlength=rows)[:rows].to(cdt)
            num = num.index_add(0, flat, (sim.unsqueeze(-1) * v_c).reshape(nc * heads, hd))
            sims.append(sim)
            flats.append(flat)
            chosen_parts.append(chosen)
        return chosen_parts, sims, flats, num / den.unsqueeze(1)

    def _dispatch(self, sims: list, flats: list, clusters: Tensor, out_dtype) -> Tensor:
        """Per chunk: ``s_i * g_{m(i)}`` per head, heads concatenated and projected."""
        heads, hd = self.heads, self.head_dim
        outs = []
        for sim, flat in zip(sims, flats):
            nc = sim.shape[0]
            mixed = sim.unsqueeze(-1) * clusters.index_select(0, flat).view(nc, heads, hd)
            outs.append(self.proj(mixed.reshape(nc, heads * hd).to(out_dtype)))
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def chosen_similarity_naive(f, c_flat, idx, f_inv, f_norm, alpha, beta) -> Tensor:
    """Reference of :class:`_ChosenSimilarity` with plain autograd ops (``f_inv`` recomputed).

    Shapes:
        f: [N, H, d]; c_flat: [M * H, d] unit center features; idx: [N * H] row of ``c_flat``
        chosen per point and head; f_inv, f_norm: [N, H] (unused here); alpha, beta: [1];
        return: [N, H].
    """
    c_sel = c_flat.index_select(0, idx).view_as(f)
    inv = 1.0 / f.norm(dim=-1).clamp_min(1e-12)
    return torch.sigmoid(beta + alpha * ((f * c_sel).sum(-1) * inv))


class _ChosenSimilarity(torch.autograd.Function):
    """``s = sigmoid(beta + alpha * cos(f_i, c_idx))`` with a hand-written backward."""

    @staticmethod
    def forward(ctx, f, c_flat, idx, f_inv, f_norm, alpha, beta):
        c_sel = c_flat.index_select(0, idx).view_as(f)
        cos = (f * c_sel).sum(-1) * f_inv
        sim = torch.sigmoid(beta + alpha * cos)
        ctx.save_for_backward(f, c_flat, idx, f_inv, f_norm, cos, sim, alpha)
        return sim

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        f, c_flat, idx, f_inv, f_norm, cos, sim, alpha = ctx.saved_tensors
        need_f, need_c, _, _, _, need_alpha, need_beta = ctx.needs_input_grad
        gz = g * sim * (1 - sim)  # [N, H]
        d_alpha = (gz * cos).sum().reshape(alpha.shape) if need_alpha else None
        d_beta = gz.sum().reshape(alpha.shape) if need_beta else None
        t = gz * alpha * f_inv
        d_f = d_c = None
        if need_f:
            d_f = c_flat.index_select(0, idx).view_as(f) * t.unsqueeze(-1)
            shrink = torch.where(f_norm >= 1e-12, t * cos * f_inv, 0.0)
            d_f = d_f.addcmul_(f, shrink.unsqueeze(-1), value=-1.0)
        if need_c:
            d_c = torch.zeros_like(c_flat).index_add_(
                0, idx, (f * t.unsqueeze(-1)).view(-1, f.shape[-1]))
        return d_f, d_c, None, None, None, d_alpha, d_beta


# the chosen-similarity step of ContextCluster (tests swap in the autograd reference)
_CHOSEN_SIMILARITY = _ChosenSimilarity.apply


def _assign_padded(f, f_inv, c_n, alpha, beta, start, k_pt, k_max: int, k_min: int) -> Tensor:
    """Best center per point and head over candidate slots ``start + 0 .. k_max - 1``.

    Shapes:
        f: [N, H, d] point features; f_inv: [N, H] their inverse norms; c_n: [M, H, d] unit
        center features; start, k_pt: [N]; return: [N, H] (-1: no candidate).
    """
    n, heads, hd = f.shape
    m = c_n.shape[0]
    flat_c = c_n.reshape(m, heads * hd)
    best = f.new_full((n, heads), float("-inf"))
    arg = torch.full((n, heads), -1, dtype=torch.long, device=f.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, heads * hd))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        fb, ib, sb, kb = f[lo:hi], f_inv[lo:hi], start[lo:hi], k_pt[lo:hi]
        bb, ab = best[lo:hi], arg[lo:hi]
        for k in range(k_max):
            cand = sb + k
            if k >= k_min:
                valid = kb > k
                cand = torch.where(valid, cand, torch.zeros_like(cand))
            cos = (fb * flat_c.index_select(0, cand).view(-1, heads, hd)).sum(-1) * ib
            s = torch.sigmoid(beta + alpha * cos)
            if k >= k_min:
                s = s.masked_fill(~valid.unsqueeze(1), float("-inf"))
            if k == 0 and k_min > 0:
                bb.copy_(s)
                ab.copy_(cand.unsqueeze(1).expand_as(ab))
                continue
            better = s > bb  # strict: ties keep the lower center index
            bb.copy_(torch.where(better, s, bb))
            ab.copy_(torch.where(better, cand.unsqueeze(1).expand_as(ab), ab))
    return arg


def _assign_ragged(f, f_inv, c_n, alpha, beta, start, k_pt, n_pairs: int) -> Tensor:
    """Best center per point and head over exactly ``k_pt[i]`` candidate pairs per point.

    Shapes:
        f: [N, H, d] point features; f_inv: [N, H] their inverse norms; c_n: [M, H, d] unit
        center features; start, k_pt: [N]; return: [N, H] (-1: no candidate).
    """
    n, heads, hd = f.shape
    m = c_n.shape[0]
    dev = f.device
    pair_point = torch.repeat_interleave(torch.arange(n, device=dev), k_pt, output_size=n_pairs)
    first_pair = torch.cumsum(k_pt, 0) - k_pt
    pair_center = (start.index_select(0, pair_point)
                   + torch.arange(n_pairs, device=dev)
                   - first_pair.index_select(0, pair_point))
    s = f.new_empty(n_pairs, heads)
    step = max(1, _CHUNK_ELEMENTS // max(1, heads * hd))
    for lo in range(0, n_pairs, step):
        hi = min(n_pairs, lo + step)
        pp = pair_point[lo:hi]
        fp = f.index_select(0, pp)
        cp = c_n.index_select(0, pair_center[lo:hi])
        cos = (fp * cp).sum(-1) * f_inv.index_select(0, pp)
        s[lo:hi] = torch.sigmoid(beta + alpha * cos)
    pidx = pair_point.unsqueeze(1).expand(n_pairs, heads)
    best = f.new_full((n, heads),
                      float("-inf")).scatter_reduce(0, pidx, s, reduce="amax", include_self=True)
    hit = s == best.gather(0, pidx)
    cand = torch.where(hit, pair_center.unsqueeze(1).expand(n_pairs, heads),
                       torch.full((n_pairs, heads), m, dtype=torch.long, device=dev))
    arg = torch.full((n, heads), m, dtype=torch.long,
                     device=dev).scatter_reduce(0, pidx, cand, reduce="amin", include_self=True)
    return arg.masked_fill(arg == m, -1)
