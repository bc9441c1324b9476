"""RGB-D back-projection: colour + depth frames to coloured 3-D point sets (pinhole model)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .ops.grid import pixel_coords

__all__ = ["PinholeIntrinsics", "RGBDPoints", "as_intrinsics", "read_intrinsics", "depth_to_metres",
           "valid_depth_mask", "rgbd_to_points", "MAX_METRIC_DEPTH", "pose_matrix",
           "transform_points"]


class PinholeIntrinsics(NamedTuple):
    """Pinhole camera intrinsics in pixels, optionally with the image size they belong to.

    Attributes:
        fx: focal length along columns (x).
        fy: focal length along rows (y).
        cx: principal point column.
        cy: principal point row.
        width: image width ``W`` the intrinsics are for, or ``None`` (not checked).
        height: image height ``H``, or ``None``.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                        dtype=np.float64)

    @classmethod
    def from_matrix(cls, matrix, width: int | None = None, height: int | None = None):
        """Build from a 3x3 camera matrix (see :func:`as_intrinsics` for the checks)."""
        k = as_intrinsics(matrix)
        return cls(k.fx, k.fy, k.cx, k.cy, width, height)

    def to_json(self) -> dict:
        """Open3D ``PinholeCameraIntrinsic`` json dict (``intrinsic_matrix`` column-major)."""
        if self.width is None or self.height is None:
            raise ValueError("`width` and `height` are needed for the Open3D json format, got "
                             f"width={self.width}, height={self.height}")
        return {"width": int(self.width), "height": int(self.height),
                "intrinsic_matrix": [float(v) for v in self.matrix.T.reshape(-1)]}


class RGBDPoints(NamedTuple):
    """Coloured points back-projected from an RGB-D frame (one per pixel with valid depth).

    Shapes:
        xyz: [N, 3] float, metres (camera frame, or world frame after a pose).
        rgb: [N, 3] float in [0, 1].
        pixel: [N] int64 flat pixel index ``row * W + col`` in the source frame.
    """

    xyz: Tensor
    rgb: Tensor
    pixel: Tensor


# intrinsics
def _check_focal(fx: float, fy: float, cx: float, cy: float) -> None:
    vals = {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    for k, v in vals.items():
        if not math.isfinite(v):
            raise ValueError(f"`intrinsics` {k} must be finite, got {v}")
    if fx <= 0 or fy <= 0:
        raise ValueError(f"`intrinsics` focal lengths must be > 0, got fx={fx}, fy={fy}")


def as_intrinsics(intrinsics, name: str = "intrinsics") -> PinholeIntrinsics:
    """Normalise intrinsics given in any accepted form to :class:`PinholeIntrinsics`."""
    if intrinsics is None:
        raise ValueError(f"`{name}` is required: give (fx, fy, cx, cy), a 3x3 camera matrix or a "
                         "PinholeIntrinsics, got None")
    if isinstance(intrinsics, PinholeIntrinsics):
        _check_focal(intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
        return intrinsics
    width = height = None
    if isinstance(intrinsics, dict):
        if "intrinsic_matrix" not in intrinsics:
            raise ValueError(f"`{name}` dict must hold an Open3D 'intrinsic_matrix' (9 numbers, "
                             f"column-major), got keys {sorted(intrinsics)}")
        flat = np.asarray(intrinsics["intrinsic_matrix"], dtype=np.float64).reshape(-1)
        if flat.size != 9:
            raise ValueError(f"`{name}` 'intrinsic_matrix' must hold 9 numbers, got {flat.size}")
        arr = flat.reshape(3, 3).T  # column-major
        width, height = intrinsics.get("width"), intrinsics.get("height")
    elif hasattr(intrinsics, "intrinsic_matrix") and hasattr(intrinsics, "width"):
        arr = np.asarray(intrinsics.intrinsic_matrix, dtype=np.float64)  # open3d object
        width, height = int(intrinsics.width), int(intrinsics.height)
    elif isinstance(intrinsics, Tensor):
        arr = intrinsics.detach().cpu().double().numpy()
    elif isinstance(intrinsics, (np.ndarray, Sequence)) and not isinstance(intrinsics, str):
        try:
            arr = np.asarray(intrinsics, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"`{name}` must be (fx, fy, cx, cy) or a 3x3 matrix of numbers, got "
                             f"{intrinsics!r}") from err
    else:
        raise TypeError(f"`{name}` must be (fx, fy, cx, cy), a 3x3 matrix, a dict or "
                        f"PinholeIntrinsics, got {type(intrinsics).__name__}")
    if arr.shape == (4,):
        fx, fy, cx, cy = (float(v) for v in arr)
    elif arr.shape == (3, 3):
        bottom = arr[2]
        if not np.allclose(bottom, [0.0, 0.0, 1.0]) or arr[1, 0] != 0.0:
            raise ValueError(f"`{name}` 3x3 matrix must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "
                             f"got {arr.tolist()}")
        if arr[0, 1] != 0.0:
            raise ValueError(f"`{name}` has skew K[0, 1] = {arr[0, 1]}; only skew-free pinhole "
                             "cameras are supported")
        fx, fy, cx, cy = float(arr[0, 0]), float(arr[1, 1]), float(arr[0, 2]), float(arr[1, 2])
    else:
        raise ValueError(f"`{name}` must be (fx, fy, cx, cy) (shape [4]) or a 3x3 matrix, got "
                         f"shape {list(arr.shape)}")
    _check_focal(fx, fy, cx, cy)
    width = None if width is None else int(width)
    height = None if height is None else int(height)
    return PinholeIntrinsics(fx, fy, cx, cy, width, height)


def read_intrinsics(path) -> PinholeIntrinsics:
    """Read an Open3D ``PinholeCameraIntrinsic`` json file (e.g. ``camera_primesense.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"intrinsics file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"intrinsics file {path} is not valid json: {err}") from err
    if not isinstance(data, dict) or "intrinsic_matrix" not in data:
        raise ValueError(f"intrinsics file {path} must hold an Open3D PinholeCameraIntrinsic json "
                         "object with 'width', 'height' and 'intrinsic_matrix'")
    return as_intrinsics(data, name=f"intrinsics in {path}")


# depth
def _to_tensor(value, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if not arr.flags.writeable:
            arr = arr.copy()
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return torch.from_numpy(arr)
    raise TypeError(f"`{name}` must be a numpy array or torch.Tensor, got {type(value).__name__}")


def _check_depth(depth) -> Tensor:
    d = _to_tensor(depth, "depth")
    if d.dim() != 2:
        raise ValueError(f"`depth` must have shape [H, W] (2 dims), got shape {list(d.shape)}")
    if d.dtype != torch.uint16 and not d.is_floating_point():
        raise ValueError("`depth` must be uint16 (raw sensor units) or floating point (metres "
                         "unless depth_scale is given), got dtype "
                         f"{str(d.dtype).replace('torch.', '')}; convert e.g. 16-bit images read "
                         "as int32 with depth.astype(np.uint16) after checking the range")
    return d


def depth_to_metres(depth, depth_scale: float | None = None) -> Tensor:
    """Convert a depth image to float64 metres: ``z = depth / depth_scale``.

    Args:
        depth: uint16 raw depth or floating point depth.
        depth_scale: raw units per metre (default: 1000 for uint16, 1 for float depth).

    Shapes:
        depth: [H, W]; return: [H, W] float64 (same device).
    """
    d = _check_depth(depth)
    if depth_scale is None:
        depth_scale = 1.0 if d.is_floating_point() else 1000.0
    depth_scale = float(depth_scale)
    if not (math.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"`depth_scale` must be a finite number > 0, got {depth_scale}")
    return d.to(torch.float64) / depth_scale


def valid_depth_mask(depth, depth_scale: float | None = None, depth_trunc: float | None = None):
    """Pixels with a usable depth: ``z > 0``, finite, and ``z <= depth_trunc`` when given.

    Args:
        depth: uint16 raw depth or floating point depth (see :func:`depth_to_metres`).
        depth_scale: raw units per metre (default 1000 for uint16, 1 for float).
        depth_trunc: largest kept depth in metres (``None``: no limit).

    Shapes:
        depth: [H, W]; return: [H, W] bool.
    """
    z = depth_to_metres(depth, depth_scale)
    return _valid(z, depth_trunc)


def _valid(z: Tensor, depth_trunc: float | None) -> Tensor:
    valid = torch.isfinite(z) & (z > 0)
    if depth_trunc is not None:
        depth_trunc = float(depth_trunc)
        if not depth_trunc > 0:
            raise ValueError(f"`depth_trunc` must be > 0 metres or None, got {depth_trunc}")
        valid &= z <= depth_trunc
    return valid


def _check_color(color, h: int, w: int) -> Tensor:
    c = _to_tensor(color, "color")
    if c.dim() != 3 or c.shape[2] != 3:
        raise ValueError(
            f"`color` must have shape [H, W, 3] (channels last), got shape {list(c.shape)}")
    if tuple(c.shape[:2]) != (h, w):
        raise ValueError("`color` and `depth` must have the same size: color is "
                         f"{c.shape[0]}x{c.shape[1]} (HxW), depth is {h}x{w}")
    if c.dtype != torch.uint8 and not c.is_floating_point():
        raise ValueError(f"`color` must be uint8 (0..255) or floating point (0..1), got dtype "
                         f"{str(c.dtype).replace('torch.', '')}")
    if c.is_floating_point() and c.numel():
        finite = c[torch.isfinite(c)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"`color` is floating point with values in [{lo:g}, {hi:g}]: floating "
                             "point colour must lie in [0, 1] (uint8 colour is divided by 255); "
                             "pass color / 255 or the uint8 image")
    return c


#: Largest floating point depth (metres) accepted without an explicit ``depth_scale``: a larger
#: value means millimetres or another unit (structured-light and ToF sensors reach ~10 m).
MAX_METRIC_DEPTH = 100.0


def rgbd_to_points(color, depth, intrinsics, depth_scale: float | None = None,
                   depth_trunc: float | None = None,
                   dtype: torch.dtype = torch.float32) -> RGBDPoints:
    """Back-project an RGB-D frame to coloured camera-frame points (pinhole model).

    Args:
        color: uint8 or floating point colour in [0, 1], channels last.
        depth: uint16 raw depth, or floating point depth.
        intrinsics: ``(fx, fy, cx, cy)``, a 3x3 camera matrix or a :class:`PinholeIntrinsics`.
        depth_scale: raw units per metre (default: 1000 for uint16, 1 for float depth).
        depth_trunc: largest kept depth in metres; None keeps all.
        dtype: floating dtype of ``xyz`` and ``rgb``.

    Shapes:
        color: [H, W, 3]; depth: [H, W]; return: :class:`RGBDPoints` (xyz [N, 3], rgb [N, 3],
        pixel [N]) on the device of ``depth``.
    """
    d = _check_depth(depth)
    h, w = d.shape
    c = _check_color(color, h, w)
    k = as_intrinsics(intrinsics)
    if (k.width is not None and k.width != w) or (k.height is not None and k.height != h):
        raise ValueError(
            f"`intrinsics` are for a {k.width}x{k.height} (WxH) image but the frame is {w}x{h}")
    z = depth_to_metres(d, depth_scale)
    if depth_scale is None and d.is_floating_point():
        finite = z[torch.isfinite(z)]
        far = float(finite.max()) if finite.numel() else 0.0
        if far > MAX_METRIC_DEPTH:
            raise ValueError(f"floating point `depth` is taken as metres, but it reaches {far:g} m "
                             f"(more than {MAX_METRIC_DEPTH:g} m, beyond any RGB-D sensor): for "
                             "depth in millimetres pass depth_scale=1000 (or the raw uint16 "
                             "image); for far metric depth pass depth_scale=1.0 explicitly")
    valid = _valid(z, depth_trunc).reshape(-1)
    pixel = valid.nonzero().squeeze(1)
    if pixel.numel() == 0:
        raise ValueError(
            f"`depth` has no valid pixel: all {h * w} depths are 0, NaN/Inf"
            + ("" if depth_trunc is None else f" or beyond depth_trunc = {depth_trunc} m"))
    zz = z.reshape(-1)[pixel]
    row, col = pixel_coords(pixel, (h, w)).to(torch.float64).unbind(1)
    xyz = torch.stack(((col - k.cx) * zz / k.fx, (row - k.cy) * zz / k.fy, zz), dim=1)
    rgb = c.reshape(h * w, 3).to(pixel.device)[pixel]
    rgb = rgb.to(dtype) / 255.0 if rgb.dtype == torch.uint8 else rgb.to(dtype)
    return RGBDPoints(xyz.to(dtype), rgb, pixel)


# poses
def pose_matrix(pose) -> Tensor:
    """Turn a camera-to-world pose into a 4x4 rigid transform (float64).

    Args:
        pose: ``(tx, ty, tz, qx, qy, qz, qw)`` (TUM ``pose.txt`` layout) or a 4x4 matrix.

    Shapes:
        pose: [7] or [4, 4]; return: [4, 4].
    """
    p = pose.detach().cpu().double() if isinstance(pose, Tensor) else torch.as_tensor(
        np.asarray(pose, dtype=np.float64))
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"`pose` must be finite, got {p.tolist()}")
    if tuple(p.shape) == (4, 4):
        if not torch.allclose(p[3], p.new_tensor([0.0, 0.0, 0.0, 1.0])):
            raise ValueError(f"`pose` 4x4 matrix must end in the row (0, 0, 0, 1), got {p[3]}")
        return p
    if tuple(p.shape) != (7,):
        raise ValueError("`pose` must be (tx, ty, tz, qx, qy, qz, qw) (shape [7]) or a 4x4 matrix, "
                         f"got shape {list(p.shape)}")
    t, q = p[:3], p[3:]
    n = float(q.norm())
    if n == 0.0:
        raise ValueError("`pose` quaternion (qx, qy, qz, qw) must be non-zero, got all zeros")
    x, y, z, w_ = (q / n).tolist()
    r = torch.tensor(
        [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w_), 2 * (x * z + y * w_)],
         [2 * (x * y + z * w_), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w_)],
         [2 * (x * z - y * w_), 2 * (y * z + x * w_), 1 - 2 * (x * x + y * y)]],
        dtype=torch.float64)
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = r
    out[:3, 3] = t
    return out


def transform_points(xyz: Tensor, pose) -> Tensor:
    """Apply a rigid transform to points: ``R p + t`` (computed in float64, returned in dtype).

    Args:
        xyz: points, floating point.
        pose: anything :func:`pose_matrix` accepts.

    Shapes:
        xyz: [N, 3]; return: [N, 3].
    """
    if not isinstance(xyz, Tensor):
        raise TypeError(f"`xyz` must be a torch.Tensor, got {type(xyz).__name__}")
    if xyz.dim() != 2 or xyz.shape[1] != 3 or not xyz.is_floating_point():
        raise ValueError("`xyz` must be a floating point [N, 3] tensor, got shape "
                         f"{list(xyz.shape)} dtype {xyz.dtype}")
    t = pose_matrix(pose).to(xyz.device)
    out = xyz.double() @ t[:3, :3].T + t[:3, 3]
    return out.to(xyz.dtype)
