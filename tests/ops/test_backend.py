import pytest
import torch

from pointctx.ops import (
    _backend,
    cluster_available,
    get_backend,
    require_cluster,
    resolve_backend,
    set_backend,
    use_backend,
)

UNKNOWN = r"`backend` must be one of \['auto', 'native', 'cluster'\], got 'fast'"


@pytest.fixture(autouse=True)
def _restore_backend():
    old = get_backend()
    yield
    _backend._state["value"] = old


@pytest.fixture
def no_cluster(monkeypatch):
    monkeypatch.setattr(_backend, "_cluster_module", lambda: None)


@pytest.fixture
def fake_cluster(monkeypatch):
    fake = object()
    monkeypatch.setattr(_backend, "_cluster_module", lambda: fake)
    return fake


def test_default_is_auto():
    assert _backend._state["value"] in _backend.BACKENDS
    assert get_backend() == "auto"


def test_set_backend_and_resolve():
    set_backend("native")
    assert get_backend() == "native"
    assert resolve_backend(None, "fps", torch.device("cpu")) == "native"
    assert resolve_backend("native", "knn", "cpu") == "native"


def test_use_backend_restores_even_on_error():
    set_backend("auto")
    with use_backend("native"):
        assert get_backend() == "native"
    assert get_backend() == "auto"
    with pytest.raises(RuntimeError, match="boom"), use_backend("native"):
        raise RuntimeError("boom")
    assert get_backend() == "auto"


def test_unknown_name_errors():
    with pytest.raises(ValueError, match=UNKNOWN):
        set_backend("fast")
    with pytest.raises(ValueError, match=UNKNOWN), use_backend("fast"):
        pass
    with pytest.raises(ValueError, match=UNKNOWN):
        resolve_backend("fast", "fps", "cpu")
    assert get_backend() == "auto"


def test_explicit_cluster_without_torch_cluster_raises(no_cluster):
    assert not cluster_available()
    hint = "torch-cluster is not installed.*pip install --no-build-isolation torch-cluster"
    with pytest.raises(ImportError, match=hint):
        require_cluster()
    with pytest.raises(ImportError, match=hint):
        resolve_backend("cluster", "fps", "cpu")
    with pytest.raises(ImportError, match=hint):
        set_backend("cluster")
    assert get_backend() == "auto"  # unchanged after the failed switch
    # auto quietly uses the native path
    for op in ("fps", "knn", "grid"):
        for dev in ("cpu", "cuda"):
            assert resolve_backend("auto", op, dev) == "native"


def test_auto_follows_the_preference_table(fake_cluster):
    assert cluster_available()
    assert require_cluster() is fake_cluster
    for dev in ("cpu", "cuda"):
        preferred = _backend._AUTO_PREFERS_CLUSTER.get(dev, set())
        for op in ("fps", "knn", "grid", "not-an-op"):
            want = "cluster" if op in preferred else "native"
            assert resolve_backend(None, op, torch.device(dev)) == want
            assert resolve_backend("auto", op, dev) == want
    assert resolve_backend("cluster", "fps", "cpu") == "cluster"
    set_backend("cluster")
    assert resolve_backend(None, "grid", "cpu") == "cluster"


def test_real_torch_cluster_module():
    tc = pytest.importorskip("torch_cluster")
    assert cluster_available()
    assert require_cluster() is tc
