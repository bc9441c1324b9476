"""A small U-Net: the convolutional baseline for segmentation of images with missing pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int
from ..batch import PointBatch
from ._inputs import as_float
from ._registry import register_model

__all__ = ["UNet"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net for dense prediction on images with missing pixels (zero-fill + mask channel).

    Args:
        num_classes: K output channels.
        in_channels: C image channels (the mask channel is added on top).
        width: channels of the first level; level ``i`` has ``width * 2**i``.
        depth: number of levels (>= 1; ``depth - 1`` poolings).
        mask_channel: append the mask channel (``False``: zero-fill only).

    Shapes:
        images: [B, C, H, W]; mask: [B, H, W] bool; return: [B, K, H, W].
    """

    def __init__(self, num_classes: int = 11, in_channels: int = 3, width: int = 16,
                 depth: int = 4, mask_channel: bool = True) -> None:
        super().__init__()
        for name, v, lo in (("num_classes", num_classes, 1), ("in_channels", in_channels, 1),
                            ("width", width, 1), ("depth", depth, 1)):
            check_int(v, name, lo, type_error=ValueError)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.mask_channel, self.depth = bool(mask_channel), depth
        widths = [width * 2**i for i in range(depth)]
        cin = in_channels + int(self.mask_channel)
        self.down = nn.ModuleList()
        for w in widths:
            self.down.append(_double_conv(cin, w))
            cin = w
        self.up = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth - 1)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward_images(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits for every pixel of (masked) images."""
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError("`images` must be a tensor [B, C, H, W], got "
                             f"{getattr(images, 'dtype', type(images).__name__)} "
                             f"{list(getattr(images, 'shape', []))}")
        images = as_float(images, next(self.parameters()).dtype, image=True)
        b, c, h, w = images.shape
        if c != self.in_channels:
            raise ValueError(f"`images` must have C = {self.in_channels} channels, got {c}")
        if mask is None:
            m = images.new_ones(b, 1, h, w)
        else:
            if not isinstance(mask,
                              Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (b, h, w):
                raise ValueError(f"`mask` must be a bool tensor [B, H, W] = {[b, h, w]}, got "
                                 f"{getattr(mask, 'dtype', type(mask).__name__)} "
                                 f"{list(getattr(mask, 'shape', []))}")
            m = mask[:, None].to(images.dtype)
            images = images * m
        x = torch.cat([images, m], 1) if self.mask_channel else images
        f = 2 ** (self.depth - 1)
        ph, pw = (-h) % f, (-w) % f
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for j, block in enumerate(self.up):
            skip = skips[-2 - j]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)[..., :h, :w]

    def forward(self, inputs, mask: Tensor | None = None, query: PointBatch | None = None):
        """Images -> ``[B, K, H, W]``; pixel-set ``PointBatch`` -> ``[N, K]`` (or at ``query``)."""
        if isinstance(inputs, PointBatch):
            if mask is not None:
                raise ValueError("`mask` applies to image inputs; a PointBatch is its own mask")
            if inputs.pixel is None:
                raise ValueError("a PointBatch input to a CNN must be a pixel set (carry `pixel` "
                                 "and `image_size`, e.g. from PointBatch.from_images)")
            dense = self.forward_images(inputs.to_images(), inputs.mask())
            target = inputs if query is None else query
            if query is not None and (
                query.pixel is None or query.image_size != inputs.image_size
                or query.num_sets != inputs.num_sets
            ):
                raise ValueError("`query` must be a pixel set with the same sets "
                                 f"({inputs.num_sets}) and image size {inputs.image_size}, got "
                                 f"{query.num_sets} sets of size {query.image_size}")
            k, h, w = dense.shape[1:]
            flat = dense.reshape(dense.shape[0], k, h * w)
            return flat[target.batch, :, target.pixel]
        if query is not None:
            raise ValueError("`query` needs a PointBatch input")
        return self.forward_images(inputs, mask)


def _unet(width: int, kwargs: dict) -> UNet:
    kwargs.setdefault("width", width)
    return UNet(**kwargs)


@register_model
def unet_seg(**kwargs) -> UNet:
    """U-Net baseline, width 16, 4 levels (0.488 M parameters at 11 classes)."""
    return _unet(16, kwargs)


@register_model
def unet_small_seg(**kwargs) -> UNet:
    """U-Net baseline, width 24, 4 levels (1.097 M parameters at 11 classes)."""
    return _unet(24, kwargs)


@register_model
def unet_cpu_seg(**kwargs) -> UNet:
    """U-Net baseline, width 13, 4 levels (0.323 M parameters, ``coc_micro_seg`` +- 3 %)."""
    return _unet(13, kwargs)
