"""PointMLP and PointMLP-CoC classifiers on ragged point clouds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from .._checks import check_choice, check_number, check_positive_int
from ..batch import PointBatch
from ..nn.grouping import FPS_STARTS, GeometricAffine, gather_groups, sample_and_group
from ..nn.layers import Linear
from ..nn.pointmlp_layers import LinearBNAct, PreExtraction, ResidualMLP
from ..ops.scatter import scatter_max
from ._base import SetClassifier
from ._helpers import check_io, per_stage, register_configs
from ._inputs import PackedInput, check_model_points, padded_batch
from ._stages import StageBatch, link_from_slots, link_union

__all__ = ["PointMLP"]


class PointMLP(SetClassifier):
    """PointMLP / PointMLP-CoC classifier on ragged point sets (see docs/design.md).

    Args:
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_channels: per-point features besides the positions (0: positions only, official).
        pos_dim: position dimension D.
        embed_dim: width of the embedding.
        res_expansion: inner width factor of the residual MLP blocks.
        dim_expansion: width factor of each stage.
        pre_blocks, pos_blocks: residual blocks per stage before / after the neighbour max.
        k_neighbors: kNN group size, one for all stages or one per stage.
        ratio: FPS keep ratio, one for all stages or one per stage.
        bias: bias in the MLP linear layers (official: False).
        use_xyz: also group the neighbours' positions (official: False).
        normalize: geometric affine reference, ``"anchor"`` (official) or ``"center"``.
        coc_mode: None, ``"group"`` (official PointMLP-CoC) or ``"set"`` (set-wide clusters).
        coc_heads, coc_head_dim: Context Cluster heads and head width (None: ``max(C // 4, 32)``).
        coc_proposal, coc_centers: proposal and centers of ``coc_mode="set"``.
        drop_rate: classifier dropout (official 0.5).
        fps_start: ``"first"``, ``"canonical"`` or ``"random"``.
        backend: point-op backend for FPS and kNN.

    Shapes:
        forward: PointBatch or [B, Nmax, D] (+ lengths [B]) -> logits [B, num_classes].
        forward_features: -> PointBatch of the last stage (x [M, C_last], pos [M, D]).
    """

    head_name = "classifier"  # the official name (state_dict keys ``classifier.*``)
    stages_allow_empty = False  # farthest point sampling needs a point per set

    # the official pointMLP arguments; the PointMLP segmenters' encoder takes the same ones
    def __init__(self, num_classes: int = 40, in_channels: int = 0, pos_dim: int = 3,
                 embed_dim: int = 64, res_expansion: float = 1.0,
                 dim_expansion: Sequence[int] = (2, 2, 2, 2),
                 pre_blocks: Sequence[int] = (2, 2, 2, 2), pos_blocks: Sequence[int] = (2, 2, 2, 2),
                 k_neighbors=24, ratio=0.5, bias: bool = False, use_xyz: bool = False,
                 normalize: str = "anchor", coc_mode: str | None = None, coc_heads: int = 1,
                 coc_head_dim: int | None = None, coc_proposal="grid", coc_centers=2,
                 drop_rate: float = 0.5, fps_start: str = "first", backend: str | None = None):
        super().__init__()
        self.num_classes, self.in_channels, self.pos_dim = check_io(num_classes, in_channels,
                                                                    pos_dim)
        embed_dim = check_positive_int(embed_dim, "embed_dim")
        n = len(dim_expansion)
        if n == 0 or len(pre_blocks) != n or len(pos_blocks) != n:
            raise ValueError("`dim_expansion`, `pre_blocks` and `pos_blocks` must be non-empty "
                             f"with one entry per stage, got lengths {len(dim_expansion)}, "
                             f"{len(pre_blocks)}, {len(pos_blocks)}")
        self.k_neighbors = [check_positive_int(v, "k_neighbors") for v in
                            per_stage(k_neighbors, n, "k_neighbors")]
        self.ratios = per_stage(ratio, n, "ratio")
        for r in self.ratios:
            check_number(r, "ratio", 0.0, 1.0, min_open=True, type_error=ValueError)
        if coc_mode is not None:
            coc_mode = check_choice(coc_mode, "coc_mode", ("group", "set"))
        self.coc_mode, self.fps_start = coc_mode, check_choice(fps_start, "fps_start", FPS_STARTS)
        self.use_xyz, self.backend = bool(use_xyz), backend
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"`drop_rate` must be in [0, 1), got {drop_rate!r}")
        self.drop_rate = float(drop_rate)

        self.embedding = LinearBNAct(self.pos_dim + self.in_channels, embed_dim, bias=bias)
        self.affines, self.pre, self.post = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        last = embed_dim
        dims = [embed_dim]
        add = self.pos_dim if self.use_xyz else 0
        for i in range(n):
            out = last * check_positive_int(dim_expansion[i], "dim_expansion")
            self.affines.append(GeometricAffine(last + add, normalize))
            self.pre.append(PreExtraction(
                2 * last + add, out, check_positive_int(pre_blocks[i], "pre_blocks", 0),
                res_expansion, bias, coc_mode, coc_heads, coc_head_dim, coc_proposal,
                coc_centers))
            self.post.append(nn.Sequential(*[
                ResidualMLP(out, res_expansion, bias)
                for _ in range(check_positive_int(pos_blocks[i], "pos_blocks", 0))]))
            last = out
            dims.append(out)
        self.num_features = last
        self.embed_dims = dims  # channels of every stage of forward_stages
        self.classifier = self._make_head(self.num_classes)

    def _make_head(self, num_classes: int) -> nn.Module:
        """The official classifier MLP (``nn.Identity`` for 0 classes)."""
        if num_classes == 0:
            return nn.Identity()
        return nn.Sequential(Linear(self.num_features, 512), nn.BatchNorm1d(512),
                             nn.ReLU(inplace=True), nn.Dropout(self.drop_rate), Linear(512, 256),
                             nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(self.drop_rate),
                             Linear(256, num_classes))

    def _as_batch(self, points, lengths, features) -> PointBatch:
        if isinstance(points, PackedInput):  # checked where it entered the model (a segmenter)
            x = points.x[:, :self.in_channels] if self.in_channels else None
            return PointBatch(points.pos, x, batch=points.batch, batch_size=points.batch_size,
                              validate=False)
        if isinstance(points, Tensor) and (points.dim() != 3 or points.shape[-1] != self.pos_dim):
            raise ValueError(f"padded input must have shape [B, Nmax, pos_dim={self.pos_dim}], "
                             f"got {tuple(points.shape)}")
        pb = padded_batch(points, lengths, features, self.param_dtype)
        if pb.dim != self.pos_dim:
            raise ValueError(
                f"the points must have pos_dim = {self.pos_dim} coordinates, got D = {pb.dim}")
        c = 0 if pb.x is None else pb.x.shape[1]
        if c != self.in_channels:
            raise ValueError(
                f"the points must have in_channels = {self.in_channels} feature channels, got "
                f"{c}" + (" (x is None)" if pb.x is None else "")
                + (" (build the model with in_channels=C to use them)" if c else ""))
        pb = check_model_points(pb, self.param_dtype)  # casts; no empty set, finite x
        if self.training and pb.num_sets < 2 and isinstance(getattr(self, "classifier", None),
                                                              nn.Sequential):
            raise ValueError(
                f"a batch of {pb.num_sets} set in train mode: the classifier's BatchNorm needs "
                "at least 2 sets per batch to compute its statistics; train on batches of >= 2 "
                "sets (drop_last=True in the DataLoader), or call model.eval() for inference")
        return pb

    def forward_features(self, points, lengths: Tensor | None = None,
                         features: Tensor | None = None) -> PointBatch:
        """Embedding and the four stages; returns the last stage's points and features."""
        return self._run(self._as_batch(points, lengths, features), collect=False)

    def forward_stages(self, points, lengths: Tensor | None = None,
                       features: Tensor | None = None) -> list[StageBatch]:
        """Features of every stage (contract: :class:`~pointctx.models._base.SetClassifier`).

        Shapes:
            return: 1 + len(dim_expansion) StageBatches: x [M_i, embed_dims[i]], pos [M_i, D].
        """
        return self._run(self._as_batch(points, lengths, features), collect=True)

    def _run(self, pb: PointBatch, collect: bool):
        b = pb.num_sets
        pos, batch = pb.pos, pb.batch
        inp = pos if pb.x is None else torch.cat([pos, pb.x], 1)
        with record_function("pointctx.mlp"):
            x = self.embedding(inp)
        out = []
        if collect:
            rows = torch.arange(pos.shape[0], device=pos.device)
            out.append(StageBatch(pos, x, batch, b, torch.stack([rows, rows])))
        for i in range(len(self.pre)):
            g = sample_and_group(pos, batch, self.k_neighbors[i], self.ratios[i], b,
                                 self.fps_start, self.backend)
            grouped, anchor = gather_groups(x, g)
            if self.use_xyz:
                gp, ap = gather_groups(pos, g)
                h = self.affines[i](torch.cat([grouped, gp], -1), torch.cat([anchor, ap], -1),
                                    g.mask, g.batch, b)
            else:
                h = self.affines[i](grouped, anchor, g.mask, g.batch, b)
            nb_pos = None
            if self.coc_mode == "set":
                nb_pos = gather_groups(pos, g)[0]
            # transfer input: cat([normalised group, anchor feature repeated k times])
            x = self.pre[i](h, g.mask, nb_pos, g.batch, b, anchor=anchor)
            with record_function("pointctx.mlp"):
                x = self.post[i](x)
            pos, batch = pos.index_select(0, g.anchor), g.batch
            if collect:
                rows = torch.arange(g.anchor.numel(), device=pos.device)
                link = link_union(link_from_slots(g.index), torch.stack([rows, g.anchor]))
                out.append(StageBatch(pos, x, batch, b, link))
        return out if collect else PointBatch(pos, x, batch=batch, batch_size=b, validate=False)

    def forward_head(self, feats: PointBatch, pre_logits: bool = False) -> Tensor:
        """Max over each set's points, then the classifier."""
        pooled = scatter_max(feats.x, feats.batch, feats.num_sets).values
        if pre_logits:
            return pooled
        with record_function("pointctx.mlp"):
            return self.classifier(pooled)


_FULL = dict(embed_dim=64, res_expansion=1.0, dim_expansion=(2, 2, 2, 2),
             pre_blocks=(2, 2, 2, 2), pos_blocks=(2, 2, 2, 2), k_neighbors=24)
_ELITE = dict(embed_dim=32, res_expansion=0.25, dim_expansion=(2, 2, 2, 1),
              pre_blocks=(1, 1, 2, 1), pos_blocks=(1, 1, 2, 1), k_neighbors=24)
register_configs(PointMLP, __name__, {
    "pointmlp": ("PointMLP (official ``pointMLP``): 13.23 M parameters at 15 classes.", _FULL),
    "pointmlp_elite": ("PointMLP-elite (official ``pointMLPElite``): 0.71 M parameters at 15 "
                       "classes.", _ELITE),
    "pointmlp_coc": ("PointMLP-CoC (official ``pointMLP_CoC``): 15.33 M parameters at 15 classes.",
                     dict(_FULL, coc_mode="group")),
    "pointmlp_coc_elite": ("PointMLP-elite with in-group Context Clusters (no official model).",
                           dict(_ELITE, coc_mode="group"))})
