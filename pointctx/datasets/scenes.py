"""Scenes composed of real ModelNet40 shapes: a per-point semantic-segmentation task."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_int, check_number, is_int, is_number
from .base import stratified_split
from .modelnet40 import ModelNet40

__all__ = ["Scene", "ShapeScenes"]

_SPLITS = ("train", "val", "all")


class Scene(NamedTuple):
    """One composed scene (see :meth:`ShapeScenes.scene`).

    Attributes:
        points: [n, 3] float32 positions (z up, floor at z = 0).
        labels: [n] int64 class per point (``len(classes)`` = floor).
        instances: [n] int64 object index per point (0..objects-1; -1 = floor).
        shapes: [objects] int64 rows of the source shapes placed, in placement order.
    """

    points: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    shapes: np.ndarray


def _range(value, name: str, low: float, integer: bool = False) -> tuple:
    if is_number(value):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number or a (min, max) pair, got {value!r}") from None
    cast = int if integer else float
    if integer and not (is_int(a) and is_int(b)):
        raise ValueError(f"`{name}` must hold integers, got {value!r}")
    if not (low <= cast(a) <= cast(b)):
        raise ValueError(f"`{name}` must satisfy {low} <= min <= max, got {value!r}")
    return cast(a), cast(b)


class ShapeScenes(Dataset):
    """Scenes of 4-8 real ModelNet40 shapes on a floor, labelled per point with the shape class.

    Args:
        source: a ModelNet40 ``.npz`` file or a :class:`~pointctx.datasets.ModelNet40` dataset.
        seed: seed of the scene composition (scene ``i`` depends only on ``seed`` and ``i``).
        num_scenes: number of scenes (items).
        split: ``"train"`` or ``"val"`` (a seeded stratified split of the shapes) or ``"all"``.
        val_fraction: share of every class held out for ``"val"``.
        split_seed: seed of the shape split (equal for the train and val datasets).
        classes: the classes that may appear (names or ids; None: all); labels index this list.
        objects: (min, max) objects per scene.
        scale: (min, max) uniform scale of each shape (normalised to radius 1).
        yaw: turn each shape by a random angle about the z axis.
        avoid_overlap: keep the objects' footprint discs apart.
        spacing: floor area per object, in largest footprint diameters.
        floor: add floor points labelled ``len(classes)``.
        floor_points: floor points per scene.
        points_per_object: points kept per object (None: all).
        num_points: points per returned scene (None: all).
        balance: ``"class"`` (uniform class, then shape) or ``"shape"`` (uniform shape).

    Attributes:
        classes: class names (``"floor"`` last when ``floor``).
        num_classes: ``len(classes)``.
        shape_rows: source rows of the shapes this split may use.

    Shapes:
        item: ``(points [n, 3] float32, labels [n] int64)``.
    """

    def __init__(self, source, seed: int = 0, num_scenes: int = 1000, split: str = "train",
                 val_fraction: float = 0.2, split_seed: int = 0, classes: Sequence | None = None,
                 objects=(4, 8), scale=(0.75, 1.25), yaw: bool = True, avoid_overlap: bool = True,
                 spacing: float = 1.0, floor: bool = True, floor_points: int = 1024,
                 points_per_object: int | None = None, num_points: int | None = None,
                 balance: str = "class") -> None:
        for name, v, lo in (("seed", seed, 0), ("num_scenes", num_scenes, 1),
                            ("split_seed", split_seed, 0), ("floor_points", floor_points, 0)):
            check_int(v, name, lo, type_error=ValueError)
        for name, v in (("points_per_object", points_per_object), ("num_points", num_points)):
            if v is not None:
                check_int(v, name, 1, type_error=ValueError)
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {list(_SPLITS)}, got {split!r}")
        if balance not in ("class", "shape"):
            raise ValueError(f"`balance` must be 'class' or 'shape', got {balance!r}")
        check_number(spacing, "spacing", 0.0, min_open=True, type_error=ValueError)
        self.seed, self.num_scenes = int(seed), int(num_scenes)
        self.split, self.objects = split, _range(objects, "objects", 1, integer=True)
        self.scale = _range(scale, "scale", 1e-6)
        self.yaw, self.avoid_overlap = bool(yaw), bool(avoid_overlap)
        self.spacing = float(spacing)
        self.floor, self.floor_points = bool(floor), int(floor_points)
        self.points_per_object, self.num_points = points_per_object, num_points
        self.balance = balance

        labels, source_classes, self._shape = self._open(source)
        self.source_classes = list(source_classes)
        if classes is None:
            chosen = list(range(len(source_classes)))
        else:
            chosen = []
            for c in classes:
                if isinstance(c, str):
                    if c not in self.source_classes:
                        raise ValueError(
                            f"unknown class {c!r} in `classes`; choose from {self.source_classes}")
                    chosen.append(self.source_classes.index(c))
                elif is_int(c) and 0 <= c < len(source_classes):
                    chosen.append(int(c))
                else:
                    raise ValueError(f"`classes` entries must be class names or ids in [0, "
                                     f"{len(source_classes) - 1}], got {c!r}")
            if not chosen or len(set(chosen)) != len(chosen):
                raise ValueError(f"`classes` must be non-empty without repeats, got {classes!r}")
        if split == "all":
            rows = np.arange(len(labels), dtype=np.int64)
        else:
            parts = stratified_split(labels, val_fraction, split_seed)
            rows = parts.train if split == "train" else parts.val
        keep = np.isin(labels[rows], chosen)
        self.shape_rows = rows[keep]
        remap = {c: i for i, c in enumerate(chosen)}
        self._labels = np.array([remap[int(c)] for c in labels[self.shape_rows]], dtype=np.int64)
        self._by_class = [np.flatnonzero(self._labels == i) for i in range(len(chosen))]
        empty = [self.source_classes[chosen[i]] for i, m in enumerate(self._by_class)
                 if len(m) == 0]
        if empty:
            raise ValueError(f"no shape of class(es) {empty} in the {split!r} split of the source; "
                             "drop them from `classes` or use more shapes")
        self.classes = [self.source_classes[c] for c in chosen] + (["floor"] if self.floor else [])

    # ---- source
    @staticmethod
    def _open(source):
        if isinstance(source, ModelNet40):
            ds = source
            labels = np.asarray(ds.labels, dtype=np.int64)

            def shape(row):
                return np.asarray(ds[int(row)][0], dtype=np.float32)[:, :3]

            return labels, list(ds.classes), shape
        if isinstance(source, (str, Path)):
            path = Path(source).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"ShapeScenes source {path} does not exist; pass a ModelNet40 npz (points "
                    "[S, P, 3], labels [S], classes) such as the shared modelnet40_train_1024.npz"
                    " or a ModelNet40 dataset")
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("points", "labels", "classes") if k not in z.files]
                if missing:
                    raise ValueError(f"{path} lacks the array(s) {missing}; it has {z.files}")
                points, labels, classes = z["points"], z["labels"], z["classes"]
            if points.ndim != 3 or points.shape[2] < 3 or len(points) != len(labels):
                raise ValueError(f"{path}: `points` must be [S, P, 3] with one label per shape, "
                                 f"got points {points.shape} and labels {labels.shape}")
            labels = labels.astype(np.int64).reshape(-1)

            def shape(row):
                return points[int(row), :, :3].astype(np.float32)

            return labels, [str(c) for c in classes], shape
        raise TypeError(f"`source` must be a path to a ModelNet40 npz or a ModelNet40 dataset, got "
                        f"{type(source).__name__}")

    # ---- dataset protocol
    @property
    def num_classes(self) -> int:
        """Number of per-point classes (the floor included)."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, idx: int):
        s = self.scene(idx)
        return torch.from_numpy(s.points), torch.from_numpy(s.labels)

    def __repr__(self) -> str:
        return (f"ShapeScenes(split={self.split!r}, scenes={self.num_scenes}, seed={self.seed}, "
                f"shapes={len(self.shape_rows)}, classes={self.num_classes})")

    def scene(self, idx: int) -> Scene:
        """Compose scene ``idx`` (see the class docstring for the exact procedure)."""
        if not is_int(idx):
            raise TypeError(f"scene index must be an int, got {type(idx).__name__}")
        if not -self.num_scenes <= idx < self.num_scenes:
            raise IndexError(f"scene index {idx} out of range for {self.num_scenes} scenes")
        idx = int(idx) % self.num_scenes
        rng = np.random.default_rng([self.seed, idx])
        n = int(rng.integers(self.objects[0], self.objects[1] + 1))
        clouds, labels, rows, radii = [], [], [], []
        for _ in range(n):
            if self.balance == "class":
                c = int(rng.integers(len(self._by_class)))
                members = self._by_class[c]
                local = int(members[int(rng.integers(len(members)))])
            else:
                local = int(rng.integers(len(self.shape_rows)))
            row = int(self.shape_rows[local])
            pts = self._shape(row)
            if self.points_per_object is not None:
                m = self.points_per_object
                pts = pts[rng.choice(len(pts), m, replace=len(pts) < m)]
            pts = pts - pts.mean(0, keepdims=True)
            if self.yaw:
                a = rng.uniform(0.0, 2.0 * math.pi)
                ca, sa = math.cos(a), math.sin(a)
                rot = np.array([[ca, -sa, 0.0], [sa, ca, 0.0], [0.0, 0.0, 1.0]], np.float32)
                pts = pts @ rot.T
            pts = pts * np.float32(rng.uniform(*self.scale))
            pts[:, 2] -= pts[:, 2].min()
            clouds.append(pts)
            labels.append(int(self._labels[local]))
            rows.append(row)
            radii.append(float(np.sqrt(np.square(pts[:, :2]).sum(1)).max()))
        side = self.spacing * 2.0 * max(radii) * math.sqrt(n)
        centers: list[np.ndarray] = []
        for r in radii:
            fails = 0
            while True:
                lo, hi = r, max(side - r, r)
                c = rng.uniform(lo, hi, size=2)
                if not self.avoid_overlap or all(
                        np.hypot(*(c - q)) >= r + rq for q, rq in zip(centers, radii)):
                    break
                fails += 1
                if fails == 50:
                    side *= 1.1
                    fails = 0
            centers.append(c)
        for pts, c in zip(clouds, centers):
            pts[:, :2] += c.astype(np.float32)
        inst = [np.full(len(p), i, np.int64) for i, p in enumerate(clouds)]
        lab = [np.full(len(p), lb, np.int64) for p, lb in zip(clouds, labels)]
        if self.floor and self.floor_points:
            fl = np.zeros((self.floor_points, 3), np.float32)
            fl[:, :2] = rng.uniform(0.0, side, size=(self.floor_points, 2))
            clouds.append(fl)
            inst.append(np.full(self.floor_points, -1, np.int64))
            lab.append(np.full(self.floor_points, len(self._by_class), np.int64))
        points = np.concatenate(clouds)
        points[:, :2] -= np.float32(side / 2.0)
        labels_a, inst_a = np.concatenate(lab), np.concatenate(inst)
        if self.num_points is not None:
            sel = rng.choice(len(points), self.num_points, replace=len(points) < self.num_points)
            points, labels_a, inst_a = points[sel], labels_a[sel], inst_a[sel]
        return Scene(np.ascontiguousarray(points, np.float32), labels_a, inst_a,
                     np.asarray(rows, np.int64))
