"""Point-cloud augmentations: numpy transforms of one cloud ``[n, C]`` drawing from a generator."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from .._checks import check_callable, check_range

__all__ = ["PointCloudTransform", "Compose", "RandomScaleShift", "ShufflePoints", "RandomJitter",
           "RandomRotation", "NormalizeUnitSphere", "reference_train_transform"]


class PointCloudTransform:
    """Base class of the transforms here: ``t(points, rng)`` returns a new float32 array.

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
        raise ValueError(f"{who}: `points` must have shape [n, C] with C >= 3 (xyz first), got "
                         f"{tuple(points.shape)}")
    return np.array(points, dtype=np.float32, copy=True)


class Compose(PointCloudTransform):
    """Apply transforms in order, passing the same generator to each.

    Args:
        transforms: :class:`PointCloudTransform` instances, or plain callables ``f(points)``.
    """

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            check_callable(t, f"transforms[{i}]")

    def apply(self, points, rng):
        """Transform one cloud (see :class:`PointCloudTransform`)."""
        for t in self.transforms:
            points = t(points, rng) if isinstance(t, PointCloudTransform) else t(points)
        return points


class RandomScaleShift(PointCloudTransform):
    """Scale xyz by a random factor per axis, then shift by a random offset per axis.

    Args:
        scale: ``(low, high)`` of the scale factor, ``0 < low <= high``.
        shift: ``(low, high)`` of the offset.
        anisotropic: draw each axis independently.
    """

    def __init__(self, scale: tuple[float, float] = (2.0 / 3.0, 3.0 / 2.0),
                 shift: tuple[float, float] = (-0.2, 0.2), anisotropic: bool = True) -> None:
        self.scale, self.shift = check_range(scale, "scale", lo=0.0), check_range(shift, "shift")
        self.anisotropic = bool(anisotropic)

    def apply(self, points, rng):
        """Transform one cloud (see :class:`PointCloudTransform`)."""
        size = 3 if self.anisotropic else 1
        s = rng.uniform(self.scale[0], self.scale[1], size=size)
        t = rng.uniform(self.shift[0], self.shift[1], size=size)
        points[:, :3] = points[:, :3] * s.astype(np.float32) + t.astype(np.float32)
        return points


class ShufflePoints(PointCloudTransform):
    """Randomly permute the points (rows) of a cloud."""

    def apply(self, points, rng):
        """Transform one cloud (see :class:`PointCloudTransform`)."""
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
        self.sigma, self.clip = float(sigma), float(clip)

    def apply(self, points, rng):
        """Transform one cloud (see :class:`PointCloudTransform`)."""
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
        self.axis, self.max_angle = axis, float(max_angle)

    def apply(self, points, rng):
        """Transform one cloud (see :class:`PointCloudTransform`)."""
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

    def apply(self, points, rng):
        """Transform one cloud (see :class:`PointCloudTransform`)."""
        xyz = points[:, :3] - points[:, :3].mean(0, keepdims=True)
        radius = float(np.sqrt((xyz**2).sum(1)).max()) if len(xyz) else 0.0
        points[:, :3] = xyz / radius if radius > 0 else xyz
        return points


def reference_train_transform() -> Compose:
    """PointMLP's training augmentation: :class:`RandomScaleShift` then :class:`ShufflePoints`."""
    return Compose([RandomScaleShift(), ShufflePoints()])
