"""Max over the slots of grouped features (PointMLP's neighbour pooling), with a cheap backward."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._checks import check_int

__all__ = ["slot_max", "slot_max_naive"]


class _SlotMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dim: int, shape) -> Tensor:
        # shape: x's grouped shape when x comes as rows (see slot_max's `slots`), else None
        out = (x if shape is None else x.view(shape)).amax(dim)
        ctx.dim, ctx.shape = dim, shape
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, out = ctx.saved_tensors
        dim, shape = ctx.dim, ctx.shape
        xs = x if shape is None else x.view(shape)
        hit = xs == out.unsqueeze(dim)
        count_dtype = torch.uint8 if xs.shape[dim] <= 255 else torch.int32
        ties = hit.view(torch.uint8).sum(dim, dtype=count_dtype)
        share = (grad / ties).unsqueeze(dim).to(x.dtype)
        # the mask cast then an in-place broadcast multiply is about 3x faster on CPU than
        # where(hit, share, 0) or hit * share (whose bool-float promotion is a slow path)
        res = torch.empty_like(x)
        (res if shape is None else res.view(shape)).copy_(hit).mul_(share)
        return res, None, None


def slot_max(x: Tensor, dim: int = 1, slots: int | None = None) -> Tensor:
    """Max over dimension ``dim`` (e.g. the ``k`` neighbour slots of ``[M, k, C]`` groups).

    Args:
        x: a floating tensor with at least one slot along ``dim``.
        dim: the dimension to reduce.
        slots: x holds ``[M * slots, C...]`` rows, groups of ``slots`` consecutive rows (``dim``
            must be 1); the gradient then comes back in x's own shape.

    Shapes:
        x: [M, k, C], or [M * slots, C] with ``slots``; return: [M, C].
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"`x` must be a floating-point tensor, got "
                        f"{type(x).__name__ if not isinstance(x, Tensor) else x.dtype}")
    shape = None
    if slots is not None:
        slots = check_int(slots, "slots", 1)
        if x.dim() < 1 or x.shape[0] % slots:
            raise ValueError(f"`x` must have a multiple of `slots` = {slots} rows, got shape "
                             f"{tuple(x.shape)}")
        if dim != 1:
            raise ValueError(f"`dim` must be 1 with `slots`, got {dim!r}")
        shape = (x.shape[0] // slots, slots) + tuple(x.shape[1:])
    view = x if shape is None else x.view(shape)
    dim = check_int(dim, "dim", -view.dim(), view.dim() - 1) % view.dim()
    if view.shape[dim] == 0:
        raise ValueError(f"`x` must have at least one slot along dim {dim}, got shape "
                         f"{tuple(view.shape)}")
    if not (torch.is_grad_enabled() and x.requires_grad):
        return view.amax(dim)
    return _SlotMax.apply(x, dim, shape)


def slot_max_naive(x: Tensor, dim: int = 1) -> Tensor:
    """Reference: autograd's ``amax`` (the same values and gradients, a costlier backward)."""
    return x.amax(dim)
