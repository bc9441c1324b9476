"""Semantic segmentation of point sets: a backbone's stages + a head, queried anywhere.

:class:`SetSegmenter` serves every backbone (CoC, CLUENet, PointMLP) with the heads of
:data:`HEADS`. It takes images (+ mask), a :class:`~pointctx.PointBatch` (+ ``query``) or
padded points, and returns logits in the input's layout. The registered models, the calling
conventions and the ``input_pool`` option are described in docs/segmentation.md.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor, nn

from .._checks import check_number, check_positive_int
from .._resolver import resolve
from ..batch import PointBatch
from ..nn.fpn import SemanticFPNHead
from ..nn.pointmlp_layers import PointMLPHead
from ..nn.set_unet import SetUNetDecoder
from ..ops.grid import lattice_plane, lattice_sites
from ..ops.interpolate import knn_interpolate
from ._inputs import pack_input, padded_batch, pixel_plane, unpad
from ._registry import register_model

__all__ = ["SetSegmenter", "input_pool_for_keep", "HEADS", "coc_tiny_seg", "coc_small_seg",
           "cluenet_micro_seg", "coc_micro_seg", "cluenet_nano_seg", "coc_tiny_unet_seg",
           "cluenet_micro_unet_seg", "coc_micro_unet_seg", "cluenet_nano_unet_seg"]

#: segmentation heads by name: ``"fpn"`` (Semantic FPN, predicts from the finest stage),
#: ``"unet"`` (feature propagation through every stage down to the input points) and
#: ``"pointmlp"`` (PointMLP's decoder with set context and category input).
HEADS = {"fpn": SemanticFPNHead, "unet": SetUNetDecoder, "pointmlp": PointMLPHead}

# modules of a classifier that a segmentation trunk does not use
_CLASSIFIER_PARTS = ("norm", "head", "head_drop", "classifier")


class SetSegmenter(nn.Module):
    """Per-point / per-pixel classifier: backbone stages + a head, queried anywhere.

    Args:
        backbone: a model with ``forward_stages`` and ``embed_dims`` (CoC, CLUENet, PointMLP);
            its classifier parts (``norm``, ``head``, ``head_drop``, ``classifier``) are removed.
        num_classes: classes K.
        head: ``"fpn"`` (:class:`~pointctx.nn.fpn.SemanticFPNHead`), ``"unet"``
            (:class:`~pointctx.nn.set_unet.SetUNetDecoder`; its last skip is the input points'
            stem features, the input features and positions) or ``"pointmlp"``
            (:class:`~pointctx.nn.pointmlp_layers.PointMLPHead`, PointMLP backbones), see
            :data:`HEADS`.
        head_*: the head's options without the prefix (``head_channels``, ``head_k``, ...;
            ``"unet"``: 128 channels unless given).
        input_pool: ``f``: average the kept pixels of every ``f x f`` block into one point
            before the backbone (docs/segmentation.md; a documented deviation, 1 = off).
            Needs a backbone whose ``forward_stages`` takes ``input_pool`` (CoC, CLUENet).

    Attributes:
        backbone: the trunk.
        head: the head module. PointMLP's head registers its parts (``decode_list``,
            ``classifier``, ...) on the segmenter itself, so they sit at the top level of the
            state dict, as in the official PointMLP part-segmentation model.
        num_classes: K.
        input_pool: the default ``f`` of :meth:`forward` (may be changed).

    Shapes:
        forward: images [B, C, H, W] (+ mask [B, H, W]) -> [B, K, H, W];
        PointBatch (N points) -> [N, K]; PointBatch + query PointBatch (Nq points) -> [Nq, K].
    """

    def __init__(self, backbone: nn.Module, num_classes: int, head="fpn", input_pool: int = 1,
                 **head_options):
        super().__init__()
        if not hasattr(backbone, "forward_stages"):
            raise TypeError(f"`backbone` must provide forward_stages (the per-stage features "
                            f"contract), got {type(backbone).__name__}")
        self._pools = "input_pool" in inspect.signature(backbone.forward_stages).parameters
        self.input_pool = self._check_pool(input_pool, type(backbone).__name__)
        for name in _CLASSIFIER_PARTS:
            if hasattr(backbone, name):
                delattr(backbone, name)
        self.backbone = backbone
        self.in_channels = backbone.in_channels
        self.pos_dim = backbone.pos_dim
        options = ({"input_channels": self.in_channels + self.pos_dim, "channels": 128}
                   if head == "unet" else {})
        takes = inspect.signature(HEADS[head]).parameters if head in HEADS else None
        for key, value in head_options.items():
            if not key.startswith("head_") or (takes is not None and key[5:] not in takes):
                raise TypeError(f"`{key}` is not an option of head {head!r}"
                                + (f"; it takes head_{{{', '.join(takes)}}}" if takes else ""))
            options[key[5:]] = value
        head = resolve(head, HEADS, "head", base=nn.Module, in_channels=backbone.embed_dims,
                       num_classes=num_classes, backend=getattr(backbone, "backend", None),
                       **options)
        self._to_inputs = isinstance(head, SetUNetDecoder)
        self._at_stage0 = isinstance(head, PointMLPHead)  # stage 0: the input points
        if self._at_stage0:
            for name, part in head.named_children():
                self.add_module(name, part)
            self.__dict__["head"] = head
        else:
            self.head = head
        self.num_classes = self.head.num_classes

    def train(self, mode: bool = True) -> SetSegmenter:
        """Set training mode, the head's included (PointMLP's is not a registered child)."""
        super().train(mode)
        self.head.training = mode
        return self

    def _check_pool(self, input_pool, backbone: str | None = None) -> int:
        f = check_positive_int(input_pool, "input_pool")
        if f > 1 and not self._pools:
            name = backbone or type(self.backbone).__name__
            raise ValueError(f"`input_pool` must be 1 for a {name} backbone (its forward_stages "
                             f"does not pool pixels), got {f}")
        return f

    def _stages(self, inputs, mask, input_pool):
        f = self._check_pool(self.input_pool if input_pool is None else input_pool)
        if f == 1:
            return self.backbone.forward_stages(inputs, mask)
        return self.backbone.forward_stages(inputs, mask, input_pool=f)

    def _predict(self, stages, packed, inputs, mask, pos_q, batch_q, query=None):
        """Logits at the queries ``pos_q`` (None: at the input points).

        ``"unet"`` head: input pixels get their own logits, other pixels those of its
        ``fill`` (from the stage-0 cells), other points a kNN interpolation.
        """
        grids = [s.cells for s in stages]  # each stage's lattice (None: no lattice)
        if not self._to_inputs:
            return self.head(stages, pos_q, batch_q, grids)
        x, pos, batch, coords, grid = packed.stem_view()
        logits = self.head(stages, x, pos, batch, grids, coords, grid)
        if pos_q is None:
            return logits
        s0 = stages[0]
        if packed.image_size is None:
            return knn_interpolate(logits, pos, pos_q, batch, batch_q, k=self.head.k,
                                   batch_size=s0.num_sets, eps=self.head.eps,
                                   backend=self.head.backend)
        if mask is not None and logits.shape[0] == mask.numel():  # every pixel kept
            return logits
        out = self._fill(s0, logits, packed.image_size).permute(0, 2, 3, 1).contiguous()
        out = out.view(-1, logits.shape[1])  # every pixel, then the input pixels' own logits
        if mask is not None:  # image input: the queries are every pixel, in order
            out[mask.reshape(-1)] = logits
            return out
        hw = packed.image_size[0] * packed.image_size[1]
        out[inputs.batch * hw + inputs.pixel] = logits
        return out[query.batch * hw + query.pixel]

    def _fill(self, s0, logits: Tensor, image_size) -> Tensor:
        """Every pixel's logits ``[B, K, H, W]`` from the mean logits of the stage-0 cells."""
        child, parent = s0.link
        cells = logits.new_zeros(s0.num_points, logits.shape[1]).index_add_(
            0, child, logits.index_select(0, parent))
        cells = cells / torch.bincount(child, minlength=s0.num_points).clamp_min(1)[:, None]
        return self.head.fill(cells, s0.coords, s0.batch, s0.num_sets, s0.grid_size, s0.stride,
                              image_size)

    @staticmethod
    def _pixel_queries(pb: PointBatch, image_size, dtype) -> Tensor:
        if pb.pixel is None or pb.image_size is None:
            raise ValueError("`query` must be a pixel set (built by PointBatch.from_images, with "
                             "pixel / image_size) because the input is a pixel set, whose stages "
                             "live in the image plane")
        if tuple(pb.image_size) != tuple(image_size):
            raise ValueError(f"`query` must come from images of the input's size "
                             f"{tuple(image_size)}, got image_size {tuple(pb.image_size)}")
        return pixel_plane(pb, dtype)

    def forward(self, inputs, mask: Tensor | None = None,
                query: PointBatch | None = None, input_pool: int | None = None,
                lengths: Tensor | None = None, features: Tensor | None = None,
                category=None) -> Tensor:
        """Logits for every pixel (images), at the query points (PointBatch) or per point (padded).

        Args:
            inputs: images ``[B, C, H, W]``, a :class:`~pointctx.PointBatch` or padded points
                ``[B, Nmax, D]``.
            mask: bool ``[B, H, W]`` (image input only): the pixels the model sees.
            query: a :class:`~pointctx.PointBatch` of the same B sets (PointBatch input
                only); default: the input's own points.
            input_pool: ``f`` for this call (default: the model's :attr:`input_pool`); see
                the module docstring.
            lengths: padded points: valid rows per set ``[B]`` (default: all).
            features: padded points: features ``[B, Nmax, C]``.
            category: part segmenters: each set's category, ids ``[B]`` or one-hot.

        Returns:
            ``[B, K, H, W]`` for images; ``[Nq, K]`` for a PointBatch; ``[B, Nmax, K]`` for
            padded points, zeros past ``lengths``.
        """
        if category is not None and not self._at_stage0:
            raise ValueError(f"`category` was given but this model's head "
                             f"({type(self.head).__name__}) takes no category")
        dtype = next(self.parameters()).dtype
        padded = isinstance(inputs, Tensor) and inputs.dim() == 3
        if padded or lengths is not None or features is not None:
            if mask is not None or query is not None:
                raise ValueError("`mask` and `query` are not for padded points [B, Nmax, D]: "
                                 "use a PointBatch to predict at other points")
            pb = padded_batch(inputs, lengths, features, dtype)
            return unpad(self.forward(pb, input_pool=input_pool, category=category), pb,
                         inputs.shape[1])
        packed = pack_input(inputs, mask, self.in_channels, self.pos_dim, dtype,
                            allow_empty=getattr(self.backbone, "stages_allow_empty", True),
                            append_pos=True)  # the one check of the inputs
        if query is not None:
            if isinstance(inputs, Tensor):
                raise ValueError("`query` is only for PointBatch inputs; image inputs are "
                                 "predicted at every pixel")
            if not isinstance(query, PointBatch):
                raise TypeError(f"`query` must be a PointBatch, got {type(query).__name__}")
            if query.num_sets != packed.batch_size:
                raise ValueError(f"`query` must hold the input's B = {packed.batch_size} sets, "
                                 f"got {query.num_sets}")
        if self._at_stage0:
            category = self.head.check_sets(category, packed.batch_size, packed.pos)
        stages = self._stages(packed, None, input_pool)
        if mask is not None:  # images: every pixel, the masked ones included
            b, _, h, w = inputs.shape
            pos_q = lattice_plane(b, (h, w), inputs.device, packed.pos.dtype)
            batch_q = lattice_sites(b, (h, w), inputs.device)[1]
        elif query is None:  # the input points (pixels: their image plane)
            pos_q, batch_q = (None, None) if self._to_inputs else packed.stem_view()[1:3]
        elif packed.image_size is not None:
            pos_q, batch_q = self._pixel_queries(query, packed.image_size, dtype), query.batch
        elif query.dim != inputs.dim:
            raise ValueError(
                f"`query` must have the input's D = {inputs.dim} coordinates, got {query.dim}")
        else:
            pos_q, batch_q = query.pos.to(dtype), query.batch
        if self._at_stage0:  # PointMLP's head: stage 0 holds the input points
            return self.head(stages, None if query is None else pos_q, batch_q,
                             category=category)
        logits = self._predict(stages, packed, inputs, mask, pos_q, batch_q, query)
        if not isinstance(inputs, Tensor):
            return logits
        b, _, h, w = inputs.shape
        return logits.view(b, h, w, -1).permute(0, 3, 1, 2)


def input_pool_for_keep(keep: float) -> int:
    """The input pooling ``f = max(1, floor(sqrt(1 / keep)))`` for a keep ratio of random pixels.

    The largest ``f`` with at least one kept pixel per ``f x f`` block on average
    (``f**2 * keep <= 1``): 1 above 1/4, 2 for ``1/9 < keep <= 1/4``, 3 down to 1/16, ...
    (50 % -> 1, 25 % -> 2, 10 % -> 3, 5 % -> 4). For scripts that know their keep ratio; the
    model never picks ``f`` from the data.

    Args:
        keep: fraction of the pixels kept, in ``(0, 1]``.

    Returns:
        ``f`` (int >= 1).
    """
    keep = check_number(keep, "keep", 0.0, 1.0, min_open=True, type_error=ValueError)
    return max(1, math.floor(math.sqrt(1.0 / keep) + 1e-9))


# ---- registered configurations


def _build(backbone_name: str, defaults: dict, kwargs: dict,
           head_defaults: dict | None = None) -> SetSegmenter:
    from ._registry import create_model

    kwargs = dict(kwargs)
    num_classes = kwargs.pop("num_classes", 11)
    head = dict(head_defaults or {})
    for key in [k for k in kwargs if k.startswith("head_") or k in ("head", "input_pool")]:
        head[key] = kwargs.pop(key)
    cfg = dict(defaults)
    cfg.update(kwargs)
    cfg["num_classes"] = 0
    return SetSegmenter(create_model(backbone_name, **cfg), num_classes, **head)


@register_model
def coc_tiny_seg(**kwargs) -> SetSegmenter:
    """CoC-Tiny backbone + Semantic-FPN head (128 channels); 11 classes (CamVid) by default."""
    return _build("coc_tiny", {}, kwargs)


@register_model
def coc_small_seg(**kwargs) -> SetSegmenter:
    """CoC-Small backbone + Semantic-FPN head (128 channels)."""
    return _build("coc_small", {}, kwargs)


@register_model
def cluenet_micro_seg(**kwargs) -> SetSegmenter:
    """CLUENet-micro backbone + Semantic-FPN head (128 channels)."""
    return _build("cluenet_micro", {}, kwargs)


_MICRO = dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), mlp_ratios=4,
              heads=(1, 2, 2, 4), head_dims=16)


@register_model
def coc_micro_seg(**kwargs) -> SetSegmenter:
    """CPU-sized CoC segmenter: 1 block per stage, 16-128 channels, 64-channel head."""
    return _build("coc_tiny", dict(_MICRO, centers=2, regions=(8, 4, 2, 1)), kwargs,
                  {"head_channels": 64})


@register_model
def cluenet_nano_seg(**kwargs) -> SetSegmenter:
    """CPU-sized CLUENet segmenter: 1 block per stage, 16-128 channels, 64-channel head."""
    return _build("cluenet_micro", dict(_MICRO, centers=7), kwargs, {"head_channels": 64})


# the set U-Net decoder: BatchNorm, one LocalBlocks after every step
_UNET = {"head": "unet", "head_norm": "batch", "head_stage_blocks": 1, "head_local_blocks": 1,
         "head_fill": {"prior_size": (8, 8)}}


@register_model
def coc_tiny_unet_seg(**kwargs) -> SetSegmenter:
    """CoC-Tiny backbone + set U-Net decoder (widths 64, 64, 128, 256 from the input points)."""
    return _build("coc_tiny", {}, kwargs, dict(_UNET, head_channels=(64, 64, 128, 256)))


@register_model
def cluenet_micro_unet_seg(**kwargs) -> SetSegmenter:
    """CLUENet-micro backbone + set U-Net decoder (widths 64, 64, 128, 256)."""
    return _build("cluenet_micro", {}, kwargs, dict(_UNET, head_channels=(64, 64, 128, 256)))


_MICRO_UNET = dict(_UNET, head_channels=(32, 64, 96, 96))


@register_model
def coc_micro_unet_seg(**kwargs) -> SetSegmenter:
    """CPU-sized CoC + set U-Net decoder: ``coc_micro_seg``'s backbone (MLP ratio 2 last)."""
    return _build("coc_tiny", dict(_MICRO, centers=2, regions=(8, 4, 2, 1),
                                   mlp_ratios=(4, 4, 4, 2)), kwargs, _MICRO_UNET)


@register_model
def cluenet_nano_unet_seg(**kwargs) -> SetSegmenter:
    """CPU-sized CLUENet + set U-Net decoder (``cluenet_nano_seg``'s backbone, MLP ratio 1 last)."""
    return _build("cluenet_micro", dict(_MICRO, centers=7, mlp_ratios=(4, 4, 4, 1)), kwargs,
                  _MICRO_UNET)
