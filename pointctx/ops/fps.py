"""Farthest point sampling (FPS) on packed ragged sets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_number, check_pos, check_positive_int, check_tensor, is_number
from ._backend import opaque, require_cluster, resolve_backend
from ._common import _pad, _setup, _sqdist

__all__ = ["fps", "fps_naive", "sample_counts"]

# Products ratio * n within this relative distance of an integer count as that integer, so that
# e.g. 0.07 * 100 (7.000000000000001 in float64) gives 7 samples, as torch-cluster's float32
# arithmetic does.
_RATIO_RTOL = 1e-9


def _check_ratio(ratio) -> float:
    if isinstance(ratio, Tensor) and ratio.numel() == 1 and ratio.is_floating_point():
        ratio = float(ratio)
    if not is_number(ratio):
        raise TypeError(f"`ratio` must be a float in (0, 1], got {type(ratio).__name__}")
    return check_number(ratio, "ratio", 0.0, 1.0, min_open=True, must="be {bounds}")


def sample_counts(sizes: Tensor, ratio: float | None = None, num=None) -> Tensor:
    """Number of points to sample from each set (FPS and random sampling share this rule).

    Args:
        sizes: number of points in each set.
        ratio: fraction in (0, 1].
        num: int >= 1 (same for every set) or an integer tensor [B] (>= 0) of per-set requests.

    Shapes:
        sizes: [B] int64; return: [B] int64.
    """
    check_tensor(sizes, "sizes")
    if sizes.dim() != 1:
        raise ValueError(f"`sizes` must have shape [B], got shape {tuple(sizes.shape)}")
    sizes = sizes.long()
    if (ratio is None) == (num is None):
        raise ValueError("exactly one of `ratio` and `num` must be given, got " + (
            "neither" if ratio is None else f"both (ratio={ratio}, num={num})"))
    if ratio is not None:
        r = _check_ratio(ratio)
        prod = sizes.double() * r
        counts = torch.ceil(prod - prod * _RATIO_RTOL).long()
        return torch.minimum(counts, sizes)
    if isinstance(num, Tensor) and num.dim() == 1:
        if num.is_floating_point() or num.dtype == torch.bool:
            raise ValueError(f"`num` must be an integer tensor, got dtype {num.dtype}")
        if num.shape[0] != sizes.shape[0]:
            raise ValueError(f"`num` must have one entry per set: expected {sizes.shape[0]}, got "
                             f"{num.shape[0]}")
        num = num.to(sizes.device).long()
        if num.numel() and bool((num < 0).any()):
            raise ValueError(f"`num` entries must be >= 0, got min {int(num.min())}")
        return torch.minimum(num, sizes)
    k = check_positive_int(num, "num", minimum=1)
    return sizes.clamp(max=k)


def _start_local(sizes: Tensor, random_start: bool, generator) -> Tensor:
    """Local index of each set's first pick: 0, or uniform in [0, n) with ``random_start``."""
    if not random_start:
        return torch.zeros_like(sizes)
    dev = generator.device if generator is not None else sizes.device
    u = torch.rand(sizes.shape[0], generator=generator, device=dev, dtype=torch.float64)
    u = u.to(sizes.device)
    return (u * sizes.double()).long().clamp(max=(sizes - 1).clamp(min=0))


# FPS


def fps(pos: Tensor, batch: Tensor | None = None, ratio: float | None = None, num=None,
        random_start: bool = False, batch_size: int | None = None, backend: str | None = None,
        generator: torch.Generator | None = None) -> Tensor:
    """Farthest point sampling, independently in each set.

    Args:
        pos: point positions.
        batch: sorted set index per point; None means one set.
        ratio: fraction of each set to keep, in (0, 1] (``ceil(ratio * n)``); not with ``num``.
        num: points to keep per set (int, or int tensor [B]); smaller sets keep all points.
        random_start: start each set at a uniformly random point instead of its first point.
        batch_size: number of sets B (avoids a host sync; trailing empty sets allowed).
        backend: ``"auto"``, ``"native"`` or ``"cluster"`` (None: the global default).
        generator: random generator for ``random_start`` (both backends honour it).

    Shapes:
        pos: [N, D]; batch: [N]; return: [M] with M = sum of the per-set counts.
    """
    pos = check_pos(pos)
    batch, b, sizes, ptr = _setup(pos, batch, batch_size)
    counts = sample_counts(sizes, ratio, num)
    start = _start_local(sizes, random_start, generator)
    if resolve_backend(backend, "fps", pos.device) == "cluster":
        return _fps_cluster(pos, batch, sizes, ptr, counts, start, random_start)
    return _fps_native(pos, batch, b, sizes, ptr, counts, start)


def _fps_native(pos, batch, b, sizes, ptr, counts, start) -> Tensor:
    kmax = int(counts.max()) if b else 0
    if kmax == 0:
        return torch.zeros(0, dtype=torch.long, device=pos.device)
    nmax = int(sizes.max())
    padded, _ = _pad(pos, batch, ptr, b, nmax)
    coords = padded.permute(2, 0, 1).contiguous()  # [D, B, Nmax]: one contiguous plane per dim
    valid = torch.arange(nmax, device=pos.device) < sizes.unsqueeze(1)
    # min squared distance to the picked points; -1 marks padding and picked points (never max
    # while an unpicked point (distance >= 0) remains).
    dist = torch.full((b, nmax), float("inf"), dtype=pos.dtype, device=pos.device)
    dist.masked_fill_(~valid, -1.0)
    flat_coords = coords.view(coords.shape[0], b * nmax)
    flat_dist = dist.view(-1)
    row_start = torch.arange(b, device=pos.device) * nmax
    picks = [start]
    cur = start
    buf, tmp = torch.empty_like(dist), torch.empty_like(dist)
    for _ in range(kmax - 1):
        flat = row_start + cur
        center = flat_coords.index_select(1, flat).unsqueeze(2)  # [D, B, 1]
        torch.minimum(dist, _sqdist(coords, center, dim=0, out=buf, tmp=tmp), out=dist)
        flat_dist.index_fill_(0, flat, -1.0)
        cur = dist.argmax(dim=1)  # first maximum -> lowest index on ties
        picks.append(cur)
    picks = torch.stack(picks, 1)
    keep = torch.arange(kmax, device=pos.device) < counts.unsqueeze(1)
    return (picks + ptr[:-1].unsqueeze(1))[keep]


def _fps_cluster(pos, batch, sizes, ptr, counts, start, random_start) -> Tensor:
    tc = require_cluster()
    if pos.shape[0] == 0 or not bool((counts > 0).any()):
        return torch.zeros(0, dtype=torch.long, device=pos.device)
    # torch-cluster breaks on empty sets, so only sets with a nonzero count are passed; a random
    # start is applied by rotating each set so that the start point comes first (this keeps the
    # ``generator`` in charge of the randomness).
    local = torch.arange(pos.shape[0], device=pos.device) - ptr[batch]
    n_of = sizes[batch]
    order = ptr[batch] + (local + start[batch]) % n_of.clamp(min=1) if random_start else None
    keep = counts[batch] > 0
    src_index = (order if order is not None else torch.arange(pos.shape[0], device=pos.device))
    src_index = src_index[keep]
    sel = counts > 0
    deg = sizes[sel]
    sub_ptr = torch.zeros(deg.numel() + 1, dtype=torch.long, device=pos.device)
    torch.cumsum(deg, 0, out=sub_ptr[1:])
    # per-set ratio whose ceil(ratio * n) is exactly the wanted count
    r = (counts[sel].double() - 0.5) / deg.double()
    out = opaque(tc.fps)(pos[src_index].contiguous(), ratio=r, random_start=False, ptr=sub_ptr)
    return src_index[out]


# the same signature as fps: the tests call the op and its naive reference alike
def fps_naive(pos: Tensor, batch: Tensor | None = None, ratio: float | None = None, num=None,
              random_start: bool = False, batch_size: int | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """Per-set Python loop version of :func:`fps` (slow, obviously correct; for tests).

    Shapes:
        pos: [N, D]; batch: [N]; return: [M].
    """
    pos = check_pos(pos)
    batch, b, sizes, ptr = _setup(pos, batch, batch_size)
    counts = sample_counts(sizes, ratio, num).tolist()
    start = _start_local(sizes, random_start, generator).tolist()
    out = []
    for s in range(b):
        lo, hi = int(ptr[s]), int(ptr[s + 1])
        pts = pos[lo:hi]
        picked = []
        dist = torch.full((hi - lo,), math.inf, dtype=pos.dtype, device=pos.device)
        cur = start[s]
        for _ in range(counts[s]):
            picked.append(cur)
            dist = torch.minimum(dist, _sqdist(pts, pts[cur]))
            candidates = dist.clone()
            candidates[picked] = -1.0  # never pick a point twice
            cur = int(candidates.argmax())  # torch.argmax returns the first (lowest) index
        out.extend(lo + p for p in picked)
    return torch.tensor(out, dtype=torch.long, device=pos.device)
