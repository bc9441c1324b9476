"""Shared input handling for set models: an image tensor (+ mask) or a ``PointBatch`` -> packed.

Models in :mod:`pointctx.models` accept either

* an image tensor ``[B, C, H, W]`` (floating point) with an optional bool ``mask [B, H, W]``
  (``True`` = keep the pixel): every kept pixel becomes a point
  (:meth:`pointctx.PointBatch.from_images`), or
* a :class:`pointctx.PointBatch`: with pixel info (``pixel`` / ``image_size``, e.g. from
  :meth:`~pointctx.PointBatch.from_images` or RGB-D back-projection) it is a *pixel set*;
  without it a general point set of any dimension ``D``.

:func:`pack_input` turns both into one :class:`PackedInput` with the pixel lattice coordinates
and image-plane positions of pixel sets.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_tensor
from ..batch import PointBatch
from ..ops.grid import lattice_sites

__all__ = ["PackedInput", "pack_input", "plane_positions"]


class PackedInput(NamedTuple):
    """A batch of point sets, flat, ready for a set model.

    Attributes:
        x: [N, C] point features (C may be 0).
        pos: [N, D] point positions as given (image inputs: the pixel-centre positions
            ``(j/(W-1) - 0.5, i/(H-1) - 0.5)``).
        batch: [N] int64 sorted set id per point.
        batch_size: number of sets B (empty sets included).
        coords: [N, 2] int64 pixel lattice coordinates ``(row, col)`` for pixel sets, else None.
        grid_size: ``(H, W)`` for pixel sets, else None.
        plane: [N, 2] image-plane positions in ``[-0.5, 0.5]`` (x = column, y = row) for pixel
            sets, else None.
    """

    x: Tensor
    pos: Tensor
    batch: Tensor
    batch_size: int
    coords: Tensor | None
    grid_size: tuple[int, int] | None
    plane: Tensor | None

    @property
    def is_pixel_set(self) -> bool:
        """Whether the points lie on a pixel lattice."""
        return self.coords is not None


def plane_positions(coords: Tensor, grid_size: tuple[int, int], dtype=None) -> Tensor:
    """Image-plane positions of lattice coordinates, as :meth:`PointBatch.image_grid`.

    Pixel ``(row i, col j)`` maps to ``(j/(W-1) - 0.5, i/(H-1) - 0.5)``; an axis of length 1
    maps to 0.

    Shapes:
        coords: [N, 2] int64 ``(row, col)``; return: [N, 2].
    """
    h, w = grid_size
    dtype = dtype or torch.get_default_dtype()
    row = coords[:, 0].to(dtype)
    col = coords[:, 1].to(dtype)
    y = row / (h - 1) - 0.5 if h > 1 else row * 0
    x = col / (w - 1) - 0.5 if w > 1 else col * 0
    return torch.stack([x, y], 1)


_PLANES: OrderedDict = OrderedDict()
_PLANES_MAX = 8


def _full_image_planes(b: int, h: int, w: int, device, dtype) -> Tensor:
    """Cached image-plane positions of every pixel of ``b`` full ``h x w`` images ([B*H*W, 2])."""
    key = (b, h, w, torch.device(device), dtype)
    hit = _PLANES.get(key)
    if hit is None:
        with torch.inference_mode(False):  # cached: must also serve autograd-enabled calls
            hit = PointBatch.image_grid(h, w, device=device, dtype=dtype).repeat(b, 1)
        _PLANES[key] = hit
        if len(_PLANES) > _PLANES_MAX:
            _PLANES.popitem(last=False)
    else:
        _PLANES.move_to_end(key)
    return hit


def _pack_full_images(images: Tensor, append_pos: bool) -> PackedInput:
    """Full images (no mask): the same points as ``PointBatch.from_images``, built directly.

    Positions, set ids and lattice coordinates depend on the shape only: they come from caches
    (:func:`~pointctx.ops.lattice_sites`), so the reducers recognise the full lattice by
    identity. Only the features are copied (pixel-major, once).
    """
    check_tensor(images, "images")
    if not images.is_floating_point():
        raise ValueError(
            f"`images` must be a floating point tensor, got dtype {images.dtype} "
            "(convert first, e.g. images.float() / 255)"
        )
    b, c, h, w = images.shape
    coords, batch = lattice_sites(b, (h, w), images.device)
    plane = _full_image_planes(b, h, w, images.device, images.dtype)
    n = b * h * w
    if append_pos:
        x = images.new_empty(b, h, w, c + 2)
        x[..., :c].copy_(images.permute(0, 2, 3, 1))
        x[..., c:].copy_(plane.view(b, h, w, 2))
        x = x.view(n, c + 2)
    else:
        x = images.permute(0, 2, 3, 1).reshape(n, c)
    return PackedInput(x, plane, batch, b, coords, (h, w), plane)


def pack_input(
    inputs,
    mask: Tensor | None = None,
    in_channels: int | None = None,
    pos_dim: int | None = None,
    append_pos: bool = False,
) -> PackedInput:
    """Turn an image tensor (+ mask) or a ``PointBatch`` into a :class:`PackedInput`.

    Args:
        inputs: floating point images or a :class:`pointctx.PointBatch`.
        mask: optional bool pixel mask for image inputs (``True`` keeps the pixel); not allowed
            with a ``PointBatch`` (mask the images before building it).
        in_channels: expected feature channels C (checked when given; a ``PointBatch`` without
            ``x`` has C = 0).
        pos_dim: expected position dimension D (checked when given).
        append_pos: append the positions to the features (``x`` gets ``C + D`` channels, the
            model stems' input), in one copy.

    Returns:
        :class:`PackedInput`. For image tensors without a mask, ``pos``, ``plane``, ``batch``
        and ``coords`` are cached per shape and device and shared between calls: do not modify
        them in place.

    Shapes:
        inputs: [B, C, H, W] or a PointBatch (pos [N, D], x [N, C]); mask: [B, H, W].

    Raises:
        TypeError: ``inputs`` is neither a tensor nor a ``PointBatch``.
        ValueError: wrong image rank or dtype, channel count or position dimension mismatch,
            a mask with a ``PointBatch``, or a mask of the wrong shape / dtype.
    """
    if isinstance(inputs, PointBatch):
        if mask is not None:
            raise ValueError(
                "`mask` is only for image tensor inputs; a PointBatch already holds only the "
                "kept points (build it with PointBatch.from_images(images, mask))"
            )
        pb = inputs
    elif isinstance(inputs, Tensor):
        if inputs.dim() != 4:
            raise ValueError(
                f"image input must have shape [B, C, H, W] (4 dims), got {inputs.dim()} dims "
                f"with shape {tuple(inputs.shape)}"
            )
        if in_channels is not None and inputs.shape[1] != in_channels:
            raise ValueError(
                f"image input must have in_channels = {in_channels} channels, got "
                f"{inputs.shape[1]} (shape {tuple(inputs.shape)})"
            )
        if mask is not None and (not isinstance(mask, Tensor) or tuple(mask.shape) != (
                inputs.shape[0], inputs.shape[2], inputs.shape[3])):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"`mask` must have shape [B, H, W] = {[inputs.shape[0], *inputs.shape[2:]]} "
                f"(like the images), got {got}"
            )
        if mask is None:
            if pos_dim is not None and pos_dim != 2:
                raise ValueError(
                    f"the points must have pos_dim = {pos_dim} coordinates, got D = 2 (build "
                    "the model with pos_dim=2 for such inputs)"
                )
            return _pack_full_images(inputs, append_pos)
        pb = PointBatch.from_images(inputs, mask)
    else:
        raise TypeError(
            f"`inputs` must be an image tensor [B, C, H, W] or a PointBatch, got "
            f"{type(inputs).__name__}"
        )

    x = pb.x
    if x is None:
        x = pb.pos.new_zeros(pb.num_points, 0)
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(
            f"the points must have in_channels = {in_channels} feature channels, got "
            f"{x.shape[1]}" + (" (the PointBatch has x = None)" if pb.x is None else "")
        )
    if pos_dim is not None and pb.dim != pos_dim:
        raise ValueError(
            f"the points must have pos_dim = {pos_dim} coordinates, got D = {pb.dim} (build "
            f"the model with pos_dim={pb.dim} for such inputs)"
        )
    coords = grid = plane = None
    if pb.pixel is not None and pb.image_size is not None:
        h, w = pb.image_size
        grid = (int(h), int(w))
        coords = torch.stack(
            [torch.div(pb.pixel, w, rounding_mode="floor"), torch.remainder(pb.pixel, w)], 1
        )
        plane = plane_positions(coords, grid, dtype=pb.pos.dtype)
    if append_pos:
        x = torch.cat([x, pb.pos.to(x.dtype)], 1)
    return PackedInput(x, pb.pos, pb.batch, pb.num_sets, coords, grid, plane)
