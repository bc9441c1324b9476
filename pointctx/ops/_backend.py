"""Backend choice for point ops: native PyTorch (always there) or torch-cluster (optional).

``"auto"`` (the default) uses torch-cluster for an op where it is installed and known to be
faster for that op and device, else the native path. ``"native"`` forces the native path;
``"cluster"`` forces torch-cluster and raises an ``ImportError`` saying how to install it when it
is missing. Choose per call (``backend=`` argument of each op), globally with
:func:`set_backend`, or for a block of code with the :func:`use_backend` context manager.
"""

from __future__ import annotations

import contextlib
import functools
import importlib

BACKENDS = ("auto", "native", "cluster")

_state = {"backend": "auto"}

# Ops for which torch-cluster is the faster choice in "auto" mode, per device type. Filled from
# bench/ops.py measurements (see README): on CPU torch-cluster's fps/knn/grid loops in C++ beat the
# native vectorised path; on CUDA the same holds for fps (one kernel) and knn.
_AUTO_PREFERS_CLUSTER = {
    "cpu": {"fps", "knn", "grid"},
    "cuda": {"fps", "knn", "grid"},
}

_INSTALL_HINT = (
    "torch-cluster is not installed. Install it after torch with "
    "`pip install --no-build-isolation torch-cluster` (or `pip install -e .[cluster]` with "
    "--no-build-isolation), or use backend='native'."
)


def set_backend(name: str) -> None:
    """Set the global default backend: ``"auto"``, ``"native"`` or ``"cluster"``."""
    _check_name(name)
    if name == "cluster":
        require_cluster()
    _state["backend"] = name


def get_backend() -> str:
    """Return the global default backend name."""
    return _state["backend"]


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager that sets the global backend inside a ``with`` block."""
    old = _state["backend"]
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = old


def _check_name(name) -> None:
    if name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {name!r}")


@functools.lru_cache(maxsize=None)
def _cluster_module():
    try:
        return importlib.import_module("torch_cluster")
    except (ImportError, OSError):
        return None


def cluster_available() -> bool:
    """Whether torch-cluster can be imported."""
    return _cluster_module() is not None


def require_cluster():
    """Return the ``torch_cluster`` module or raise an ``ImportError`` with install advice."""
    mod = _cluster_module()
    if mod is None:
        raise ImportError(_INSTALL_HINT)
    return mod


def resolve_backend(backend: str | None, op: str, device) -> str:
    """Return ``"native"`` or ``"cluster"`` for one call of ``op`` on ``device``.

    Args:
        backend: the per-call choice, or None for the global default.
        op: op name (``"fps"``, ``"knn"``, ``"grid"``, ...).
        device: the torch device the inputs live on.
    """
    name = get_backend() if backend is None else backend
    _check_name(name)
    if name == "native":
        return "native"
    if name == "cluster":
        require_cluster()
        return "cluster"
    device_type = getattr(device, "type", str(device))
    if op in _AUTO_PREFERS_CLUSTER.get(device_type, ()) and cluster_available():
        return "cluster"
    return "native"
