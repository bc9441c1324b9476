"""Random heterogeneous ragged batches shared by the op tests."""

import torch

# Heterogeneous set sizes used across the op tests: sets of 1 point, empty sets in the middle
# (set 2) and at the end (set 6, only reachable through batch_size), and larger sets.
SIZES = [9, 1, 0, 33, 2, 57, 0]


def make_ragged(sizes=SIZES, dim=3, seed=0, duplicates=False, dtype=torch.float32):
    """Random packed sets: returns pos [N, D], batch [N], batch_size B.

    With ``duplicates`` some points of every set of >= 3 points are copies of other points of
    the same set (exact ties for FPS / kNN / grid).
    """
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), dim, generator=g, dtype=torch.float64).to(dtype)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    if duplicates:
        start = 0
        for n in sizes:
            if n >= 3:
                src = torch.randint(start, start + n, (n // 3,), generator=g)
                dst = torch.randint(start, start + n, (n // 3,), generator=g)
                pos[dst] = pos[src]
            start += n
    return pos, batch, len(sizes)
