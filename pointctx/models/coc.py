"""Context Cluster image models (CoC; Ma et al., "Image as Set of Points", ICLR 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ..batch import PointBatch
from ..nn.blocks import ContextClusterBlock
from ..nn.norm import SetGroupNorm
from ..nn.reducer import PointReducer
from ..ops.grid import image_plane, plane_cells, set_bounds
from ..ops.segment import batch_to_ptr
from ._base import StagedClassifier
from ._helpers import (
    IMAGE_BOUNDS,
    MEDIUM_STAGES,
    SMALL_STAGES,
    TINY_STAGES,
    drop_path_rates,
    per_stage,
    register_configs,
    stage_options,
)
from ._stages import StageBatch, link_from_slots, link_through

__all__ = ["ContextClusterNet"]

_per_stage = per_stage  # the old private name (models/cluenet.py imported it from here)


def box_normalize(pos: Tensor, batch: Tensor, batch_size: int) -> Tensor:
    """Map every set's positions into ``[-0.5, 0.5]`` per axis by its own bounding box.

    Shapes:
        pos: [N, D]; batch: [N]; return: [N, D].
    """
    box = set_bounds(pos, batch, batch_size)
    ext = (box.hi - box.lo).index_select(0, batch)
    lo = box.lo.index_select(0, batch)
    safe = torch.where(ext > 0, ext, torch.ones_like(ext))
    return torch.where(ext > 0, (pos - lo) / safe - 0.5, torch.zeros_like(pos))


def lattice_centers(coords: Tensor, grid_size, dtype=None) -> tuple[Tensor, tuple]:
    """Image-plane pixel-cell centers and the pitch of a lattice, for adaptive windows.

    Shapes:
        coords: [N, 2] int64 ``(row, col)``; return: ([N, 2] ``(x, y)``, ``(1 / W, 1 / H)``).
    """
    return (image_plane(coords, grid_size, dtype, cells=True),
            plane_cells((1, 1), grid_size, cells=True)[0])


class ContextClusterNet(StagedClassifier):
    """Context Cluster classifier (CoC) on pixel sets and general point sets.

    Args:
        layers: blocks per stage.
        embed_dims: channels per stage.
        mlp_ratios, heads, head_dims: per stage, or one for all.
        centers: centers per region per axis, per stage or one for all (2: 2x2).
        regions: regions per axis, per stage or one for all; None: no regions.
        num_classes: classifier outputs; 0: :meth:`forward` returns the pooled features.
        in_channels: point feature channels C (image channels; 0 for bare point sets).
        pos_dim: position dimension D appended to the features at the stem (2 for images).
        stem_kernel, stem_stride, stem_padding: the stem reducer (stride default: kernel).
        down_kernel, down_stride, down_padding: the reducers between stages (official 3, 2, 1).
        reducer_norm: per-set GroupNorm after every reducer (off, as official).
        denominator: Context Cluster denominator, ``"sim"`` or ``"count"``.
        drop_rate: dropout in the MLPs and before the classifier.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.
        layer_scale_init: LayerScale init (official 1e-5); None disables LayerScale.
        backend: point-op backend for FPS / kNN on general point sets.
        windows: ``"adaptive"`` (official ``AdaptiveAvgPool2d`` windows on pixel sets) or
            ``"partition"`` (see :class:`~pointctx.nn.proposal.GridProposal`).

    Shapes:
        forward: [B, C, H, W] (+ mask [B, H, W]) or PointBatch -> logits [B, num_classes].
        forward_features: -> PointBatch (x [M, embed_dims[-1]], pos [M, 2 or D], batch [M]).
    """

    def __init__(self, layers: Sequence[int], embed_dims: Sequence[int], mlp_ratios=4.0, heads=4,
                 head_dims=24, centers=2, regions=None, num_classes: int = 1000,
                 in_channels: int = 3, pos_dim: int = 2, stem_kernel: int = 4,
                 stem_stride: int | None = None, stem_padding: int = 0, down_kernel: int = 3,
                 down_stride: int = 2, down_padding: int = 1, reducer_norm: bool = False,
                 denominator: str = "sim", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_scale_init: float | None = 1e-5, backend: str | None = None,
                 windows: str = "adaptive"):
        super().__init__()
        self.windows = check_choice(windows, "windows", ("adaptive", "partition"))
        layers, embed_dims, opt = stage_options(
            layers, embed_dims, mlp_ratios=mlp_ratios, heads=heads, head_dims=head_dims,
            centers=centers, regions=regions)
        n = len(layers)
        self._init_io(num_classes, in_channels, pos_dim, embed_dims)
        rates = drop_path_rates(layers, drop_path_rate)

        reducers = []
        in_dim = self.in_channels + self.pos_dim
        for i in range(n):
            if i == 0:
                kernel, stride, padding = stem_kernel, stem_stride, stem_padding
            else:
                kernel, stride, padding = down_kernel, down_stride, down_padding
            reducers.append(PointReducer(in_dim, embed_dims[i], kernel, stride, padding,
                                         norm=reducer_norm, validate=False, backend=backend))
            in_dim = embed_dims[i]
        self.reducers = nn.ModuleList(reducers)

        self.stages = nn.ModuleList([
            nn.ModuleList([
                ContextClusterBlock(
                    embed_dims[i], mlp_ratio=opt["mlp_ratios"][i], heads=opt["heads"][i],
                    head_dim=opt["head_dims"][i], centers=opt["centers"][i],
                    regions=opt["regions"][i],
                    denominator=denominator, bounds=IMAGE_BOUNDS,
                    drop=drop_rate, drop_path=dpr,
                    layer_scale_init=layer_scale_init, cluster_kwargs={"validate": False,
                                    "proposal_kwargs": {"windows": self.windows}},
                )
                for dpr in rates[i]
            ])
            for i in range(n)])

        self._init_head(SetGroupNorm(self.num_features), drop_rate)


    def _run(self, packed, collect: bool):
        """Run the stages; with ``collect`` return every stage, else the last stage's points."""
        b, pixel = packed.batch_size, packed.is_pixel_set
        feats, pos, batch, coords, grid = packed.stem_view()
        out, stride = [], packed.input_pool
        for i, (reducer, blocks) in enumerate(zip(self.reducers, self.stages)):
            red = reducer(feats, pos, batch, b, coords, grid)
            feats, pos, batch, coords, grid = red.x, red.pos, red.batch, red.coords, red.grid_size
            cpos, spacing = self._cluster_positions(pos, batch, b, coords, grid, pixel)
            for block in blocks:
                feats = block(feats, cpos, batch, b, spacing=spacing)
            if collect:
                stride *= reducer.stride
                link = link_from_slots(red.index)
                if i == 0:
                    link = link_through(link, packed.site)
                out.append(StageBatch(pos, feats, batch, b, link,
                                      (stride, stride) if pixel else None, packed.image_size,
                                      coords=coords, grid_size=grid))
        if collect:
            return out
        return PointBatch(pos, feats, batch=batch, ptr=batch_to_ptr(batch, b), validate=False)

    def _cluster_positions(self, pos, batch, b, coords, grid, pixel):
        """Positions (and lattice pitch) the stage's Context Clusters propose centers on."""
        if not pixel:
            return box_normalize(pos, batch, b), None
        if self.windows == "partition":
            return pos, None
        return lattice_centers(coords, grid, pos.dtype)

    def _norm_features(self, x: Tensor, batch: Tensor, b: int) -> Tensor:
        """The head's norm: per-set GroupNorm."""
        return self.norm(x, batch, b)


# Registered configurations

_COC_COMMON = dict(mlp_ratios=(8, 8, 4, 4), centers=2, regions=(8, 4, 2, 1))
register_configs(ContextClusterNet, __name__, {
    "coc_tiny": ("CoC-Tiny (5.57 M parameters at 1000 classes), as the official ``coc_tiny``.",
                 dict(_COC_COMMON, **TINY_STAGES)),
    "coc_tiny_plain": ("CoC-Tiny without regions (4x4, 4x4, 2x2, 2x2 centers per set).",
                       dict(_COC_COMMON, **TINY_STAGES, centers=(4, 4, 2, 2), regions=None)),
    "coc_small": ("CoC-Small (14.66 M parameters at 1000 classes), as the official ``coc_small``.",
                  dict(_COC_COMMON, **SMALL_STAGES)),
    "coc_medium": ("CoC-Medium (29.29 M parameters at 1000 classes), as the official "
                   "``coc_medium``.", dict(_COC_COMMON, **MEDIUM_STAGES)),
    "coc_tiny_cifar": ("CoC-Tiny for 32x32 images: 2x2 stem (16x16 points), regions 4x4, 2x2, "
                       "1x1, 1x1.", dict(_COC_COMMON, **TINY_STAGES, stem_kernel=2,
                                         regions=(4, 2, 1, 1), num_classes=10)),
    "coc_mnist": ("Three-stage micro CoC for 28x28 images (4x4 stem, then 7 -> 4 -> 2 points per "
                  "axis).", dict(layers=(1, 1, 1), embed_dims=(32, 64, 128), mlp_ratios=4,
                                 heads=(2, 2, 4), head_dims=16, centers=2, regions=None,
                                 num_classes=10, in_channels=1))})
