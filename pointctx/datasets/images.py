"""Image classification datasets read from the shared data folder: MNIST and CIFAR-10."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..transforms import ImageTransform
from ._read import read_npz
from ._root import data_root
from .base import DatasetSplit, RowDataset, check_transform, select_rows, stratified_subset

__all__ = ["ImageDataset", "ImageSplit", "MNIST", "CIFAR10", "MNIST_MEAN", "MNIST_STD",
           "CIFAR10_MEAN", "CIFAR10_STD", "stratified_subset"]

#: Channel statistics of the MNIST training images (in [0, 1]), the customary values.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
#: Channel statistics of the CIFAR-10 training images (in [0, 1]), the customary values.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


#: The train / validation pair of :meth:`ImageDataset.split` (the shared
#: :class:`~pointctx.datasets.base.DatasetSplit`).
ImageSplit = DatasetSplit


def _resolve_path(path, filename: str) -> Path:
    p = data_root() / filename if path is None else Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file {p} does not exist")
    return p


def _norm_stats(normalize, default_mean, default_std, channels: int):
    if normalize is False or normalize is None:
        return None
    if normalize is True:
        mean, std = default_mean, default_std
    else:
        try:
            mean, std = normalize
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"`normalize` must be True, False or (mean, std), got {normalize!r}"
            ) from err
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    for name, t in (("mean", mean), ("std", std)):
        if t.numel() not in (1, channels):
            want = "1 value" if channels == 1 else f"1 or {channels} values"
            raise ValueError(f"`normalize` {name} must have {want}, got {t.numel()}")
    if bool((std <= 0).any()):
        raise ValueError(f"`normalize` std must be > 0, got {std.tolist()}")
    return mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)


class ImageDataset(RowDataset):
    """Base of the image datasets: row selection, normalisation, transforms and splits."""

    classes: list[str]
    _default_norm: tuple

    def _set_source(self, path, labels, classes) -> None:
        self._source, self._labels = path, labels.astype(np.int64)
        self.classes = classes or [str(c) for c in range(int(labels.max()) + 1)]

    def _setup(self, indices, limit, seed, transform, normalize) -> None:
        self.transform = check_transform(transform)
        self._norm = _norm_stats(normalize, *self._default_norm, self._channels)
        self._rows = select_rows(len(self._labels), indices, limit, seed, self._labels)

    def image(self, idx: int) -> Tensor:
        """Untransformed image of item ``idx``: float32 [C, H, W] in [0, 1] (or normalised)."""
        arr = self._image(self._row(idx))
        t = torch.from_numpy(np.require(arr, requirements=["C", "W"]))
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        t = t.to(torch.float32) / 255.0
        if self._norm is not None:
            t = (t - self._norm[0]) / self._norm[1]
        return t

    def __getitem__(self, idx: int):
        """Item ``idx``: ``(image, label)`` or the transform's dict with ``"y"`` added."""
        img = self.image(idx)
        row = int(self._rows[idx])
        label = int(self._labels[row])
        if self.transform is None:
            return img, label
        if isinstance(self.transform, ImageTransform):
            out = self.transform(img, index=row)
        else:
            out = self.transform(img)
        return {**out, "y": label} if isinstance(out, dict) else (out, label)

    def split(self, val_fraction: float = 0.1, seed: int = 0, val_transform="keep") -> ImageSplit:
        """Seeded stratified train / validation split of this view.

        Args:
            val_fraction: share of each class held out, in (0, 1).
            seed: seed of the choice.
            val_transform: transform of the validation view (``"keep"``: the same as train,
                which keeps seeded masks per image; ``None``: none).
        """
        return self._split(val_fraction, seed, transform=val_transform)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(items={len(self)}, classes={self.num_classes}, "
            f"normalize={self._norm is not None}, source={str(getattr(self, '_source', '?'))!r})")


class MNIST(ImageDataset):
    """MNIST digits (the 60,000 training images), as ``[1, 28, 28]`` tensors.

    Args:
        path: the npz file (default ``<data_root>/mnist_train.npz``).
        indices: file rows to use (ints or a bool mask), default all.
        limit: keep a seeded class-balanced subset of this many items.
        seed: seed of the ``limit`` draw.
        transform: callable on the image (``ImageTransform`` gets ``index`` = file row).
        normalize: False, True (:data:`MNIST_MEAN`, :data:`MNIST_STD`) or ``(mean, std)``.
    """

    _default_norm = (MNIST_MEAN, MNIST_STD)
    _channels = 1

    def __init__(self, path=None, indices=None, limit: int | None = None, seed: int = 0,
                 transform=None, normalize=False) -> None:
        p = _resolve_path(path, "mnist_train.npz")
        z = read_npz(p)
        for k in ("images", "labels"):
            if k not in z:
                raise ValueError(f"{p} must hold arrays 'images' and 'labels', got {list(z)}")
        images, labels = z["images"], z["labels"]
        classes = [str(c) for c in z["classes"]] if "classes" in z else None
        if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
            raise ValueError(f"{p}: 'images' must be uint8 [S, H, W] with one label each, got "
                             f"{images.dtype} {list(images.shape)} and {len(labels)} labels")
        self._set_source(p, labels, classes)
        self._setup(indices, limit, seed, transform, normalize)
        # keep only the rows in use; map file rows to positions in the kept array
        self._kept = np.unique(self._rows)
        self._data = images[self._kept]

    def _image(self, row: int) -> np.ndarray:
        return self._data[int(np.searchsorted(self._kept, row))]


class CIFAR10(ImageDataset):
    """CIFAR-10 (the 50,000 training images, re-encoded JPEGs), as ``[3, 32, 32]`` tensors.

    Args:
        path: the npz file (default ``<data_root>/cifar10_train_jpeg.npz``).
        indices, limit, seed, transform: as for :class:`MNIST`.
        normalize: ``False``, ``True`` (:data:`CIFAR10_MEAN`, :data:`CIFAR10_STD`) or
            ``(mean, std)``.
        cache: decode every selected image once at construction.
    """

    _default_norm = (CIFAR10_MEAN, CIFAR10_STD)
    _channels = 3

    def __init__(self, path=None, indices=None, limit: int | None = None, seed: int = 0,
                 transform=None, normalize=False, cache: bool = False) -> None:
        p = _resolve_path(path, "cifar10_train_jpeg.npz")
        z = read_npz(p)
        for k in ("jpeg", "offsets", "labels"):
            if k not in z:
                raise ValueError(
                    f"{p} must hold arrays 'jpeg', 'offsets' and 'labels', got {list(z)}")
        jpeg, offsets, labels = z["jpeg"], z["offsets"].astype(np.int64), z["labels"]
        classes = [str(c) for c in z["classes"]] if "classes" in z else None
        if offsets.shape != (len(labels) + 1,) or offsets[0] != 0 or offsets[-1] != len(jpeg):
            raise ValueError(
                f"{p}: 'offsets' must have S + 1 = {len(labels) + 1} entries from 0 to "
                f"len(jpeg) = {len(jpeg)}, got {offsets.shape[0]} entries ending at {offsets[-1]}")
        self._set_source(p, labels, classes)
        self._jpeg, self._offsets = jpeg, offsets
        self._cache: dict[int, np.ndarray] | None = None
        self._setup(indices, limit, seed, transform, normalize)
        if cache:
            rows = np.unique(self._rows)
            stack = np.stack([self._decode(int(r)) for r in rows]) if rows.size else None
            self._cache = {int(r): stack[i] for i, r in enumerate(rows)}

    def _decode(self, row: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        data = self._jpeg[self._offsets[row] : self._offsets[row + 1]].tobytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{self._source}: image {row} does not decode as JPEG") from err

    def _image(self, row: int) -> np.ndarray:
        return self._cache[row] if self._cache is not None else self._decode(row)
