"""Small building blocks on point features: ``Linear``, ``Mlp``, ``DropPath``, ``LayerScale``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_number, check_positive_int, check_tensor
from ..ops.linear import linear
from ..ops.segment import infer_batch_size

__all__ = ["Linear", "Mlp", "DropPath", "LayerScale", "check_chunk_points", "chunk_rows"]

# Values (rows x widest channel count) of one chunk of point-wise work on CPU. Chunks of this
# size stay in the cache and below the C allocator's mmap threshold: a 50,176 x 256 MLP hidden
# layer (coc_tiny's first stage at 224, B = 16) runs 3x faster forward and 2x faster forward +
# backward in 4,096-row chunks than in one piece, mostly because every fresh 51 MB tensor costs
# page faults on first touch.
CPU_CHUNK_ELEMENTS = 1 << 20


def check_chunk_points(value, name: str = "chunk_points"):
    """Check a ``chunk_points`` option: a positive int, ``"auto"`` or None."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, str):
        raise ValueError(f"`{name}` must be a positive int, 'auto' or None, got {value!r}")
    return check_positive_int(value, name)


def chunk_rows(chunk_points, width: int, device: torch.device) -> int | None:
    """Rows per chunk for point-wise work of ``width`` channels, or None for one piece."""
    if chunk_points is None:
        return None
    if chunk_points == "auto":
        if device.type != "cpu" or torch.compiler.is_compiling():
            return None
        return max(1024, CPU_CHUNK_ELEMENTS // max(1, width))
    return chunk_points


class Linear(nn.Linear):
    """``nn.Linear`` whose product runs on :func:`pointctx.ops.linear.linear`.

    Shapes:
        x: [N, C] (or any [..., C]); return: [N, out_features].
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x @ weight.T + bias`` (see :func:`pointctx.ops.linear.linear`)."""
        return linear(x, self.weight, self.bias)


def conv_init(weight: Tensor, fan_out: int) -> None:
    """The official init of CLUENet's convolutions: normal(0, sqrt(2 / fan_out))."""
    nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out))


def linear_as_conv(in_dim: int, out_dim: int) -> Linear:
    """A point-wise linear layer standing for an official 1x1 convolution (and its init)."""
    lin = Linear(in_dim, out_dim)
    conv_init(lin.weight, out_dim)
    nn.init.zeros_(lin.bias)
    return lin


def trunc_linear(in_dim: int, out_dim: int) -> Linear:
    """A linear layer with truncated-normal weights (std 0.02) and zero bias (timm's init)."""
    lin = Linear(in_dim, out_dim)
    nn.init.trunc_normal_(lin.weight, std=0.02)
    nn.init.zeros_(lin.bias)
    return lin


def _check_rate(p, name: str) -> float:
    return check_number(p, name, 0.0, 1.0, max_open=True, type_error=ValueError)


class Mlp(nn.Module):
    """Point-wise two-layer MLP: ``fc1 -> act -> dropout -> fc2 -> dropout``.

    Args:
        in_features: input channels C.
        hidden_features: hidden channels (default ``in_features``).
        out_features: output channels (default ``in_features``).
        act_layer: activation module class (default ``nn.GELU``).
        drop: dropout probability after the activation and after ``fc2``.
        chunk_points: rows per chunk (see :func:`chunk_rows`; ``"auto"``, an int or None).

    Shapes:
        x: [N, C] (or any [..., C]); return: [N, out_features].
    """

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act_layer=nn.GELU, drop: float = 0.0,
                 chunk_points: int | str | None = "auto"):
        super().__init__()
        in_features = check_positive_int(in_features, "in_features")
        hidden = in_features if hidden_features is None else check_positive_int(
            hidden_features, "hidden_features")
        out = in_features if out_features is None else check_positive_int(
            out_features, "out_features")
        self.fc1, self.act, self.fc2 = Linear(in_features, hidden), act_layer(), Linear(hidden, out)
        self.drop = nn.Dropout(_check_rate(drop, "drop"))
        self.chunk_points = check_chunk_points(chunk_points)
        for lin in (self.fc1, self.fc2):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def _rows(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to every row (in chunks of rows, see ``chunk_points``)."""
        step = chunk_rows(self.chunk_points, max(self.fc1.out_features, x.shape[-1]), x.device)
        if step is None or x.dim() != 2 or x.shape[0] <= step:
            return self._rows(x)
        return torch.cat([self._rows(part) for part in x.split(step)], 0)


class DropPath(nn.Module):
    """Stochastic depth per set: in training, zero a whole set's residual branch with prob. ``p``.

    Args:
        p: drop probability in [0, 1).
        scale_by_keep: rescale kept sets by ``1 / (1 - p)``.

    Shapes:
        x: [N, C]; batch: [N] sorted set id per point; return: [N, C].
    """

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.p, self.scale_by_keep = _check_rate(p, "p"), bool(scale_by_keep)

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"p={self.p}"

    def forward(self, x: Tensor, batch: Tensor, batch_size: int | None = None) -> Tensor:
        """Drop whole sets of ``x`` (training only).

        Args:
            x: point features (any trailing shape).
            batch: sorted set id per point.
            batch_size: number of sets B, if known (saves a host sync).
        """
        if not self.training or self.p == 0.0:
            return x
        check_tensor(batch, "batch")
        if batch.dim() != 1 or batch.numel() != x.shape[0]:
            raise ValueError(
                f"`batch` must have shape [N] = [{x.shape[0]}], got {tuple(batch.shape)}")
        b = infer_batch_size(batch, batch_size)
        keep = 1.0 - self.p
        mask = torch.empty(b, dtype=x.dtype, device=x.device).bernoulli_(keep)
        if self.scale_by_keep:
            mask = mask / keep
        return x * mask.index_select(0, batch).view((-1,) + (1,) * (x.dim() - 1))


class LayerScale(nn.Module):
    """Learnable per-channel scale ``gamma * x`` (CaiT's LayerScale), ``gamma`` init ``init_value``.

    Args:
        dim: channels C.
        init_value: initial value of every entry of ``gamma`` (the official CoC uses 1e-5).

    Shapes:
        x: [N, C]; return: [N, C].
    """

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        init_value = check_number(init_value, "init_value")
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"{self.gamma.numel()}"

    def forward(self, x: Tensor) -> Tensor:
        """Scale every channel."""
        return x * self.gamma
