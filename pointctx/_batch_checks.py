"""The input checks of :class:`~pointctx.PointBatch`."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_batch, check_device, check_features, check_int, check_pos, check_tensor
from .ops.segment import batch_to_ptr

__all__ = ["check_fields", "check_agree", "check_pixel", "check_index_vector", "check_ptr"]


def check_fields(pos, x, batch, ptr, batch_size, allow_nonfinite: bool) -> Tensor | None:
    """Check the constructor's fields; returns ``ptr`` as int64 (or None)."""
    check_pos(pos, "pos", allow_nonfinite=allow_nonfinite)
    n = pos.shape[0]
    check_features(x, n, "x")
    if x is not None:
        if not x.is_floating_point():
            raise ValueError(f"`x` must be a floating point tensor, got dtype {x.dtype}")
        check_device(x, pos.device, "x", "pos")
    if batch_size is not None:
        check_int(batch_size, "batch_size")
        if batch_size < 0:
            raise ValueError(f"`batch_size` must be >= 0, got {batch_size}")
    if batch is not None:
        check_batch(batch, n, batch_size, "batch")
        check_device(batch, pos.device, "batch", "pos")
    if ptr is not None:
        ptr = check_index_vector(ptr, "ptr", pos.device)
        check_ptr(ptr, n, batch_size)
    return ptr


def check_agree(batch: Tensor, ptr: Tensor) -> None:
    """Check that ``batch`` and ``ptr`` describe the same sets."""
    b = ptr.numel() - 1
    if batch.numel() and int(batch[-1]) >= b:
        raise ValueError(f"`batch` values must be < B = {b} (from `ptr`), got {int(batch[-1])}")
    expected = batch_to_ptr(batch, b)
    if not torch.equal(expected, ptr):
        i = int((expected != ptr).nonzero()[0].item())
        raise ValueError(f"`ptr` is inconsistent with `batch`: `batch` implies ptr[{i}] = "
                         f"{int(expected[i])}, got ptr[{i}] = {int(ptr[i])}")


def check_pixel(pixel, image_size, n: int, device, validate: bool):
    """Check ``pixel`` and ``image_size`` (given together); returns them as int64 and ``(H, W)``."""
    if pixel is None or image_size is None:
        raise ValueError(
            "`pixel` and `image_size` must be given together, got "
            f"pixel={'None' if pixel is None else 'tensor'}, image_size={image_size!r}")
    if len(image_size) != 2:
        raise ValueError(f"`image_size` must be (H, W), got {image_size!r}")
    h, w = (int(v) for v in image_size)
    if validate:
        if h < 1 or w < 1:
            raise ValueError(f"`image_size` must be (H, W) with H, W >= 1, got {(h, w)}")
        pixel = check_index_vector(pixel, "pixel", device)
        if pixel.numel() != n:
            raise ValueError(
                f"`pixel` must have one entry per point: expected {n}, got {pixel.numel()}")
        if n and (int(pixel.min()) < 0 or int(pixel.max()) >= h * w):
            raise ValueError(f"`pixel` values must lie in [0, H*W = {h * w}), got range "
                             f"[{int(pixel.min())}, {int(pixel.max())}]")
    return pixel.long(), (h, w)


def check_index_vector(t, name: str, device: torch.device) -> Tensor:
    """Check a 1-D integer index tensor on ``device`` and return it as int64."""
    check_tensor(t, name)
    if t.dim() != 1:
        raise ValueError(f"`{name}` must have shape [K] (1 dim), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer tensor, got dtype {t.dtype}")
    return check_device(t, device, name, "pos").long()


def check_ptr(ptr: Tensor, num_points: int, batch_size: int | None) -> None:
    """Validate ``ptr`` offsets: leading 0, non-decreasing, last equal to ``num_points``."""
    if ptr.numel() < 1:
        raise ValueError("`ptr` must have B+1 >= 1 entries with a leading 0, got an empty tensor")
    if batch_size is not None and ptr.numel() != batch_size + 1:
        raise ValueError(
            f"`ptr` must have batch_size + 1 = {batch_size + 1} entries, got {ptr.numel()}")
    first = int(ptr[0])
    if first != 0:
        raise ValueError(f"`ptr` must start at 0, got ptr[0] = {first}")
    steps = ptr[1:] - ptr[:-1]
    if steps.numel() and bool((steps < 0).any()):
        i = int((steps < 0).nonzero()[0].item())
        raise ValueError(f"`ptr` must be non-decreasing, but ptr[{i}] = {int(ptr[i])} > "
                         f"ptr[{i + 1}] = {int(ptr[i + 1])}")
    last = int(ptr[-1])
    if last != num_points:
        raise ValueError(
            f"`ptr` must end at the number of points N = {num_points}, got ptr[-1] = {last}")
