"""Uniform random sampling without replacement, independently in each packed ragged set."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_pos
from ._common import _setup
from .fps import sample_counts

__all__ = ["random_sample", "random_sample_naive"]


def _generator_device(generator, device):
    return generator.device if generator is not None else device


def random_sample(pos: Tensor, batch: Tensor | None = None, ratio: float | None = None, num=None,
                  generator: torch.Generator | None = None,
                  batch_size: int | None = None) -> Tensor:
    """Random subset of each set (without replacement within a set), grouped by set.

    Args:
        pos: point positions (only its length, device and set layout are used).
        batch: sorted set index per point; None: one set.
        ratio: share of each set to keep (``ceil(ratio * n)``). Exclusive with ``num``.
        num: points per set (int or int tensor [B]); smaller sets keep all.
        generator: random generator.
        batch_size: number of sets B (saves a host sync).

    Shapes:
        pos: [N, D]; batch: [N]; return: [M] int64 indices (counts: :func:`sample_counts`).
    """
    pos = check_pos(pos, allow_nonfinite=True)
    batch, b, sizes, ptr = _setup(pos, batch, batch_size)
    counts = sample_counts(sizes, ratio, num)
    n = pos.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=pos.device)
    dev = _generator_device(generator, pos.device)
    key = torch.rand(n, generator=generator, device=dev, dtype=torch.float64).to(pos.device)
    perm = torch.argsort(key)
    perm = perm[torch.argsort(batch[perm], stable=True)]  # grouped by set, random inside
    rank = torch.arange(n, device=pos.device) - ptr[batch]  # batch[perm] == batch (sorted)
    return perm[rank < counts[batch]]


# the same signature as random_sample: the tests call the op and its naive reference alike
def random_sample_naive(pos: Tensor, batch: Tensor | None = None, ratio: float | None = None,
                        num=None, generator: torch.Generator | None = None,
                        batch_size: int | None = None) -> Tensor:
    """Per-set Python loop version of :func:`random_sample` (``randperm`` per set; for tests).

    Shapes:
        pos: [N, D]; batch: [N]; return: [M].
    """
    pos = check_pos(pos, allow_nonfinite=True)
    batch, b, sizes, ptr = _setup(pos, batch, batch_size)
    counts = sample_counts(sizes, ratio, num).tolist()
    dev = _generator_device(generator, pos.device)
    out = []
    for s in range(b):
        n = int(sizes[s])
        perm = torch.randperm(n, generator=generator, device=dev)[: counts[s]]
        out.append(perm.to(pos.device) + ptr[s])
    return torch.zeros(0, dtype=torch.long, device=pos.device) if not out else torch.cat(out)
