"""Transforms for semantic segmentation samples that keep labels aligned with pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_callable, check_int, check_number, check_range, is_int
from ..transforms import ImageTransform

__all__ = ["SegCompose", "Resize", "RandomScaleCrop", "RandomHorizontalFlip", "PixelSubset",
           "check_seg_sample"]


def check_seg_sample(sample) -> tuple[int, int]:
    """Check a segmentation sample dict and return its ``(H, W)``."""
    if not isinstance(sample, dict):
        raise TypeError(f"`sample` must be a dict with 'image', 'label', 'mask', got "
                        f"{type(sample).__name__}")
    for k in ("image", "label", "mask"):
        if k not in sample or not isinstance(sample[k], Tensor):
            raise ValueError(f"`sample` must hold tensors 'image', 'label' and 'mask', got keys "
                             f"{sorted(sample)}")
    image, label, mask = sample["image"], sample["label"], sample["mask"]
    if image.dim() != 3:
        raise ValueError(f"sample 'image' must be [C, H, W], got shape {list(image.shape)}")
    hw = tuple(image.shape[1:])
    if tuple(label.shape) != hw or tuple(mask.shape) != hw or mask.dtype != torch.bool:
        raise ValueError(f"sample 'label' and 'mask' must be [H, W] = {list(hw)} (mask bool), got "
                         f"{list(label.shape)} and {mask.dtype} {list(mask.shape)}")
    return int(hw[0]), int(hw[1])


def _size(size, name: str = "size") -> tuple[int, int]:
    if is_int(size):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2
            and all(is_int(v) and v >= 1 for v in size)):
        raise ValueError(f"`{name}` must be (H, W) with ints >= 1 (or one int), got {size!r}")
    return int(size[0]), int(size[1])


def _resize(sample: dict, h: int, w: int) -> dict:
    image, label, mask = sample["image"], sample["label"], sample["mask"]
    if tuple(image.shape[1:]) == (h, w):
        return dict(sample)
    image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    lab = F.interpolate(label[None, None].float(), size=(h, w), mode="nearest-exact")
    msk = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest-exact")
    return {**sample, "image": image, "label": lab[0, 0].to(label.dtype), "mask": msk[0, 0] > 0.5}


class SegCompose(ImageTransform):
    """Apply segmentation transforms in order (each gets the same ``index``).

    Args:
        *transforms: callables ``t(sample, index=None) -> sample``.
    """

    def __init__(self, *transforms) -> None:
        super().__init__()
        for i, t in enumerate(transforms):
            check_callable(t, f"transforms[{i}]")
        self.transforms = transforms

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of every transform that has one."""
        super().set_epoch(epoch)
        for t in self.transforms:
            if hasattr(t, "set_epoch"):
                t.set_epoch(epoch)

    def __call__(self, sample: dict, index: int | None = None) -> dict:
        """Return the transformed sample."""
        for t in self.transforms:
            sample = t(sample, index=index)
        return sample

    def __repr__(self) -> str:
        return f"SegCompose({', '.join(repr(t) for t in self.transforms)})"


class Resize(ImageTransform):
    """Resize to a fixed ``(H, W)``: image bilinear (antialiased), label and mask nearest.

    Args:
        size: ``(H, W)`` or one int for a square.
        labels: resize the label too; ``False`` keeps it at its original resolution, to score
            predictions upsampled to it (a final evaluation transform: later transforms need
            aligned sizes).
    """

    def __init__(self, size, labels: bool = True) -> None:
        super().__init__()
        self.size, self.labels = _size(size), bool(labels)

    def __call__(self, sample: dict, index: int | None = None) -> dict:
        """Return the resized sample."""
        check_seg_sample(sample)
        out = _resize(sample, *self.size)
        if not self.labels:
            out["label"] = sample["label"]
        return out

    def _params(self):
        return f"size={self.size}, labels={self.labels}"


class RandomScaleCrop(ImageTransform):
    """Random rescale by a factor in ``scale``, then a random ``size`` crop (padding if needed).

    Args:
        size: crop ``(H, W)`` (or one int).
        scale: factor range ``(min, max)`` (or one number), drawn uniformly.
        base_size: ``(H, W)`` that factor 1 maps to, or ``None`` (the sample's size).
        ignore_index: label of padded pixels.
        seed, generator: see :class:`pointctx.transforms.ImageTransform`.
    """

    def __init__(self, size, scale=(0.5, 2.0), base_size=None, ignore_index: int = 255,
                 seed=None, generator=None) -> None:
        super().__init__(seed, generator)
        self.size, self.scale = _size(size), check_range(scale, "scale", 0.0)
        self.base_size = None if base_size is None else _size(base_size, "base_size")
        self.ignore_index = check_int(ignore_index, "ignore_index")

    def __call__(self, sample: dict, index: int | None = None) -> dict:
        """Return the rescaled, cropped sample (``size``)."""
        h, w = check_seg_sample(sample)
        gen = self._generator(index)
        lo, hi = self.scale
        s = lo + (hi - lo) * float(torch.rand(1, generator=gen, dtype=torch.float64))
        bh, bw = self.base_size or (h, w)
        sh, sw = max(1, round(bh * s)), max(1, round(bw * s))
        out = _resize(sample, sh, sw)
        ch, cw = self.size
        ph, pw = max(ch - sh, 0), max(cw - sw, 0)
        if ph or pw:
            out["image"] = F.pad(out["image"], (0, pw, 0, ph), value=0.0)
            out["label"] = F.pad(out["label"], (0, pw, 0, ph), value=self.ignore_index)
            out["mask"] = F.pad(out["mask"], (0, pw, 0, ph), value=False)
        H, W = sh + ph, sw + pw
        top = int(torch.randint(0, H - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, W - cw + 1, (1,), generator=gen))
        for k in ("image", "label", "mask"):
            out[k] = out[k][..., top : top + ch, left : left + cw].contiguous()
        return out

    def _params(self):
        return f"size={self.size}, scale={self.scale}"


class RandomHorizontalFlip(ImageTransform):
    """Mirror image, label and mask left-right with probability ``p``.

    Args:
        p: flip probability in [0, 1].
        seed, generator: see :class:`pointctx.transforms.ImageTransform`.
    """

    def __init__(self, p: float = 0.5, seed=None, generator=None) -> None:
        super().__init__(seed, generator)
        self.p = check_number(p, "p", 0.0, 1.0, type_error=ValueError)

    def __call__(self, sample: dict, index: int | None = None) -> dict:
        """Return the sample, flipped or not."""
        check_seg_sample(sample)
        u = float(torch.rand(1, generator=self._generator(index), dtype=torch.float64))
        if u >= self.p:
            return dict(sample)
        return {**sample, **{k: sample[k].flip(-1) for k in ("image", "label", "mask")}}

    def _params(self):
        return f"p={self.p}"


class PixelSubset(ImageTransform):
    """Observe only a subset of the pixels: ``mask &= mask_transform(image, index)``.

    Args:
        mask: a mask transform of :mod:`pointctx.transforms` (``RandomKeep(0.25, seed=0)``,
            ``BlockMask(0.5, seed=0)``, ``PolygonMask(seed=0)``, ...) or any callable
            ``f(image, index=None) -> [H, W] bool``.
    """

    def __init__(self, mask) -> None:
        super().__init__()
        if not callable(mask):
            raise TypeError(f"`mask` must be a mask transform, got {type(mask).__name__}")
        self.mask = mask

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the mask transform."""
        super().set_epoch(epoch)
        if hasattr(self.mask, "set_epoch"):
            self.mask.set_epoch(epoch)

    def __call__(self, sample: dict, index: int | None = None) -> dict:
        """Return the sample with its mask narrowed."""
        h, w = check_seg_sample(sample)
        m = self.mask(sample["image"], index=index)
        if not isinstance(m, Tensor) or m.dtype != torch.bool or tuple(m.shape) != (h, w):
            raise ValueError(
                f"`mask` transform must return a bool [H, W] = {[h, w]} tensor, got "
                f"{getattr(m, 'dtype', type(m).__name__)} {list(getattr(m, 'shape', []))}")
        return {**sample, "mask": sample["mask"] & m.to(sample["mask"].device)}

    def __repr__(self) -> str:
        return f"PixelSubset({self.mask!r})"
