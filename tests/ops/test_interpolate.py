import pytest
import torch
from ops_data import SIZES, make_ragged
from torch.utils._python_dispatch import TorchDispatchMode

from pointctx.ops import cluster_available, knn_interpolate, knn_interpolate_naive

# queries per set; sets 2 and 6 have queries but no source points, set 3 has no queries
QUERY_SIZES = [3, 2, 4, 0, 1, 5, 2]


def make_case(dim=3, channels=5, seed=0, dtype=torch.float64):
    pos, batch, b = make_ragged(dim=dim, seed=seed, dtype=dtype)
    q, bq, _ = make_ragged(sizes=QUERY_SIZES, dim=dim, seed=seed + 100, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 7)
    x = torch.randn(pos.shape[0], channels, generator=g, dtype=torch.float64).to(dtype)
    return x, pos, q, batch, bq, b


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("k", [1, 3, 5, 40])
def test_matches_naive_on_heterogeneous_sets(dim, k):
    x, pos, q, batch, bq, b = make_case(dim=dim, seed=dim + k)
    fast = knn_interpolate(x, pos, q, batch, bq, k=k, batch_size=b, backend="native")
    ref = knn_interpolate_naive(x, pos, q, batch, bq, k=k, batch_size=b)
    assert fast.shape == (q.shape[0], x.shape[1]) and fast.dtype == x.dtype
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not cluster_available(), reason="needs torch-cluster")
def test_cluster_backend_matches_naive():
    x, pos, q, batch, bq, b = make_case(seed=3)
    fast = knn_interpolate(x, pos, q, batch, bq, k=3, batch_size=b, backend="cluster")
    ref = knn_interpolate_naive(x, pos, q, batch, bq, k=3, batch_size=b)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)


def test_empty_sets_tiny_sets_and_fewer_than_k():
    x, pos, q, batch, bq, b = make_case(seed=1)
    out = knn_interpolate(x, pos, q, batch, bq, k=3, batch_size=b)
    sizes = torch.tensor(SIZES)
    # queries of sets without source points (2 and 6) get exactly 0
    no_src = sizes[bq] == 0
    assert bool(no_src.any()) and bool((out[no_src] == 0).all())
    # set 1 has a single source point: every query of it copies that point's features
    one = bq == 1
    src1 = int(torch.cumsum(sizes, 0)[0])
    assert torch.allclose(out[one], x[src1].expand(int(one.sum()), -1))
    # set 4 has 2 points (< k = 3): a convex combination of exactly those two
    start4 = int(sizes[:4].sum())
    p0, p1 = pos[start4], pos[start4 + 1]
    for i in (bq == 4).nonzero().view(-1).tolist():
        w0, w1 = 1 / ((q[i] - p0) ** 2).sum(), 1 / ((q[i] - p1) ** 2).sum()
        expect = (w0 * x[start4] + w1 * x[start4 + 1]) / (w0 + w1)
        assert torch.allclose(out[i], expect)


def test_weights_are_normalised_and_exact_on_source_points():
    x, pos, q, batch, bq, b = make_case(seed=2)
    ones = torch.ones(x.shape[0], 1, dtype=x.dtype)
    out = knn_interpolate(ones, pos, q, batch, bq, k=4, batch_size=b)
    has_src = torch.tensor(SIZES)[bq] > 0
    assert torch.allclose(out[has_src], torch.ones_like(out[has_src]))
    # querying the source positions returns the source features
    same = knn_interpolate(x, pos, pos, batch, batch, k=3, batch_size=b)
    torch.testing.assert_close(same, x, rtol=1e-9, atol=1e-9)


def test_eps_enters_the_weights():
    pos = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    x = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    q = torch.tensor([[0.25]], dtype=torch.float64)
    for eps in (1e-16, 1e-8, 0.5):
        w0, w1 = 1 / (0.0625 + eps), 1 / (0.5625 + eps)
        out = knn_interpolate(x, pos, q, k=2, eps=eps)
        assert out.item() == pytest.approx(w0 / (w0 + w1), rel=1e-12)


def test_gradient_flows_to_features_like_the_reference():
    x, pos, q, batch, bq, b = make_case(seed=4)
    g = torch.randn(q.shape[0], x.shape[1], dtype=x.dtype)
    xa = x.clone().requires_grad_(True)
    (knn_interpolate(xa, pos, q, batch, bq, batch_size=b) * g).sum().backward()
    xb = x.clone().requires_grad_(True)
    (knn_interpolate_naive(xb, pos, q, batch, bq, batch_size=b) * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)


def test_single_set_without_batch_and_degenerate_sizes():
    g = torch.Generator().manual_seed(0)
    pos, q = torch.rand(10, 3, generator=g), torch.rand(4, 3, generator=g)
    x = torch.randn(10, 6, generator=g)
    torch.testing.assert_close(knn_interpolate(x, pos, q), knn_interpolate_naive(x, pos, q))
    assert knn_interpolate(x, pos, q[:0]).shape == (0, 6)
    empty = knn_interpolate(x[:0], pos[:0], q)
    assert empty.shape == (4, 6) and bool((empty == 0).all())
    assert knn_interpolate(x[:, :0], pos, q).shape == (4, 0)


def test_half_precision_features_on_source_points_stay_finite():
    pos = torch.rand(20, 2)
    x = torch.randn(20, 3).to(torch.bfloat16)
    out = knn_interpolate(x, pos, pos)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, x)


class _Sizes(TorchDispatchMode):
    """Record the element count of every tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_is_linear_in_queries_times_k():
    # no [Nq, k, C] gather: every intermediate holds at most max(Nq*C, Nq*k) entries, besides
    # the kNN's distance blocks (2**18 entries on CPU)
    sets, n_src, n_q, k, c = 4, 50, 2000, 8, 64
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(sets * n_src, 3, generator=g)
    q = torch.rand(sets * n_q, 3, generator=g)
    batch = torch.arange(sets).repeat_interleave(n_src)
    bq = torch.arange(sets).repeat_interleave(n_q)
    x = torch.randn(sets * n_src, c, generator=g, requires_grad=True)
    with _Sizes() as rec:
        out = knn_interpolate(x, pos, q, batch, bq, k=k, batch_size=sets, backend="native")
        out.sum().backward()
    nq = sets * n_q
    assert rec.largest <= max(nq * c, nq * k, 2**18)
    assert rec.largest < nq * k * c // 4


def test_errors_name_the_argument():
    pos, x, q = torch.rand(5, 3), torch.rand(5, 2), torch.rand(2, 3)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        knn_interpolate(x, pos, q, k=0)
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        knn_interpolate(x, pos, q, eps=0.0)
    with pytest.raises(TypeError, match="`eps` must be a number"):
        knn_interpolate(x, pos, q, eps="1")
    with pytest.raises(ValueError, match="`x` must have one row per point: expected 5"):
        knn_interpolate(x[:4], pos, q)
    with pytest.raises(ValueError, match="`x` must be a floating point"):
        knn_interpolate(x.long(), pos, q)
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        knn_interpolate(x.tolist(), pos, q)
    with pytest.raises(ValueError, match="same number of coordinates"):
        knn_interpolate(x, pos, torch.rand(2, 2))
