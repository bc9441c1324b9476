"""Image -> pixel-set transforms: masks that pick which pixels of an image become points."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .._checks import check_callable, check_int, check_number, check_range, is_int
from ..batch import PointBatch
from ..data import collate
from ..ops.grid import lattice_plane

__all__ = ["ImageTransform", "MaskTransform", "RandomKeep", "BlockMask", "DiscMask", "PolygonMask",
           "ValidDepth", "IntersectMasks", "polygon_mask", "PixelSet", "pixel_collate",
           "image_size_of"]

_KEEP = ("inside", "outside")


def image_size_of(image) -> tuple[int, int]:
    """Check that ``image`` is a ``[C, H, W]`` tensor and return ``(H, W)``."""
    if not isinstance(image, Tensor):
        raise TypeError(f"`image` must be a torch.Tensor [C, H, W], got {type(image).__name__}")
    if image.dim() != 3:
        raise ValueError(
            f"`image` must have shape [C, H, W] (3 dims), got shape {list(image.shape)}")
    h, w = int(image.shape[1]), int(image.shape[2])
    if h < 1 or w < 1:
        raise ValueError(f"`image` must have H, W >= 1, got shape {list(image.shape)}")
    return h, w


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed that depends on all parts (numpy SeedSequence hashing)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class ImageTransform:
    """Base of the seedable per-image transforms (see the module docs for the seeding rules).

    Args:
        seed: base seed (an int >= 0); with a call's ``index`` the draw is a pure function of
            ``(seed, epoch, index)``.
        generator: a ``torch.Generator`` to draw from instead (exclusive with ``seed``).
    """

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        if seed is not None and generator is not None:
            raise ValueError("give `seed` or `generator`, not both")
        if seed is not None:
            check_int(seed, "seed", 0, type_error=ValueError)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
        self.seed = None if seed is None else int(seed)
        self.generator, self.epoch = generator, 0
        self._stream: torch.Generator | None = None

    def set_epoch(self, epoch: int) -> None:
        """Mix ``epoch`` into seeded draws (``(seed, epoch, index)``), for fresh masks per epoch."""
        self.epoch = check_int(epoch, "epoch", 0, type_error=ValueError)

    def _generator(self, index) -> torch.Generator | None:
        if self.generator is not None:
            return self.generator
        if self.seed is None:
            return None
        if index is None:
            if self._stream is None:
                self._stream = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
            return self._stream
        index = check_int(index, "index", 0, type_error=ValueError)
        return torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, index, 1))

    def _params(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._params()
        seed = f"seed={self.seed}" if self.generator is None else "generator=..."
        return f"{type(self).__name__}({extra + ', ' if extra else ''}{seed})"


class MaskTransform(ImageTransform):
    """Base of the mask transforms: ``mask = t(image, index=None)``, ``True`` = pixel kept.

    Shapes:
        image: [C, H, W]; return: [H, W] bool.
    """

    def __call__(self, image: Tensor, index: int | None = None) -> Tensor:
        """Return the keep-mask of ``image`` (``index``: the sample's index, for seeding)."""
        h, w = image_size_of(image)
        gen = self._generator(index)
        mask = self._mask(image, h, w, gen)
        return mask.to(image.device)

    def _mask(self, image: Tensor, h: int, w: int, gen) -> Tensor:
        raise NotImplementedError


def _pixel_centers(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Row and column coordinates (pixel units, float64) of every pixel, each [H, W]."""
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    return rows, cols


def _uniform(lo: float, hi: float, gen, size: int = 1) -> Tensor:
    u = torch.rand(size, generator=gen, dtype=torch.float64)
    return lo + (hi - lo) * u


class RandomKeep(MaskTransform):
    """Keep a uniformly random subset of the pixels: exactly ``k`` of the ``H * W``.

    Args:
        ratio: share of pixels kept, in (0, 1]: ``k = max(1, round(ratio * H * W))``.
        count: keep exactly this many pixels instead (capped at ``H * W``); exclusive with
            ``ratio``.
        seed, generator: see :class:`ImageTransform`.
    """

    def __init__(self, ratio: float | None = None, count: int | None = None, seed=None,
                 generator=None) -> None:
        super().__init__(seed, generator)
        if (ratio is None) == (count is None):
            raise ValueError("give exactly one of `ratio` and `count`")
        if ratio is not None:
            ratio = check_number(ratio, "ratio", 0.0, 1.0, min_open=True, must="lie {bounds}")
        if count is not None:
            check_int(count, "count", 1, type_error=ValueError)
        self.ratio = ratio
        self.count = None if count is None else int(count)

    def num_kept(self, h: int, w: int) -> int:
        """Number of pixels kept in an ``H x W`` image."""
        if self.count is not None:
            return min(self.count, h * w)
        return max(1, min(h * w, round(self.ratio * h * w)))

    def _mask(self, image, h, w, gen):
        k = self.num_kept(h, w)
        keep = torch.zeros(h * w, dtype=torch.bool)
        keep[torch.randperm(h * w, generator=gen)[:k]] = True
        return keep.reshape(h, w)

    def _params(self):
        return f"ratio={self.ratio}" if self.count is None else f"count={self.count}"


class BlockMask(MaskTransform):
    """Random rectangles covering exactly a given fraction of the pixels (BEiT-style blocks).

    Args:
        fraction: share of pixels covered by the blocks, in [0, 1).
        block_area: a block's area as a share of the image, a number or ``(min, max)``.
        aspect: range of block height/width ratios ``(min, max)``.
        keep: ``"outside"`` (default: the blocks are dropped) or ``"inside"``.
        max_blocks: cap on rectangles (the rest is filled with random pixels).
        seed, generator: see :class:`ImageTransform`.
    """

    def __init__(self, fraction: float = 0.5, block_area: float | tuple[float, float] = (0.02, 0.2),
                 aspect: tuple[float, float] = (0.3, 1 / 0.3), keep: str = "outside",
                 max_blocks: int = 1000, seed=None, generator=None) -> None:
        super().__init__(seed, generator)
        self.fraction = check_number(fraction, "fraction", 0.0, 1.0, max_open=True,
                                     must="lie {bounds}")
        self.block_area = check_range(block_area, "block_area", 0.0, 1.0)
        self.aspect = check_range(aspect, "aspect", 0.0)
        if keep not in _KEEP:
            raise ValueError(f"`keep` must be one of {list(_KEEP)}, got {keep!r}")
        self.keep = keep
        self.max_blocks = check_int(max_blocks, "max_blocks", 1, type_error=ValueError)

    def num_covered(self, h: int, w: int) -> int:
        """Number of pixels the blocks cover in an ``H x W`` image."""
        return round(self.fraction * h * w)

    def _mask(self, image, h, w, gen):
        target = self.num_covered(h, w)
        covered = torch.zeros(h, w, dtype=torch.bool)
        done = 0
        log_a = (math.log(self.aspect[0]), math.log(self.aspect[1]))
        for _ in range(self.max_blocks):
            if done >= target:
                break
            area = float(_uniform(*self.block_area, gen)) * h * w
            area = max(1.0, min(area, float(target - done)))
            ratio = math.exp(float(_uniform(*log_a, gen)))
            bh = min(h, max(1, round(math.sqrt(area * ratio))))
            bw = min(w, max(1, round(math.sqrt(area / ratio))))
            top = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
            region = covered[top : top + bh, left : left + bw]
            new = ~region
            n_new = int(new.sum())
            if n_new > target - done:  # trim: first pixels in row-major order
                flat = new.reshape(-1).nonzero().squeeze(1)[: target - done]
                new = torch.zeros(bh * bw, dtype=torch.bool)
                new[flat] = True
                new = new.reshape(bh, bw)
                n_new = target - done
            region |= new
            done += n_new
        if done < target:  # fallback: random uncovered pixels
            free = (~covered).reshape(-1).nonzero().squeeze(1)
            pick = free[torch.randperm(free.numel(), generator=gen)[: target - done]]
            covered.view(-1)[pick] = True
        return ~covered if self.keep == "outside" else covered

    def _params(self):
        return f"fraction={self.fraction}, keep={self.keep!r}"


class DiscMask(MaskTransform):
    """A disc of pixels: pixel centres within ``radius`` of a random (or fixed) centre.

    Args:
        radius: share of half the shorter side (1: inscribed disc), or a ``(min, max)`` range.
        center: ``"random"`` (uniform over the pixel centres) or a fixed ``(row, col)``.
        keep: ``"inside"`` (default: the disc is kept) or ``"outside"`` (the disc is hidden).
        seed, generator: see :class:`ImageTransform`.
    """

    def __init__(self, radius=(0.4, 0.8), center="random", keep: str = "inside", seed=None,
                 generator=None) -> None:
        super().__init__(seed, generator)
        self.radius = check_range(radius, "radius", 0.0)
        if isinstance(center, str):
            if center != "random":
                raise ValueError(f"`center` must be 'random' or (row, col), got {center!r}")
        elif not (isinstance(center, Sequence) and len(center) == 2):
            raise ValueError(f"`center` must be 'random' or (row, col), got {center!r}")
        else:
            center = (float(center[0]), float(center[1]))
        self.center = center
        if keep not in _KEEP:
            raise ValueError(f"`keep` must be one of {list(_KEEP)}, got {keep!r}")
        self.keep = keep

    def draw(self, h: int, w: int, gen=None) -> tuple[float, float, float]:
        """Draw ``(center_row, center_col, radius_pixels)`` for an ``H x W`` image."""
        if self.center == "random":
            cr = float(_uniform(0.0, h - 1.0, gen))
            cc = float(_uniform(0.0, w - 1.0, gen))
        else:
            cr, cc = self.center
        r = float(_uniform(*self.radius, gen)) * min(h, w) / 2.0
        return cr, cc, r

    def _mask(self, image, h, w, gen):
        cr, cc, r = self.draw(h, w, gen)
        rows, cols = _pixel_centers(h, w)
        inside = (rows - cr) ** 2 + (cols - cc) ** 2 <= r * r
        return inside if self.keep == "inside" else ~inside

    def _params(self):
        return f"radius={self.radius}, keep={self.keep!r}"


def polygon_mask(vertices: Tensor, h: int, w: int) -> Tensor:
    """Rasterise a polygon: pixels whose centre lies inside (even-odd rule).

    Args:
        vertices: polygon corners ``(row, col)`` in pixel units, in order.
        h: image height.
        w: image width.

    Shapes:
        vertices: [V, 2]; return: [H, W] bool.
    """
    rows, cols = _pixel_centers(h, w)
    py, px = rows.reshape(-1, 1), cols.reshape(-1, 1)
    v = vertices.to(torch.float64)
    y0, x0 = v[:, 0], v[:, 1]
    y1, x1 = torch.roll(y0, -1), torch.roll(x0, -1)
    straddle = (y0 > py) != (y1 > py)  # [HW, V]
    dy = torch.where(y1 == y0, torch.ones_like(y0), y1 - y0)
    x_cross = x0 + (py - y0) * (x1 - x0) / dy
    crossings = (straddle & (px < x_cross)).sum(1)
    return (crossings % 2 == 1).reshape(h, w)


class PolygonMask(MaskTransform):
    """A random simple polygon of pixels (a star-shaped polygon around a random centre).

    Args:
        num_vertices: vertex count, an int >= 3 or a ``(min, max)`` range (inclusive).
        radius: vertex distance range as a share of half the shorter side.
        irregularity: angular irregularity in [0, 1] (0: evenly spaced angles).
        center: ``"random"`` or a fixed ``(row, col)``.
        keep: ``"inside"`` (default) or ``"outside"``.
        seed, generator: see :class:`ImageTransform`.
    """

    def __init__(self, num_vertices=(3, 10), radius=(0.3, 0.9), irregularity: float = 0.8,
                 center="random", keep: str = "inside", seed=None, generator=None) -> None:
        super().__init__(seed, generator)
        if is_int(num_vertices):
            nv = (int(num_vertices), int(num_vertices))
        elif isinstance(num_vertices, Sequence) and len(num_vertices) == 2:
            nv = (int(num_vertices[0]), int(num_vertices[1]))
        else:
            raise ValueError(f"`num_vertices` must be an int or (min, max), got {num_vertices!r}")
        if not 3 <= nv[0] <= nv[1]:
            raise ValueError(f"`num_vertices` must be >= 3 with min <= max, got {num_vertices!r}")
        self.num_vertices, self.radius = nv, check_range(radius, "radius", 0.0)
        self.irregularity = check_number(irregularity, "irregularity", 0.0, 1.0,
                                         must="lie {bounds}")
        self._disc = DiscMask(radius=1.0, center=center)  # reuses the centre checks
        self.center = self._disc.center
        if keep not in _KEEP:
            raise ValueError(f"`keep` must be one of {list(_KEEP)}, got {keep!r}")
        self.keep = keep

    def draw(self, h: int, w: int, gen=None) -> Tensor:
        """Draw the polygon's vertices ``(row, col)`` in pixel units, shape [V, 2]."""
        cr, cc, _ = self._disc.draw(h, w, gen)
        v = int(torch.randint(self.num_vertices[0], self.num_vertices[1] + 1, (1,), generator=gen))
        a = self.irregularity
        weights = _uniform(1 - a / 2, 1 + a / 2, gen, v)
        gaps = 2 * math.pi * weights / weights.sum()
        angles = float(_uniform(0.0, 2 * math.pi, gen)) + torch.cumsum(gaps, 0) - gaps[0]
        scale = min(h, w) / 2.0
        dist = _uniform(*self.radius, gen, v) * scale
        return torch.stack((cr + dist * torch.sin(angles), cc + dist * torch.cos(angles)), 1)

    def _mask(self, image, h, w, gen):
        inside = polygon_mask(self.draw(h, w, gen), h, w)
        return inside if self.keep == "inside" else ~inside

    def _params(self):
        return f"num_vertices={self.num_vertices}, radius={self.radius}, keep={self.keep!r}"


class ValidDepth(MaskTransform):
    """Keep only pixels with a valid depth (RGB-D images stacked as ``[C, H, W]``).

    Args:
        depth_channel: channel holding the depth (default the last, e.g. RGB-D ``[4, H, W]``).
        depth_scale: depth units per metre of that channel (1: metres).
        depth_trunc: largest kept depth in metres, or ``None``.
    """

    def __init__(self, depth_channel: int = -1, depth_scale: float = 1.0,
                 depth_trunc: float | None = None, seed=None, generator=None) -> None:
        super().__init__(seed, generator)
        check_int(depth_channel, "depth_channel")
        if not (math.isfinite(float(depth_scale)) and depth_scale > 0):
            raise ValueError(f"`depth_scale` must be > 0, got {depth_scale}")
        if depth_trunc is not None and not depth_trunc > 0:
            raise ValueError(f"`depth_trunc` must be > 0 or None, got {depth_trunc}")
        self.depth_channel, self.depth_scale = depth_channel, float(depth_scale)
        self.depth_trunc = None if depth_trunc is None else float(depth_trunc)

    def __call__(self, image: Tensor, index: int | None = None) -> Tensor:
        """Return the valid-depth mask ``[H, W]`` (on the image's device)."""
        image_size_of(image)
        c = image.shape[0]
        if not -c <= self.depth_channel < c:
            raise ValueError(f"`depth_channel` = {self.depth_channel} is out of range for an image "
                             f"with {c} channels")
        z = image[self.depth_channel].to(torch.float64) / self.depth_scale
        valid = torch.isfinite(z) & (z > 0)
        if self.depth_trunc is not None:
            valid &= z <= self.depth_trunc
        return valid

    def _params(self):
        return f"depth_channel={self.depth_channel}, depth_trunc={self.depth_trunc}"


class IntersectMasks(MaskTransform):
    """Keep the pixels every given mask transform keeps (e.g. valid depth and random keep).

    Args:
        *parts: mask transforms (or any callables ``f(image, index=None) -> [H, W] bool``).
    """

    def __init__(self, *parts) -> None:
        super().__init__()
        if not parts:
            raise ValueError("`IntersectMasks` needs at least one mask transform")
        for i, p in enumerate(parts):
            check_callable(p, f"parts[{i}]")
        self.parts = parts

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of every part that has one."""
        super().set_epoch(epoch)
        for p in self.parts:
            if isinstance(p, ImageTransform):
                p.set_epoch(epoch)

    def __call__(self, image: Tensor, index: int | None = None) -> Tensor:
        """Return the intersection of the parts' masks."""
        h, w = image_size_of(image)
        out = torch.ones(h, w, dtype=torch.bool, device=image.device)
        for i, p in enumerate(self.parts):
            m = p(image, index=index)
            if not isinstance(m, Tensor) or m.dtype != torch.bool or tuple(m.shape) != (h, w):
                raise ValueError(f"`parts[{i}]` must return a bool [H, W] = {[h, w]} mask, got "
                                 f"{getattr(m, 'dtype', m)} {list(getattr(m, 'shape', []))}")
            out &= m.to(image.device)
        return out

    def __repr__(self) -> str:
        return f"IntersectMasks({', '.join(repr(p) for p in self.parts)})"


class PixelSet(ImageTransform):
    """Turn an image into a masked pixel-set sample usable by set models *and* CNNs.

    Args:
        mask: a mask transform (or a callable ``f(image, index=None) -> [H, W] bool``);
            ``None`` keeps every pixel.
        image: include the filled image in the sample.
        fill: value of dropped pixels in ``"image"``.

    Shapes:
        image: [C, H, W] floating point.
    """

    def __init__(self, mask=None, image: bool = True, fill: float = 0.0) -> None:
        super().__init__()
        if mask is not None and not callable(mask):
            raise TypeError(f"`mask` must be a mask transform or None, got {type(mask).__name__}")
        self.mask, self.image, self.fill = mask, bool(image), float(fill)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the mask transform."""
        super().set_epoch(epoch)
        if isinstance(self.mask, ImageTransform):
            self.mask.set_epoch(epoch)

    def __call__(self, image: Tensor, index: int | None = None) -> dict:
        """Return the sample dict of ``image`` (``index``: the sample's index, for seeding)."""
        h, w = image_size_of(image)
        if not image.is_floating_point():
            raise ValueError(f"`image` must be floating point (x.float() / 255), got {image.dtype}")
        if self.mask is None:
            mask = torch.ones(h, w, dtype=torch.bool, device=image.device)
        else:
            mask = self.mask(image, index=index)
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (h, w):
                raise ValueError(f"`mask` transform must return a bool [H, W] = {[h, w]} tensor, "
                                 f"got {getattr(mask, 'dtype', type(mask).__name__)} "
                                 f"{list(getattr(mask, 'shape', []))}")
            mask = mask.to(image.device)
        pixel = mask.reshape(-1).nonzero().squeeze(1)
        grid = lattice_plane(1, (h, w), image.device, image.dtype)
        out = {"pos": grid[pixel],
               "x": image.reshape(image.shape[0], h * w)[:, pixel].T.contiguous(), "pixel": pixel,
               "mask": mask}
        if self.image:
            out["image"] = torch.where(mask, image, image.new_tensor(self.fill))
        return out

    def __repr__(self) -> str:
        return f"PixelSet(mask={self.mask!r}, image={self.image}, fill={self.fill})"


def pixel_collate(samples, point_keys: Sequence[str] = ()) -> dict:
    """Batch :class:`PixelSet` sample dicts (a DataLoader ``collate_fn``).

    Args:
        samples: list of sample dicts with ``"pos"``, ``"x"``, ``"pixel"`` and ``"mask"``.
        point_keys: further per-point keys to concatenate.
    """
    if not isinstance(samples, Sequence) or not samples:
        raise ValueError("`samples` must be a non-empty list of PixelSet sample dicts")
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or "pixel" not in s or "mask" not in s:
            got = sorted(s) if isinstance(s, dict) else type(s).__name__
            raise ValueError(f"`samples[{i}]` must be a PixelSet sample dict with 'pixel' and "
                             f"'mask', got {got}")
    sizes = {tuple(s["mask"].shape) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"all samples must share the image size H x W, got {sorted(sizes)}")
    (h, w), = sizes
    out = collate(samples, point_keys=("pixel", *point_keys))
    pts = out["points"]
    out["points"] = PointBatch(pts.pos, pts.x, batch=pts.batch, ptr=pts.ptr, validate=False,
                               pixel=out.pop("pixel"), image_size=(h, w))
    return out
