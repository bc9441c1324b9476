import pytest
import torch
from ops_data import make_ragged

from pointctx.ops import grid_knn, knn, knn_interpolate, knn_naive
from pointctx.ops.grid import lattice_plane

QUERY_SIZES = [30, 2, 5, 0, 9, 40, 3]


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize("k", [1, 3, 8, 40])
@pytest.mark.parametrize("cell", [0.01, 0.1, 0.4, 3.0])
def test_matches_naive_for_any_cell_size(dim, duplicates, k, cell):
    x, bx, b = make_ragged(dim=dim, seed=dim, duplicates=duplicates)
    y, by, _ = make_ragged(sizes=QUERY_SIZES, dim=dim, seed=dim + 50)
    if duplicates:  # queries exactly on source points
        y[0], y[40] = x[0], x[12 + 3]
    # the fallback runs knn(backend="native"), exact like the naive reference on ties too
    res = grid_knn(x, y, k, bx, by, cell_size=cell, batch_size=b, backend="native")
    ref = knn_naive(x, y, k, bx, by, batch_size=b)
    assert torch.equal(res.index, ref.index)
    assert torch.equal(res.dist2, ref.dist2)
    if not duplicates:  # any backend agrees without ties
        res = grid_knn(x, y, k, bx, by, cell_size=cell, batch_size=b)
        assert torch.equal(res.index, ref.index)


def test_pixel_lattice_ties_and_per_axis_cells():
    # stage-like sources: one point per 4x4 cell of a 23x30 image, queried at every pixel;
    # many exact distance ties
    h, w, s = 23, 30, 4
    grid = lattice_plane(1, (h, w))
    cells = torch.stack([torch.arange(h).repeat_interleave(w) // s,
                         torch.arange(w).repeat(h) // s], 1)
    key = cells[:, 0] * 100 + cells[:, 1]
    uniq, inv = torch.unique(key, return_inverse=True)
    src = torch.zeros(uniq.numel(), 2).index_add_(0, inv, grid)
    src /= torch.bincount(inv).unsqueeze(1)
    cell = (s / (w - 1), s / (h - 1))
    for k in (3, 4, 9):
        res = grid_knn(src, grid, k, cell_size=cell)
        ref = knn(src, grid, k, backend="native")
        assert torch.equal(res.index, ref.index) and torch.equal(res.dist2, ref.dist2)


def test_sparse_and_clustered_sources_fall_back_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(50, 2, generator=g) * 0.05, torch.rand(3, 2, generator=g) + 5])
    y = torch.rand(200, 2, generator=g) * 6
    for cell in (0.001, 0.05, 1.0):
        res = grid_knn(x, y, 4, cell_size=cell, chunk_size=64, backend="native")
        ref = knn_naive(x, y, 4)
        assert torch.equal(res.index, ref.index) and torch.equal(res.dist2, ref.dist2)


def test_empty_inputs_and_sets_without_sources():
    x, bx, b = make_ragged()
    y, by, _ = make_ragged(sizes=QUERY_SIZES, seed=3)
    empty = grid_knn(x[:0], y, 3, bx[:0], by, cell_size=0.1, batch_size=b)
    assert bool((empty.index == -1).all()) and bool(torch.isinf(empty.dist2).all())
    assert grid_knn(x, y[:0], 3, bx, by[:0], cell_size=0.1, batch_size=b).index.shape == (0, 3)


def test_knn_interpolate_with_cells_is_the_same():
    x, bx, b = make_ragged(seed=4)
    y, by, _ = make_ragged(sizes=QUERY_SIZES, seed=5)
    f = torch.randn(x.shape[0], 4)
    a = knn_interpolate(f, x, y, bx, by, batch_size=b)
    c = knn_interpolate(f, x, y, bx, by, batch_size=b, cell_size=(0.1, 0.2, 0.3))
    assert torch.equal(a, c)


def test_errors_name_the_argument():
    x, y = torch.rand(5, 2), torch.rand(3, 2)
    with pytest.raises(ValueError, match="`cell_size` must have one entry per coordinate"):
        grid_knn(x, y, 2, cell_size=(0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="`cell_size` entries must be finite and > 0"):
        grid_knn(x, y, 2, cell_size=0.0)
    with pytest.raises(TypeError, match="`cell_size` must be a number"):
        grid_knn(x, y, 2, cell_size=object())
    with pytest.raises(ValueError, match="`radius` must be >= 1"):
        grid_knn(x, y, 2, cell_size=0.1, radius=0)
    with pytest.raises(ValueError, match="too small for the extent"):
        grid_knn(x * 1e6, y, 2, cell_size=1e-9)


def test_origin_moves_the_cells_not_the_result():
    x, bx, b = make_ragged(dim=2, seed=7)
    y, by, _ = make_ragged(sizes=QUERY_SIZES, dim=2, seed=8)
    ref = knn_naive(x, y, 3, bx, by, batch_size=b)
    for origin in (None, -0.013, (-1.0, -0.25)):
        res = grid_knn(x, y, 3, bx, by, cell_size=0.1, origin=origin, batch_size=b,
                       backend="native")
        assert torch.equal(res.index, ref.index) and torch.equal(res.dist2, ref.dist2)
    with pytest.raises(ValueError, match="`origin` must not exceed the smallest coordinates"):
        grid_knn(x, y, 3, bx, by, cell_size=0.1, origin=0.5, batch_size=b)
    with pytest.raises(ValueError, match="`origin` entries must be finite, got"):
        grid_knn(x, y, 3, bx, by, cell_size=0.1, origin=float("nan"), batch_size=b)


@pytest.mark.parametrize("duplicates", [False, True])
def test_float64_positions(duplicates):
    # float64 takes the two-sort selection instead of the packed float32 key
    x, bx, b = make_ragged(dim=2, seed=11, duplicates=duplicates, dtype=torch.float64)
    y, by, _ = make_ragged(sizes=QUERY_SIZES, dim=2, seed=12, dtype=torch.float64)
    y[3] = x[2]
    for k in (1, 3, 9):
        res = grid_knn(x, y, k, bx, by, cell_size=0.15, batch_size=b, backend="native")
        ref = knn_naive(x, y, k, bx, by, batch_size=b)
        assert torch.equal(res.index, ref.index) and torch.equal(res.dist2, ref.dist2)
