"""Small building blocks on packed point features: ``Mlp``, ``DropPath``, ``LayerScale``.

They act on ``x [N, C]`` (one row per point). ``DropPath`` needs the set id of each point so that
stochastic depth drops whole sets (the ragged counterpart of dropping whole images). Also the
weight inits shared by the layers (:func:`conv_init`, :func:`linear_as_conv`,
:func:`trunc_linear`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_number, check_positive_int, check_tensor
from ..ops.segment import infer_batch_size

__all__ = ["Mlp", "DropPath", "LayerScale"]


def conv_init(weight: Tensor, fan_out: int) -> None:
    """The official init of CLUENet's convolutions: normal(0, sqrt(2 / fan_out))."""
    nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out))


def linear_as_conv(in_dim: int, out_dim: int) -> nn.Linear:
    """A point-wise linear layer standing for an official 1x1 convolution (and its init)."""
    lin = nn.Linear(in_dim, out_dim)
    conv_init(lin.weight, out_dim)
    nn.init.zeros_(lin.bias)
    return lin


def trunc_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A linear layer with truncated-normal weights (std 0.02) and zero bias (timm's init)."""
    lin = nn.Linear(in_dim, out_dim)
    nn.init.trunc_normal_(lin.weight, std=0.02)
    nn.init.zeros_(lin.bias)
    return lin


def _check_rate(p, name: str) -> float:
    return check_number(p, name, 0.0, 1.0, max_open=True, type_error=ValueError)


class Mlp(nn.Module):
    """Point-wise two-layer MLP: ``fc1 -> act -> dropout -> fc2 -> dropout``.

    The channel MLP of a Context Cluster block (a 1x1-conv MLP in the image code). Weights are
    initialised with a truncated normal (std 0.02) and zero biases, as the official model.

    Args:
        in_features: input channels C.
        hidden_features: hidden channels (default ``in_features``).
        out_features: output channels (default ``in_features``).
        act_layer: activation module class (default ``nn.GELU``).
        drop: dropout probability after the activation and after ``fc2``.

    Shapes:
        x: [N, C] (or any [..., C]); return: [N, out_features].
    """

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        in_features = check_positive_int(in_features, "in_features")
        hidden = in_features if hidden_features is None else check_positive_int(
            hidden_features, "hidden_features")
        out = in_features if out_features is None else check_positive_int(
            out_features, "out_features")
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, out)
        self.drop = nn.Dropout(_check_rate(drop, "drop"))
        for lin in (self.fc1, self.fc2):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to every row."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth per set: in training, zero a whole set's residual branch with prob. ``p``.

    Kept sets are scaled by ``1 / (1 - p)`` (``scale_by_keep``) so the expectation is unchanged.
    In eval mode, or with ``p = 0``, it is the identity.

    Args:
        p: drop probability in [0, 1).
        scale_by_keep: rescale kept sets by ``1 / (1 - p)``.

    Shapes:
        x: [N, C]; batch: [N] sorted set id per point; return: [N, C].
    """

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.p = _check_rate(p, "p")
        self.scale_by_keep = bool(scale_by_keep)

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
                f"`batch` must have shape [N] = [{x.shape[0]}], got {tuple(batch.shape)}"
            )
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
