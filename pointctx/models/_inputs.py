"""Shared input handling for set models: an image tensor (+ mask) or a ``PointBatch`` -> packed."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import all_finite, check_finite_features, check_positive_int, check_tensor
from ..batch import PointBatch
from ..ops.grid import image_plane, lattice_plane, lattice_sites, pixel_coords, pixel_index, relabel
from ..ops.scatter import scatter_mean

__all__ = ["PackedInput", "pack_input", "pool_pixels", "check_model_points", "pixel_plane",
           "check_nonempty_sets", "as_float", "cast_input", "padded_batch", "unpad"]


def as_float(t: Tensor, dtype: torch.dtype | None = None, image: bool = False) -> Tensor:
    """The dtype policy of every model input tensor."""
    if not t.is_floating_point():
        scaled = t.to(dtype or torch.get_default_dtype())
        return scaled / 255 if image and t.dtype == torch.uint8 else scaled
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def cast_input(inputs, dtype: torch.dtype | None):
    """Images (:func:`as_float`) or a :class:`~pointctx.PointBatch` in the model's ``dtype``."""
    if isinstance(inputs, Tensor):
        return as_float(inputs, dtype, image=True)
    if isinstance(inputs, PointBatch) and dtype is not None and inputs.pos.dtype != dtype:
        return inputs.to(dtype=dtype)
    return inputs


def padded_batch(points, lengths: Tensor | None, features: Tensor | None,
                 dtype: torch.dtype | None) -> PointBatch:
    """A :class:`~pointctx.PointBatch` from padded points, or ``points`` itself if it is one.

    Args:
        points: padded positions or a PointBatch (then ``lengths`` and ``features`` must be None).
        lengths: valid leading rows per set (default: all).
        features: padded features (default: none).
        dtype: the model's floating dtype.

    Shapes:
        points: [B, Nmax, D]; lengths: [B]; features: [B, Nmax, C].
    """
    if isinstance(points, PointBatch):
        if lengths is not None or features is not None:
            raise ValueError("`lengths` and `features` are only for padded tensor inputs; a "
                             "PointBatch carries its sizes and features (x)")
        return points
    if not isinstance(points, Tensor):
        raise TypeError(f"`points` must be a PointBatch or a padded tensor [B, Nmax, D], got "
                        f"{type(points).__name__}")
    if points.dim() != 3:
        raise ValueError(f"padded points must be a tensor [B, Nmax, D], got {tuple(points.shape)}")
    if features is not None:
        features = as_float(check_tensor(features, "features"), dtype)
    return PointBatch.from_padded(as_float(points, dtype), features, lengths=lengths)


def unpad(out: Tensor, pb: PointBatch, nmax: int) -> Tensor:
    """Per-point rows ``out`` of ``pb`` (built by :func:`padded_batch`) back in padded layout.

    Shapes:
        out: [N, K]; return: [B, nmax, K], zeros past each set's length.
    """
    valid = torch.arange(nmax, device=out.device) < pb.sizes[:, None]
    padded = out.new_zeros(pb.num_sets, nmax, out.shape[-1])
    padded[valid] = out
    return padded


class PackedInput(NamedTuple):
    """A batch of point sets, flat, ready for a set model.

    Attributes:
        x: [N, C] point features (C may be 0).
        pos: [N, D] point positions as given (images: the pixel-centre positions).
        batch: [N] int64 sorted set id per point.
        batch_size: number of sets B (empty sets included).
        coords: [N, 2] int64 pixel lattice coordinates ``(row, col)`` for pixel sets, else None.
        grid_size: ``(H, W)`` for pixel sets, else None.
        plane: [N, 2] image-plane positions (x = column, y = row) for pixel sets, else None.
        input_pool: pixels per lattice site per axis (1; ``f`` after :func:`pool_pixels`).
        site: [N0] int64 site of every unpooled input point (:func:`pool_pixels`), else None.
        image_size: ``(H, W)`` of the images for pixel sets (``grid_size`` before pooling).
    """

    x: Tensor
    pos: Tensor
    batch: Tensor
    batch_size: int
    coords: Tensor | None
    grid_size: tuple[int, int] | None
    plane: Tensor | None
    input_pool: int = 1
    site: Tensor | None = None
    image_size: tuple[int, int] | None = None

    @property
    def is_pixel_set(self) -> bool:
        """Whether the points lie on a pixel lattice."""
        return self.coords is not None

    def stem_view(self) -> tuple:
        """``(x, pos, batch, coords, grid_size)`` as the stages read them."""
        pos = self.plane if self.is_pixel_set else self.pos
        return self.x, pos, self.batch, self.coords, self.grid_size


def pool_pixels(packed: PackedInput, factor: int = 1) -> PackedInput:
    """Input pooling of a pixel set: the kept pixels of every ``f x f`` block become one point.

    Args:
        packed: the output of :func:`pack_input`.
        factor: ``f``, pixels per site per axis (1, or a general point set: ``packed`` itself).

    Shapes:
        packed: N0 points; return: N sites (x [N, C], pos [N, D], coords [N, 2]), site [N0].
    """
    f = check_positive_int(factor, "input_pool")
    if f == 1 or not packed.is_pixel_set:
        return packed
    h, w = packed.grid_size
    sizes = (-(-h // f), -(-w // f))  # (rows, cols) of the site lattice
    per_set = sizes[0] * sizes[1]
    cell = torch.div(packed.coords, f, rounding_mode="floor")
    key = pixel_index(cell, sizes, packed.batch)
    site, used = relabel(key, max(packed.batch_size * per_set, 1))
    k = used.numel()
    coords = pixel_coords(used, sizes)
    batch = torch.div(used, per_set, rounding_mode="floor")
    pos = scatter_mean(packed.pos, site, k)
    plane = pos if packed.plane is packed.pos else scatter_mean(packed.plane, site, k)
    return PackedInput(scatter_mean(packed.x, site, k), pos, batch, packed.batch_size, coords,
                       sizes, plane, f, site, packed.image_size)


def check_nonempty_sets(sizes: Tensor, from_images: bool = False) -> None:
    """Raise a ``ValueError`` naming the empty sets (images whose mask keeps no pixel).

    Shapes:
        sizes: [B] points per set.
    """
    if sizes.numel() and not bool((sizes == 0).any()):
        return
    empty = (sizes == 0).nonzero().flatten().tolist()
    if from_images:
        raise ValueError(
            f"`mask` keeps no pixel of image(s) {empty} (of B = {sizes.numel()}): every image "
            "needs at least one kept pixel; leave such images out of the batch")
    raise ValueError(f"every set needs at least one point; got B = {sizes.numel()} sets with empty "
                     f"sets {empty}")


def check_model_points(pb: PointBatch, dtype: torch.dtype | None = None,
                       from_images: bool = False, allow_empty: bool = False) -> PointBatch:
    """The input policy every model applies to its point sets (images are pixel sets)."""
    if dtype is not None and (pb.pos.dtype != dtype or (pb.x is not None and pb.x.dtype != dtype
                                                        and pb.x.is_floating_point())):
        pb = pb.to(dtype=dtype)
    if pb.num_points == 0 or not allow_empty:
        check_nonempty_sets(pb.sizes, from_images)
    if pb.x is not None:
        check_finite_features(pb.x, pb.batch, "images" if from_images else "x",
                              pb.pixel if from_images else None,
                              pb.image_size if from_images else None)
    return pb


def pixel_plane(pb: PointBatch, dtype: torch.dtype, coords: Tensor | None = None) -> Tensor:
    """A pixel set's image-plane positions: its 2-D ``pos`` if in ``dtype``, else from its pixels.

    Shapes:
        coords: [N, 2] ``(row, col)`` of its pixels (optional); return: [N, 2].
    """
    if pb.dim == 2 and pb.pos.dtype == dtype:
        return pb.pos
    size = pb.image_size
    return image_plane(pixel_coords(pb.pixel, size) if coords is None else coords, size, dtype)


def _pack_full_images(images: Tensor, append_pos: bool) -> PackedInput:
    """Full, finite images (no mask): the points of ``PointBatch.from_images``, built directly."""
    b, c, h, w = images.shape
    coords, batch = lattice_sites(b, (h, w), images.device)
    plane = lattice_plane(b, (h, w), images.device, images.dtype)
    n = b * h * w
    if append_pos:
        x = images.new_empty(b, h, w, c + 2)
        x[..., :c].copy_(images.permute(0, 2, 3, 1))
        x[..., c:].copy_(plane.view(b, h, w, 2))
        x = x.view(n, c + 2)
    else:
        x = images.permute(0, 2, 3, 1).reshape(n, c)
    return PackedInput(x, plane, batch, b, coords, (h, w), plane, image_size=(h, w))


def pack_input(inputs, mask: Tensor | None = None, in_channels: int | None = None,
               pos_dim: int | None = None, dtype: torch.dtype | None = None,
               allow_empty: bool = False, append_pos: bool = False) -> PackedInput:
    """Turn an image tensor (+ mask) or a ``PointBatch`` into a :class:`PackedInput`.

    Args:
        inputs: images (uint8 or floating point, see :func:`as_float`) or a ``PointBatch`` (a
            :class:`PackedInput`, already checked where it entered the model, as it is).
        mask: optional bool pixel mask for image inputs (``True`` keeps the pixel).
        in_channels: expected feature channels C (checked when given).
        pos_dim: expected position dimension D (checked when given).
        dtype: the model's floating dtype: inputs of another dtype are cast to it.
        allow_empty: accept empty sets (see :func:`check_model_points`).
        append_pos: append the positions to the features (``x`` gets ``C + D`` channels).

    Shapes:
        inputs: [B, C, H, W] or a PointBatch (pos [N, D], x [N, C]); mask: [B, H, W].
    """
    if isinstance(inputs, PackedInput):
        return inputs
    if isinstance(inputs, PointBatch):
        if mask is not None:
            raise ValueError(
                "`mask` is only for image tensor inputs; a PointBatch already holds only the "
                "kept points (build it with PointBatch.from_images(images, mask))")
        pb = inputs
    elif isinstance(inputs, Tensor):
        if inputs.dim() != 4:
            raise ValueError("image input must have shape [B, C, H, W] (4 dims), got "
                             f"{inputs.dim()} dims with shape {tuple(inputs.shape)}")
        if in_channels is not None and inputs.shape[1] != in_channels:
            raise ValueError(f"image input must have in_channels = {in_channels} channels, got "
                             f"{inputs.shape[1]} (shape {tuple(inputs.shape)})")
        inputs = as_float(inputs, dtype, image=True)
        if (mask is None and inputs.numel() and (pos_dim is None or pos_dim == 2)
                and all_finite(inputs)):
            return _pack_full_images(inputs, append_pos)  # same points, no per-point work
        pb = PointBatch.from_images(inputs, mask)  # checks the mask
    else:
        raise TypeError("`inputs` must be an image tensor [B, C, H, W] or a PointBatch, got "
                        f"{type(inputs).__name__}")

    src, pb = pb, check_model_points(pb, dtype, from_images=isinstance(inputs, Tensor),
                                     allow_empty=allow_empty)
    x = pb.x
    if x is None:
        x = pb.pos.new_zeros(pb.num_points, 0)
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(
            f"the points must have in_channels = {in_channels} feature channels, got "
            f"{x.shape[1]}" + (" (the PointBatch has x = None)" if pb.x is None else ""))
    if pos_dim is not None and pb.dim != pos_dim:
        raise ValueError(f"the points must have pos_dim = {pos_dim} coordinates, got D = {pb.dim} "
                         f"(build the model with pos_dim={pb.dim} for such inputs)")
    coords = grid = plane = None
    if pb.pixel is not None and pb.image_size is not None:
        grid = (int(pb.image_size[0]), int(pb.image_size[1]))
        coords = pixel_coords(pb.pixel, grid)
        plane = pixel_plane(src, pb.pos.dtype, coords)
    if append_pos:
        x = torch.cat([x, pb.pos.to(x.dtype)], 1)
    return PackedInput(x, pb.pos, pb.batch, pb.num_sets, coords, grid, plane, image_size=grid)
