import pytest
import torch

from pointctx.ops import (
    ScatterMax,
    scatter_argmax,
    scatter_count,
    scatter_max,
    scatter_mean,
    scatter_softmax,
    scatter_sum,
)
from pointctx.ops.scatter import (
    scatter_max_naive,
    scatter_mean_naive,
    scatter_softmax_naive,
    scatter_sum_naive,
)

# segments 1 and 4 are empty, segment 6 only exists through dim_size
INDEX = torch.tensor([3, 0, 2, 3, 5, 0, 0, 2, 3, 5, 5, 0])
DIM_SIZE = 7


def _src(shape=(), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((INDEX.numel(),) + shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_sum_mean_match_naive(shape):
    src = _src(shape)
    assert torch.allclose(scatter_sum(src, INDEX, DIM_SIZE),
                          scatter_sum_naive(src, INDEX, DIM_SIZE))
    assert torch.allclose(scatter_mean(src, INDEX, DIM_SIZE),
                          scatter_mean_naive(src, INDEX, DIM_SIZE))
    out = scatter_sum(src, INDEX, DIM_SIZE)
    assert out.shape == (DIM_SIZE,) + shape
    assert bool((out[[1, 4, 6]] == 0).all())


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_max_matches_naive(shape):
    src = _src(shape, seed=1)
    res = scatter_max(src, INDEX, DIM_SIZE)
    ref = scatter_max_naive(src, INDEX, DIM_SIZE)
    assert isinstance(res, ScatterMax)
    assert torch.equal(res.values, ref.values)
    assert torch.equal(res.argmax, ref.argmax)
    assert bool((res.argmax[[1, 4, 6]] == -1).all()) and bool((res.values[[1, 4, 6]] == 0).all())
    assert torch.equal(scatter_argmax(src, INDEX, DIM_SIZE), ref.argmax)


def test_max_ties_pick_the_first_row():
    src = torch.tensor([1.0, 5.0, 5.0, 2.0, 5.0])
    index = torch.tensor([0, 0, 1, 0, 1])
    res = scatter_max(src, index)
    assert res.values.tolist() == [5.0, 5.0]
    assert res.argmax.tolist() == [1, 2]


@pytest.mark.parametrize("shape", [(), (3,)])
def test_softmax_matches_naive_and_sums_to_one(shape):
    src = _src(shape, seed=2) * 10
    out = scatter_softmax(src, INDEX, DIM_SIZE)
    assert torch.allclose(out, scatter_softmax_naive(src, INDEX, DIM_SIZE))
    assert torch.allclose(scatter_sum(out, INDEX, DIM_SIZE)[[0, 2, 3, 5]],
                          torch.ones((4,) + shape, dtype=src.dtype))


def test_softmax_is_stable_for_large_values():
    src = torch.tensor([1000.0, 1001.0, -1000.0])
    out = scatter_softmax(src, torch.tensor([0, 0, 1]))
    assert bool(torch.isfinite(out).all())
    assert torch.allclose(out, torch.tensor([1 / (1 + torch.e), torch.e / (1 + torch.e), 1.0]))


def test_count_and_default_dim_size():
    assert scatter_count(INDEX, DIM_SIZE).tolist() == [4, 0, 2, 3, 0, 3, 0]
    assert scatter_count(INDEX).tolist() == [4, 0, 2, 3, 0, 3]
    assert scatter_sum(_src(), INDEX).shape == (6,)
    assert scatter_count(torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_empty_src():
    src = torch.zeros(0, 2)
    index = torch.zeros(0, dtype=torch.long)
    assert scatter_sum(src, index, 3).tolist() == [[0.0, 0.0]] * 3
    assert scatter_mean(src, index, 3).tolist() == [[0.0, 0.0]] * 3
    res = scatter_max(src, index, 3)
    assert res.values.tolist() == [[0.0, 0.0]] * 3 and res.argmax.tolist() == [[-1, -1]] * 3
    assert scatter_softmax(src, index, 3).shape == (0, 2)


@pytest.mark.parametrize(
    "fn", [scatter_sum, scatter_mean, scatter_softmax, lambda s, i, m: scatter_max(s, i, m).values]
)
def test_gradcheck(fn):
    src = _src((3,), seed=3).requires_grad_()  # random values: no ties for max
    assert torch.autograd.gradcheck(lambda s: fn(s, INDEX, DIM_SIZE), (src,))


def test_max_gradient_goes_to_the_argmax_row():
    src = _src(seed=4).requires_grad_()
    scatter_max(src, INDEX, DIM_SIZE).values.sum().backward()
    ref = scatter_max_naive(src.detach(), INDEX, DIM_SIZE).argmax
    expected = torch.zeros_like(src)
    expected[ref[ref >= 0]] = 1.0
    assert torch.equal(src.grad, expected)


def test_bad_shapes():
    src = _src()
    with pytest.raises(ValueError, match=r"`index` must have shape \[N\]"):
        scatter_sum(src, INDEX[None], DIM_SIZE)
    with pytest.raises(ValueError, match="same number of rows, got 12 and 11"):
        scatter_max(src, INDEX[:-1], DIM_SIZE)
    with pytest.raises(ValueError, match="same number of rows"):
        scatter_softmax(src[:5], INDEX, DIM_SIZE)
