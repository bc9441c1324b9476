"""The cell search inside the native ``knn`` (D <= 3) against the naive reference."""

import importlib

import pytest
import torch
from ops_data import make_ragged

from pointctx.ops import cluster_available, knn, knn_naive
from pointctx.ops.grid import lattice_plane

knn_module = importlib.import_module("pointctx.ops.knn")
grid_module = importlib.import_module("pointctx.ops.grid_knn")

# tiny sets, an empty set, sets smaller than k and a few larger ones
SIZES = [300, 1, 0, 7, 2, 180, 0, 45, 600, 3]
QUERY_SIZES = [40, 3, 2, 0, 5, 60, 0, 9, 100, 1]


@pytest.fixture
def cells(monkeypatch):
    """Force the cell search for every D <= 3 call; record that it ran."""
    calls = []
    real = grid_module._auto_grid_knn

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(knn_module, "_CELL_MIN", {1: 0, 2: 0, 3: 0})
    monkeypatch.setattr(grid_module, "_auto_grid_knn", spy)
    return calls


def _same(res, ref):
    assert torch.equal(res.index, ref.index)
    assert torch.equal(res.dist2, ref.dist2)


def _pair(dim, seed, duplicates=False, dtype=torch.float32):
    x, bx, b = make_ragged(SIZES, dim=dim, seed=seed, duplicates=duplicates, dtype=dtype)
    y, by, _ = make_ragged(QUERY_SIZES, dim=dim, seed=seed + 1, dtype=dtype)
    if duplicates:  # queries exactly on (duplicated) source points
        y[:10] = x[:10]
    return x, bx, y, by, b


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize("k", [1, 5, 16, 50])
def test_matches_naive_on_heterogeneous_batches(cells, dim, duplicates, k):
    x, bx, y, by, b = _pair(dim, 10 * dim + k, duplicates)
    for chunk in (None, 7):
        res = knn(x, y, k, bx, by, batch_size=b, backend="native", chunk_size=chunk)
        _same(res, knn_naive(x, y, k, bx, by, batch_size=b))
    assert cells


def test_float64_and_self_queries(cells):
    x, bx, _, _, b = _pair(3, 5, duplicates=True, dtype=torch.float64)
    res = knn(x, x, 9, bx, bx, batch_size=b, backend="native")
    _same(res, knn_naive(x, x, 9, bx, bx, batch_size=b))
    assert res.dist2.dtype == torch.float64 and cells


def test_pixel_lattice_with_holes(cells):
    # two masked images: many exact ties on the lattice, queries inside the holes far from
    # every source
    sets = []
    for h, w, seed in ((40, 52, 0), (33, 30, 1)):
        grid = lattice_plane(1, (h, w))
        keep = torch.rand(h * w, generator=torch.Generator().manual_seed(seed)) > 0.3
        row = torch.arange(h).repeat_interleave(w)
        keep &= ~((row > h // 4) & (row < 3 * h // 4))  # a band without sources
        sets.append((grid[keep], grid))
    x = torch.cat([s for s, _ in sets])
    y = torch.cat([q for _, q in sets])
    bx = torch.cat([torch.full((s.shape[0],), i) for i, (s, _) in enumerate(sets)])
    by = torch.cat([torch.full((q.shape[0],), i) for i, (_, q) in enumerate(sets)])
    for k in (4, 9, 16):
        _same(knn(x, y, k, bx, by, backend="native"), knn_naive(x, y, k, bx, by))
    assert cells


def test_uneven_sizes_flat_and_degenerate_sets(cells):
    g = torch.Generator().manual_seed(3)
    big = torch.rand(3000, 3, generator=g)
    flat = torch.cat([torch.rand(400, 2, generator=g), torch.zeros(400, 1)], 1)  # a plane
    line = torch.rand(200, 1, generator=g) * torch.tensor([[1.0, 2.0, -1.0]])  # a segment
    same = torch.full((30, 3), 0.25)  # all points identical
    parts = [big, torch.rand(10, 3, generator=g), flat, line, same]
    x = torch.cat(parts)
    bx = torch.cat([torch.full((p.shape[0],), i) for i, p in enumerate(parts)])
    # queries from each set plus some far outside the sets' bounding boxes
    y = torch.cat([x[::7], torch.randn(50, 3, generator=g) * 3])
    by = torch.cat([bx[::7], torch.arange(50) % len(parts)]).sort().values
    y = y[torch.argsort(torch.cat([bx[::7], torch.arange(50) % len(parts)]), stable=True)]
    for k in (1, 16, 40):
        res = knn(x, y, k, bx, by, backend="native", chunk_size=1000)
        _same(res, knn_naive(x, y, k, bx, by))
    assert cells


def test_large_sets_take_the_cell_search_by_default(monkeypatch):
    calls = []
    real = grid_module._auto_grid_knn
    monkeypatch.setattr(grid_module, "_auto_grid_knn",
                        lambda *args: calls.append(1) or real(*args))
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4000, 2, generator=g)
    y = x[:500]
    res = knn(x, y, 8, backend="native")
    assert calls
    _same(res, knn_naive(x, y, 8))
    small = torch.rand(40, 3, generator=g)
    knn(small, small, 8, backend="native")
    assert len(calls) == 1  # small sets: the brute force
    knn(x.double(), y.double(), 8, backend="native")  # float64 too
    assert len(calls) == 2
    knn(torch.rand(4000, 4, generator=g), torch.rand(9, 4, generator=g), 3, backend="native")
    assert len(calls) == 2  # D = 4: the brute force


@pytest.mark.skipif(not cluster_available(), reason="torch-cluster not installed (optional)")
def test_cell_search_agrees_with_torch_cluster():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(3 * 2048, 3, generator=g)
    bx = torch.arange(3).repeat_interleave(2048)
    q = torch.randperm(x.shape[0], generator=g)[:900].sort().values
    native = knn(x, x[q], 16, bx, bx[q], batch_size=3, backend="native")
    cluster = knn(x, x[q], 16, bx, bx[q], batch_size=3, backend="cluster")
    assert torch.equal(native.dist2, cluster.dist2)
    assert torch.equal(native.index, cluster.index)  # no ties in random data
