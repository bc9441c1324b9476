"""RGB-D frames from image files, named presets of the shared data, and point-set datasets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_callable, check_choice, check_number, is_int
from ..ops import grid_pool
from ..rgbd import (
    PinholeIntrinsics,
    RGBDPoints,
    as_intrinsics,
    pose_matrix,
    read_intrinsics,
    rgbd_to_points,
    transform_points,
)
from ._root import data_root

__all__ = ["RGBD_PRESETS", "KINECT_INTRINSICS", "RGBDFrame", "FusedPoints", "read_color",
           "read_depth", "read_poses", "load_rgbd", "rgbd_root", "rgbd_frame", "rgbd_frames",
           "frame_to_points", "fuse_frames", "RGBDDataset"]

#: Intrinsics of the five slambook Kinect frames (from the shared data README).
KINECT_INTRINSICS = PinholeIntrinsics(518.0, 519.0, 325.5, 253.5, 640, 480)

#: Named frames of ``<data_root>/rgbd``: file patterns, depth scale and layout, intrinsics.
RGBD_PRESETS: dict[str, dict] = {
    "tum": {"color": "TUM_color.png", "depth": "TUM_depth.png", "depth_scale": 5000.0,
            "depth_layout": "plain", "intrinsics": "camera_primesense.json", "frames": None},
    "sun": {"color": "SUN_color.jpg", "depth": "SUN_depth.png", "depth_scale": 1000.0,
            "depth_layout": "sun", "intrinsics": "camera_primesense.json", "frames": None},
    "kinect": {"color": "kinect/color/{}.png", "depth": "kinect/depth/{}.pgm",
               "depth_scale": 1000.0, "depth_layout": "plain", "intrinsics": KINECT_INTRINSICS,
               "frames": (1, 2, 3, 4, 5), "poses": "kinect/pose.txt"}}

DEPTH_LAYOUTS = ("plain", "sun")


class RGBDFrame(NamedTuple):
    """One RGB-D frame with its camera.

    Attributes:
        color: uint8 colour, channels last (numpy).
        depth: uint16 raw depth (numpy, SUN layout decoded); 0 means no measurement.
        intrinsics: pinhole intrinsics (with the image size).
        depth_scale: raw depth units per metre.
        pose: camera-to-world transform (float64), or None.
        name: a label, e.g. ``"kinect/3"``.

    Shapes:
        color: [H, W, 3]; depth: [H, W]; pose: [4, 4].
    """

    color: np.ndarray
    depth: np.ndarray
    intrinsics: PinholeIntrinsics
    depth_scale: float
    pose: Tensor | None = None
    name: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return tuple(self.depth.shape)

    def to_image(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The frame as one image tensor: RGB in [0, 1] and depth in metres as channel 3.

        Shapes:
            return: [4, H, W].
        """
        rgb = torch.from_numpy(self.color).permute(2, 0, 1).to(dtype) / 255.0
        z = torch.from_numpy(self.depth.astype(np.float64) / self.depth_scale).to(dtype)
        return torch.cat([rgb, z[None]], 0)


class FusedPoints(NamedTuple):
    """Points of several frames in one (world) coordinate frame.

    Shapes:
        xyz: [N, 3] metres; rgb: [N, 3] in [0, 1].
        frame: [N] int64 source frame index, or ``None`` after voxel pooling.
        pixel: [N] int64 flat pixel index in that frame, or ``None`` after voxel pooling.
    """

    xyz: Tensor
    rgb: Tensor
    frame: Tensor | None
    pixel: Tensor | None


# file readers
def _require_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return path


def _open_image(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError as err:
        raise ValueError(f"{what} file {path} is not an image Pillow can read") from err
    return img


def read_color(path) -> np.ndarray:
    """Read an 8-bit colour image (PNG, JPG, ...) as RGB.

    Shapes:
        return: [H, W, 3] uint8.
    """
    path = _require_file(path, "colour")
    img = _open_image(path, "colour")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        raise ValueError(f"colour file {path} must be an 8-bit colour image, got Pillow mode "
                         f"{img.mode!r} (a depth image?)")
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy


def read_depth(path, layout: str = "plain") -> np.ndarray:
    """Read a 16-bit depth image (PNG or PGM) as uint16 raw depth.

    Args:
        path: the file.
        layout: ``"plain"`` (value = depth) or ``"sun"`` (SUN RGB-D's 3-bit rotation undone).

    Shapes:
        return: [H, W] uint16.
    """
    check_choice(layout, "layout", DEPTH_LAYOUTS)
    path = _require_file(path, "depth")
    img = _open_image(path, "depth")
    if img.mode.startswith("I;16"):
        arr = np.asarray(img)
        arr = arr.astype(np.uint16) if arr.dtype != np.uint16 else arr
    elif img.mode == "I":  # Pillow reads 16-bit PGM (and some PNG) as int32
        arr = np.asarray(img)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ValueError(
                f"depth file {path} holds values in [{lo}, {hi}], outside the 16-bit range")
        arr = arr.astype(np.uint16)
    else:
        raise ValueError(f"depth file {path} must be a single-channel 16-bit image, got Pillow "
                         f"mode {img.mode!r}")
    arr = np.require(arr, requirements=["C", "W"])
    if layout == "sun":
        arr = ((arr >> 3) | (arr << 13)).astype(np.uint16)
    return arr


def read_poses(path) -> Tensor:
    """Read a pose file: one camera-to-world pose per line, ``tx ty tz qx qy qz qw``.

    Shapes:
        return: [F, 7] float64 (convert with :func:`pointctx.rgbd.pose_matrix`).
    """
    path = _require_file(path, "pose")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            vals = [float(v) for v in parts]
        except ValueError as err:
            raise ValueError(f"pose file {path} line {n}: not numbers: {line!r}") from err
        if len(vals) != 7:
            raise ValueError(f"pose file {path} line {n} must hold 7 numbers (tx ty tz qx qy qz "
                             f"qw), got {len(vals)}")
        rows.append(vals)
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 7)


def load_rgbd(color, depth, intrinsics, depth_scale: float = 1000.0, depth_layout: str = "plain",
              pose=None, name: str = "") -> RGBDFrame:
    """Read a colour + depth image pair into an :class:`RGBDFrame`.

    Args:
        color: path of the colour image.
        depth: path of the 16-bit depth image.
        intrinsics: an Open3D json path, or what :func:`pointctx.rgbd.as_intrinsics` accepts.
        depth_scale: raw depth units per metre (1000: millimetres; TUM: 5000).
        depth_layout: ``"plain"`` or ``"sun"``.
        pose: optional camera-to-world pose.
        name: a label for the frame.
    """
    c = read_color(color)
    d = read_depth(depth, depth_layout)
    if isinstance(intrinsics, (str, Path)):
        k = read_intrinsics(intrinsics)
    else:
        k = as_intrinsics(intrinsics)
    if c.shape[:2] != d.shape:
        raise ValueError(f"colour {color} is {c.shape[0]}x{c.shape[1]} (HxW) but depth {depth} is "
                         f"{d.shape[0]}x{d.shape[1]}: colour and depth must have the same size")
    h, w = d.shape
    if (k.width is not None and k.width != w) or (k.height is not None and k.height != h):
        raise ValueError(
            f"`intrinsics` are for a {k.width}x{k.height} (WxH) image but {depth} is {w}x{h}")
    k = k._replace(width=w, height=h)
    if not depth_scale > 0:
        raise ValueError(f"`depth_scale` must be > 0, got {depth_scale}")
    return RGBDFrame(c, d, k, float(depth_scale), None if pose is None else pose_matrix(pose), name)


# presets
def rgbd_root(root=None) -> Path:
    """Folder holding the named RGB-D frames: ``root``, else ``<data_root>/rgbd``."""
    root = Path(root) if root is not None else data_root() / "rgbd"
    if not root.is_dir():
        raise FileNotFoundError(f"RGB-D folder {root} does not exist")
    return root


def _preset(preset: str) -> dict:
    check_choice(preset, "preset", RGBD_PRESETS)
    return RGBD_PRESETS[preset]


def rgbd_frame(preset: str = "tum", frame: int | None = None, root=None) -> RGBDFrame:
    """Read one named frame (see :data:`RGBD_PRESETS`).

    Args:
        preset: ``"tum"``, ``"sun"`` or ``"kinect"``.
        frame: ``"kinect"``: frame number 1..5 (default 1); ``None`` for the other presets.
        root: folder of the frames (default: see :func:`rgbd_root`).
    """
    spec = _preset(preset)
    folder = rgbd_root(root)
    frames = spec["frames"]
    if frames is None:
        if frame is not None:
            raise ValueError(f"preset {preset!r} has a single frame: `frame` must be None")
        color, depth, pose, name = spec["color"], spec["depth"], None, preset
    else:
        frame = frames[0] if frame is None else frame
        if not is_int(frame) or frame not in frames:
            raise ValueError(f"`frame` of preset {preset!r} must be one of {list(frames)}, "
                             f"got {frame!r}")
        frame = int(frame)
        color, depth = spec["color"].format(frame), spec["depth"].format(frame)
        poses = read_poses(folder / spec["poses"])
        if poses.shape[0] < len(frames):
            raise ValueError(f"pose file {folder / spec['poses']} must hold {len(frames)} poses "
                             f"(one per frame), got {poses.shape[0]}")
        pose, name = poses[frames.index(frame)], f"{preset}/{frame}"
    k = spec["intrinsics"]
    if isinstance(k, str):
        k = folder / k
    return load_rgbd(folder / color, folder / depth, k, depth_scale=spec["depth_scale"],
                     depth_layout=spec["depth_layout"], pose=pose, name=name)


def rgbd_frames(preset: str = "kinect", frames: Sequence[int] | None = None, root=None):
    """Read several frames of a preset (default all of them), as a list of :class:`RGBDFrame`."""
    spec = _preset(preset)
    if spec["frames"] is None:
        if frames is not None:
            raise ValueError(f"preset {preset!r} has a single frame: `frames` must be None")
        return [rgbd_frame(preset, root=root)]
    frames = spec["frames"] if frames is None else list(frames)
    return [rgbd_frame(preset, f, root=root) for f in frames]


# points
def _grid_pool(xyz: Tensor, rgb: Tensor, voxel_size: float):
    check_number(voxel_size, "voxel_size", 0.0, min_open=True, type_error=ValueError,
                 must="be a number {bounds} (metres) or None")
    out = grid_pool(xyz, size=float(voxel_size), x=rgb)
    return out.pos, out.x


def frame_to_points(frame: RGBDFrame, depth_trunc: float | None = None,
                    voxel_size: float | None = None, world: bool = True,
                    dtype: torch.dtype = torch.float32) -> RGBDPoints:
    """Back-project a frame to coloured points (pixels without valid depth are skipped).

    Args:
        frame: the frame.
        depth_trunc: largest kept depth in metres (None: all).
        voxel_size: average points per cubic voxel of this edge (``pixel`` is then None).
        world: apply the frame's camera-to-world pose when it has one.
        dtype: floating dtype of ``xyz`` and ``rgb``.

    Shapes:
        return: :class:`pointctx.rgbd.RGBDPoints` (xyz [N, 3], rgb [N, 3], pixel [N]).
    """
    if not isinstance(frame, RGBDFrame):
        raise TypeError(f"`frame` must be an RGBDFrame, got {type(frame).__name__}")
    pts = rgbd_to_points(frame.color, frame.depth, frame.intrinsics, frame.depth_scale, depth_trunc,
                         dtype=dtype)
    xyz = pts.xyz
    if world and frame.pose is not None:
        xyz = transform_points(xyz, frame.pose)
    if voxel_size is not None:
        xyz, rgb = _grid_pool(xyz, pts.rgb, voxel_size)
        return RGBDPoints(xyz, rgb, None)
    return RGBDPoints(xyz, pts.rgb, pts.pixel)


def fuse_frames(frames: Sequence[RGBDFrame], depth_trunc: float | None = None,
                voxel_size: float | None = None, dtype: torch.dtype = torch.float32) -> FusedPoints:
    """Fuse several posed frames into one world-frame point set.

    Args:
        frames: frames that all carry a ``pose``.
        depth_trunc: largest kept depth in metres per frame (None: all).
        voxel_size: voxel edge in metres for :func:`pointctx.ops.grid_pool` (None: all points).
        dtype: floating dtype of ``xyz`` and ``rgb``.

    Shapes:
        return: xyz [N, 3], rgb [N, 3], frame [N], pixel [N].
    """
    frames = list(frames)
    if not frames:
        raise ValueError("`frames` must hold at least one RGBDFrame, got none")
    xyzs, rgbs, ids, pix = [], [], [], []
    for i, fr in enumerate(frames):
        if not isinstance(fr, RGBDFrame):
            raise TypeError(f"`frames[{i}]` must be an RGBDFrame, got {type(fr).__name__}")
        if fr.pose is None:
            raise ValueError(f"`frames[{i}]` ({fr.name or 'unnamed'}) has no pose; fusing needs "
                             "camera-to-world poses")
        p = frame_to_points(fr, depth_trunc=depth_trunc, world=True, dtype=dtype)
        xyzs.append(p.xyz)
        rgbs.append(p.rgb)
        pix.append(p.pixel)
        ids.append(torch.full_like(p.pixel, i))
    xyz, rgb = torch.cat(xyzs), torch.cat(rgbs)
    if voxel_size is not None:
        xyz, rgb = _grid_pool(xyz, rgb, voxel_size)
        return FusedPoints(xyz, rgb, None, None)
    return FusedPoints(xyz, rgb, torch.cat(ids), torch.cat(pix))


# dataset
class RGBDDataset(Dataset):
    """Frames as point-set samples for a DataLoader with :func:`pointctx.collate`.

    Args:
        preset: a preset name (``"tum"``, ``"sun"``, ``"kinect"``) or :class:`RGBDFrame` s.
        frames: frame numbers of the preset (default all).
        root: folder of the preset's files (default: see :func:`rgbd_root`).
        depth_trunc: largest kept depth in metres.
        voxel_size: voxel edge (metres) for :func:`pointctx.ops.grid_pool` downsampling.
        world: apply the frames' poses (world coordinates) when they have one.
        transform: optional callable applied to each sample dict.
    """

    def __init__(self, preset="kinect", frames: Sequence[int] | None = None, root=None,
                 depth_trunc: float | None = None, voxel_size: float | None = None,
                 world: bool = True, transform=None) -> None:
        if isinstance(preset, str):
            self.frames = rgbd_frames(preset, frames, root)
        else:
            if frames is not None or root is not None:
                raise ValueError("`frames` and `root` only apply to a preset name")
            self.frames = list(preset)
            for i, fr in enumerate(self.frames):
                if not isinstance(fr, RGBDFrame):
                    raise TypeError(f"`preset[{i}]` must be an RGBDFrame, got {type(fr).__name__}")
        check_callable(transform, "transform", optional=True)
        self.depth_trunc, self.voxel_size, self.world = depth_trunc, voxel_size, world
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, idx: int) -> dict:
        """Return ``{"pos": [n, 3], "x": [n, 3], "pixel": [n]}`` for frame ``idx``."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} is out of range for {len(self)} frames")
        p = frame_to_points(self.frames[idx], self.depth_trunc, self.voxel_size, world=self.world)
        out = {"pos": p.xyz, "x": p.rgb}
        if p.pixel is not None:
            out["pixel"] = p.pixel
        return out if self.transform is None else self.transform(out)
