"""Transforms: image -> pixel-set masks, and point-cloud augmentations.

* :mod:`pointctx.transforms.pixels`: mask transforms that pick which pixels of an image become
  points (:class:`RandomKeep`, :class:`BlockMask`, :class:`DiscMask`, :class:`PolygonMask`,
  :class:`ValidDepth`, :class:`IntersectMasks`), :class:`PixelSet` (a full masked sample) and
  :func:`pixel_collate`; seeded per ``(seed, epoch, index)``.
* :mod:`pointctx.transforms.points`: augmentations of one point cloud ``[n, C]``
  (:class:`RandomScaleShift`, :class:`ShufflePoints`, :class:`RandomJitter`,
  :class:`RandomRotation`, :class:`NormalizeUnitSphere`, :class:`Compose`), called by the
  point-cloud datasets with the item's generator.

The segmentation transforms (image + label maps) are in :mod:`pointctx.datasets.segmentation`.
"""

from .pixels import (
    BlockMask,
    DiscMask,
    ImageTransform,
    IntersectMasks,
    MaskTransform,
    PixelSet,
    PolygonMask,
    RandomKeep,
    ValidDepth,
    image_size_of,
    pixel_collate,
    polygon_mask,
)
from .points import (
    Compose,
    NormalizeUnitSphere,
    PointCloudTransform,
    RandomJitter,
    RandomRotation,
    RandomScaleShift,
    ShufflePoints,
    reference_train_transform,
)

__all__ = [
    "ImageTransform",
    "MaskTransform",
    "RandomKeep",
    "BlockMask",
    "DiscMask",
    "PolygonMask",
    "ValidDepth",
    "IntersectMasks",
    "polygon_mask",
    "PixelSet",
    "pixel_collate",
    "image_size_of",
]
__all__ += [
    "PointCloudTransform",
    "Compose",
    "RandomScaleShift",
    "ShufflePoints",
    "RandomJitter",
    "RandomRotation",
    "NormalizeUnitSphere",
    "reference_train_transform",
]
