"""pointctx.ops.linear: the oneDNN path against aten / the reference, fallbacks, backend choice."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pointctx.nn.layers import Linear
from pointctx.ops import (
    get_linear_backend,
    linear,
    linear_reference,
    onednn_linear_available,
    set_linear_backend,
    use_linear_backend,
)

# the module (``pointctx.ops.linear`` the attribute is the function)
L = importlib.import_module("pointctx.ops.linear")

needs_onednn = pytest.mark.skipif(not onednn_linear_available(),
                                  reason="this PyTorch build has no oneDNN")

UNKNOWN = r"`backend` must be one of \['auto', 'aten', 'onednn'\], got 'mkl'"


@pytest.fixture(autouse=True)
def _restore_backend():
    old = get_linear_backend()
    yield
    L._state["value"] = old


@pytest.fixture
def count_onednn(monkeypatch):
    """Count the calls that reach oneDNN."""
    calls = []
    real = L._lp

    def spy(a, w, b=None):
        calls.append((tuple(a.shape), tuple(w.shape)))
        return real(a, w, b)

    monkeypatch.setattr(L, "_lp", spy)
    return calls


def _cases():
    """(x, weight source, weight view, bias) covering 2-D / 3-D / transposed inputs, a sliced
    (non-contiguous) weight, no bias, a chunked weight gradient (5,000 rows of 64 channels)
    and a single row."""
    g = torch.Generator().manual_seed(0)
    out = []
    for shape, cin, cout, bias, sliced in [
        ((300, 17), 17, 9, True, False),
        ((7, 40, 24), 24, 33, True, True),
        ((5000, 64), 64, 80, True, False),
        ((5000, 96), 96, 64, False, True),
        ((1, 8), 8, 3, True, False),
    ]:
        x = torch.randn(*shape, generator=g)
        src = torch.randn(cout + 3, cin + 5, generator=g)
        w_of = (lambda s, co=cout, ci=cin: s[1:co + 1, 2:ci + 2]) if sliced else (
            lambda s, co=cout, ci=cin: s[:co, :ci].contiguous())
        b = torch.randn(cout, generator=g) if bias else None
        out.append((x, src, w_of, b))
    x = torch.randn(30, 6, 20, generator=g).transpose(0, 1)  # non-contiguous input
    out.append((x, torch.randn(12, 20, generator=g), lambda s: s, torch.randn(12, generator=g)))
    return out


def _grads(backend, x, src, w_of, b, create_graph=False):
    x = x.clone().requires_grad_(True)
    src = src.clone().requires_grad_(True)
    b = None if b is None else b.clone().requires_grad_(True)
    y = linear(x, w_of(src), b, backend=backend)
    loss = (y * y * torch.linspace(0.5, 1.5, y.shape[-1])).sum()
    inputs = (x, src) if b is None else (x, src, b)
    grads = torch.autograd.grad(loss, inputs, create_graph=create_graph)
    return y, inputs, grads


def _rel(a, ref):
    """Largest difference relative to the largest magnitude of ``ref``."""
    a, ref = a.detach().double(), ref.detach()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


@needs_onednn
@pytest.mark.parametrize("case", range(6))
def test_onednn_forward_and_gradients_match_aten(case, count_onednn):
    x, src, w_of, b = _cases()[case]
    y1, _, g1 = _grads("onednn", x, src, w_of, b)
    assert count_onednn, "the onednn backend must reach oneDNN"
    y0, _, g0 = _grads("aten", x, src, w_of, b)
    d = [t.double() if t is not None else None for t in (x, src, b)]
    y64, _, g64 = _grads("aten", d[0], d[1], w_of, d[2])
    assert y1.shape == y0.shape == (*x.shape[:-1], w_of(src).shape[0])
    assert y1.dtype == torch.float32
    torch.testing.assert_close(y1, linear_reference(x, w_of(src), b), rtol=1e-5, atol=1e-5)
    # float32 rounding only: as close to the float64 result as aten's float32 result is
    for a, r, ref in zip((y1, *g1), (y0, *g0), (y64, *g64)):
        assert _rel(a, ref) <= max(4 * _rel(r, ref), 1e-6), (_rel(a, ref), _rel(r, ref))


@needs_onednn
@pytest.mark.parametrize("case", range(6))
def test_onednn_double_backward_matches_aten(case):
    """Second derivatives through every first-order gradient, the weight's included (it
    depends on x: a backward that saved a detached copy of x would lose that term)."""
    x, src, w_of, b = _cases()[case]
    res = []
    for backend in ("onednn", "aten"):
        _, inputs, grads = _grads(backend, x, src, w_of, b, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in grads), inputs,
                                     allow_unused=True)
        res.append(second)
    for a, r in zip(*res):
        if r is None:
            assert a is None or not a.abs().any()
            continue
        assert a is not None and _rel(a, r.double()) < 1e-4


@needs_onednn
def test_in_place_on_the_output_and_its_views():
    """The output is a tensor of its own: in-place ops on it and on views of it are allowed
    (no "view created inside a custom Function" error) and give aten's gradients."""
    x, src, w_of, b = _cases()[1]
    res = []
    for backend in ("onednn", "aten"):
        xx = x.clone().requires_grad_(True)
        w = src.clone().requires_grad_(True)
        y = linear(xx, w_of(w), b, backend=backend)
        if backend == "onednn":
            assert y._base is None
        y.add_(1.0)
        y[:, :3].mul_(2.0)
        res.append(torch.autograd.grad((y * y).sum(), (xx, w)))
    for a, r in zip(*res):
        assert _rel(a, r.double()) < 1e-5


@needs_onednn
def test_fallbacks_to_aten(count_onednn):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 32, generator=g, dtype=torch.float64)
    w = torch.randn(16, 32, generator=g, dtype=torch.float64)
    b = torch.randn(16, generator=g, dtype=torch.float64)
    # float64: exactly F.linear
    assert torch.equal(linear(x, w, b, backend="onednn"), F.linear(x, w, b))
    # empty input
    xe = torch.zeros(0, 32, requires_grad=True)
    ye = linear(xe, w.float(), b.float(), backend="onednn")
    assert ye.shape == (0, 16)
    ye.sum().backward()
    assert xe.grad.shape == (0, 32)
    # CPU autocast: aten's autocast casting applies
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = linear(x.float(), w.float(), b.float(), backend="onednn")
    assert yb.dtype == torch.bfloat16
    # reduced float32 matmul precision: left to aten, which honours it
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        linear(x.float(), w.float(), b.float(), backend="onednn")
    finally:
        torch.set_float32_matmul_precision(old)
    assert count_onednn == []
    # shape mismatch: aten's own error
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        linear(torch.randn(4, 31), w.float(), backend="onednn")


@needs_onednn
def test_auto_uses_onednn_only_for_large_products_where_preferred(monkeypatch, count_onednn):
    small = (torch.randn(8, 8), torch.randn(8, 8))
    few_rows = (torch.randn(32, 512), torch.randn(256, 512))  # like a classifier head
    large = (torch.randn(4096, 32), torch.randn(32, 32))  # 4M multiply-adds
    assert 4096 * 32 * 32 >= L.ONEDNN_MIN_MACS > 8 * 8 * 8
    assert 32 * 512 * 256 >= L.ONEDNN_MIN_MACS and 32 < L.ONEDNN_MIN_ROWS <= 4096
    monkeypatch.setattr(L, "_auto_prefers_onednn", lambda: True)
    linear(*small)
    linear(*few_rows)
    assert count_onednn == []
    linear(*large)
    assert len(count_onednn) == 1
    linear(*large, backend="aten")
    assert len(count_onednn) == 1
    monkeypatch.setattr(L, "_auto_prefers_onednn", lambda: False)  # e.g. an Intel CPU
    linear(*large)
    assert len(count_onednn) == 1
    with use_linear_backend("onednn"):
        linear(*small)
    assert len(count_onednn) == 2


def test_auto_rule_follows_the_cpu_vendor(monkeypatch):
    for vendor, machine, expected in [("amd", "x86_64", True), ("intel", "x86_64", False),
                                      ("unknown", "x86_64", False), ("amd", "aarch64", False)]:
        monkeypatch.setattr(L, "_cpu_vendor", lambda v=vendor: v)
        monkeypatch.setattr(L.platform, "machine", lambda m=machine: m)
        L._auto_prefers_onednn.cache_clear()
        try:
            assert L._auto_prefers_onednn() is (expected and onednn_linear_available())
        finally:
            L._auto_prefers_onednn.cache_clear()


def test_backend_setting_and_errors(monkeypatch):
    assert get_linear_backend() in L.LINEAR_BACKENDS
    set_linear_backend("aten")
    assert get_linear_backend() == "aten"
    with use_linear_backend("auto"):
        assert get_linear_backend() == "auto"
    assert get_linear_backend() == "aten"
    with pytest.raises(ValueError, match=UNKNOWN):
        set_linear_backend("mkl")
    with pytest.raises(ValueError, match=UNKNOWN):
        linear(torch.randn(2, 3), torch.randn(4, 3), backend="mkl")
    monkeypatch.setattr(L, "onednn_linear_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a PyTorch build with oneDNN"):
        set_linear_backend("onednn")
    assert get_linear_backend() == "aten"
    # without oneDNN even a forced per-call "onednn" computes (with aten)
    x, w = torch.randn(5, 3), torch.randn(4, 3)
    assert torch.equal(linear(x, w, backend="onednn"), F.linear(x, w))


def test_environment_variable(monkeypatch):
    monkeypatch.setenv(L.ENV_VAR, " ATen ")
    assert L._initial_backend() == "aten"
    monkeypatch.setenv(L.ENV_VAR, "")
    assert L._initial_backend() == "auto"
    monkeypatch.setenv(L.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"`POINTCTX_LINEAR_BACKEND` must be one of"):
        L._initial_backend()


def test_linear_module_is_an_nn_linear():
    torch.manual_seed(0)
    ref = nn.Linear(24, 10)
    lin = Linear(24, 10)
    assert isinstance(lin, nn.Linear)
    assert lin.state_dict().keys() == ref.state_dict().keys()
    lin.load_state_dict(ref.state_dict())
    x = torch.randn(3000, 24)
    with use_linear_backend("onednn" if onednn_linear_available() else "aten"):
        torch.testing.assert_close(lin(x), ref(x), rtol=1e-5, atol=1e-5)


def test_compiles_without_graph_breaks_and_takes_aten_inside():
    """Under torch.compile the op is plain F.linear (inductor picks its own kernels); the
    backend check comes first, so dynamo traces it in one graph."""
    g = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(512, 64, generator=g), torch.randn(48, 64, generator=g),
               torch.randn(48, generator=g))
    fn = torch.compile(lambda x, w, b: linear(x, w, b, backend="onednn"), backend="aot_eager",
                       fullgraph=True)
    torch.testing.assert_close(fn(x, w, b), F.linear(x, w, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_takes_aten_whatever_the_backend(count_onednn):
    g = torch.Generator().manual_seed(3)
    x, w, b = (torch.randn(4096, 64, generator=g), torch.randn(48, 64, generator=g),
               torch.randn(48, generator=g))
    for backend in L.LINEAR_BACKENDS:
        y = linear(x.cuda(), w.cuda(), b.cuda(), backend=backend)
        assert y.is_cuda
        torch.testing.assert_close(y.cpu(), F.linear(x, w, b), rtol=1e-4, atol=1e-4)
    assert count_onednn == []
