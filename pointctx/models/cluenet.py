"""CLUENet image models (Song, Huang et al., "Cluster Attention Makes Networks Have Eyes")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from ..batch import PointBatch
from ..nn.blocks import GFCStage
from ..nn.depthwise import SetDepthwiseConv, knn_slots
from ..nn.icp import ImprovedClusterPool
from ..nn.proposal import build_proposal
from ..nn.reducer import PointReducer
from ..ops.segment import batch_to_ptr
from ._base import StagedClassifier
from ._helpers import (
    IMAGE_BOUNDS,
    MEDIUM_STAGES,
    SMALL_STAGES,
    TINY_STAGES,
    drop_path_rates,
    register_configs,
    stage_options,
)
from ._stages import StageBatch, link_from_slots, link_through, link_union
from .coc import box_normalize

__all__ = ["CLUENet"]


class CLUENet(StagedClassifier):
    """CLUENet classifier on pixel sets and general point sets.

    Args:
        layers, embed_dims, mlp_ratios, heads, head_dims, num_classes, in_channels, pos_dim,
            drop_rate, drop_path_rate, backend: as :class:`~pointctx.models.ContextClusterNet`.
        centers: grid cells per axis, per stage or one for all (general sets: ``centers**2``).
        stem_kernel, stem_stride, stem_padding: the patch-embedding reducer (official 4, 4, 0).
        down_kernel, down_stride, down_padding: the ICP skip reducers (official 3, 2, 1).
        pool_norm: LayerNorm the output of every ICP (official only for CLUE-mini).
        share_assignment: later blocks of a stage reuse the first block's hard assignment.
        min_tau: lower clamp of the soft-aggregation temperature.
        pos_embed: add the learnable depthwise positional term after the stem (official).
        point_proposal: proposal for general point sets (``"fps"``, ``"random"`` or ``"grid"``).
        point_proposal_k: points pooled into each fps / random center.
        layer_scale_init: LayerScale init; None (official) disables it.

    Shapes:
        as :class:`~pointctx.models.ContextClusterNet`.
    """

    def __init__(self, layers: Sequence[int], embed_dims: Sequence[int], mlp_ratios=(8, 8, 4, 4),
                 heads=4, head_dims=32, centers=7, num_classes: int = 1000, in_channels: int = 3,
                 pos_dim: int = 2, stem_kernel: int = 4, stem_stride: int | None = None,
                 stem_padding: int = 0, down_kernel: int = 3, down_stride: int = 2,
                 down_padding: int = 1, pool_norm: bool = False, share_assignment: bool = True,
                 min_tau: float = 1e-4, pos_embed: bool = True, point_proposal: str = "fps",
                 point_proposal_k: int = 16, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_scale_init: float | None = None, backend: str | None = None):
        super().__init__()
        layers, embed_dims, opt = stage_options(layers, embed_dims, mlp_ratios=mlp_ratios,
                                                heads=heads, head_dims=head_dims, centers=centers)
        n = len(layers)
        centers = [check_positive_int(c, "centers") for c in opt["centers"]]
        self._init_io(num_classes, in_channels, pos_dim, embed_dims)
        rates = drop_path_rates(layers, drop_path_rate)
        self.backend = backend

        self.stem = PointReducer(self.in_channels + self.pos_dim, embed_dims[0], stem_kernel,
                                 stem_stride, stem_padding, validate=False, backend=backend)
        nn.init.normal_(self.stem.proj.weight, 0.0, (2.0 / (self.stem.slots * embed_dims[0]))
                        ** 0.5)
        nn.init.zeros_(self.stem.proj.bias)
        self.stem_norm = nn.LayerNorm(embed_dims[0])
        self.pos_embed = SetDepthwiseConv(embed_dims[0]) if pos_embed else None

        stages, pools = [], []
        for i in range(n):
            stages.append(GFCStage(
                embed_dims[i], layers[i], share_assignment=share_assignment, drop_path=rates[i],
                mlp_ratio=opt["mlp_ratios"][i], heads=opt["heads"][i],
                head_dim=opt["head_dims"][i],
                centers=centers[i], bounds=IMAGE_BOUNDS, min_tau=min_tau, drop=drop_rate,
                layer_scale_init=layer_scale_init, mixer_kwargs={"validate": False}))
            if i + 1 < n:
                pools.append(ImprovedClusterPool(
                    embed_dims[i], embed_dims[i + 1], down_kernel, down_stride, down_padding,
                    norm_out=pool_norm, backend=backend))
        self.stages, self.pools = nn.ModuleList(stages), nn.ModuleList(pools)
        self.point_proposals = nn.ModuleList([
            _point_proposal(point_proposal, c, pos_dim, point_proposal_k, backend)
            for c in centers])

        self._init_head(nn.LayerNorm(self.num_features), drop_rate)


    def _run(self, packed, collect: bool):
        """Run the stages; with ``collect`` return every stage, else the last stage's points."""
        b, pixel = packed.batch_size, packed.is_pixel_set
        feats, pos, batch, coords, grid = packed.stem_view()
        red = self.stem(feats, pos, batch, b, coords, grid)
        feats, pos, batch, coords, grid = red.x, red.pos, red.batch, red.coords, red.grid_size
        feats = self.stem_norm(feats)
        link = link_through(link_from_slots(red.index), packed.site) if collect else None
        stride, out = packed.input_pool * self.stem.stride, []
        for i, stage in enumerate(self.stages):
            if i > 0:
                pool = self.pools[i - 1]
                if collect:
                    red, chosen = pool(feats, pos, batch, b, coords, grid, return_cluster=True)
                    members = chosen >= 0
                    link = link_union(link_from_slots(red.index), torch.stack(
                        [chosen[members], members.nonzero().view(-1)]))
                    stride *= pool.skip.stride
                else:
                    red = pool(feats, pos, batch, b, coords, grid)
                feats, pos, batch = red.x, red.pos, red.batch
                coords, grid = red.coords, red.grid_size
            if pixel:
                cpos, centers, nbr = pos, None, None
            else:
                cpos = box_normalize(pos, batch, b)
                centers = self.point_proposals[i](cpos, batch, b)
                nbr = knn_slots(pos, batch, b, backend=self.backend)
            if i == 0 and self.pos_embed is not None:
                feats = feats + self.pos_embed(feats, batch, b, coords, grid, nbr)
            feats = stage(feats, cpos, batch, b, proposed=centers, coords=coords,
                          grid_size=grid, neighbors=nbr)
            if collect:
                out.append(StageBatch(pos, feats, batch, b, link,
                                      (stride, stride) if pixel else None, packed.image_size,
                                      coords=coords, grid_size=grid))
        if collect:
            return out
        return PointBatch(pos, feats, batch=batch, ptr=batch_to_ptr(batch, b), validate=False)

    def _norm_features(self, x: Tensor, batch: Tensor, b: int) -> Tensor:
        """The head's norm: per-point LayerNorm."""
        return self.norm(x)


def _point_proposal(name: str, cells: int, pos_dim: int, k: int, backend):
    if not isinstance(name, str):
        raise TypeError(f"`point_proposal` must be a name, got {type(name).__name__}")
    key = name.lower()
    if key == "grid":
        return build_proposal("grid", cells, IMAGE_BOUNDS)
    if key in ("fps", "random"):  # as many centers as the grid's cells x cells
        extra = {"backend": backend} if key == "fps" else {}
        return build_proposal(key, (cells, cells), proposal_kwargs={"k": k, **extra})
    raise ValueError(f"`point_proposal` must be one of ['fps', 'grid', 'random'], got {name!r}")


# Registered configurations (official models/CLUENet.py)

_COMMON = dict(mlp_ratios=(8, 8, 4, 4), centers=7, min_tau=1e-4)
_MICRO = dict(_COMMON, layers=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256), heads=(1, 2, 5, 8),
              head_dims=32, pool_norm=True)
_TINY = dict(_COMMON, **TINY_STAGES)
_CIFAR = dict(stem_kernel=3, stem_stride=1, stem_padding=1, centers=4, num_classes=10)
register_configs(CLUENet, __name__, {
    "cluenet_micro": ("CLUENet-Micro (official ``CLUE_mini``; 3.02 M parameters at 100 classes).",
                      _MICRO),
    "cluenet_tiny": ("CLUENet-Tiny (official ``CLUE_tiny``; 5.68 M parameters at 100 classes).",
                     _TINY),
    "cluenet_small": ("CLUENet-Small (official ``CLUE_small``; 15.05 M parameters at 100 "
                      "classes).", dict(_COMMON, **SMALL_STAGES)),
    "cluenet_base": ("CLUENet-Base (official ``CLUE_base``; 30.20 M parameters at 100 classes).",
                     dict(_COMMON, **MEDIUM_STAGES)),
    "cluenet_micro_cifar": ("CLUENet-Micro for 32x32 images (official ``CLUE_mini_CIFAR``: 3x3 "
                            "stride-1 stem, 4x4).", dict(_MICRO, **_CIFAR)),
    "cluenet_tiny_cifar": ("CLUENet-Tiny for 32x32 images (3x3 stride-1 stem, 4x4 centers; not an "
                           "official config).", dict(_TINY, **_CIFAR))})
