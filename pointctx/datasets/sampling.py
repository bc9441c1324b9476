"""Farthest point sampling of dense clouds in numpy (the datasets' ``sampling="fps"``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["farthest_point_sample"]


def farthest_point_sample(points, num_samples: int, start: int = 0):
    """Farthest point sampling on dense clouds, batched (xyz = the first 3 columns).

    Args:
        points: one cloud or a batch of equally sized clouds (numpy array or tensor).
        num_samples: how many points to pick, ``1 <= num_samples <= P``.
        start: row of the first pick.

    Shapes:
        points: [P, C] or [B, P, C] with C >= 3; returns [num_samples] or [B, num_samples].
    """
    is_tensor = isinstance(points, Tensor)
    x = points.detach().cpu().numpy() if is_tensor else np.asarray(points)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] < 3:
        raise ValueError(
            f"`points` must have shape [P, C] or [B, P, C] with C >= 3, got {tuple(x.shape)}")
    b, p = x.shape[:2]
    check_int(num_samples, "num_samples")
    if not 1 <= num_samples <= p:
        raise ValueError(f"`num_samples` must lie in [1, P = {p}], got {num_samples}")
    if not 0 <= start < p:
        raise ValueError(f"`start` must lie in [0, P = {p}), got {start}")
    coords = np.ascontiguousarray(x[..., :3].transpose(2, 0, 1), dtype=np.float32)  # [3, B, P]
    out = np.empty((b, int(num_samples)), dtype=np.int64)
    dist = np.full((b, p), np.inf, dtype=np.float32)
    cur = np.full(b, start, dtype=np.int64)
    rows = np.arange(b)
    for k in range(int(num_samples)):
        out[:, k] = cur
        d = np.square(coords - coords[:, rows, cur][..., None]).sum(0)
        np.minimum(dist, d, out=dist)
        cur = dist.argmax(1)
    out = out[0] if single else out
    return torch.from_numpy(out) if is_tensor else out
