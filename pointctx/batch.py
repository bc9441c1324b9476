"""``PointBatch``: a ragged batch of point sets and its converters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._batch_checks import check_agree, check_fields, check_index_vector, check_pixel
from ._checks import check_device, check_features, check_int, check_tensor, optional_import
from .ops.grid import lattice_plane
from .ops.segment import batch_to_ptr, infer_batch_size, local_index, ptr_to_batch

__all__ = ["PointBatch", "Padded"]


class Padded(NamedTuple):
    """Dense, padded view of a :class:`PointBatch` (pytorch3d ``padded`` layout).

    Shapes:
        pos: [B, Nmax, D].
        x: [B, Nmax, C] or ``None``.
        lengths: [B] int64, number of valid (leading) rows per set.
    """

    pos: Tensor
    x: Tensor | None
    lengths: Tensor

    @property
    def mask(self) -> Tensor:
        """Validity mask, ``True`` on real points and ``False`` on padding.

        Shapes:
            return: [B, Nmax] bool.
        """
        nmax = self.pos.shape[1]
        return torch.arange(nmax, device=self.lengths.device) < self.lengths[:, None]


def _as_tensor(value, name: str) -> Tensor:
    """Turn a numpy array into a tensor (sharing memory when writable); pass tensors through."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if not arr.flags.writeable:  # torch warns on read-only arrays (e.g. memory-mapped)
            arr = arr.copy()
        return torch.from_numpy(arr)
    return check_tensor(value, name)


class PointBatch:
    """A batch of ``B`` ragged point sets stored flat, with optional per-point features.

    Args:
        pos: point positions, floating point.
        x: point features, floating point, or None.
        batch: sorted set id per point (stored as int64).
        ptr: set offsets with a leading 0 (stored as int64).
        batch_size: number of sets ``B`` (counts trailing empty sets; saves a host sync).
        allow_nonfinite: accept NaN/Inf in ``pos``.
        validate: run the input checks (host syncs on GPU).
        pixel: flat pixel index ``row * W + col`` of every point (batches from images).
        image_size: ``(H, W)`` of the source images, with ``pixel``.

    Shapes:
        pos: [N, D]; x: [N, C]; batch: [N]; ptr: [B+1]; pixel: [N].
    """

    def __init__(self, pos: Tensor, x: Tensor | None = None, batch: Tensor | None = None,
                 ptr: Tensor | None = None, batch_size: int | None = None,
                 allow_nonfinite: bool = False, validate: bool = True, *,
                 pixel: Tensor | None = None, image_size: tuple[int, int] | None = None) -> None:
        if validate:
            ptr = check_fields(pos, x, batch, ptr, batch_size, allow_nonfinite)
        n = pos.shape[0]

        if batch is None and ptr is None:
            b = 1 if batch_size is None else int(batch_size)
            if validate and b == 0 and n > 0:
                raise ValueError(
                    f"`batch_size` = 0 but `pos` has {n} points and no `batch`/`ptr` was given")
            batch = torch.zeros(n, dtype=torch.long, device=pos.device)
            ptr = torch.zeros(b + 1, dtype=torch.long, device=pos.device)
            if b:
                ptr[1:] = n
        elif ptr is None:
            batch = batch.long()
            ptr = batch_to_ptr(batch, infer_batch_size(batch, batch_size))
        elif batch is None:
            ptr = ptr.long()
            batch = ptr_to_batch(ptr, n)
        else:
            batch, ptr = batch.long(), ptr.long()
            if validate:
                check_agree(batch, ptr)
        if pixel is not None or image_size is not None:
            pixel, image_size = check_pixel(pixel, image_size, n, pos.device, validate)

        self.pos, self.x, self.batch, self.ptr = pos, x, batch, ptr
        self.pixel, self.image_size = pixel, image_size

    # properties
    @property
    def num_sets(self) -> int:
        """Number of sets ``B`` (empty sets included)."""
        return self.ptr.numel() - 1

    @property
    def sizes(self) -> Tensor:
        """Points per set, shape [B] int64 (no host sync)."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def num_points(self) -> int:
        """Total number of points ``N``."""
        return self.pos.shape[0]

    @property
    def dim(self) -> int:
        """Coordinate dimension ``D``."""
        return self.pos.shape[1]

    @property
    def num_channels(self) -> int:
        """Feature channels ``C`` (0 when ``x`` is ``None``)."""
        return 0 if self.x is None else self.x.shape[1]

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.pos.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of ``pos``."""
        return self.pos.dtype

    def __len__(self) -> int:
        return self.num_sets

    def __repr__(self) -> str:
        parts = [f"num_sets={self.num_sets}", f"num_points={self.num_points}", f"dim={self.dim}",
                 f"num_channels={self.num_channels}"]
        if self.image_size is not None:
            parts.append(f"image_size={self.image_size}")
        parts += [f"dtype={str(self.pos.dtype).replace('torch.', '')}", f"device={self.pos.device}"]
        return f"PointBatch({', '.join(parts)})"

    def _replace(self, **fields) -> PointBatch:
        """New batch sharing all tensors except ``fields`` (no validation)."""
        kw = dict(pos=self.pos, x=self.x, batch=self.batch, ptr=self.ptr, pixel=self.pixel,
                  image_size=self.image_size) | fields
        if kw["pixel"] is None:
            kw["image_size"] = None
        return PointBatch(validate=False, **kw)

    def clone(self) -> PointBatch:
        """Deep copy of every tensor."""
        return self._map(lambda t, _: t.clone())

    def to(self, device=None, dtype: torch.dtype | None = None, non_blocking: bool = False):
        """Move to ``device`` and/or cast the floating tensors (``pos``, ``x``) to ``dtype``.

        Args:
            device: target device (``None`` keeps the current one).
            dtype: floating dtype for ``pos`` and ``x`` (``None`` keeps theirs).
            non_blocking: passed to :meth:`torch.Tensor.to`.
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"`dtype` must be a floating point dtype, got {dtype}")
        return self._map(lambda t, cast: t.to(device=device, dtype=dtype if cast else None,
                                              non_blocking=non_blocking))

    def pin_memory(self) -> PointBatch:
        """Copy into pinned host memory (called by ``DataLoader(pin_memory=True)``)."""
        return self._map(lambda t, _: t.pin_memory())

    def _map(self, fn, rows=None) -> PointBatch:
        """Apply ``fn(tensor, is_float)`` to every tensor (``rows``: only to the per-point ones)."""
        def f(t, cast):
            return None if t is None else fn(t, cast)

        out = dict(pos=f(self.pos, True), x=f(self.x, True), pixel=f(self.pixel, False))
        if rows is None:
            out.update(batch=f(self.batch, False), ptr=f(self.ptr, False))
        else:
            out.update(rows)
        return self._replace(**out)

    # lists
    @classmethod
    def from_list(cls, pos_list: Sequence, x_list: Sequence | None = None, **kwargs):
        """Batch a list of point sets.

        Args:
            pos_list: ``B >= 1`` position tensors or arrays (``n_b`` may be 0: an empty set).
            x_list: ``None`` or ``B`` feature tensors or arrays.
            **kwargs: forwarded to the constructor (``allow_nonfinite``, ``validate``).

        Shapes:
            pos_list[b]: [n_b, D]; x_list[b]: [n_b, C]; result: N = sum(n_b).
        """
        if isinstance(pos_list, (Tensor, np.ndarray)) or not isinstance(pos_list, Sequence):
            raise TypeError(
                f"`pos_list` must be a list of [n_b, D] tensors, got {type(pos_list).__name__}")
        if len(pos_list) == 0:
            raise ValueError("`pos_list` must hold at least one set, got an empty list")
        pos_list = [_as_tensor(p, f"pos_list[{i}]") for i, p in enumerate(pos_list)]
        first = pos_list[0]
        for i, p in enumerate(pos_list):
            if p.dim() != 2:
                raise ValueError(
                    f"`pos_list[{i}]` must have shape [n, D] (2 dims), got shape {tuple(p.shape)}")
            if p.shape[1] != first.shape[1]:
                raise ValueError(f"`pos_list[{i}]` must have D = {first.shape[1]} columns like "
                                 f"pos_list[0], got {p.shape[1]}")
            if p.device != first.device:
                raise ValueError(f"`pos_list[{i}]` must be on device {first.device} like "
                                 f"pos_list[0], got {p.device}")
        x = None
        if x_list is not None:
            if len(x_list) != len(pos_list):
                raise ValueError(f"`x_list` must have one entry per set: expected {len(pos_list)}, "
                                 f"got {len(x_list)}")
            x_list = [_as_tensor(v, f"x_list[{i}]") for i, v in enumerate(x_list)]
            for i, (p, v) in enumerate(zip(pos_list, x_list)):
                if v.dim() != 2 or v.shape[0] != p.shape[0]:
                    raise ValueError(f"`x_list[{i}]` must have shape [{p.shape[0]}, C] (rows of "
                                     f"pos_list[{i}]), got shape {tuple(v.shape)}")
                if v.shape[1] != x_list[0].shape[1]:
                    raise ValueError(f"`x_list[{i}]` must have C = {x_list[0].shape[1]} columns "
                                     f"like x_list[0], got {v.shape[1]}")
            x = torch.cat(x_list, 0)
        pos = torch.cat(pos_list, 0)
        sizes = torch.tensor([p.shape[0] for p in pos_list], dtype=torch.long)
        ptr = torch.zeros(len(pos_list) + 1, dtype=torch.long)
        torch.cumsum(sizes, 0, out=ptr[1:])
        ptr = ptr.to(pos.device)
        return cls(pos, x, ptr=ptr, **kwargs)

    def to_list(self) -> list:
        """Per-set views: ``pos_b [n_b, D]``, or ``(pos_b, x_b [n_b, C])`` pairs with features."""
        sizes = self.sizes.tolist()
        pos = list(torch.split(self.pos, sizes, 0))
        return pos if self.x is None else list(zip(pos, torch.split(self.x, sizes, 0)))

    # padded
    @classmethod
    def from_padded(cls, pos: Tensor, x: Tensor | None = None, lengths: Tensor | None = None,
                    mask: Tensor | None = None, **kwargs) -> PointBatch:
        """Build from a padded dense batch (vectorised, no per-set loop).

        Args:
            pos: padded positions.
            x: padded features or ``None``.
            lengths: integer number of leading valid rows per set, each in ``[0, Nmax]``.
            mask: boolean validity mask.
            **kwargs: forwarded to the constructor (``allow_nonfinite``, ``validate``).

        Shapes:
            pos: [B, Nmax, D]; x: [B, Nmax, C]; lengths: [B]; mask: [B, Nmax].
        """
        check_tensor(pos, "pos")
        if pos.dim() != 3:
            raise ValueError(
                f"`pos` must have shape [B, Nmax, D] (3 dims), got shape {tuple(pos.shape)}")
        b, nmax = pos.shape[:2]
        if x is not None:
            check_tensor(x, "x")
            if x.dim() != 3 or x.shape[:2] != pos.shape[:2]:
                raise ValueError(f"`x` must have shape [{b}, {nmax}, C] (like `pos`), got shape "
                                 f"{tuple(x.shape)}")
        if lengths is not None and mask is not None:
            raise ValueError("give either `lengths` or `mask`, not both")
        arange = torch.arange(nmax, device=pos.device)
        if lengths is not None:
            lengths = check_index_vector(lengths, "lengths", pos.device)
            if lengths.numel() != b:
                raise ValueError(f"`lengths` must have one entry per set: expected B = {b}, got "
                                 f"{lengths.numel()}")
            if b and (int(lengths.min()) < 0 or int(lengths.max()) > nmax):
                raise ValueError(f"`lengths` values must lie in [0, Nmax = {nmax}], got range "
                                 f"[{int(lengths.min())}, {int(lengths.max())}]")
            mask = arange < lengths[:, None]
        elif mask is not None:
            check_tensor(mask, "mask")
            if mask.dtype != torch.bool:
                raise ValueError(f"`mask` must be a bool tensor, got dtype {mask.dtype}")
            if tuple(mask.shape) != (b, nmax):
                raise ValueError(
                    f"`mask` must have shape [B, Nmax] = {[b, nmax]}, got {list(mask.shape)}")
            check_device(mask, pos.device, "mask", "pos")
        if mask is None:
            flat_pos = pos.reshape(b * nmax, pos.shape[2])
            flat_x = None if x is None else x.reshape(b * nmax, x.shape[2])
            sizes = torch.full((b,), nmax, dtype=torch.long, device=pos.device)
        else:
            flat_pos = pos[mask]
            flat_x = None if x is None else x[mask]
            sizes = mask.sum(1)
        ptr = torch.zeros(b + 1, dtype=torch.long, device=pos.device)
        torch.cumsum(sizes, 0, out=ptr[1:])
        return cls(flat_pos, flat_x, ptr=ptr, batch_size=b, **kwargs)

    def to_padded(self, fill: float = 0.0, max_points: int | None = None) -> Padded:
        """Dense padded copy (vectorised scatter).

        Args:
            fill: value written to padding rows.
            max_points: padded length ``Nmax`` (>= the largest set; default the largest set).

        Shapes:
            pos: [B, Nmax, D]; x: [B, Nmax, C] or ``None``; lengths: [B] int64.
        """
        lengths = self.sizes
        largest = int(lengths.max()) if lengths.numel() else 0
        if max_points is None:
            nmax = largest
        else:
            check_int(max_points, "max_points")
            if max_points < largest:
                raise ValueError(
                    f"`max_points` must be >= the largest set size {largest}, got {max_points}")
            nmax = max_points
        b = self.num_sets
        rank = local_index(self.batch, self.ptr)
        pos = self.pos.new_full((b, nmax, self.dim), fill)
        pos[self.batch, rank] = self.pos
        x = None
        if self.x is not None:
            x = self.x.new_full((b, nmax, self.num_channels), fill)
            x[self.batch, rank] = self.x
        return Padded(pos, x, lengths)

    # images
    @classmethod
    def from_images(cls, images: Tensor, mask: Tensor | None = None) -> PointBatch:
        """Turn each image into a set of pixel points ("image as set of points").

        Args:
            images: floating point images (convert integer images first).
            mask: bool, ``True`` for pixels to keep; default all.

        Shapes:
            images: [B, C, H, W]; mask: [B, H, W].
            result: pos [N, 2], x [N, C], pixel [N], N = H*W*B without a mask.
        """
        check_tensor(images, "images")
        if images.dim() != 4:
            raise ValueError(f"`images` must have shape [B, C, H, W] (4 dims), got {images.dim()} "
                             f"dims with shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"`images` must be a floating point tensor, got dtype {images.dtype} "
                             "(convert first, e.g. images.float() / 255)")
        b, c, h, w = images.shape
        grid = lattice_plane(1, (h, w), images.device, images.dtype)  # cached: not modified
        feats = images.reshape(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        pix = torch.arange(h * w, device=images.device)
        if mask is None:
            pos = grid.repeat(b, 1)
            x = feats.reshape(b * h * w, c)
            pixel = pix.repeat(b)
            sizes = torch.full((b,), h * w, dtype=torch.long, device=images.device)
        else:
            check_tensor(mask, "mask")
            if tuple(mask.shape) != (b, h, w):
                raise ValueError(f"`mask` must have shape [B, H, W] = {[b, h, w]} (like `images`), "
                                 f"got {list(mask.shape)}")
            if mask.dtype != torch.bool:
                raise ValueError(f"`mask` must be a bool tensor, got dtype {mask.dtype}")
            check_device(mask, images.device, "mask", "images")
            keep = mask.reshape(b, h * w)
            pos = grid.expand(b, h * w, 2)[keep]
            x = feats[keep]
            pixel = pix.expand(b, h * w)[keep]
            sizes = keep.sum(1)
        ptr = torch.zeros(b + 1, dtype=torch.long, device=images.device)
        torch.cumsum(sizes, 0, out=ptr[1:])
        batch = ptr_to_batch(ptr, pos.shape[0])
        return cls(pos, x, batch=batch, ptr=ptr, validate=False, pixel=pixel, image_size=(h, w))

    def _require_pixels(self, what: str) -> tuple[int, int]:
        if self.pixel is None or self.image_size is None:
            raise ValueError(f"`{what}` needs pixel positions, but this PointBatch was not built "
                             "by PointBatch.from_images (its `pixel` / `image_size` are None), so "
                             "there is no image grid to scatter to")
        return self.image_size

    def to_images(self, fill: float = 0.0, x: Tensor | None = None) -> Tensor:
        """Scatter per-point features back onto the image grid.

        Args:
            fill: value of pixels that have no point (masked out in :meth:`from_images`).
            x: per-point features to scatter instead of ``self.x``.

        Shapes:
            x: [N, C'] (default ``self.x`` [N, C]).
            return: [B, C', H, W].
        """
        h, w = self._require_pixels("to_images")
        feats = self.x if x is None else x
        if feats is None:
            raise ValueError("`x` is required: this PointBatch has no features (self.x is None)")
        check_features(feats, self.num_points, "x")
        b = self.num_sets
        out = feats.new_full((b, h * w, feats.shape[1]), fill)
        out[self.batch, self.pixel] = feats
        return out.transpose(1, 2).reshape(b, feats.shape[1], h, w)

    def mask(self) -> Tensor:
        """Pixels that hold a point, for batches built by :meth:`from_images`.

        Shapes:
            return: [B, H, W].
        """
        h, w = self._require_pixels("mask")
        out = torch.zeros(self.num_sets, h * w, dtype=torch.bool, device=self.device)
        out[self.batch, self.pixel] = True
        return out.reshape(self.num_sets, h, w)

    # PyG
    @classmethod
    def from_pyg(cls, data, **kwargs) -> PointBatch:
        """Build from a ``torch_geometric.data.Data`` (one set) or ``Batch``.

        Args:
            data: a PyG ``Data`` or ``Batch`` with ``pos`` set.
            **kwargs: forwarded to the constructor (``allow_nonfinite``, ``validate``).
        """
        pyg_data = _import_pyg()
        if not isinstance(data, pyg_data.Data):
            raise TypeError(f"`data` must be a torch_geometric Data or Batch, got {type(data)}")
        pos = data.pos
        if pos is None:
            raise ValueError("`data.pos` must be a [N, D] tensor, got None")
        batch = data.batch if "batch" in data else None
        ptr = data.ptr if "ptr" in data else None
        batch_size = None
        if isinstance(data, pyg_data.Batch):
            batch_size = int(data.num_graphs)
        elif batch is None and ptr is None:
            batch_size = 1
        return cls(pos, data.x, batch=batch, ptr=ptr, batch_size=batch_size, **kwargs)

    def to_pyg(self):
        """Convert to a ``torch_geometric.data.Batch`` (``pos``, ``x``, ``batch``, ``ptr``)."""
        pyg_data = _import_pyg()
        items = self.to_list()
        if self.x is None:
            datas = [pyg_data.Data(pos=p) for p in items]
        else:
            datas = [pyg_data.Data(pos=p, x=v) for p, v in items]
        return pyg_data.Batch.from_data_list(datas)

    # set ops
    def select(self, set_indices) -> PointBatch:
        """Gather a subset of sets, in the given order (vectorised).

        Args:
            set_indices: set ids (list or integer tensor; repeats, negatives) or a bool mask.

        Shapes:
            set_indices: [K] (or [B] bool); result: K sets.
        """
        b = self.num_sets
        if isinstance(set_indices, Tensor):
            idx = set_indices.to(self.device)
        else:
            idx = torch.as_tensor(list(set_indices), dtype=torch.long, device=self.device)
        if idx.dtype == torch.bool:
            if tuple(idx.shape) != (b,):
                raise ValueError(
                    f"bool `set_indices` must have shape [B] = [{b}], got {list(idx.shape)}")
            idx = idx.nonzero().flatten()
        idx = check_index_vector(idx, "set_indices", self.device)
        if idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < -b or hi >= b:
                raise ValueError(f"`set_indices` values must lie in [-{b}, {b}) for B = {b} sets, "
                                 f"got range [{lo}, {hi}]")
            idx = torch.where(idx < 0, idx + b, idx)
        sizes = self.sizes[idx]
        ptr = torch.zeros(idx.numel() + 1, dtype=torch.long, device=self.device)
        torch.cumsum(sizes, 0, out=ptr[1:])
        total = int(ptr[-1])
        batch = ptr_to_batch(ptr, total)
        rows = self.ptr[idx][batch] + local_index(batch, ptr)
        return self._map(lambda t, _: t[rows], rows=dict(batch=batch, ptr=ptr))

    @classmethod
    def cat(cls, batches: Sequence[PointBatch]) -> PointBatch:
        """Concatenate batches set-wise: the result has ``sum(B_i)`` sets, in order.

        Shapes:
            batches[i]: B_i sets, N_i points; result: sum(B_i) sets, sum(N_i) points.
        """
        batches = list(batches)
        if not batches:
            raise ValueError("`batches` must hold at least one PointBatch, got an empty list")
        first = batches[0]
        for i, pb in enumerate(batches):
            if not isinstance(pb, PointBatch):
                raise TypeError(f"`batches[{i}]` must be a PointBatch, got {type(pb).__name__}")
            if pb.dim != first.dim:
                raise ValueError(
                    f"`batches[{i}]` must have D = {first.dim} like batches[0], got {pb.dim}")
            if (pb.x is None) != (first.x is None) or pb.num_channels != first.num_channels:
                raise ValueError(f"`batches[{i}]` must have x with C = {first.num_channels} like "
                                 f"batches[0] (None counts as 0), got C = {pb.num_channels}")
            check_device(pb.pos, first.device, f"batches[{i}]", "batches[0]")
        set_off = pt_off = 0
        batch_parts, ptr_parts = [], [first.ptr[:1]]
        for pb in batches:
            batch_parts.append(pb.batch + set_off)
            ptr_parts.append(pb.ptr[1:] + pt_off)
            set_off += pb.num_sets
            pt_off += pb.num_points
        same_image = all(pb.pixel is not None and pb.image_size == first.image_size
                         for pb in batches)
        return cls(torch.cat([pb.pos for pb in batches], 0),
                   None if first.x is None else torch.cat([pb.x for pb in batches], 0),
                   batch=torch.cat(batch_parts, 0), ptr=torch.cat(ptr_parts, 0), validate=False,
                   pixel=torch.cat([pb.pixel for pb in batches], 0) if same_image else None,
                   image_size=first.image_size if same_image else None)


def _import_pyg():
    return optional_import("torch_geometric.data", "PointBatch.from_pyg / to_pyg",
                           "torch-geometric")
