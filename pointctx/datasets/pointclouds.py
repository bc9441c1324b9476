"""Point-cloud classification datasets (ScanObjectNN, ModelNet40) and their transforms.

Every dataset here returns ``(points, label)`` per item: ``points`` a float32 tensor [n, C]
(``C = 3`` for xyz, ``6`` for xyz + normals where asked) and ``label`` an int. All clouds of one
dataset have the same ``n``, so the default ``DataLoader`` collate stacks them into a padded
[B, n, C] batch, which the point models accept directly (or build a
:class:`~pointctx.PointBatch` with ``PointBatch.from_padded``).

Randomness (random point subsets, augmentation) is drawn from a generator seeded by
``(seed, epoch, item)``: results do not depend on the number of DataLoader workers or on the order
items are read, and a run resumed at epoch ``e`` (``set_epoch(e)``) draws exactly what an
uninterrupted run would. Call :meth:`PointCloudDataset.set_epoch` before each epoch (with
non-persistent workers, which copy the dataset when an epoch's iterator starts).

Nothing is downloaded. Missing files raise ``FileNotFoundError`` naming the expected paths and
where the data comes from; unreadable, corrupt or wrongly shaped files raise ``ValueError`` naming
the file and the problem.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._root import bundled_root, data_root

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
]

SCANOBJECTNN_URL = "https://hkust-vgd.github.io/scanobjectnn/"
MODELNET40_URL = "https://modelnet.cs.princeton.edu/"

#: The 15 ScanObjectNN classes, in label order (the dataset's ``shape_names.txt``).
SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
)

#: Variant name -> (folder under the ``h5_files`` root, file-name suffix after ``objectdataset``).
#: Files are ``<folder>/training_objectdataset<suffix>.h5`` and ``<folder>/test_...``.
SCANOBJECTNN_VARIANTS = {
    "OBJ_BG": ("main_split", ""),
    "OBJ_ONLY": ("main_split_nobg", ""),
    "PB_T25": ("main_split", "_augmented25_norot"),
    "PB_T25_R": ("main_split", "_augmented25rot"),
    "PB_T50_R": ("main_split", "_augmentedrot"),
    "PB_T50_RS": ("main_split", "_augmentedrot_scale75"),
}

SAMPLINGS = ("first", "fps", "random")
SPLITS = ("train", "test")


# --------------------------------------------------------------------------- transforms
class PointCloudTransform:
    """Base class of the transforms here: ``t(points, rng)`` returns a new float32 array.

    Transforms act on one cloud ``points [n, C]`` (numpy). The xyz coordinates are columns 0:3;
    columns 3:6, when present, are unit normals (rotated with the points, left alone by scaling and
    shifting); further columns are passed through. Datasets call ``t(points, rng)`` with their
    per-item generator; called without ``rng`` a transform draws from a fresh, unseeded generator.

    Shapes:
        points: [n, C] with C >= 3; returns [n, C].
    """

    def __call__(self, points: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Transform a copy of ``points`` (never modified) drawing from ``rng``."""
        pts = _check_cloud(points, type(self).__name__)
        return self.apply(pts, rng if rng is not None else np.random.default_rng())

    def apply(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transform a float32 copy of one cloud (subclasses override)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _check_cloud(points, who: str) -> np.ndarray:
    if isinstance(points, Tensor):
        points = points.detach().cpu().numpy()
    if not isinstance(points, np.ndarray):
        raise TypeError(f"{who}: `points` must be a numpy array or tensor, got {type(points)}")
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(
            f"{who}: `points` must have shape [n, C] with C >= 3 (xyz first), got "
            f"{tuple(points.shape)}"
        )
    return np.array(points, dtype=np.float32, copy=True)


class Compose(PointCloudTransform):
    """Apply transforms in order, passing the same generator to each.

    Args:
        transforms: :class:`PointCloudTransform` instances, or plain callables ``f(points)``.
    """

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"`transforms[{i}]` must be callable, got {type(t).__name__}")

    def apply(self, points, rng):  # noqa: D102
        for t in self.transforms:
            points = t(points, rng) if isinstance(t, PointCloudTransform) else t(points)
        return points


class RandomScaleShift(PointCloudTransform):
    """Scale xyz by a random factor per axis, then shift by a random offset per axis.

    ``p' = p * s + t`` with ``s ~ U(scale)`` and ``t ~ U(shift)`` drawn once per cloud (one value
    per axis when ``anisotropic``, else one for all axes). The defaults are PointMLP's training
    augmentation for ScanObjectNN and ModelNet40: ``s ~ U(2/3, 3/2)``, ``t ~ U(-0.2, 0.2)``.

    Args:
        scale: ``(low, high)`` of the scale factor, ``0 < low <= high``.
        shift: ``(low, high)`` of the offset.
        anisotropic: draw each axis independently.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (2.0 / 3.0, 3.0 / 2.0),
        shift: tuple[float, float] = (-0.2, 0.2),
        anisotropic: bool = True,
    ) -> None:
        self.scale = _check_range(scale, "scale", positive=True)
        self.shift = _check_range(shift, "shift")
        self.anisotropic = bool(anisotropic)

    def apply(self, points, rng):  # noqa: D102
        size = 3 if self.anisotropic else 1
        s = rng.uniform(self.scale[0], self.scale[1], size=size)
        t = rng.uniform(self.shift[0], self.shift[1], size=size)
        points[:, :3] = points[:, :3] * s.astype(np.float32) + t.astype(np.float32)
        return points


class ShufflePoints(PointCloudTransform):
    """Randomly permute the points (rows) of a cloud."""

    def apply(self, points, rng):  # noqa: D102
        return points[rng.permutation(points.shape[0])]


class RandomJitter(PointCloudTransform):
    """Add clipped Gaussian noise to xyz: ``p + clip(sigma * N(0, 1), -clip, clip)``.

    Args:
        sigma: noise standard deviation, >= 0.
        clip: absolute bound of the noise, > 0.
    """

    def __init__(self, sigma: float = 0.01, clip: float = 0.05) -> None:
        if not sigma >= 0:
            raise ValueError(f"`sigma` must be >= 0, got {sigma}")
        if not clip > 0:
            raise ValueError(f"`clip` must be > 0, got {clip}")
        self.sigma = float(sigma)
        self.clip = float(clip)

    def apply(self, points, rng):  # noqa: D102
        noise = self.sigma * rng.standard_normal((points.shape[0], 3))
        noise = np.clip(noise, -self.clip, self.clip)
        points[:, :3] += noise.astype(np.float32)
        return points


class RandomRotation(PointCloudTransform):
    """Rotate xyz (and normals in columns 3:6) about one axis by ``U(-max_angle, max_angle)``.

    Args:
        axis: ``"x"``, ``"y"`` (up axis of ModelNet's ``normal_resampled`` files) or ``"z"``.
        max_angle: largest absolute angle in radians (``pi`` gives a uniform rotation).
    """

    def __init__(self, axis: str = "y", max_angle: float = math.pi) -> None:
        if axis not in ("x", "y", "z"):
            raise ValueError(f"`axis` must be one of ['x', 'y', 'z'], got {axis!r}")
        if not max_angle >= 0:
            raise ValueError(f"`max_angle` must be >= 0, got {max_angle}")
        self.axis = axis
        self.max_angle = float(max_angle)

    def apply(self, points, rng):  # noqa: D102
        a = rng.uniform(-self.max_angle, self.max_angle)
        c, s = math.cos(a), math.sin(a)
        i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[self.axis]
        rot = np.eye(3, dtype=np.float32)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        points[:, :3] = points[:, :3] @ rot.T
        if points.shape[1] >= 6:
            points[:, 3:6] = points[:, 3:6] @ rot.T
        return points


class NormalizeUnitSphere(PointCloudTransform):
    """Centre xyz on its mean and scale it so the farthest point lies at distance 1."""

    def apply(self, points, rng):  # noqa: D102
        xyz = points[:, :3] - points[:, :3].mean(0, keepdims=True)
        radius = float(np.sqrt((xyz**2).sum(1)).max()) if len(xyz) else 0.0
        points[:, :3] = xyz / radius if radius > 0 else xyz
        return points


def reference_train_transform() -> Compose:
    """PointMLP's training augmentation: :class:`RandomScaleShift` then :class:`ShufflePoints`."""
    return Compose([RandomScaleShift(), ShufflePoints()])


def _check_range(value, name: str, positive: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a (low, high) pair of numbers, got {value!r}") from None
    if not lo <= hi or (positive and not lo > 0):
        need = "0 < low <= high" if positive else "low <= high"
        raise ValueError(f"`{name}` must satisfy {need}, got {(lo, hi)}")
    return lo, hi


# --------------------------------------------------------------------------- sampling
def farthest_point_sample(points, num_samples: int, start: int = 0):
    """Farthest point sampling on dense clouds, batched (xyz = the first 3 columns).

    Deterministic: the first pick is row ``start`` of every cloud, each next pick the point
    farthest (Euclidean) from the picks so far; ties go to the lowest row. Runs in numpy on the
    CPU (the datasets use it once per cloud and cache the result).

    Args:
        points: one cloud or a batch of equally sized clouds (numpy array or tensor).
        num_samples: how many points to pick, ``1 <= num_samples <= P``.
        start: row of the first pick.

    Returns:
        int64 row indices into each cloud, in pick order: a tensor for tensor input, else a numpy
        array.

    Shapes:
        points: [P, C] or [B, P, C] with C >= 3; returns [num_samples] or [B, num_samples].
    """
    is_tensor = isinstance(points, Tensor)
    x = points.detach().cpu().numpy() if is_tensor else np.asarray(points)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] < 3:
        raise ValueError(
            f"`points` must have shape [P, C] or [B, P, C] with C >= 3, got {tuple(x.shape)}"
        )
    b, p = x.shape[:2]
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"`num_samples` must be an int, got {type(num_samples).__name__}")
    if not 1 <= num_samples <= p:
        raise ValueError(f"`num_samples` must lie in [1, P = {p}], got {num_samples}")
    if not 0 <= start < p:
        raise ValueError(f"`start` must lie in [0, P = {p}), got {start}")
    coords = np.ascontiguousarray(x[..., :3].transpose(2, 0, 1), dtype=np.float32)  # [3, B, P]
    out = np.empty((b, int(num_samples)), dtype=np.int64)
    dist = np.full((b, p), np.inf, dtype=np.float32)
    cur = np.full(b, start, dtype=np.int64)
    rows = np.arange(b)
    for k in range(int(num_samples)):
        out[:, k] = cur
        d = np.square(coords - coords[:, rows, cur][..., None]).sum(0)
        np.minimum(dist, d, out=dist)
        cur = dist.argmax(1)
    out = out[0] if single else out
    return torch.from_numpy(out) if is_tensor else out


# --------------------------------------------------------------------------- splits
class SplitIndices(NamedTuple):
    """Row indices of a train / validation split (each sorted ascending).

    Shapes:
        train: [S_train] int64; val: [S_val] int64.
    """

    train: np.ndarray
    val: np.ndarray


class DatasetSplit(NamedTuple):
    """A train / validation pair of datasets (see :meth:`PointCloudDataset.split`)."""

    train: PointCloudDataset
    val: PointCloudDataset


def stratified_split(labels, val_fraction: float = 0.1, seed: int = 0) -> SplitIndices:
    """Seeded stratified split of sample indices into train and validation parts.

    Each class ``c`` with ``n_c`` samples puts ``round(val_fraction * n_c)`` of them (at least 1
    when ``n_c >= 2``, at most ``n_c - 1``) into validation, chosen by a permutation seeded with
    ``seed``; a class with a single sample stays in train. The input order does not matter (the
    shared ModelNet40 file is sorted by class).

    Args:
        labels: integer class label per sample.
        val_fraction: share of each class held out, in (0, 1).
        seed: seed of the choice.

    Returns:
        :class:`SplitIndices` ``(train, val)``, disjoint and covering all samples.

    Shapes:
        labels: [S]; train, val: [S_train], [S_val] with S_train + S_val = S.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"`labels` must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"`val_fraction` must lie in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        k = min(max(int(round(val_fraction * n)), 1), n - 1) if n >= 2 else 0
        val.append(members[rng.permutation(n)[:k]])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return SplitIndices(np.flatnonzero(mask).astype(np.int64), val_idx.astype(np.int64))


# --------------------------------------------------------------------------- base dataset
class PointCloudDataset(Dataset):
    """Base of the classification datasets: per-item sampling, transform and seeding.

    Subclasses set ``_labels`` (all rows), ``classes`` and ``_points_per_cloud`` and implement
    ``_cloud(row) -> ndarray [P, C]``; array-backed subclasses set ``_array`` instead.

    Args:
        num_points: points per returned cloud (``None``: all ``P``).
        sampling: ``"first"`` (the first ``num_points`` rows, as stored: the official files store
            points in random order, and PointMLP reads them this way), ``"fps"`` (farthest point
            sampling from row 0, computed once per cloud and cached) or ``"random"`` (a random
            subset drawn per epoch and item).
        transform: a :class:`PointCloudTransform` (called with the item's generator) or any
            callable ``f(points [n, C]) -> points``; ``None`` for none.
        seed: base seed of the per-item generators.

    Attributes:
        classes: class names, ``classes[label]``.
        num_classes: ``len(classes)``.
        labels: int64 [len(self)] labels of the items in this view.
        names: shape ids of the items in this view, or ``None``.
        epoch: current epoch (see :meth:`set_epoch`).
    """

    classes: list[str]

    def __init__(self, num_points, sampling, transform, seed) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {list(SAMPLINGS)}, got {sampling!r}")
        if num_points is not None:
            if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)):
                raise TypeError(f"`num_points` must be an int or None, got {type(num_points)}")
            if num_points < 1:
                raise ValueError(f"`num_points` must be >= 1, got {num_points}")
        if transform is not None and not callable(transform):
            raise TypeError(f"`transform` must be callable or None, got {type(transform).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0, got {seed!r}")
        self.num_points = None if num_points is None else int(num_points)
        self.sampling = sampling
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self._array: np.ndarray | None = None
        self._fps: dict[int, np.ndarray] = {}
        self._index: np.ndarray | None = None
        self._names: list[str] | None = None

    # subclasses call this once the data is known
    def _finish(self, labels: np.ndarray, points_per_cloud: int) -> None:
        self._labels = np.asarray(labels, dtype=np.int64)
        self._points_per_cloud = int(points_per_cloud)
        self._index = np.arange(len(self._labels), dtype=np.int64)
        if self.num_points is not None and self.num_points > self._points_per_cloud:
            raise ValueError(
                f"`num_points` = {self.num_points} exceeds the {self._points_per_cloud} points "
                f"stored per cloud in {self.source}"
            )
        if self.sampling == "fps" and self._array is not None:
            self._precompute_fps()

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def labels(self) -> np.ndarray:
        """int64 labels of the items of this view, [len(self)]."""
        return self._labels[self._index]

    @property
    def names(self) -> list[str] | None:
        """Shape ids of the items of this view (e.g. ``chair_0042``), or ``None`` if unknown."""
        if self._names is None:
            return None
        return [self._names[r] for r in self._index]

    @property
    def n_points(self) -> int:
        """Points per returned cloud."""
        return self._points_per_cloud if self.num_points is None else self.num_points

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws (subsets, augmentation) items use."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"`epoch` must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._index)

    def _cloud(self, row: int) -> np.ndarray:
        return self._array[row]

    def _precompute_fps(self, chunk: int = 256) -> None:
        n = self.n_points
        arr = self._array
        for lo in range(0, len(arr), chunk):
            idx = farthest_point_sample(np.asarray(arr[lo : lo + chunk, :, :3], np.float32), n)
            for j, row in enumerate(range(lo, min(lo + chunk, len(arr)))):
                self._fps[row] = idx[j].astype(np.int32)

    def _select(self, row: int, cloud: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = self.n_points
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
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} is out of range for a dataset of {len(self)} items")
        row = int(self._index[idx])
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
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(
                f"`indices` must lie in [-{len(self)}, {len(self)}), got range "
                f"[{idx.min()}, {idx.max()}]"
            )
        view = copy.copy(self)
        view._index = self._index[idx]
        if transform != "keep":
            if transform is not None and not callable(transform):
                raise TypeError(f"`transform` must be callable or None, got {type(transform)}")
            view.transform = transform
        if sampling is not None:
            if sampling not in SAMPLINGS:
                raise ValueError(f"`sampling` must be one of {list(SAMPLINGS)}, got {sampling!r}")
            view.sampling = sampling
            if sampling == "fps" and self._array is not None and not self._fps:
                view._precompute_fps()
        return view

    def split(
        self, val_fraction: float = 0.1, seed: int = 0, val_transform=None, val_sampling="first"
    ) -> DatasetSplit:
        """Carve a seeded stratified validation split (see :func:`stratified_split`).

        Args:
            val_fraction: share of each class held out, in (0, 1).
            seed: seed of the choice.
            val_transform: transform of the validation view (default none: no augmentation).
            val_sampling: sampling of the validation view.

        Returns:
            :class:`DatasetSplit` ``(train, val)``; ``train`` keeps this dataset's transform.
        """
        parts = stratified_split(self.labels, val_fraction, seed)
        return DatasetSplit(
            self.subset(parts.train),
            self.subset(parts.val, transform=val_transform, sampling=val_sampling),
        )

    @property
    def source(self) -> str:
        """Where the data was read from."""
        return getattr(self, "_source", "?")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(items={len(self)}, classes={self.num_classes}, "
            f"num_points={self.n_points}, sampling={self.sampling!r}, source={self.source!r})"
        )


# --------------------------------------------------------------------------- file readers
def _import_h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a core dependency
        raise ImportError("reading .h5 point-cloud files needs h5py: pip install h5py") from err
    return h5py


def _read_h5(path: Path, want_normals: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``data`` [S, P, 3], ``label`` [S] or [S, 1] (and ``normal``) from one h5 file."""
    h5py = _import_h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{path}: cannot be read as an HDF5 file ({err}); it may be truncated or corrupt"
        ) from None
    with f:
        missing = [k for k in ("data", "label") if k not in f]
        if want_normals and "normal" not in f:
            missing.append("normal")
        if missing:
            raise ValueError(
                f"{path}: missing HDF5 dataset(s) {missing}; found {sorted(f.keys())}, expected "
                "'data' [S, P, 3] float and 'label' [S] int"
            )
        try:
            data = f["data"][()]
            label = f["label"][()]
            normal = f["normal"][()] if want_normals else None
        except (OSError, TypeError, AttributeError) as err:
            raise ValueError(
                f"{path}: cannot read its datasets ({err}); the file is corrupt"
            ) from None
    if data.ndim != 3 or data.shape[2] != 3 or data.dtype.kind != "f":
        raise ValueError(
            f"{path}: dataset 'data' must be float [S, P, 3], got shape {data.shape} dtype "
            f"{data.dtype}"
        )
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 1 or label.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: dataset 'label' must be int [S] (or [S, 1]), got shape {label.shape} dtype "
            f"{label.dtype}"
        )
    if len(label) != len(data):
        raise ValueError(
            f"{path}: 'label' has {len(label)} entries but 'data' has {len(data)} clouds"
        )
    if normal is not None and normal.shape != data.shape:
        raise ValueError(
            f"{path}: dataset 'normal' must have the shape of 'data' {data.shape}, got "
            f"{normal.shape}"
        )
    return data, label.astype(np.int64), normal


def _check_labels(labels: np.ndarray, num_classes: int, path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{path}: labels must lie in [0, {num_classes}), got range "
            f"[{labels.min()}, {labels.max()}]"
        )


def _check_finite(data: np.ndarray, path) -> None:
    bad = ~np.isfinite(data).all(axis=tuple(range(1, data.ndim)))
    if bad.any():
        raise ValueError(
            f"{path}: cloud {int(np.flatnonzero(bad)[0])} has NaN/Inf coordinates "
            f"({int(bad.sum())} clouds affected)"
        )


def _read_names(path: Path) -> list[str]:
    try:
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as a text list ({err})") from None
    if not names:
        raise ValueError(f"{path}: is empty, expected one name per line")
    return names


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}")
    return split


# --------------------------------------------------------------------------- ScanObjectNN
class ScanObjectNN(PointCloudDataset):
    """ScanObjectNN (Uy et al., ICCV 2019): 15 classes of real scanned objects, official h5 files.

    Reads ``<root>/<folder>/{training,test}_objectdataset<suffix>.h5`` (or the same under
    ``<root>/h5_files/``), each with ``data`` float32 [S, 2048, 3] and ``label`` [S]:

    ============  ===================  ============================================
    variant       folder               file (train / test)
    ============  ===================  ============================================
    OBJ_BG        ``main_split``       ``*_objectdataset.h5``
    OBJ_ONLY      ``main_split_nobg``  ``*_objectdataset.h5``
    PB_T25        ``main_split``       ``*_objectdataset_augmented25_norot.h5``
    PB_T25_R      ``main_split``       ``*_objectdataset_augmented25rot.h5``
    PB_T50_R      ``main_split``       ``*_objectdataset_augmentedrot.h5``
    PB_T50_RS     ``main_split``       ``*_objectdataset_augmentedrot_scale75.h5``
    ============  ===================  ============================================

    PB_T50_RS is the hardest variant and PointMLP's benchmark. The files come from the dataset's
    site (https://hkust-vgd.github.io/scanobjectnn/), whose terms require registration; nothing is
    downloaded here.

    Args:
        root: folder holding ``main_split/`` (the unzipped ``h5_files``), or its parent; default
            ``data_root() / "scanobjectnn"``.
        variant: one of :data:`SCANOBJECTNN_VARIANTS`.
        split: ``"train"`` or ``"test"``.
        num_points: points per cloud (of 2048 stored); ``None`` for all.
        sampling: ``"first"``, ``"fps"`` or ``"random"`` (see :class:`PointCloudDataset`).
        transform: per-cloud transform; :func:`reference_train_transform` is PointMLP's training
            augmentation (use it for ``split="train"``, not for testing).
        seed: base seed of the per-item generators.

    Raises:
        FileNotFoundError: the variant's file is missing (names the paths looked at).
        ValueError: the file is not HDF5, lacks ``data``/``label``, has wrong shapes, labels
            outside [0, 15) or non-finite coordinates; or a bad argument.

    Shapes:
        item: ``(points [num_points, 3] float32, label int)``.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        variant: str = "PB_T50_RS",
        split: str = "train",
        num_points: int | None = 1024,
        sampling: str = "first",
        transform: Callable | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(num_points, sampling, transform, seed)
        if variant not in SCANOBJECTNN_VARIANTS:
            raise ValueError(
                f"`variant` must be one of {list(SCANOBJECTNN_VARIANTS)}, got {variant!r}"
            )
        _check_split(split)
        self.variant = variant
        self.split_name = split
        self.classes = list(SCANOBJECTNN_CLASSES)
        path = self.find_file(root, variant, split)
        self._source = str(path)
        data, labels, _ = _read_h5(path)
        _check_labels(labels, len(self.classes), path)
        _check_finite(data, path)
        self._array = np.ascontiguousarray(data, dtype=np.float32)
        self._finish(labels, data.shape[1])

    @staticmethod
    def expected_paths(root: str | Path | None, variant: str, split: str) -> list[Path]:
        """The paths where the file of ``variant``/``split`` is looked for, in order."""
        folder, suffix = SCANOBJECTNN_VARIANTS[variant]
        prefix = "training" if split == "train" else "test"
        rel = Path(folder) / f"{prefix}_objectdataset{suffix}.h5"
        base = Path(root).expanduser() if root is not None else data_root(False) / "scanobjectnn"
        return [base / rel, base / "h5_files" / rel]

    @classmethod
    def find_file(cls, root, variant: str, split: str) -> Path:
        """Return the first existing expected path, or raise ``FileNotFoundError`` naming them."""
        paths = cls.expected_paths(root, variant, split)
        for p in paths:
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"ScanObjectNN {variant} {split} file not found; looked for "
            + " and ".join(str(p) for p in paths)
            + f". Get h5_files.zip from the dataset's site {SCANOBJECTNN_URL} (its terms require "
            "registration), unzip it and pass the folder holding main_split/ as `root` "
            "(or --data-root)"
        )


# --------------------------------------------------------------------------- ModelNet40
_NPZ_RE = re.compile(r"^modelnet40_(train|test)_(\d+)\.npz$")


class ModelNet40(PointCloudDataset):
    """ModelNet40 (Wu et al., CVPR 2015): 40 classes of CAD shapes, from any of three packagings.

    ``layout`` (``"auto"`` tries them in this order):

    * ``"npz"``: compact files ``modelnet40_<split>_<P>.npz`` (``points`` float [S, P, 3],
      ``labels`` [S], ``classes``, optional ``names``), like ``modelnet40_train_1024.npz`` in the
      shared data folder, which holds the official **train split only** (use :meth:`split` for a
      validation set). ``root`` may also be one ``.npz`` file holding both splits with a
      ``split`` array of ``"train"``/``"test"`` (the bundled sample, :func:`modelnet40_sample`).
    * ``"ply_hdf5"``: PointNet's ``modelnet40_ply_hdf5_2048/ply_data_<split><k>.h5`` (``data``
      [S, 2048, 3], ``label`` [S, 1], optional ``normal``) with ``shape_names.txt``.
    * ``"normal_resampled"``: PointNet++'s ``modelnet40_normal_resampled/`` with
      ``modelnet40_shape_names.txt``, ``modelnet40_<split>.txt`` (one shape id per line, such as
      ``airplane_0001``) and ``<class>/<shape id>.txt`` files of ``x,y,z,nx,ny,nz`` lines
      (10,000 points). These text files are parsed when an item is first read and the sampled
      cloud is cached in memory (``sampling="random"`` re-reads the file each time).

    Args:
        root: data folder (or a folder of the layout, or an ``.npz`` file); default
            :func:`~pointctx.datasets.data_root`.
        split: ``"train"`` or ``"test"``.
        num_points: points per cloud; ``None`` for all stored.
        sampling: ``"first"``, ``"fps"`` or ``"random"`` (see :class:`PointCloudDataset`).
        transform: per-cloud transform (e.g. :func:`reference_train_transform` for training).
        layout: ``"auto"``, ``"npz"``, ``"ply_hdf5"`` or ``"normal_resampled"``.
        use_normals: return xyz + normals [n, 6] (``ply_hdf5`` with a ``normal`` dataset and
            ``normal_resampled`` only).
        seed: base seed of the per-item generators.

    Raises:
        FileNotFoundError: no file of the layout(s) exists (names the paths looked at).
        ValueError: a file is corrupt or wrongly shaped, labels out of range, or a bad argument.

    Shapes:
        item: ``(points [num_points, 3 or 6] float32, label int)``.
    """

    LAYOUTS = ("npz", "ply_hdf5", "normal_resampled")

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        num_points: int | None = 1024,
        sampling: str = "first",
        transform: Callable | None = None,
        layout: str = "auto",
        use_normals: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(num_points, sampling, transform, seed)
        _check_split(split)
        if layout != "auto" and layout not in self.LAYOUTS:
            raise ValueError(f"`layout` must be one of {['auto', *self.LAYOUTS]}, got {layout!r}")
        self.split_name = split
        self.use_normals = bool(use_normals)
        base = Path(root).expanduser() if root is not None else data_root()
        layouts = self.LAYOUTS if layout == "auto" else (layout,)
        looked: list[str] = []
        for lay in layouts:
            found = getattr(self, f"_find_{lay}")(base, split, looked)
            if found is not None:
                self.layout = lay
                getattr(self, f"_load_{lay}")(found, split)
                return
        hint = ""
        if split == "test" and any("modelnet40_train_" in s for s in looked if Path(s).exists()):
            hint = (
                " The folder holds only the official train split (modelnet40_train_*.npz); "
                "carve a validation set with ModelNet40(split='train').split(val_fraction)."
            )
        raise FileNotFoundError(
            f"ModelNet40 {split} data not found under {base}; looked for: " + "; ".join(looked)
            + "." + hint + f" ModelNet40 comes from {MODELNET40_URL} (academic use); the "
            "ply_hdf5_2048 and normal_resampled packagings are those of PointNet / PointNet++."
        )

    # ---- npz
    def _find_npz(self, base: Path, split: str, looked: list[str]):
        if base.suffix == ".npz":
            looked.append(str(base))
            return base if base.is_file() else None
        looked.append(str(base / f"modelnet40_{split}_<P>.npz"))
        hits = sorted(
            p for p in base.glob(f"modelnet40_{split}_*.npz") if _NPZ_RE.match(p.name)
        ) if base.is_dir() else []
        size = {p: int(_NPZ_RE.match(p.name).group(2)) for p in hits}
        if self.num_points is not None:  # the smallest file with enough points
            hits = sorted((p for p in hits if size[p] >= self.num_points), key=size.get)
        else:  # all points asked for: the largest file
            hits = sorted(hits, key=size.get, reverse=True)
        if split == "test" and not hits:
            looked.extend(str(p) for p in base.glob("modelnet40_train_*.npz"))
        return hits[0] if hits else None

    def _load_npz(self, path: Path, split: str) -> None:
        if self.use_normals:
            raise ValueError(f"{path}: the npz layout holds no normals; use use_normals=False")
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
                missing = {"points", "labels", "classes"} - keys
                if missing:
                    raise ValueError(
                        f"{path}: missing array(s) {sorted(missing)}; found {sorted(keys)}"
                    )
                points, labels = f["points"], f["labels"]
                classes = [str(c) for c in f["classes"]]
                split_arr = f["split"] if "split" in keys else None
                names = f["names"] if "names" in keys else None
        except (OSError, ValueError, EOFError) as err:
            if isinstance(err, ValueError) and str(err).startswith(str(path)):
                raise
            raise ValueError(f"{path}: cannot be read as an .npz file ({err})") from None
        if points.ndim != 3 or points.shape[2] != 3 or points.dtype.kind != "f":
            raise ValueError(
                f"{path}: 'points' must be float [S, P, 3], got shape {points.shape} dtype "
                f"{points.dtype}"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(points):
            raise ValueError(
                f"{path}: 'labels' must be int [S] with S = {len(points)}, got shape "
                f"{labels.shape} dtype {labels.dtype}"
            )
        m = _NPZ_RE.match(path.name)
        if split_arr is not None:
            keep = np.asarray(split_arr).astype(str) == split
            if not keep.any():
                raise ValueError(f"{path}: its 'split' array has no {split!r} entries")
            points, labels = points[keep], labels[keep]
            names = names[keep] if names is not None else None
        elif m is None or m.group(1) != split:
            raise ValueError(
                f"{path}: cannot tell which split it holds (no 'split' array and the name is not "
                f"modelnet40_<train|test>_<P>.npz); {split!r} was asked for"
            )
        _check_labels(labels, len(classes), path)
        _check_finite(points, path)
        self.classes = classes
        self._names = None if names is None else [str(n) for n in names]
        self._source = str(path)
        self._array = points  # kept in its stored dtype (float16 halves memory); cast per item
        self._finish(labels, points.shape[1])

    # ---- ply_hdf5
    def _find_ply_hdf5(self, base: Path, split: str, looked: list[str]):
        for folder in (base / "modelnet40_ply_hdf5_2048", base):
            looked.append(str(folder / f"ply_data_{split}<k>.h5"))
            files = sorted(
                folder.glob(f"ply_data_{split}*.h5"),
                key=lambda p: int(re.sub(r"\D", "", p.stem.split(split)[-1]) or 0),
            ) if folder.is_dir() else []
            if files:
                return files
        return None

    def _load_ply_hdf5(self, files: list[Path], split: str) -> None:
        names_file = files[0].parent / "shape_names.txt"
        if not names_file.is_file():
            raise FileNotFoundError(
                f"{names_file} not found (the class names of {files[0].parent})"
            )
        self.classes = _read_names(names_file)
        datas, labels = [], []
        for path in files:
            data, label, normal = _read_h5(path, want_normals=self.use_normals)
            _check_labels(label, len(self.classes), path)
            _check_finite(data, path)
            if normal is not None:
                data = np.concatenate([data, normal], axis=2)
            if datas and data.shape[1:] != datas[0].shape[1:]:
                raise ValueError(
                    f"{path}: clouds have shape {data.shape[1:]}, but {files[0]} has "
                    f"{datas[0].shape[1:]}"
                )
            datas.append(data.astype(np.float32, copy=False))
            labels.append(label)
        self._names = None
        self._source = ", ".join(str(p) for p in files)
        self._array = np.concatenate(datas, 0)
        self._finish(np.concatenate(labels), self._array.shape[1])

    # ---- normal_resampled
    def _find_normal_resampled(self, base: Path, split: str, looked: list[str]):
        for folder in (base / "modelnet40_normal_resampled", base):
            looked.append(str(folder / f"modelnet40_{split}.txt"))
            if (folder / f"modelnet40_{split}.txt").is_file():
                return folder
        return None

    def _load_normal_resampled(self, folder: Path, split: str) -> None:
        names_file = folder / "modelnet40_shape_names.txt"
        if not names_file.is_file():
            raise FileNotFoundError(f"{names_file} not found (the class names of {folder})")
        self.classes = _read_names(names_file)
        lookup = {c: i for i, c in enumerate(self.classes)}
        shape_ids = _read_names(folder / f"modelnet40_{split}.txt")
        files, labels = [], []
        for sid in shape_ids:
            cname = sid.rsplit("_", 1)[0]
            if cname not in lookup:
                raise ValueError(
                    f"{folder / f'modelnet40_{split}.txt'}: shape id {sid!r} names class "
                    f"{cname!r}, which is not in {names_file.name}"
                )
            files.append(folder / cname / f"{sid}.txt")
            labels.append(lookup[cname])
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(files)} {split} shape files are missing under {folder}, "
                f"e.g. {missing[:3]}"
            )
        self._names = shape_ids
        self._files = files
        self._cache: dict[int, np.ndarray] = {}
        self._source = str(folder)
        first = self._read_txt(0)
        self._finish(np.asarray(labels), first.shape[0])

    def _read_txt(self, row: int) -> np.ndarray:
        path = self._files[row]
        try:
            arr = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except (ValueError, OSError) as err:
            raise ValueError(
                f"{path}: cannot be parsed as 'x,y,z,nx,ny,nz' lines ({err})"
            ) from None
        if arr.shape[1] != 6 or arr.shape[0] < 1:
            raise ValueError(
                f"{path}: expected lines of 6 comma-separated numbers (x,y,z,nx,ny,nz), got an "
                f"array of shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: has NaN/Inf values")
        if hasattr(self, "_points_per_cloud") and arr.shape[0] < self.n_points:
            raise ValueError(
                f"{path}: has {arr.shape[0]} points, fewer than num_points = {self.n_points}"
            )
        return arr if self.use_normals else arr[:, :3]

    def _cloud(self, row: int) -> np.ndarray:
        if self.layout != "normal_resampled":
            return self._array[row]
        return self._cache.get(row) if row in self._cache else self._read_txt(row)

    def _select(self, row, cloud, rng):  # noqa: D102
        out = super()._select(row, cloud, rng)
        if self.layout == "normal_resampled" and self.sampling != "random":
            self._cache[row] = out  # later reads select from the cached subset again
            if self.sampling == "fps":
                self._fps[row] = np.arange(len(out))
        return out


def modelnet40_sample(split: str = "train", **kwargs) -> ModelNet40:
    """The bundled real ModelNet40 sample (``datasets/modelnet40_sample.npz``, no download).

    10 classes (airplane, bed, bottle, car, chair, guitar, lamp, monitor, sofa, toilet) with 40
    train and 10 test shapes each, 1024 points per shape, drawn from the official ModelNet40 train
    split by ``datasets/make_sample.py`` (see ``datasets/README.md``).

    Args:
        split: ``"train"`` (400 shapes) or ``"test"`` (100 shapes).
        **kwargs: passed to :class:`ModelNet40` (``num_points``, ``sampling``, ``transform``...).
    """
    path = bundled_root() / "modelnet40_sample.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; rebuild it with `python datasets/make_sample.py` (needs the "
            "shared modelnet40_train_1024.npz)"
        )
    return ModelNet40(path, split=split, layout="npz", **kwargs)
