"""Datasets: point clouds, pixel sets, RGB-D frames and segmentation, one module each."""

from ._root import data_root
from .base import DatasetSplit, RowDataset, select_rows, stratified_split
from .camvid import CAMVID_CLASSES, CAMVID_MEAN, CAMVID_PALETTE, CAMVID_STD, CAMVID_VOID, CamVid
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
from .modelnet40 import ModelNet40
from .points import PointCloudDataset
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
from .sampling import farthest_point_sample
from .scanobjectnn import SCANOBJECTNN_CLASSES, ScanObjectNN
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

__all__ = ["data_root", "DatasetSplit", "RowDataset", "select_rows"]
__all__ += ["SCANOBJECTNN_CLASSES", "ModelNet40", "PointCloudDataset", "ScanObjectNN",
            "farthest_point_sample", "stratified_split"]
__all__ += ["CIFAR10", "CIFAR10_MEAN", "CIFAR10_STD", "MNIST", "MNIST_MEAN", "MNIST_STD",
            "ImageDataset", "ImageSplit", "stratified_subset"]
__all__ += ["RGBD_PRESETS", "FusedPoints", "RGBDDataset", "RGBDFrame", "frame_to_points",
            "fuse_frames", "load_rgbd", "rgbd_frame", "rgbd_frames"]
__all__ += ["Scene", "ShapeScenes"]
__all__ += ["SHAPENETPART_CATEGORIES", "SHAPENETPART_PARTS", "PartSample", "ShapeNetPart",
            "category_part_mask"]
__all__ += ["CAMVID_CLASSES", "CAMVID_MEAN", "CAMVID_PALETTE", "CAMVID_STD", "CAMVID_VOID",
            "CamVid", "PixelSubset", "RandomHorizontalFlip", "RandomScaleCrop", "Resize",
            "SegCompose", "check_seg_sample"]
