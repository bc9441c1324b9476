"""Per-set normalisation for packed ragged point sets."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_number, check_positive_int, check_tensor
from ..ops.scatter import scatter_count, scatter_sum
from ..ops.segment import infer_batch_size

__all__ = ["SetGroupNorm"]


def _equal_sets(batch: Tensor, b: int) -> bool:
    """Whether the sorted ``batch`` holds ``b`` non-empty sets of equal size (one host sync)."""
    n = batch.numel()
    if b == 0 or n == 0 or n % b:
        return False
    rows = batch.view(b, n // b)
    ids = torch.arange(b, device=batch.device)
    # sorted ids: every row starts and ends with its own set id <=> all rows are that id
    return bool(((rows[:, 0] == ids) & (rows[:, -1] == ids)).all())


class SetGroupNorm(nn.Module):
    """Group normalisation with one group per set: ``nn.GroupNorm(1, C)`` on ragged sets.

    Args:
        num_channels: channels C.
        eps: added to the variance.
        affine: learn a per-channel scale (init 1) and shift (init 0).

    Shapes:
        x: [N, C]; batch: [N] sorted set id per point; return: [N, C].
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_channels = check_positive_int(num_channels, "num_channels")
        self.eps, self.affine = check_number(eps, "eps", 0.0, type_error=ValueError), bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.ones(self.num_channels))
            self.bias = nn.Parameter(torch.zeros(self.num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"

    def forward(self, x: Tensor, batch: Tensor, batch_size: int | None = None) -> Tensor:
        """Normalise every set over its points and channels.

        Args:
            x: point features.
            batch: sorted set id per point.
            batch_size: number of sets B, if known (saves a host sync).
        """
        check_tensor(x, "x")
        check_tensor(batch, "batch")
        if x.dim() != 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"`x` must have shape [N, {self.num_channels}] (num_channels = "
                             f"{self.num_channels}), got {tuple(x.shape)}")
        if batch.dim() != 1 or batch.numel() != x.shape[0]:
            raise ValueError(f"`batch` must have shape [N] = [{x.shape[0]}] (one set id per row of "
                             f"`x`), got {tuple(batch.shape)}")
        b = infer_batch_size(batch, batch_size)
        work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            xw = x.to(work_dtype)
            if _equal_sets(batch, b):
                # every set has n = N / B points: one fused native GroupNorm on the packed rows,
                # seen as a channels-last [B, C, n, 1] tensor (no copy)
                n = xw.shape[0] // b
                x4 = xw.reshape(b, n, 1, self.num_channels).permute(0, 3, 1, 2)
                weight = None if self.weight is None else self.weight.to(work_dtype)
                bias = None if self.bias is None else self.bias.to(work_dtype)
                out = nn.functional.group_norm(x4, 1, weight, bias, self.eps)
                return out.permute(0, 2, 3, 1).reshape(xw.shape).to(x.dtype)
            c = xw.shape[1]
            count = (scatter_count(batch, b).to(work_dtype) * c).clamp_(min=1)
            mean = scatter_sum(xw.sum(1), batch, b) / count  # [B]
            centered = xw - mean.index_select(0, batch).unsqueeze(1)
            var = scatter_sum(centered.square().sum(1), batch, b) / count
            inv = torch.rsqrt(var + self.eps)
            out = centered * inv.index_select(0, batch).unsqueeze(1)
            if self.affine:
                out = out * self.weight.to(work_dtype) + self.bias.to(work_dtype)
        return out.to(x.dtype)
