"""The base of the point-cloud classification datasets: per-item sampling, transform and seeding."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_int, check_positive_int
from ..transforms.points import PointCloudTransform
from .base import DatasetSplit, RowDataset, check_transform
from .sampling import farthest_point_sample

__all__ = ["PointCloudDataset", "SAMPLINGS", "SPLITS", "check_split"]

SAMPLINGS = ("first", "fps", "random")
SPLITS = ("train", "test")


def check_split(split: str) -> str:
    """Raise a ``ValueError`` unless ``split`` is ``"train"`` or ``"test"``; return it."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}")
    return split


class PointCloudDataset(RowDataset):
    """Base of the classification datasets: per-item sampling, transform and seeding.

    Args:
        num_points: points per returned cloud (None: all).
        sampling: ``"first"`` (stored order, as PointMLP), ``"fps"`` (cached) or ``"random"``.
        transform: a :class:`~pointctx.transforms.PointCloudTransform` or ``f(points) -> points``.
        seed: base seed of the per-item generators.

    Attributes:
        classes: class names; num_classes: their count.
        labels: int64 labels of the items in this view.
        names: shape ids of the items, or None.
        epoch: current epoch (see :meth:`set_epoch`).
    """

    def __init__(self, num_points, sampling, transform, seed) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {list(SAMPLINGS)}, got {sampling!r}")
        if num_points is not None:
            check_positive_int(num_points, "num_points")
        check_int(seed, "seed", 0, type_error=ValueError)
        self.num_points = None if num_points is None else int(num_points)
        self.sampling, self.transform, self.seed = sampling, check_transform(transform), int(seed)
        self.epoch = 0
        self._array: np.ndarray | None = None
        self._fps: dict[int, np.ndarray] = {}
        self._rows = np.zeros(0, dtype=np.int64)
        self._names: list[str] | None = None

    # subclasses call this once the data is known
    def _finish(self, labels: np.ndarray, points_per_cloud: int) -> None:
        self._labels = np.asarray(labels, dtype=np.int64)
        self._points_per_cloud = int(points_per_cloud)
        self._rows = np.arange(len(self._labels), dtype=np.int64)
        if self.num_points is not None and self.num_points > self._points_per_cloud:
            raise ValueError(f"`num_points` = {self.num_points} exceeds the "
                             f"{self._points_per_cloud} points stored per cloud in {self.source}")
        if self.sampling == "fps" and self._array is not None:
            self._precompute_fps()

    @property
    def names(self) -> list[str] | None:
        """Shape ids of the items of this view (e.g. ``chair_0042``), or ``None`` if unknown."""
        return None if self._names is None else [self._names[r] for r in self._rows]

    @property
    def points_per_item(self) -> int:
        """Points per returned cloud (``num_points``, or all stored when it is None)."""
        return self._points_per_cloud if self.num_points is None else self.num_points

    def _cloud(self, row: int) -> np.ndarray:
        return self._array[row]

    def _precompute_fps(self, chunk: int = 256) -> None:
        """FPS of every cloud once (cached), with a progress bar: it takes minutes on big data."""
        n = self.points_per_item
        arr = self._array
        bar = tqdm(total=len(arr), desc=f"FPS to {n} points, {type(self).__name__}",
                   unit="cloud", disable=None, leave=False, dynamic_ncols=True)
        with bar:
            for lo in range(0, len(arr), chunk):
                idx = farthest_point_sample(np.asarray(arr[lo : lo + chunk, :, :3], np.float32), n)
                for j, row in enumerate(range(lo, min(lo + chunk, len(arr)))):
                    self._fps[row] = idx[j].astype(np.int32)
                bar.update(min(chunk, len(arr) - lo))

    def _select(self, row: int, cloud: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = self.points_per_item
        if self.num_points is None or n == cloud.shape[0] and self.sampling == "first":
            return cloud
        if self.sampling == "first":
            return cloud[:n]
        if self.sampling == "random":
            return cloud[np.sort(rng.choice(cloud.shape[0], n, replace=False))]
        if row not in self._fps:
            self._fps[row] = farthest_point_sample(np.asarray(cloud, np.float32), n)
        return cloud[self._fps[row]]

    def __getitem__(self, idx: int) -> tuple[Tensor, int]:
        """Return ``(points [n, C] float32 tensor, label int)`` for item ``idx`` of this view."""
        row = self._row(idx)
        rng = np.random.default_rng((self.seed, self.epoch, row))
        pts = np.array(self._select(row, self._cloud(row), rng), dtype=np.float32, copy=True)
        if self.transform is not None:
            if isinstance(self.transform, PointCloudTransform):
                pts = self.transform(pts, rng)
            else:
                pts = self.transform(pts)
        out = torch.from_numpy(pts) if isinstance(pts, np.ndarray) else pts
        return out, int(self._labels[row])

    def subset(self, indices, transform="keep", sampling: str | None = None) -> PointCloudDataset:
        """A view of some items sharing the loaded data, optionally with another transform.

        Args:
            indices: item indices of this view (integer array-like).
            transform: the view's transform (``"keep"`` keeps this one; ``None`` removes it).
            sampling: the view's sampling (``None`` keeps this one).
        """
        view = super().subset(indices, transform)
        if sampling is not None:
            if sampling not in SAMPLINGS:
                raise ValueError(f"`sampling` must be one of {list(SAMPLINGS)}, got {sampling!r}")
            view.sampling = sampling
            if sampling == "fps" and self._array is not None and not self._fps:
                view._precompute_fps()
        return view

    def split(self, val_fraction: float = 0.1, seed: int = 0, val_transform=None,
              val_sampling="first") -> DatasetSplit:
        """Carve a seeded stratified validation split (see :func:`stratified_split`).

        Args:
            val_fraction: share of each class held out, in (0, 1).
            seed: seed of the choice.
            val_transform: transform of the validation view (default none: no augmentation).
            val_sampling: sampling of the validation view.
        """
        return self._split(val_fraction, seed, transform=val_transform, sampling=val_sampling)

    @property
    def source(self) -> str:
        """Where the data was read from."""
        return getattr(self, "_source", "?")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(items={len(self)}, classes={self.num_classes}, "
                f"num_points={self.points_per_item}, sampling={self.sampling!r}, "
                f"source={self.source!r})")
