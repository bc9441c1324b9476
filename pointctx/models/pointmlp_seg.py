"""PointMLP / PointMLP-CoC per-point segmentation: part segmentation and scene segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from .._checks import check_positive_int
from ..batch import PointBatch
from ..nn.layers import Linear
from ..nn.pointmlp_layers import LinearBNAct, PointMLPPropagation
from ..ops.interpolate import knn_interpolate
from ..ops.scatter import scatter_max
from ._helpers import register_configs
from ._inputs import unpad
from ._stages import StageBatch
from .pointmlp import PointMLP

__all__ = ["SHAPENETPART_NUM_CATEGORIES", "SHAPENETPART_NUM_PARTS", "PointMLPSeg"]

SHAPENETPART_NUM_PARTS = 50
SHAPENETPART_NUM_CATEGORIES = 16


class PointMLPSeg(nn.Module):
    """PointMLP / PointMLP-CoC per-point segmentation on ragged sets.

    Args:
        num_classes: per-point outputs (50 ShapeNetPart parts, or scene classes).
        num_categories: category input size (16 for ShapeNetPart; 0: none).
        in_channels: per-point features besides xyz (3: normals, official; 0: xyz only).
        pos_dim, embed_dim, res_expansion, dim_expansion, pre_blocks, pos_blocks, k_neighbors,
            bias, use_xyz, normalize, coc_mode, coc_heads, coc_head_dim, fps_start, backend: the
            encoder's, as :class:`~pointctx.models.PointMLP` (``coc_mode``: None or ``"group"``).
        ratio: FPS keep ratio per stage (official 0.25).
        de_dims: decoder widths, coarse to fine.
        de_blocks: residual blocks per decoder step.
        gmp_dim: width of the global context.
        cls_dim: width of the category embedding.
        drop_rate: classifier dropout (official 0.5).
        head_hidden: classifier hidden width (official 128).
        head_act: ReLU after the classifier's BatchNorm (official: False).
        interp_k: neighbours of the decoder interpolation (official 3).

    Shapes:
        forward: PointBatch (N points, B sets) [+ category [B] or [B, num_categories]] ->
        [N, num_classes]; padded [B, Nmax, D] + lengths [B] -> [B, Nmax, num_classes];
        with ``query`` (Nq points) -> [Nq, num_classes].
    """

    def __init__(self, num_classes: int = SHAPENETPART_NUM_PARTS,
                 num_categories: int = SHAPENETPART_NUM_CATEGORIES, in_channels: int = 3,
                 pos_dim: int = 3, embed_dim: int = 64, res_expansion: float = 1.0,
                 dim_expansion: Sequence[int] = (2, 2, 2, 2),
                 pre_blocks: Sequence[int] = (2, 2, 2, 2), pos_blocks: Sequence[int] = (2, 2, 2, 2),
                 k_neighbors=32, ratio=0.25, de_dims: Sequence[int] = (512, 256, 128, 128),
                 de_blocks: Sequence[int] = (4, 4, 4, 4), gmp_dim: int = 64, cls_dim: int = 64,
                 bias: bool = True, use_xyz: bool = True, normalize: str = "anchor",
                 coc_mode: str | None = None, coc_heads: int = 1, coc_head_dim: int | None = None,
                 drop_rate: float = 0.5, head_hidden: int = 128, head_act: bool = False,
                 interp_k: int = 3, fps_start: str = "first", backend: str | None = None):
        super().__init__()
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.num_categories = check_positive_int(num_categories, "num_categories", minimum=0)
        n = len(dim_expansion)
        if any(len(v) != n for v in (de_dims, de_blocks)):
            raise ValueError("`de_dims` and `de_blocks` must have one entry per encoder stage "
                             f"({n}), got lengths {len(de_dims)}, {len(de_blocks)}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"`drop_rate` must be in [0, 1), got {drop_rate!r}")
        gmp_dim = check_positive_int(gmp_dim, "gmp_dim")
        if coc_mode not in (None, "group"):
            raise ValueError(f"`coc_mode` must be None or 'group', got {coc_mode!r}")
        # the encoder: PointMLP's backbone without its classifier (forward_stages)
        self.backbone = PointMLP(
            num_classes=0, in_channels=in_channels, pos_dim=pos_dim, embed_dim=embed_dim,
            res_expansion=res_expansion, dim_expansion=dim_expansion, pre_blocks=pre_blocks,
            pos_blocks=pos_blocks, k_neighbors=k_neighbors, ratio=ratio, bias=bias,
            use_xyz=use_xyz, normalize=normalize, coc_mode=coc_mode, coc_heads=coc_heads,
            coc_head_dim=coc_head_dim, fps_start=fps_start, backend=backend)
        self.in_channels, self.pos_dim = self.backbone.in_channels, self.backbone.pos_dim
        self.coc_mode, self.backend = coc_mode, backend
        en_dims = list(self.backbone.embed_dims)
        self.en_dims = en_dims[::-1]  # coarse to fine, as the official attribute
        dims = [self.en_dims[0]] + [check_positive_int(d, "de_dims") for d in de_dims]
        self.decode_list = nn.ModuleList([
            PointMLPPropagation(dims[i], self.en_dims[i + 1], dims[i + 1],
                                check_positive_int(de_blocks[i], "de_blocks", 0), res_expansion,
                                bias, interp_k, backend)
            for i in range(n)])
        self.gmp_map_list = nn.ModuleList(
            [LinearBNAct(d, gmp_dim, bias=bias) for d in self.en_dims])
        self.gmp_map_end = LinearBNAct(gmp_dim * len(self.en_dims), gmp_dim, bias=bias)
        if self.num_categories:
            cls_dim = check_positive_int(cls_dim, "cls_dim")
            self.cls_map = nn.Sequential(LinearBNAct(self.num_categories, cls_dim, bias=bias),
                                         LinearBNAct(cls_dim, cls_dim, bias=bias))
        else:
            cls_dim = 0
            self.cls_map = None
        self.num_features = dims[-1]
        hidden = check_positive_int(head_hidden, "head_hidden")
        self.head_act = bool(head_act)
        # official indices: 0 Conv1d, 1 BatchNorm1d, 2 Dropout, 3 Conv1d
        self.classifier = nn.Sequential(Linear(gmp_dim + cls_dim + dims[-1], hidden, bias=bias),
                                        nn.BatchNorm1d(hidden), nn.Dropout(drop_rate),
                                        Linear(hidden, self.num_classes, bias=bias))

    def _as_batch(self, points, lengths, features) -> tuple[PointBatch, bool]:
        pb = self.backbone._as_batch(points, lengths, features)
        return pb, not isinstance(points, PointBatch)

    def _category(self, category, b: int, ref: Tensor) -> Tensor | None:
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

    def forward_stages(self, points, lengths: Tensor | None = None,
                       features: Tensor | None = None) -> list[StageBatch]:
        """The encoder's per-stage features: input points first, then the stages.

        Shapes:
            return: 1 + stages StageBatches: x [M_i, C_i], pos [M_i, D].
        """
        return self.backbone.forward_stages(points, lengths, features)

    def forward_features(self, points, category=None, lengths: Tensor | None = None,
                         features: Tensor | None = None) -> tuple[PointBatch, Tensor]:
        """Decoded per-point features of the input points and the per-set context."""
        pb, _ = self._as_batch(points, lengths, features)
        onehot = self._category(category, pb.num_sets, pb.pos)
        return self._features(pb, onehot)

    def _features(self, pb: PointBatch, onehot: Tensor | None) -> tuple[PointBatch, Tensor]:
        b = pb.num_sets
        if self.training and b < 2:
            raise ValueError(
                f"training mode needs at least 2 sets per batch (BatchNorm over the per-set "
                f"context rows), got B = {b}; call model.eval() to predict one set")
        levels = self.backbone._run(pb, collect=True)[::-1]  # coarse to fine; pb is checked
        x = levels[0].x
        for i, step in enumerate(self.decode_list):
            coarse, fine = levels[i], levels[i + 1]
            x = step(x, coarse.pos, fine.pos, coarse.batch, fine.batch, fine.x, b)
        with record_function("pointctx.mlp"):
            pooled = [scatter_max(m(lv.x), lv.batch, b).values
                      for m, lv in zip(self.gmp_map_list, levels)]
            context = self.gmp_map_end(torch.cat(pooled, 1))
            if onehot is not None:
                context = torch.cat([context, self.cls_map(onehot)], 1)
        fine = levels[-1]
        return PointBatch(fine.pos, x, batch=fine.batch, batch_size=b, validate=False), context

    def forward_head(self, decoded: PointBatch, context: Tensor) -> Tensor:
        """Classify every point of ``decoded`` with its set's context.

        Shapes:
            decoded: x [N, C]; context: [B, C_ctx]; return: [N, num_classes].
        """
        with record_function("pointctx.mlp"):
            h = torch.cat([decoded.x, context.index_select(0, decoded.batch)], 1)
            fc1, norm, drop, fc2 = self.classifier
            h = norm(fc1(h))
            if self.head_act:
                h = torch.relu(h)
            return fc2(drop(h))

    def forward(self, points, category=None, lengths: Tensor | None = None,
                features: Tensor | None = None, query: PointBatch | None = None) -> Tensor:
        """Per-point logits (see the module docstring for the inputs and outputs)."""
        pb, padded = self._as_batch(points, lengths, features)
        onehot = self._category(category, pb.num_sets, pb.pos)
        if query is not None:
            if not isinstance(query, PointBatch):
                raise TypeError(f"`query` must be a PointBatch, got {type(query).__name__}")
            if query.num_sets != pb.num_sets or query.dim != pb.dim:
                raise ValueError(
                    f"`query` must have the same sets and dimension as the input: B = "
                    f"{pb.num_sets}, D = {pb.dim}; got B = {query.num_sets}, D = {query.dim}")
        decoded, context = self._features(pb, onehot)
        if query is not None:
            with record_function("pointctx.propagate"):
                last = self.decode_list[-1]
                x = knn_interpolate(decoded.x, decoded.pos, query.pos, decoded.batch,
                                    query.batch, k=last.k, batch_size=pb.num_sets, eps=last.eps,
                                    backend=self.backend)
            decoded = PointBatch(query.pos, x, batch=query.batch, batch_size=pb.num_sets,
                                 validate=False)
            return self.forward_head(decoded, context)
        logits = self.forward_head(decoded, context)
        return unpad(logits, pb, points.shape[1]) if padded else logits


_PARTSEG = dict(embed_dim=64, res_expansion=1.0, dim_expansion=(2, 2, 2, 2),
                pre_blocks=(2, 2, 2, 2), pos_blocks=(2, 2, 2, 2), k_neighbors=32, ratio=0.25,
                de_dims=(512, 256, 128, 128), de_blocks=(4, 4, 4, 4), gmp_dim=64, cls_dim=64,
                bias=True, use_xyz=True, normalize="anchor")
# A CPU-sized configuration in the spirit of the official pointMLPElite classifier.
_ELITE_SEG = dict(_PARTSEG, embed_dim=32, res_expansion=0.25, dim_expansion=(2, 2, 2, 1),
                  pre_blocks=(1, 1, 2, 1), pos_blocks=(1, 1, 2, 1), k_neighbors=16,
                  de_dims=(128, 128, 64, 64), de_blocks=(1, 1, 1, 1), gmp_dim=32, cls_dim=32,
                  head_hidden=64)
_PART = dict(num_classes=SHAPENETPART_NUM_PARTS, num_categories=SHAPENETPART_NUM_CATEGORIES,
             in_channels=3)
_SCENE = dict(num_classes=13, num_categories=0, in_channels=0)
_COC = dict(coc_mode="group")
register_configs(PointMLPSeg, __name__, {
    "pointmlp_partseg": ("PointMLP part segmentation (official ``part_segmentation`` "
                         "``pointMLP``): 16.76 M at 50.", dict(_PARTSEG, **_PART)),
    "pointmlp_coc_partseg": ("PointMLP part segmentation with in-group Context Clusters (no "
                             "official model).", dict(_PARTSEG, **_PART, **_COC)),
    "pointmlp_seg": ("Scene segmentation: the part-seg network without category input, xyz only.",
                     dict(_PARTSEG, **_SCENE)),
    "pointmlp_coc_seg": ("Scene segmentation with in-group Context Clusters, no category input, "
                         "xyz only.", dict(_PARTSEG, **_SCENE, **_COC)),
    "pointmlp_elite_seg": ("CPU-sized scene segmentation (elite-like widths, k = 16, one block "
                           "per decoder step).", dict(_ELITE_SEG, **_SCENE)),
    "pointmlp_coc_elite_seg": ("CPU-sized scene segmentation with in-group Context Clusters.",
                               dict(_ELITE_SEG, **_SCENE, **_COC))})
