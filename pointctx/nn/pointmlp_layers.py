"""PointMLP's layers: the 1x1-conv unit, residual MLP blocks, pre-extraction, the decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from .._checks import check_number, check_positive_int
from ..ops.interpolate import knn_interpolate
from ..ops.linear import linear
from ..ops.scatter import scatter_max
from ..ops.slot_max import slot_max
from .context_cluster import ContextCluster
from .grouping import GroupContextCluster
from .layers import Linear
from .propagation import FeaturePropagation

__all__ = ["LinearBNAct", "ResidualMLP", "ResidualStack", "PreExtraction", "SetContextCluster",
           "PointMLPPropagation", "PointMLPHead", "INTERP_EPS"]

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


class PointMLPHead(nn.Module):
    """PointMLP's part / scene decoder: propagation to the input points, set context, classifier.

    Args:
        in_channels: channels of every stage, the input points' embedding first.
        num_classes: output classes K.
        channels: width of every decoder step, coarse to fine (one per stage after the first).
        blocks: residual blocks per decoder step (one int for all).
        num_categories: category input size (0: none; ShapeNetPart: 16).
        context_dim: width of the global max-pooled context.
        category_dim: width of the category embedding.
        hidden: classifier hidden width.
        act: ReLU after the classifier's BatchNorm (official: False).
        drop: classifier dropout (official 0.5).
        k: neighbours of the interpolations (3).
        res_expansion, bias: of the residual blocks and 1x1 units (the encoder's).
        backend: kNN backend (see :mod:`pointctx.ops`).

    Shapes:
        stages: PointBatch per stage (x [M_i, in_channels[i]], pos [M_i, D], B sets);
        category: [B, num_categories] one-hot; pos_query: [Nq, D];
        return: [Nq, K] (or [M_0, K] without queries).
    """

    def __init__(self, in_channels, num_classes: int, channels=(512, 256, 128, 128), blocks=4,
                 num_categories: int = 0, context_dim: int = 64, category_dim: int = 64,
                 hidden: int = 128, act: bool = False, drop: float = 0.5, k: int = 3,
                 res_expansion: float = 1.0, bias: bool = True, backend: str | None = None):
        super().__init__()
        en = [check_positive_int(c, "in_channels") for c in in_channels][::-1]  # coarse first
        n = len(en) - 1
        blocks = [blocks] * n if isinstance(blocks, int) else list(blocks)
        if n < 1 or len(channels) != n or len(blocks) != n:
            raise ValueError(f"`channels` and `blocks` must have one entry per encoder stage "
                             f"({n}), got lengths {len(channels)}, {len(blocks)}")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.num_categories = check_positive_int(num_categories, "num_categories", minimum=0)
        check_number(drop, "drop", 0.0, 1.0, max_open=True, type_error=ValueError)
        context_dim, hidden = check_positive_int(context_dim, "context_dim"), check_positive_int(
            hidden, "hidden")
        dims = [en[0]] + [check_positive_int(d, "channels") for d in channels]
        self.decode_list = nn.ModuleList([
            PointMLPPropagation(dims[i], en[i + 1], dims[i + 1],
                                check_positive_int(blocks[i], "blocks", 0), res_expansion, bias,
                                k, backend) for i in range(n)])
        self.gmp_map_list = nn.ModuleList([LinearBNAct(d, context_dim, bias=bias) for d in en])
        self.gmp_map_end = LinearBNAct(context_dim * len(en), context_dim, bias=bias)
        if self.num_categories:
            category_dim = check_positive_int(category_dim, "category_dim")
            self.cls_map = nn.Sequential(LinearBNAct(self.num_categories, category_dim, bias=bias),
                                         LinearBNAct(category_dim, category_dim, bias=bias))
        else:
            category_dim, self.cls_map = 0, None
        self.act, self.backend = bool(act), backend
        # official indices: 0 Conv1d, 1 BatchNorm1d, 2 Dropout, 3 Conv1d
        self.classifier = nn.Sequential(
            Linear(context_dim + category_dim + dims[-1], hidden, bias=bias),
            nn.BatchNorm1d(hidden), nn.Dropout(float(drop)), Linear(hidden, self.num_classes,
                                                                    bias=bias))

    def check_sets(self, category, b: int, ref: Tensor) -> Tensor | None:
        """Check a batch of ``b`` sets before the encoder runs; the categories one-hot."""
        onehot = self._one_hot(category, b, ref)
        if self.training and b < 2:
            raise ValueError(f"training mode needs at least 2 sets per batch (BatchNorm over the "
                             f"per-set context rows), got B = {b}; call model.eval() for one set")
        return onehot

    def _one_hot(self, category, b: int, ref: Tensor) -> Tensor | None:
        if not self.num_categories:
            if category is not None:
                raise ValueError("`category` was given but this model has no category input "
                                 "(num_categories=0)")
            return None
        if category is None:
            raise ValueError(
                f"`category` is required: [B] category ids or [B, {self.num_categories}] one-hot")
        category = torch.as_tensor(category, device=ref.device)
        if category.dim() == 1 and not category.is_floating_point():
            if category.numel() != b:
                raise ValueError(f"`category` must have B = {b} entries, got {category.numel()}")
            if b and (int(category.min()) < 0 or int(category.max()) >= self.num_categories):
                raise ValueError(f"`category` ids must lie in [0, {self.num_categories - 1}], got "
                                 f"range [{int(category.min())}, {int(category.max())}]")
            return torch.nn.functional.one_hot(category.long(), self.num_categories).to(ref.dtype)
        if category.dim() == 2 and tuple(category.shape) == (b, self.num_categories):
            return category.to(ref.dtype)
        raise ValueError(f"`category` must be [B] = [{b}] integer ids or [B, num_categories] = "
                         f"[{b}, {self.num_categories}] one-hot, got shape {tuple(category.shape)} "
                         f"dtype {category.dtype}")

    def forward(self, stages, pos_query: Tensor | None = None, batch_query: Tensor | None = None,
                grids=None, category=None) -> Tensor:
        """Logits at the query positions (default: at the first stage's points).

        Args:
            stages: one PointBatch per stage, the input points first, all with the same B sets.
            pos_query: query positions; the decoded features are interpolated there.
            batch_query: sorted set id per query.
            grids: unused (the signature of the other heads).
            category: part segmentation: each set's one-hot category (:meth:`check_sets`).
        """
        levels, b = stages[::-1], stages[0].num_sets
        x = levels[0].x
        for step, coarse, fine in zip(self.decode_list, levels, levels[1:]):
            x = step(x, coarse.pos, fine.pos, coarse.batch, fine.batch, fine.x, b)
        fine, batch = stages[0], stages[0].batch
        if pos_query is not None:
            with record_function("pointctx.propagate"):
                last = self.decode_list[-1]
                x = knn_interpolate(x, fine.pos, pos_query, batch, batch_query, k=last.k,
                                    batch_size=b, eps=last.eps, backend=self.backend)
            batch = batch_query
        with record_function("pointctx.mlp"):
            pooled = [scatter_max(m(lv.x), lv.batch, b).values
                      for m, lv in zip(self.gmp_map_list, levels)]
            context = self.gmp_map_end(torch.cat(pooled, 1))
            if self.cls_map is not None:
                context = torch.cat([context, self.cls_map(category)], 1)
            fc1, norm, drop, fc2 = self.classifier
            h = norm(fc1(torch.cat([x, context.index_select(0, batch)], 1)))
            return fc2(drop(torch.relu(h) if self.act else h))
