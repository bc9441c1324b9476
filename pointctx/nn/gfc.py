"""Global Feature Clustering (GFC), the token mixer of CLUENet, on packed ragged sets."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_counts, check_number, check_point_inputs, check_positive_int
from ..ops.scatter import scatter_count
from ..ops.segment import infer_batch_size
from .context_cluster import Assignment
from .layers import linear_as_conv, trunc_linear
from .proposal import Centers, build_proposal, pool_centers
from .soft_aggregation import nearest_center, soft_aggregate

__all__ = ["HeadGate", "GlobalFeatureClustering"]


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
        self.b1, self.w2 = nn.Parameter(torch.zeros(h, hid)), nn.Parameter(torch.empty(h, 1, hid))
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

    Args:
        dim: input channels C.
        out_dim: output channels (default ``dim``).
        heads: heads H.
        head_dim: channels per head d.
        proposal: center proposal (as :class:`~pointctx.nn.context_cluster.ContextCluster`).
        centers: grid cells per axis (official 7), or a count per axis for fps / random.
        bounds: grid box: None (each set's box) or ``(lo, hi)`` (``(-0.5, 0.5)`` for pixels).
        assign: compute the hard assignment (owns ``q``, ``alpha``, ``beta``); False: reuse an
            earlier layer's (official ``sim_share`` blocks).
        min_tau: lower clamp of the temperature ``tau = exp(t)`` (official 1e-4).
        tau_init: initial temperature (official 2.13).
        proposal_kwargs: extra keyword arguments of the proposal.
        validate: check value-dependent input properties (host syncs).

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; return: [N, out_dim] (and the assignment with
        ``return_assignment=True``).
    """

    def __init__(self, dim: int, out_dim: int | None = None, heads: int = 4, head_dim: int = 24,
                 proposal="grid", centers=7, bounds=None, assign: bool = True,
                 min_tau: float = 1e-4, tau_init: float = 2.13, *,
                 proposal_kwargs: dict | None = None, validate: bool = True):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.out_dim = self.dim if out_dim is None else check_positive_int(out_dim, "out_dim")
        self.heads = check_positive_int(heads, "heads")
        self.head_dim = check_positive_int(head_dim, "head_dim")
        self.min_tau = check_number(min_tau, "min_tau", 0.0, min_open=True, type_error=ValueError)
        check_number(tau_init, "tau_init", 0.0, min_open=True, type_error=ValueError)
        self.centers, self.assign = check_counts(centers, "centers"), bool(assign)
        self.validate = bool(validate)
        inner = self.heads * self.head_dim
        self.k = linear_as_conv(self.dim, inner)
        self.v = linear_as_conv(self.dim, inner)
        self.proj = linear_as_conv(inner, self.out_dim)
        self.gate = HeadGate(self.head_dim, self.heads)
        self.t = nn.Parameter(torch.tensor(math.log(float(tau_init))))
        if self.assign:
            self.q, self.alpha = trunc_linear(inner, inner), nn.Parameter(torch.ones(1))
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

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None,
                proposed: Centers | None = None, assignment: Assignment | None = None,
                return_assignment: bool = False):
        """Cluster globally and dispatch the fused centers back to the points.

        Args:
            x: point features.
            pos: point positions (for the proposal only).
            batch: sorted set id per point.
            batch_size: number of sets B.
            proposed: precomputed :class:`~pointctx.nn.proposal.Centers` (default: the proposal).
            assignment: an assignment to reuse (required with ``assign=False``).
            return_assignment: also return the assignment.
        """
        b = infer_batch_size(batch, check_point_inputs(x, pos, batch, batch_size, self.dim,
                                                       self.validate))
        n = x.shape[0]
        heads, hd = self.heads, self.head_dim
        if assignment is not None:
            if not isinstance(assignment, Assignment):
                raise TypeError(f"`assignment` must be an Assignment, got "
                                f"{type(assignment).__name__}")
            if tuple(assignment.center.shape) != (n, heads):
                raise ValueError(f"`assignment` must hold [N, heads] = [{n}, {heads}] centers, got "
                                 f"{tuple(assignment.center.shape)}")
            proposed = assignment.centers
        elif not self.assign:
            raise ValueError("this layer was built with assign=False (it reuses the assignment "
                             "of an earlier layer); pass `assignment`")
        if proposed is None:
            proposed = self.proposal(pos, batch, b)
        elif not isinstance(proposed, Centers):
            raise TypeError(f"`proposed` must be a Centers tuple, got {type(proposed).__name__}")
        centers = proposed
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
            res = Assignment(chosen, centers, None, sim)
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
            assignment = Assignment(chosen, centers, None, sim)
        chosen, sim = assignment.center, assignment.similarity
        sel = chosen.clamp(min=0) * heads + torch.arange(heads, device=x.device)
        c_sel = fused.reshape(m * heads, hd).index_select(0, sel.view(-1)).view(n, heads, hd)
        mixed = sim.to(cdt).unsqueeze(-1) * c_sel
        out = self.proj(mixed.reshape(n, heads * hd).to(out_dtype))
        return (out, assignment) if return_assignment else out
