import pytest
import torch

from pointctx.ops import fill_holes, fill_holes_naive

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _grids(b, c, h, w, keep, seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    return values, torch.rand(b, h, w, generator=g) < keep


@pytest.mark.parametrize("shape,keep", [((3, 2, 7, 9), 0.3), ((2, 3, 12, 16), 0.8),
                                        ((4, 1, 5, 4), 0.05), ((1, 2, 1, 1), 1.0),
                                        ((2, 1, 1, 6), 0.5), ((2, 2, 3, 1), 0.0)])
def test_matches_the_naive_reference(shape, keep):
    values, known = _grids(*shape, keep, seed=sum(shape))
    fast, ref = fill_holes(values, known), fill_holes_naive(values, known)
    torch.testing.assert_close(fast.values, ref.values, rtol=1e-12, atol=1e-12)
    assert torch.equal(fast.level, ref.level)


def test_known_cells_keep_their_values_and_holes_take_their_neighbours():
    values, known = _grids(2, 3, 9, 11, 0.4, seed=1)
    values[~known.unsqueeze(1).expand_as(values)] = float("nan")  # ignored
    out = fill_holes(values, known)
    mask = known.unsqueeze(1).expand_as(values)
    assert torch.equal(out.values[mask], values[mask])
    assert torch.isfinite(out.values).all()
    assert bool((out.level[known] == 0).all()) and bool((out.level[~known] > 0).all())


def test_a_constant_spreads_everywhere_and_one_cell_fills_its_grid():
    values = torch.full((1, 2, 6, 10), 3.0)
    known = torch.zeros(1, 6, 10, dtype=torch.bool)
    known[0, 5, 0] = True
    out = fill_holes(values, known)
    torch.testing.assert_close(out.values, values)
    assert int(out.level.max()) == 4  # 6x10 -> 3x5 -> 2x3 -> 1x2 -> 1x1


def test_a_grid_without_data_is_zero_at_the_top_level():
    values, known = _grids(2, 2, 5, 6, 0.5, seed=2)
    known[1] = False
    out = fill_holes(values, known)
    assert torch.equal(out.values[1], torch.zeros(2, 5, 6, dtype=values.dtype))
    assert bool((out.level[1] == 4).all())  # 5x6 -> 3x3 -> 2x2 -> 1x1: 4 levels
    torch.testing.assert_close(out.values[0], fill_holes(values[:1], known[:1]).values[0])


def test_gradients_reach_the_known_values_only():
    values, known = _grids(2, 2, 6, 7, 0.3, seed=3)
    values.requires_grad_(True)
    fill_holes(values, known).values.sum().backward()
    holes = ~known.unsqueeze(1).expand_as(values)
    assert bool((values.grad[holes] == 0).all()) and bool((values.grad[~holes] >= 1).all())


@pytest.mark.parametrize("bad,match", [
    (dict(values=torch.zeros(2, 3, 4)), "`values` must be a float tensor"),
    (dict(values=torch.zeros(1, 1, 2, 2, dtype=torch.long)), "`values` must be a float tensor"),
    (dict(known=torch.ones(1, 2, 3, dtype=torch.bool)), r"`known` must be a bool tensor \[B, H"),
    (dict(known=torch.ones(1, 2, 2)), "`known` must be a bool tensor"),
])
def test_bad_arguments(bad, match):
    kw = dict(values=torch.zeros(1, 1, 2, 2), known=torch.ones(1, 2, 2, dtype=torch.bool))
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        fill_holes(**kw)


@CUDA
def test_cuda_matches_cpu():
    values, known = _grids(3, 4, 30, 41, 0.2, seed=4)
    cpu = fill_holes(values, known)
    gpu = fill_holes(values.cuda(), known.cuda())
    torch.testing.assert_close(gpu.values.cpu(), cpu.values)
    assert torch.equal(gpu.level.cpu(), cpu.level)
