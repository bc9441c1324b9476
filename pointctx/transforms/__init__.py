"""Transforms: image -> pixel-set masks, and point-cloud augmentations."""

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

__all__ = ["ImageTransform", "MaskTransform", "RandomKeep", "BlockMask", "DiscMask", "PolygonMask",
           "ValidDepth", "IntersectMasks", "polygon_mask", "PixelSet", "pixel_collate",
           "image_size_of"]
__all__ += ["PointCloudTransform", "Compose", "RandomScaleShift", "ShufflePoints", "RandomJitter",
            "RandomRotation", "NormalizeUnitSphere", "reference_train_transform"]
