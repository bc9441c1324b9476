import pytest
import torch
from ops_data import make_ragged

from pointctx.ops import _backend, fps, fps_naive, sample_counts, set_sizes

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _min_dist_coverage(pos, picked):
    """Largest distance from a point to its nearest picked point."""
    return torch.cdist(pos, pos[picked]).min(1).values.max()


# ------------------------------------------------------------------------------- counts


def test_sample_counts_ratio_is_ceil():
    sizes = torch.tensor([0, 1, 2, 3, 10, 100, 1024])
    assert sample_counts(sizes, ratio=0.25).tolist() == [0, 1, 1, 1, 3, 25, 256]
    assert sample_counts(sizes, ratio=1.0).tolist() == sizes.tolist()
    # 0.07 * 100 is 7.000000000000001 in float64; torch-cluster (float32) gives 7
    assert sample_counts(torch.tensor([100]), ratio=0.07).tolist() == [7]
    assert sample_counts(torch.tensor([30]), ratio=0.1).tolist() == [3]
    assert sample_counts(torch.tensor([31]), ratio=0.1).tolist() == [4]


def test_sample_counts_num():
    sizes = torch.tensor([0, 1, 5, 9])
    assert sample_counts(sizes, num=4).tolist() == [0, 1, 4, 4]
    assert sample_counts(sizes, num=torch.tensor([3, 0, 2, 20])).tolist() == [0, 0, 2, 9]


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({}, ValueError, "exactly one of `ratio` and `num`.*neither"),
        ({"ratio": 0.5, "num": 3}, ValueError, "exactly one of `ratio` and `num`.*both"),
        ({"ratio": 0.0}, ValueError, r"`ratio` must be in \(0, 1\], got 0.0"),
        ({"ratio": 1.5}, ValueError, r"`ratio` must be in \(0, 1\], got 1.5"),
        ({"ratio": -0.1}, ValueError, r"`ratio` must be in \(0, 1\]"),
        ({"ratio": "half"}, TypeError, "`ratio` must be a float"),
        ({"num": 0}, ValueError, "`num` must be >= 1, got 0"),
        ({"num": 2.5}, TypeError, "`num` must be an int"),
        ({"num": torch.tensor([1, 2])}, ValueError, "`num` must have one entry per set"),
        ({"num": torch.tensor([1, -2, 0])}, ValueError, "`num` entries must be >= 0"),
        ({"num": torch.tensor([1.0, 2.0, 3.0])}, ValueError, "`num` must be an integer tensor"),
    ],
)
def test_sample_counts_bad(kwargs, err, match):
    with pytest.raises(err, match=match):
        sample_counts(torch.tensor([3, 4, 5]), **kwargs)


# ------------------------------------------------------------------------------- fast vs naive


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize(
    "amount",
    [{"ratio": 0.5}, {"ratio": 1.0}, {"ratio": 0.1}, {"num": 4}, {"num": 100},
     {"num": torch.tensor([2, 1, 3, 0, 2, 9, 5])}],
)
def test_native_matches_naive(dim, duplicates, amount):
    pos, batch, b = make_ragged(dim=dim, seed=dim, duplicates=duplicates)
    fast = fps(pos, batch, batch_size=b, backend="native", **amount)
    ref = fps_naive(pos, batch, batch_size=b, **amount)
    assert fast.dtype == torch.long
    assert torch.equal(fast, ref)


def test_random_start_matches_naive_and_is_reproducible():
    pos, batch, b = make_ragged(seed=3)
    runs = []
    for fn in (fps, fps_naive):
        g = torch.Generator().manual_seed(11)
        runs.append(fn(pos, batch, ratio=0.3, random_start=True, batch_size=b, generator=g))
    assert torch.equal(runs[0], runs[1])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    a = fps(pos, batch, ratio=0.3, random_start=True, batch_size=b, generator=g1)
    c = fps(pos, batch, ratio=0.3, random_start=True, batch_size=b, generator=g2)
    assert not torch.equal(a, c)  # the start depends on the generator
    assert torch.equal(a.sort().values.unique(), a.sort().values)  # no repeats


def test_float64_and_half_precision():
    pos, batch, b = make_ragged(seed=4, dtype=torch.float64)
    fast = fps(pos, batch, ratio=0.4, backend="native")
    assert torch.equal(fast, fps_naive(pos, batch, ratio=0.4))
    half = pos.to(torch.bfloat16)
    assert torch.equal(fps(half, batch, num=5, backend="native"), fps_naive(half, batch, num=5))


# ------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("duplicates", [False, True])
def test_layout_contract(duplicates):
    pos, batch, b = make_ragged(duplicates=duplicates, seed=5)
    sizes = set_sizes(batch, b)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    counts = sample_counts(sizes, ratio=0.5)
    idx = fps(pos, batch, ratio=0.5, batch_size=b, backend="native")
    assert idx.shape == (int(counts.sum()),)
    out_ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    for s in range(b):
        part = idx[out_ptr[s]:out_ptr[s + 1]]
        assert bool(((part >= ptr[s]) & (part < ptr[s + 1])).all())  # grouped by set, in order
        assert part.unique().numel() == part.numel()  # distinct even with duplicate points
        if part.numel():
            assert int(part[0]) == int(ptr[s])  # first pick: first point of the set


def test_picks_are_farthest_on_a_line():
    pos = torch.tensor([[0.0], [1.0], [10.0], [4.0], [6.0]])
    assert fps(pos, num=3, backend="native").tolist() == [0, 2, 3]
    # tie: 2 and 4 are both at distance 5 from 0 -> lower index wins
    pos = torch.tensor([[0.0], [5.0], [-5.0]])
    assert fps(pos, num=2, backend="native").tolist() == [0, 1]


def test_duplicates_give_distinct_lowest_indices():
    pos = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert fps(pos, ratio=1.0, backend="native").tolist() == [0, 2, 1, 3]


def test_batch_none_is_one_set_and_trailing_empty_sets():
    pos, _, _ = make_ragged(sizes=[20], seed=6)
    assert torch.equal(
        fps(pos, ratio=0.5, backend="native"),
        fps(pos, torch.zeros(20, dtype=torch.long), ratio=0.5, backend="native"),
    )
    out = fps(pos, num=3, batch_size=4, backend="native")
    assert torch.equal(out, fps_naive(pos, num=3))


def test_empty_inputs():
    pos = torch.zeros(0, 3)
    assert fps(pos, ratio=0.5, backend="native").shape == (0,)
    assert fps(pos, torch.zeros(0, dtype=torch.long), num=2, batch_size=3,
               backend="native").shape == (0,)
    pos, batch, b = make_ragged(sizes=[0, 0, 4], seed=1)
    out = fps(pos, batch, num=2, backend="native")
    assert out.shape == (2,) and int(out[0]) == 0
    assert torch.equal(fps(pos, batch, num=2, backend="native"), fps_naive(pos, batch, num=2))


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda p, b: ((p[:, 0],), {"batch": b}), ValueError, r"`pos` must have shape \[N, D\]"),
        (lambda p, b: ((p[None],), {"batch": b}), ValueError, r"`pos` must have shape \[N, D\]"),
        (lambda p, b: ((p,), {"batch": b.flip(0)}), ValueError, "`batch` must be sorted"),
        (lambda p, b: ((p,), {"batch": b[:-1]}), ValueError, "`batch` must have one entry per"),
        (lambda p, b: ((p,), {"batch": b[None]}), ValueError, r"`batch` must have shape \[N\]"),
        (lambda p, b: ((p,), {"batch": b, "batch_size": 2}), ValueError, "< batch_size = 2"),
        (lambda p, b: ((p.long(),), {"batch": b}), ValueError, "floating point"),
    ],
)
def test_bad_inputs(make, err, match):
    pos, batch, _ = make_ragged(seed=0)
    args, kwargs = make(pos, batch)
    with pytest.raises(err, match=match):
        fps(*args, ratio=0.5, backend="native", **kwargs)


def test_bad_amount_raises_before_backend():
    pos, batch, _ = make_ragged(seed=0)
    with pytest.raises(ValueError, match="exactly one of"):
        fps(pos, batch, backend="native")
    with pytest.raises(ValueError, match=r"`ratio` must be in \(0, 1\]"):
        fps(pos, batch, ratio=2.0)


def test_cluster_backend_missing_raises(monkeypatch):
    monkeypatch.setattr(_backend, "_cluster_module", lambda: None)
    pos, batch, _ = make_ragged(seed=0)
    with pytest.raises(ImportError, match="pip install --no-build-isolation torch-cluster"):
        fps(pos, batch, ratio=0.5, backend="cluster")
    # auto falls back to native
    assert torch.equal(fps(pos, batch, ratio=0.5, backend="auto"), fps_naive(pos, batch, ratio=0.5))


# ------------------------------------------------------------------------------- torch-cluster


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("amount", [{"ratio": 0.5}, {"ratio": 0.25}, {"num": 5},
                                    {"num": torch.tensor([2, 1, 3, 0, 2, 9, 5])}])
def test_cluster_matches_native(dim, amount):
    pytest.importorskip("torch_cluster")
    pos, batch, b = make_ragged(dim=dim, seed=7 + dim)  # random floats: no ties
    native = fps(pos, batch, batch_size=b, backend="native", **amount)
    cluster = fps(pos, batch, batch_size=b, backend="cluster", **amount)
    assert torch.equal(native, cluster)


def test_cluster_random_start_uses_generator():
    pytest.importorskip("torch_cluster")
    pos, batch, b = make_ragged(seed=12)
    out = []
    for backend in ("native", "cluster"):
        g = torch.Generator().manual_seed(5)
        out.append(fps(pos, batch, ratio=0.5, random_start=True, batch_size=b, backend=backend,
                       generator=g))
    assert torch.equal(out[0], out[1])


def test_cluster_with_duplicates_covers_the_same_points():
    pytest.importorskip("torch_cluster")
    pos, batch, b = make_ragged(seed=13, duplicates=True)
    sizes = set_sizes(batch, b)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    for amount in ({"num": 3}, {"ratio": 1.0}):
        native = fps(pos, batch, batch_size=b, backend="native", **amount)
        cluster = fps(pos, batch, batch_size=b, backend="cluster", **amount)
        assert native.shape == cluster.shape
        for s in range(b):
            lo, hi = int(ptr[s]), int(ptr[s + 1])
            if hi == lo:
                continue
            n_sel = native[(native >= lo) & (native < hi)]
            c_sel = cluster[(cluster >= lo) & (cluster < hi)]
            # same picked positions (as sets) and same min-distance coverage
            assert torch.equal(pos[n_sel].unique(dim=0), pos[c_sel].unique(dim=0))
            assert torch.equal(_min_dist_coverage(pos[lo:hi], n_sel - lo),
                               _min_dist_coverage(pos[lo:hi], c_sel - lo))


@CUDA
def test_cuda_matches_cpu():
    pos, batch, b = make_ragged(seed=14)
    cpu = fps(pos, batch, ratio=0.5, batch_size=b, backend="native")
    gpu = fps(pos.cuda(), batch.cuda(), ratio=0.5, batch_size=b, backend="native")
    assert torch.equal(cpu, gpu.cpu())
