"""PointMLP / PointMLP-CoC per-point segmentation: part segmentation and scene segmentation."""

from __future__ import annotations

from ._helpers import register_configs
from ._registry import register_model
from .pointmlp import PointMLP
from .segmentation import SetSegmenter, _build

__all__ = ["SHAPENETPART_NUM_CATEGORIES", "SHAPENETPART_NUM_PARTS"]

SHAPENETPART_NUM_PARTS = 50
SHAPENETPART_NUM_CATEGORIES = 16
# the decoder's options by their official names -> PointMLPHead's
_HEAD = {"de_dims": "channels", "de_blocks": "blocks", "gmp_dim": "context_dim",
         "cls_dim": "category_dim", "head_hidden": "hidden", "head_act": "act",
         "drop_rate": "drop", "interp_k": "k", "num_categories": "num_categories"}


def _segmenter(num_classes: int = SHAPENETPART_NUM_PARTS, coc_mode: str | None = None,
               **kwargs) -> SetSegmenter:
    """PointMLP's encoder + :class:`~pointctx.nn.pointmlp_layers.PointMLPHead`.

    The head's options go by their official names (``de_dims``, ``de_blocks``, ``gmp_dim``,
    ``cls_dim``, ``head_hidden``, ``head_act``, ``drop_rate``, ``interp_k``, ``num_categories``);
    ``res_expansion`` and ``bias`` go to both.
    """
    if coc_mode not in (None, "group"):
        raise ValueError(f"`coc_mode` must be None or 'group', got {coc_mode!r}")
    head = {"head_" + _HEAD.get(k, k[5:]): kwargs.pop(k) for k in list(kwargs)
            if k in _HEAD or k.startswith("head_")}
    head["head_res_expansion"], head["head_bias"] = kwargs["res_expansion"], kwargs["bias"]
    return SetSegmenter(PointMLP(num_classes=0, coc_mode=coc_mode, **kwargs), num_classes,
                        head="pointmlp", **head)


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
register_configs(_segmenter, __name__, {
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


# the encoder of ``pointmlp_elite_seg``, xyz only
_POINTMLP_ELITE = dict(in_channels=0, pos_dim=3, embed_dim=32, res_expansion=0.25,
                       dim_expansion=(2, 2, 2, 1), pre_blocks=(1, 1, 2, 1),
                       pos_blocks=(1, 1, 2, 1), k_neighbors=16, ratio=0.25)


@register_model
def pointmlp_elite_unet_seg(**kwargs) -> SetSegmenter:
    """``pointmlp_elite_seg``'s encoder + set U-Net decoder (widths 64-160, no LocalBlocks)."""
    kwargs.setdefault("num_classes", 13)
    return _build("pointmlp", _POINTMLP_ELITE, kwargs,
                  {"head": "unet", "head_norm": "batch",
                   "head_channels": (64, 64, 128, 128, 160)})
