"""Datasets and readers for point sets, pixel sets, RGB-D frames and CamVid segmentation."""

from ._root import bundled_root, data_root
from .camvid import (
    CAMVID_CLASSES,
    CAMVID_MEAN,
    CAMVID_PALETTE,
    CAMVID_STD,
    CAMVID_VOID,
    CamVid,
)
from .images import (
    CIFAR10,
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST,
    MNIST_MEAN,
    MNIST_STD,
    ImageDataset,
    ImageSplit,
    stratified_subset,
)
from .pointclouds import (
    SCANOBJECTNN_CLASSES,
    Compose,
    ModelNet40,
    NormalizeUnitSphere,
    PointCloudDataset,
    PointCloudTransform,
    RandomJitter,
    RandomRotation,
    RandomScaleShift,
    ScanObjectNN,
    ShufflePoints,
    farthest_point_sample,
    modelnet40_sample,
    reference_train_transform,
    stratified_split,
)
from .rgbd import (
    RGBD_PRESETS,
    FusedPoints,
    RGBDDataset,
    RGBDFrame,
    frame_to_points,
    fuse_frames,
    load_rgbd,
    rgbd_frame,
    rgbd_frames,
)
from .scenes import Scene, ShapeScenes
from .segmentation import (
    PixelSubset,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    SegCompose,
    check_seg_sample,
)
from .shapenetpart import (
    SHAPENETPART_CATEGORIES,
    SHAPENETPART_PARTS,
    PartSample,
    ShapeNetPart,
    category_part_mask,
)

__all__ = ["bundled_root", "data_root"]
__all__ += [
    "SCANOBJECTNN_CLASSES",
    "Compose",
    "ModelNet40",
    "NormalizeUnitSphere",
    "PointCloudDataset",
    "PointCloudTransform",
    "RandomJitter",
    "RandomRotation",
    "RandomScaleShift",
    "ScanObjectNN",
    "ShufflePoints",
    "farthest_point_sample",
    "modelnet40_sample",
    "reference_train_transform",
    "stratified_split",
]
__all__ += [
    "CIFAR10",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST",
    "MNIST_MEAN",
    "MNIST_STD",
    "ImageDataset",
    "ImageSplit",
    "stratified_subset",
]
__all__ += [
    "RGBD_PRESETS",
    "FusedPoints",
    "RGBDDataset",
    "RGBDFrame",
    "frame_to_points",
    "fuse_frames",
    "load_rgbd",
    "rgbd_frame",
    "rgbd_frames",
]
__all__ += ["Scene", "ShapeScenes"]
__all__ += [
    "SHAPENETPART_CATEGORIES",
    "SHAPENETPART_PARTS",
    "PartSample",
    "ShapeNetPart",
    "category_part_mask",
]
__all__ += [
    "CAMVID_CLASSES",
    "CAMVID_MEAN",
    "CAMVID_PALETTE",
    "CAMVID_STD",
    "CAMVID_VOID",
    "CamVid",
    "PixelSubset",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "Resize",
    "SegCompose",
    "check_seg_sample",
]
