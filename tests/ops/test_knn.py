import importlib

import pytest
import torch
from ops_data import SIZES, make_ragged

from pointctx.ops import KNN, _backend, knn, knn_naive

# the package re-exports the function `knn` under the module's name
knn_module = importlib.import_module("pointctx.ops.knn")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# queries per set; set 2 and set 6 have queries but no x points
QUERY_SIZES = [3, 2, 4, 0, 1, 5, 2]


def make_pair(dim=3, seed=0, duplicates=False, dtype=torch.float32):
    x, bx, b = make_ragged(dim=dim, seed=seed, duplicates=duplicates, dtype=dtype)
    y, by, _ = make_ragged(sizes=QUERY_SIZES, dim=dim, seed=seed + 100, dtype=dtype)
    if duplicates:  # some queries sit exactly on (duplicated) x points
        y[0], y[10] = x[0], x[12 + 3]
    return x, bx, y, by, b


def _check_padding(res, by, k):
    sizes = torch.tensor(SIZES)[by]  # x points in each query's set
    slot = torch.arange(k)
    missing = slot[None, :] >= sizes[:, None]
    assert bool((res.index[missing] == -1).all())
    assert bool(torch.isinf(res.dist2[missing]).all())
    assert bool((res.index[~missing] >= 0).all())
    assert bool(torch.isfinite(res.dist2[~missing]).all())


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize("k", [1, 4, 40])
@pytest.mark.parametrize("chunk_size", [None, 1, 50])
def test_native_matches_naive(dim, duplicates, k, chunk_size):
    x, bx, y, by, b = make_pair(dim=dim, seed=dim, duplicates=duplicates)
    fast = knn(x, y, k, bx, by, batch_size=b, backend="native", chunk_size=chunk_size)
    ref = knn_naive(x, y, k, bx, by, batch_size=b)
    assert isinstance(fast, KNN)
    assert fast.index.shape == fast.dist2.shape == (y.shape[0], k)
    assert fast.index.dtype == torch.long and fast.dist2.dtype == x.dtype
    assert torch.equal(fast.index, ref.index)
    assert torch.equal(fast.dist2, ref.dist2)
    _check_padding(fast, by, k)


def test_neighbours_are_in_the_query_set_and_sorted():
    x, bx, y, by, b = make_pair(seed=5)
    res = knn(x, y, 8, bx, by, batch_size=b, backend="native")
    valid = res.index >= 0
    assert bool((bx[res.index[valid]] == by.unsqueeze(1).expand_as(res.index)[valid]).all())
    assert bool((res.dist2[:, 1:] >= res.dist2[:, :-1]).all())
    d = ((y.unsqueeze(1) - x[res.index.clamp(min=0)]) ** 2).sum(-1)
    assert torch.allclose(d[valid], res.dist2[valid])


def test_ties_go_to_the_lower_index():
    x = torch.tensor([[0.0], [2.0], [-2.0], [2.0], [0.0]])
    y = torch.tensor([[0.0]])
    assert knn(x, y, 3, backend="native").index.tolist() == [[0, 4, 1]]
    assert knn(x, y, 4, backend="native").index.tolist() == [[0, 4, 1, 2]]
    assert knn(x, y, 5, backend="native").dist2.tolist() == [[0.0, 0.0, 4.0, 4.0, 4.0]]
    # the same with everything in one chunk of at most one query slot
    assert knn(x, y, 3, backend="native", chunk_size=1).index.tolist() == [[0, 4, 1]]


def test_float64_and_high_dim():
    x, bx, y, by, b = make_pair(dim=32, seed=9, dtype=torch.float64)
    fast = knn(x, y, 6, bx, by, batch_size=b, backend="native")
    ref = knn_naive(x, y, 6, bx, by, batch_size=b)
    assert torch.equal(fast.index, ref.index)  # matmul expansion; no near ties in this data
    assert torch.allclose(fast.dist2, ref.dist2, rtol=1e-12, atol=1e-12)
    _check_padding(fast, by, 6)


def test_half_precision_matches_naive():
    x, bx, y, by, b = make_pair(seed=2, dtype=torch.bfloat16)
    fast = knn(x, y, 5, bx, by, batch_size=b, backend="native")
    ref = knn_naive(x, y, 5, bx, by, batch_size=b)
    assert torch.equal(fast.index, ref.index) and torch.equal(fast.dist2, ref.dist2)


def test_chunk_size_bounds_the_distance_block(monkeypatch):
    x, bx, y, by, b = make_pair(seed=4)
    seen = []
    real = knn_module._sqdist

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(knn_module, "_sqdist", spy)
    nmax = max(SIZES)
    for chunk in (1, 100, 1000, 10**6):
        seen.clear()
        knn(x, y, 3, bx, by, batch_size=b, backend="native", chunk_size=chunk)
        assert seen and max(seen) <= max(chunk, nmax)
    assert len(seen) == 1  # everything fits in one block


def test_self_query_and_defaults():
    x, _, _ = make_ragged(sizes=[50], seed=8)
    res = knn(x, x, 1, backend="native")
    assert torch.equal(res.index[:, 0], torch.arange(50))
    assert bool((res.dist2 == 0).all())
    # batch_y None with batch_x given: all queries belong to set 0
    bx = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(20, dtype=torch.long)])
    res = knn(x, x[:3], 40, batch_x=bx, backend="native")
    assert int((res.index[0] >= 0).sum()) == 30
    assert bool((res.index[res.index >= 0] < 30).all())


def test_empty_inputs():
    x, bx, _ = make_ragged(seed=1)
    y = torch.zeros(0, 3)
    res = knn(x, y, 3, bx, torch.zeros(0, dtype=torch.long), batch_size=7, backend="native")
    assert res.index.shape == (0, 3) and res.dist2.shape == (0, 3)
    res = knn(torch.zeros(0, 3), x[:4], 2, backend="native")
    assert res.index.tolist() == [[-1, -1]] * 4 and bool(torch.isinf(res.dist2).all())


@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda x, bx, y, by: ((x, y[:, :2], 2), {}), ValueError, "same number of coordinates"),
        (lambda x, bx, y, by: ((x, y.double(), 2), {}), ValueError, "must share dtype"),
        (lambda x, bx, y, by: ((x, y, 0), {}), ValueError, "`k` must be >= 1, got 0"),
        (lambda x, bx, y, by: ((x, y, 2.0), {}), TypeError, "`k` must be an int"),
        (lambda x, bx, y, by: ((x[None], y, 2), {}), ValueError, r"`x_pos` must have shape"),
        (lambda x, bx, y, by: ((x, y[:, 0], 2), {}), ValueError, r"`y_pos` must have shape"),
        (lambda x, bx, y, by: ((x, y, 2), {"batch_x": bx.flip(0), "batch_y": by}), ValueError,
         "`batch_x` must be sorted"),
        (lambda x, bx, y, by: ((x, y, 2), {"batch_x": bx, "batch_y": by[:-1]}), ValueError,
         "`batch_y` must have one entry per point"),
        (lambda x, bx, y, by: ((x, y, 2), {"batch_x": bx, "batch_y": by, "batch_size": 3}),
         ValueError, "< batch_size = 3"),
        (lambda x, bx, y, by: ((x, y, 2), {"batch_x": bx, "batch_y": by, "chunk_size": 0}),
         ValueError, "`chunk_size` must be >= 1"),
    ],
)
def test_bad_inputs(make, err, match):
    x, bx, y, by, _ = make_pair()
    args, kwargs = make(x, bx, y, by)
    with pytest.raises(err, match=match):
        knn(*args, backend="native", **kwargs)


def test_cluster_backend_missing_raises(monkeypatch):
    monkeypatch.setattr(_backend, "_cluster_module", lambda: None)
    x, bx, y, by, b = make_pair()
    with pytest.raises(ImportError, match="torch-cluster is not installed"):
        knn(x, y, 2, bx, by, backend="cluster")


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_cluster_matches_native(dim, k):
    pytest.importorskip("torch_cluster")
    x, bx, y, by, b = make_pair(dim=dim, seed=20 + dim)  # random floats: no ties
    native = knn(x, y, k, bx, by, batch_size=b, backend="native")
    cluster = knn(x, y, k, bx, by, batch_size=b, backend="cluster")
    assert torch.equal(native.index, cluster.index)
    assert torch.equal(native.dist2, cluster.dist2)


def test_cluster_with_duplicates_same_distances_and_points():
    pytest.importorskip("torch_cluster")
    x, bx, y, by, b = make_pair(seed=30, duplicates=True)
    native = knn(x, y, 6, bx, by, batch_size=b, backend="native")
    cluster = knn(x, y, 6, bx, by, batch_size=b, backend="cluster")
    assert torch.equal(native.dist2, cluster.dist2)
    assert torch.equal(native.index >= 0, cluster.index >= 0)
    valid = native.index >= 0
    # tied neighbours may differ in index but are copies of the same point
    assert torch.equal(x[native.index[valid]], x[cluster.index[valid]])


@CUDA
def test_cuda_matches_cpu():
    x, bx, y, by, b = make_pair(seed=31)
    cpu = knn(x, y, 5, bx, by, batch_size=b, backend="native")
    gpu = knn(x.cuda(), y.cuda(), 5, bx.cuda(), by.cuda(), batch_size=b, backend="native")
    assert torch.equal(cpu.index, gpu.index.cpu())
    assert torch.allclose(cpu.dist2, gpu.dist2.cpu())


def _uneven(seed=40, dim=3):
    g = torch.Generator().manual_seed(seed)
    sizes = [1500] + [10] * 40 + [0, 3]
    x = torch.rand(sum(sizes), dim, generator=g)
    bx = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, bx, len(sizes)


@pytest.mark.parametrize("dim", [3, 20])
def test_uneven_set_sizes_are_bucketed_and_exact(monkeypatch, dim):
    x, bx, b = _uneven(dim=dim)
    calls = []
    padded = knn_module._knn_padded

    def spy(x_pos, y_pos, k, bx_, by_, b_, sx, px, sy, py, chunk):
        calls.append((b_, int(sx.max()), int(sy.max()), int((sx * sy).sum())))
        return padded(x_pos, y_pos, k, bx_, by_, b_, sx, px, sy, py, chunk)

    monkeypatch.setattr(knn_module, "_knn_padded", spy)
    monkeypatch.setattr(knn_module, "_use_cells", lambda *args: False)  # the brute force
    res = knn(x, x, 8, bx, bx, batch_size=b, backend="native")
    assert len(calls) >= 2  # the 1500-point set and the small sets are searched apart
    for nb, nmax, mmax, work in calls:  # no bucket pays more than 4x its own work
        assert nb * nmax * mmax <= 4 * work
    ref = knn_naive(x, x, 8, bx, bx, batch_size=b)
    if dim <= 16:
        assert torch.equal(res.index, ref.index) and torch.equal(res.dist2, ref.dist2)
    else:  # matmul expansion: same neighbours up to rounding of near-equal distances
        assert torch.allclose(res.dist2, ref.dist2, atol=1e-5)
    small = knn(x[:1500], x[:1500], 8, backend="native")  # the big set alone
    assert torch.equal(res.index[:1500], small.index)


def test_cluster_path_in_query_chunks_matches_one_call():
    pytest.importorskip("torch_cluster")
    x, bx, b = _uneven(seed=41)
    whole = knn(x, x, 5, bx, bx, batch_size=b, backend="cluster")
    chunked = knn(x, x, 5, bx, bx, batch_size=b, backend="cluster", chunk_size=37)  # 7 queries
    assert torch.equal(whole.index, chunked.index) and torch.equal(whole.dist2, chunked.dist2)


def test_impossible_result_sizes_are_refused_at_once():
    x = torch.rand(10, 3)
    with pytest.raises(ValueError, match=r"knn: the result \[M, k\] = \[10, 1000000000000\] "
                       r"needs 109\.1 TB .* more than the .* of memory of cpu; lower `k`"):
        knn(x, x, 10**12)
