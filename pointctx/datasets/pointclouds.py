"""Point-cloud classification datasets (ScanObjectNN, ModelNet40) and their transforms.

This module is the index of the point-cloud datasets and their former home (every name below
still imports from here); each concern now has its module:

========================================= ====================================================
module                                    what
========================================= ====================================================
:mod:`pointctx.datasets.points`           :class:`PointCloudDataset`: per-item sampling,
                                          transform and ``(seed, epoch, item)`` seeding
:mod:`pointctx.datasets.base`             views, :func:`stratified_split`, subsets, epochs
                                          (shared with the image datasets)
:mod:`pointctx.datasets.sampling`         :func:`farthest_point_sample` (numpy)
:mod:`pointctx.datasets.scanobjectnn`     :class:`ScanObjectNN`
:mod:`pointctx.datasets.modelnet40`       :class:`ModelNet40` (one reader per layout),
                                          :func:`modelnet40_sample`
:mod:`pointctx.transforms.points`         the augmentations (:class:`RandomScaleShift`, ...)
========================================= ====================================================

Nothing is downloaded. Missing files raise ``FileNotFoundError`` naming the expected paths and
where the data comes from; unreadable, truncated, corrupt or wrongly shaped files raise
``ValueError`` naming the file and the problem.
"""

# re-exported so that the old import path (pointctx.datasets.pointclouds) keeps working
from ..transforms.points import (
    Compose,
    NormalizeUnitSphere,
    PointCloudTransform,
    RandomJitter,
    RandomRotation,
    RandomScaleShift,
    ShufflePoints,
    reference_train_transform,
)
from .base import DatasetSplit, SplitIndices, stratified_split
from .modelnet40 import MODELNET40_URL, ModelNet40, modelnet40_sample
from .points import SAMPLINGS, SPLITS, PointCloudDataset
from .sampling import farthest_point_sample
from .scanobjectnn import (
    SCANOBJECTNN_CLASSES,
    SCANOBJECTNN_URL,
    SCANOBJECTNN_VARIANTS,
    ScanObjectNN,
)

# the re-exported names, listed statically (linters and `import *` need the literal list)
__all__ = [
    "SCANOBJECTNN_CLASSES",
    "SCANOBJECTNN_URL",
    "SCANOBJECTNN_VARIANTS",
    "MODELNET40_URL",
    "PointCloudDataset",
    "ScanObjectNN",
    "ModelNet40",
    "modelnet40_sample",
    "SplitIndices",
    "DatasetSplit",
    "stratified_split",
    "farthest_point_sample",
    "PointCloudTransform",
    "Compose",
    "RandomScaleShift",
    "ShufflePoints",
    "RandomJitter",
    "RandomRotation",
    "NormalizeUnitSphere",
    "reference_train_transform",
    "SAMPLINGS",
    "SPLITS",
]
