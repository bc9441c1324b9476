"""PointMLP's layers: the 1x1-conv unit, residual MLP blocks, pre-extraction, decoder step."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from ..ops.linear import linear
from ..ops.slot_max import slot_max
from .context_cluster import ContextCluster
from .grouping import GroupContextCluster
from .layers import Linear
from .propagation import FeaturePropagation

__all__ = ["LinearBNAct", "ResidualMLP", "ResidualStack", "PreExtraction", "SetContextCluster",
           "PointMLPPropagation", "INTERP_EPS"]

#: PointMLP's decoder weights: 1 / (d2 + 1e-8)
INTERP_EPS = 1e-8


class LinearBNAct(nn.Module):
    """``Linear -> BatchNorm1d -> ReLU`` on the last dim of a tensor of any rank (the 1x1 conv).

    Shapes:
        x: [*, in_dim]; return: [*, out_dim]. With ``broadcast [M, C_b]``: x [M, k, in_dim - C_b],
        return [M, k, out_dim].
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False, act: bool = True):
        super().__init__()
        self.linear, self.norm = Linear(in_dim, out_dim, bias=bias), nn.BatchNorm1d(out_dim)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor, broadcast: Tensor | None = None,
                residual: Tensor | None = None, act: bool = True) -> Tensor:
        """Apply the layer row by row."""
        if broadcast is None:
            shape = x.shape
            flat = x.dim() != 2  # 2-D rows go through without reshape views
            y = self.norm(self.linear(x.reshape(-1, shape[-1]) if flat else x))
            if residual is not None:
                y = y.add_(residual.reshape(y.shape) if flat else residual)
            y = self.act(y) if act else y
            return y.view(*shape[:-1], y.shape[-1]) if flat else y
        m, k, cx = x.shape
        w, bias = self.linear.weight, self.linear.bias
        if cx + broadcast.shape[-1] != w.shape[1]:
            raise ValueError(f"`x` and `broadcast` must have {w.shape[1]} channels together, got "
                             f"{cx} + {broadcast.shape[-1]}")
        part = linear(broadcast, w[:, cx:], bias).unsqueeze(1)  # [M, 1, out]
        # in place: the linear map's backward does not need its output (one full-size tensor
        # fewer)
        y = linear(x, w[:, :cx]).add_(part)
        y = self.norm(y.view(m * k, -1))
        return self.act(y).view(m, k, -1)


class ResidualMLP(nn.Module):
    """PointMLP's residual block: ``relu(BN(W2 relu(BN(W1 x))) + x)``, inner width ``C * r``.

    Shapes:
        x: [*, C]; return: [*, C].
    """

    def __init__(self, dim: int, res_expansion: float = 1.0, bias: bool = False):
        super().__init__()
        inner = int(dim * res_expansion)
        if inner < 1:
            raise ValueError(f"`res_expansion` gives an inner width of int({dim} * "
                             f"{res_expansion}) = {inner}; it must be >= 1")
        self.net1 = LinearBNAct(dim, inner, bias=bias)
        self.net2 = LinearBNAct(inner, dim, bias=bias)  # relu(BN(W2 h) + x): residual inside

    def forward(self, x: Tensor, act: bool = True) -> Tensor:
        """Residual MLP on every row (``act=False``: without the final ReLU)."""
        return self.net2(self.net1(x), residual=x, act=act)


class SetContextCluster(nn.Module):
    """Residual general Context Cluster over all (anchor, neighbour) rows of a set."""

    def __init__(self, dim: int, head_dim: int, heads: int, proposal, centers):
        super().__init__()
        self.cc = ContextCluster(dim, heads=heads, head_dim=head_dim, proposal=proposal,
                                 centers=centers, validate=False)

    def forward(self, x: Tensor, mask: Tensor | None, pos: Tensor, batch: Tensor,
                batch_size: int) -> Tensor:
        """``x`` plus the Context Cluster of the valid rows (filled slots copy slot 0).

        Shapes:
            x: [M, k, C]; mask: [M, k] or None; pos: [M, k, D]; batch: [M]; return: [M, k, C].
        """
        m, k, c = x.shape
        with record_function("pointctx.coc"):
            if mask is None:
                out = self.cc(x.reshape(m * k, c), pos.reshape(m * k, -1),
                              batch.repeat_interleave(k), batch_size).view(m, k, c)
            else:
                rows = x[mask]
                row_batch = batch.unsqueeze(1).expand(m, k)[mask]
                out = x.new_zeros(m, k, c)
                out[mask] = self.cc(rows, pos[mask], row_batch, batch_size)
                out = torch.where(mask.unsqueeze(-1), out, out[:, :1])
            return x + out


class PreExtraction(nn.Module):
    """Transfer linear layer, ([Context Cluster], residual MLP) blocks, max over the neighbours.

    Shapes:
        x: [M, k, C_in] (or [M, k, C_in - C_a] with ``anchor [M, C_a]``); mask: [M, k] or None;
        pos: [M, k, D] neighbour positions (``coc_mode="set"``); batch: [M]; return: [M, C_out].
    """

    def __init__(self, in_dim: int, out_dim: int, blocks: int, res_expansion: float,
                 bias: bool, coc_mode: str | None, coc_heads: int, coc_head_dim: int | None,
                 coc_proposal, coc_centers):
        super().__init__()
        self.transfer, self.coc_mode = LinearBNAct(in_dim, out_dim, bias=bias), coc_mode
        self.blocks, self.coc = nn.ModuleList(), nn.ModuleList()
        for _ in range(blocks):
            if coc_mode == "group":
                self.coc.append(GroupContextCluster(out_dim, coc_heads, coc_head_dim))
            elif coc_mode == "set":
                hd = max(out_dim // 4, 32) if coc_head_dim is None else coc_head_dim
                self.coc.append(SetContextCluster(out_dim, hd, coc_heads, coc_proposal,
                                                  coc_centers))
            self.blocks.append(ResidualMLP(out_dim, res_expansion, bias))

    def forward(self, x: Tensor, mask: Tensor | None, pos: Tensor | None = None,
                batch: Tensor | None = None, batch_size: int | None = None,
                anchor: Tensor | None = None) -> Tensor:
        """Run the blocks and pool over the neighbours (``pos``/``batch`` for ``"set"``)."""
        with record_function("pointctx.mlp"):
            x = self.transfer(x) if anchor is None else self.transfer(x, anchor)
        m, k = x.shape[:2]
        # Without Context Cluster layers the blocks run on the [M * k, C] rows: no reshape views
        # inside them, so autograd sums each block's two input gradients (residual and MLP) in
        # place instead of into a new full-size tensor.
        rows = self.coc_mode is None
        if rows:
            x = x.reshape(m * k, -1)
        for i, block in enumerate(self.blocks):
            if self.coc_mode == "group":
                x = self.coc[i](x, mask)
            elif self.coc_mode == "set":
                x = self.coc[i](x, mask, pos, batch, batch_size)
            with record_function("pointctx.mlp"):
                # the last block's ReLU after the max: relu(max(z)) = max(relu(z)), with the same
                # gradient, and no full-size ReLU (forward and backward) before the pooling
                x = block(x, act=i < len(self.blocks) - 1)
        # filled slots equal slot 0 (row-wise layers), so a plain max ignores them
        return torch.relu(slot_max(x, 1, slots=k if rows else None))


class ResidualStack(nn.Module):
    """``blocks`` residual MLP blocks (the official ``PosExtraction``, blocks in ``operation``).

    Shapes:
        x: [*, C]; return: [*, C].
    """

    def __init__(self, dim: int, blocks: int, res_expansion: float, bias: bool):
        super().__init__()
        self.operation = nn.Sequential(
            *[ResidualMLP(dim, res_expansion, bias) for _ in range(blocks)])

    def forward(self, x: Tensor) -> Tensor:
        """Apply the blocks row by row."""
        return self.operation(x)


class PointMLPPropagation(FeaturePropagation):
    """PointMLP's decoder step (the official ``PointNetFeaturePropagation``).

    Shapes:
        x: [M, in_channels]; pos: [M, D]; pos_query: [N, D]; skip: [N, skip_channels];
        return: [N, out_dim].
    """

    skip_first = True

    def __init__(self, in_channels: int, skip_channels: int, out_dim: int, blocks: int,
                 res_expansion: float, bias: bool, k: int = 3, backend: str | None = None):
        super().__init__(in_channels, (), skip_channels, k, eps=INTERP_EPS, backend=backend)
        self.fuse = LinearBNAct(self.out_channels, out_dim, bias=bias)
        self.extraction = ResidualStack(out_dim, blocks, res_expansion, bias)
        self.out_channels = out_dim

    def forward(self, x: Tensor, pos: Tensor, pos_query: Tensor, batch: Tensor | None = None,
                batch_query: Tensor | None = None, skip: Tensor | None = None,
                batch_size: int | None = None) -> Tensor:
        """Interpolate ``x`` onto ``pos_query``, concatenate after ``skip``, fuse, extract."""
        with record_function("pointctx.propagate"):
            h = super().forward(x, pos, pos_query, batch, batch_query, skip, batch_size)
        with record_function("pointctx.mlp"):
            return self.extraction(self.fuse(h))
