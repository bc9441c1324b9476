import pytest
import torch
from ops_data import make_ragged

from pointctx.ops import random_sample, random_sample_naive, sample_counts, set_sizes

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _check_layout(idx, batch, counts):
    sizes = set_sizes(batch, counts.numel())
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    out_ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    assert idx.dtype == torch.long and idx.shape == (int(counts.sum()),)
    for s in range(counts.numel()):
        part = idx[out_ptr[s]:out_ptr[s + 1]]
        assert bool(((part >= ptr[s]) & (part < ptr[s + 1])).all())  # grouped by set, in order
        assert part.unique().numel() == part.numel()  # without replacement


@pytest.mark.parametrize("fn", [random_sample, random_sample_naive])
@pytest.mark.parametrize(
    "amount",
    [{"ratio": 0.5}, {"ratio": 1.0}, {"num": 3}, {"num": torch.tensor([2, 1, 3, 0, 2, 9, 5])}],
)
def test_counts_and_layout(fn, amount):
    pos, batch, b = make_ragged(seed=1, dim=2)
    g = torch.Generator().manual_seed(0)
    idx = fn(pos, batch, generator=g, batch_size=b, **amount)
    _check_layout(idx, batch, sample_counts(set_sizes(batch, b), **amount))


def test_ratio_one_is_a_permutation_of_each_set():
    pos, batch, b = make_ragged(seed=2)
    idx = random_sample(pos, batch, ratio=1.0, batch_size=b)
    assert torch.equal(idx.sort().values, torch.arange(pos.shape[0]))


def test_generator_reproducibility():
    pos, batch, b = make_ragged(seed=3)
    run = [random_sample(pos, batch, ratio=0.5, generator=torch.Generator().manual_seed(s),
                         batch_size=b) for s in (7, 7, 8)]
    assert torch.equal(run[0], run[1])
    assert not torch.equal(run[0], run[2])


@pytest.mark.parametrize("fn", [random_sample, random_sample_naive])
def test_uniform_within_each_set(fn):
    # each point of a set of 6 must be drawn with probability 2/6; 3000 draws, 6 sigma bound
    sizes = [6, 0, 1, 4]
    pos, batch, b = make_ragged(sizes=sizes, seed=4)
    g = torch.Generator().manual_seed(5)
    hits = torch.zeros(pos.shape[0])
    draws = 3000
    for _ in range(draws):
        hits[fn(pos, batch, num=2, generator=g, batch_size=b)] += 1
    p = torch.tensor([2 / 6] * 6 + [1.0] + [2 / 4] * 4)
    sigma = (draws * p * (1 - p)).sqrt().clamp(min=1e-9)
    assert bool(((hits - draws * p).abs() <= 6 * sigma).all())
    # the single-point set always keeps its point
    assert hits[6] == draws


def test_within_set_order_is_random_not_sorted():
    pos, _, _ = make_ragged(sizes=[200], seed=6)
    idx = random_sample(pos, num=50, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(idx, idx.sort().values)


def test_empty_and_nonfinite_positions():
    assert random_sample(torch.zeros(0, 3), ratio=0.5).shape == (0,)
    pos = torch.full((5, 2), float("nan"))  # positions are not used, so NaN is fine
    assert random_sample(pos, num=5).sort().values.tolist() == [0, 1, 2, 3, 4]


def test_bad_inputs():
    pos, batch, b = make_ragged(seed=0)
    with pytest.raises(ValueError, match="exactly one of `ratio` and `num`"):
        random_sample(pos, batch)
    with pytest.raises(ValueError, match="exactly one of `ratio` and `num`"):
        random_sample(pos, batch, ratio=0.5, num=2)
    with pytest.raises(ValueError, match=r"`ratio` must be in \(0, 1\]"):
        random_sample(pos, batch, ratio=1.01)
    with pytest.raises(ValueError, match="`batch` must be sorted"):
        random_sample(pos, batch.flip(0), ratio=0.5)
    with pytest.raises(ValueError, match="`batch` must have one entry per point"):
        random_sample(pos, batch[:-2], ratio=0.5)
    with pytest.raises(ValueError, match=r"`pos` must have shape \[N, D\]"):
        random_sample(pos[:, 0], ratio=0.5)


@CUDA
def test_cuda_with_cpu_generator():
    pos, batch, b = make_ragged(seed=9)
    g = torch.Generator().manual_seed(0)
    idx = random_sample(pos.cuda(), batch.cuda(), ratio=0.5, generator=g, batch_size=b)
    _check_layout(idx.cpu(), batch, sample_counts(set_sizes(batch, b), ratio=0.5))
