"""The depthwise convolution of CLUENet on pixel sets and point sets, and its MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_channels, check_positive_int
from ..ops.grid import pixel_index
from ..ops.segment import infer_batch_size
from .layers import conv_init, trunc_linear

__all__ = ["SetDepthwiseConv", "DepthwiseMlp", "knn_slots", "shifted_depthwise"]


def knn_slots(pos: Tensor, batch: Tensor, batch_size: int | None = None, k: int = 9,
              backend: str | None = None) -> Tensor:
    """The ``k`` nearest points of each point's set, nearest first (the point itself first).

    Shapes:
        pos: [N, D]; batch: [N]; return: [N, k] int64.
    """
    from ..ops.knn import knn

    if pos.shape[0] == 0:
        return torch.zeros(0, k, dtype=torch.long, device=pos.device)
    res = knn(pos, pos, k, batch_x=batch, batch_y=batch, batch_size=batch_size, backend=backend)
    index = res.index.long()
    if index.shape[1] < k:
        index = torch.cat([index, index.new_full((index.shape[0], k - index.shape[1]), -1)], 1)
    return index


def shifted_depthwise(img: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Zero-padded depthwise convolution of channels-last images as a sum of shifted products.

    Shapes:
        img: [B, H, W, C]; weight: [C, 1, k, k] (odd k); bias: [C]; return: [B, H, W, C].
    """
    if img.dim() != 4:
        raise ValueError(f"`img` must have shape [B, H, W, C], got {tuple(img.shape)}")
    c = img.shape[-1]
    k = weight.shape[-1]
    if weight.shape != (c, 1, k, k) or k % 2 == 0:
        raise ValueError(f"`weight` must have shape [C, 1, k, k] = [{c}, 1, k, k] with odd k, got "
                         f"{tuple(weight.shape)}")
    if bias.shape != (c,):
        raise ValueError(f"`bias` must have shape [C] = [{c}], got {tuple(bias.shape)}")
    p = k // 2
    _, h, w, _ = img.shape
    padded = F.pad(img, (0, 0, p, p, p, p))
    taps = weight.reshape(weight.shape[0], k * k).t()  # [k * k, C], row dy * k + dx
    out = bias
    for dy in range(k):
        for dx in range(k):
            out = out + padded[:, dy:dy + h, dx:dx + w, :] * taps[dy * k + dx]
    return out


class SetDepthwiseConv(nn.Module):
    """Depthwise ``kernel_size x kernel_size`` convolution (with bias) on pixel or point sets.

    Args:
        channels: channels C.
        kernel_size: odd kernel width (official 3).

    Attributes:
        weight: [C, 1, k, k] (the depthwise ``nn.Conv2d`` layout); bias: [C].

    Shapes:
        x: [N, C]; batch: [N]; coords: [N, 2] int64 ``(row, col)``; neighbors: [N, k*k];
        return: [N, C].
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
        k = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.channels, 1, k, k))
        self.bias = nn.Parameter(torch.zeros(self.channels))
        conv_init(self.weight, k * k)  # fan_out = k * k * C / groups
        taps = list(range(k * k))
        centre = taps.pop(k * k // 2)
        self.register_buffer("_rank_to_tap", torch.tensor([centre] + taps), persistent=False)

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"{self.channels}, kernel_size={self.kernel_size}"

    def forward(self, x: Tensor, batch: Tensor, batch_size: int | None = None,
                coords: Tensor | None = None, grid_size: Sequence[int] | None = None,
                neighbors: Tensor | None = None) -> Tensor:
        """Convolve (lattice mode with ``coords``/``grid_size``, else over ``neighbors``)."""
        check_channels(x, self.channels)
        n, c = x.shape
        k = self.kernel_size
        if coords is not None:
            if grid_size is None or len(grid_size) != 2:
                raise ValueError(f"`grid_size` must be (H, W) with `coords`, got {grid_size!r}")
            if coords.shape != (n, 2):
                raise ValueError(f"`coords` must have shape [N, 2] = [{n}, 2], got "
                                 f"{tuple(coords.shape)}")
            h, w = (int(v) for v in grid_size)
            b = infer_batch_size(batch, batch_size)
            row = pixel_index(coords.long(), (h, w), batch.long())
            img = x.new_zeros(b * h * w, c).index_copy(0, row, x).view(b, h, w, c)
            weight, bias = self.weight.to(img.dtype), self.bias.to(img.dtype)
            if torch.compiler.is_compiling():
                out = shifted_depthwise(img, weight, bias)
            else:
                out = F.conv2d(img.permute(0, 3, 1, 2), weight, bias, padding=k // 2,
                               groups=c).permute(0, 2, 3, 1)
            return out.reshape(b * h * w, c).index_select(0, row)
        if neighbors is None:
            raise ValueError("give `coords` and `grid_size` (pixel sets) or `neighbors` (point "
                             "sets, e.g. from knn_slots)")
        s = k * k
        if neighbors.dim() != 2 or neighbors.shape[0] != n or neighbors.shape[1] > s:
            raise ValueError(f"`neighbors` must have shape [N, S] = [{n}, <= {s}], got "
                             f"{tuple(neighbors.shape)}")
        w_rank = self.weight.view(c, s).index_select(1, self._rank_to_tap).to(x.dtype)
        x_pad = torch.cat([x, x.new_zeros(1, c)], 0)
        idx = torch.where(neighbors >= 0, neighbors, torch.full_like(neighbors, n))
        out = self.bias.to(x.dtype).expand(n, c)
        for r in range(neighbors.shape[1]):
            out = out + x_pad.index_select(0, idx[:, r]) * w_rank[:, r]
        return out


class DepthwiseMlp(nn.Module):
    """The CLUENet MLP: ``fc1 -> depthwise conv -> act -> drop -> fc2 -> drop``.

    Args:
        in_features: channels C.
        hidden_features: hidden channels.
        act_layer: activation class.
        drop: dropout probability.
        dwconv: use the depthwise convolution (official); False gives a plain MLP.

    Shapes:
        x: [N, C]; return: [N, C]. The convolution needs ``coords``/``grid_size`` or
        ``neighbors`` (see :class:`SetDepthwiseConv`).
    """

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU,
                 drop: float = 0.0, dwconv: bool = True):
        super().__init__()
        self.fc1 = trunc_linear(in_features, hidden_features)
        self.dwconv = SetDepthwiseConv(hidden_features) if dwconv else None
        self.act, self.fc2 = act_layer(), trunc_linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, batch: Tensor, batch_size: int | None = None, coords=None,
                grid_size=None, neighbors=None) -> Tensor:
        """Apply the MLP (see the class docstring)."""
        x = self.fc1(x)
        if self.dwconv is not None:
            x = self.dwconv(x, batch, batch_size, coords, grid_size, neighbors)
        return self.drop(self.fc2(self.drop(self.act(x))))
