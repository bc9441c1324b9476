"""DataLoader glue: :func:`collate` turns a list of ragged point-set samples into a PointBatch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from .batch import PointBatch, _as_tensor

__all__ = ["collate"]


def _to_tensor(value, name: str) -> Tensor:
    if isinstance(value, (Tensor, np.ndarray)):
        return _as_tensor(value, name)
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _points(samples_pos, samples_x, allow_nonfinite: bool) -> PointBatch:
    pos = [_to_tensor(p, f"samples[{i}] pos") for i, p in enumerate(samples_pos)]
    has_x = [v is not None for v in samples_x]
    if any(has_x) and not all(has_x):
        i = has_x.index(not has_x[0])
        raise ValueError(f"`x` must be given for all samples or none: samples[0] has x={has_x[0]}, "
                         f"samples[{i}] has x={has_x[i]}")
    xs = None
    if has_x[0]:
        xs = [_to_tensor(v, f"samples[{i}] x") for i, v in enumerate(samples_x)]
    return PointBatch.from_list(pos, xs, allow_nonfinite=allow_nonfinite)


def collate(samples, point_keys: Sequence[str] = (), allow_nonfinite: bool = False):
    """Collate point-set samples into a :class:`~pointctx.PointBatch` (a DataLoader ``collate_fn``).

    Args:
        samples: list of ``B >= 1`` samples.
        point_keys: dict keys holding per-point fields to concatenate.
        allow_nonfinite: accept NaN/Inf positions.

    Shapes:
        pos of sample b: [n_b, D]; x: [n_b, C]; point_keys fields: [n_b, ...] -> [N, ...].
    """
    if isinstance(samples, (Tensor, np.ndarray, Mapping)) or not isinstance(samples, Sequence):
        raise TypeError(f"`samples` must be a list of samples, got {type(samples).__name__}")
    if len(samples) == 0:
        raise ValueError("`samples` must hold at least one sample, got an empty list")
    first = samples[0]
    if isinstance(first, Mapping):
        return _collate_dicts(samples, tuple(point_keys), allow_nonfinite)
    if point_keys:
        raise ValueError("`point_keys` only applies to dict samples")
    norm = []
    for i, s in enumerate(samples):
        if isinstance(s, (Tensor, np.ndarray)):
            s = (s,)
        elif isinstance(s, Mapping) or not isinstance(s, (tuple, list)):
            raise TypeError(f"`samples[{i}]` must be a tuple (pos, x[, y]) like samples[0], got "
                            f"{type(s).__name__}")
        if not 1 <= len(s) <= 3:
            raise ValueError(
                f"`samples[{i}]` must be (pos,), (pos, x) or (pos, x, y), got {len(s)} items")
        norm.append(tuple(s) + (None,) * (3 - len(s)))
    has_y = [s[2] is not None for s in norm]
    if any(has_y) and not all(has_y):
        raise ValueError("`y` must be given for all samples or none, got "
                         f"{sum(has_y)} of {len(norm)} samples with y")
    points = _points([s[0] for s in norm], [s[1] for s in norm], allow_nonfinite)
    y = default_collate([s[2] for s in norm]) if has_y[0] else None
    return points, y


def _collate_dicts(samples, point_keys: tuple[str, ...], allow_nonfinite: bool) -> dict:
    keys = list(samples[0].keys())
    for i, s in enumerate(samples):
        if not isinstance(s, Mapping):
            raise TypeError(
                f"`samples[{i}]` must be a dict like samples[0], got {type(s).__name__}")
        if "pos" not in s:
            raise ValueError(f"`samples[{i}]` must have a 'pos' key, got keys {sorted(s)}")
        if set(s.keys()) != set(keys):
            raise ValueError(f"`samples[{i}]` must have the same keys as samples[0] "
                             f"({sorted(keys)}), got {sorted(s.keys())}")
    for k in point_keys:
        if k not in keys:
            raise ValueError(f"`point_keys` entry {k!r} is not a sample key ({sorted(keys)})")
        if k in ("pos", "x"):
            raise ValueError(f"`point_keys` must not contain {k!r} (it is batched as points)")
    points = _points([s["pos"] for s in samples], [s.get("x") for s in samples], allow_nonfinite)
    out = {"points": points}
    sizes = points.sizes.tolist()
    for k in keys:
        if k in ("pos", "x"):
            continue
        if k in point_keys:
            parts = []
            for i, s in enumerate(samples):
                t = _to_tensor(s[k], f"samples[{i}][{k!r}]")
                if t.dim() < 1 or t.shape[0] != sizes[i]:
                    raise ValueError(f"`samples[{i}][{k!r}]` is a per-point field and must have "
                                     f"{sizes[i]} rows (one per point), got shape {tuple(t.shape)}")
                parts.append(t)
            out[k] = torch.cat(parts, 0)
        else:
            out[k] = default_collate([s[k] for s in samples])
    return out
