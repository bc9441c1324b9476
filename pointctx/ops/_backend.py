"""Backend choice for point ops: native PyTorch (always there) or torch-cluster (optional)."""

from __future__ import annotations

import functools
import importlib

from .._resolver import GlobalChoice

BACKENDS = ("auto", "native", "cluster")

# Ops for which torch-cluster is the faster choice in "auto" mode, per device type.
# CPU: none. bench/ops.py (bench/results/ops.json; 1 thread, B = 32, CPU clock, k = 16): the
# native kNN (a cell search for D <= 3) takes 1.10x torch-cluster's time on ModelNet40 1024-point
# clouds, 0.81x on 2048 uniform points, 0.37x on 224 x 224 pixel sets and 0.81x on uneven sizes
# (20,000 + 64 x 10 points); the native FPS is 3-5x faster and grid clustering a near tie.
# CUDA (not measured by us yet): torch-cluster runs all FPS iterations in one kernel and kNN /
# grid in one kernel each, against one or more kernel launches per FPS iteration natively.
_AUTO_PREFERS_CLUSTER = {"cpu": set(), "cuda": {"fps", "knn", "grid"}}

_INSTALL_HINT = ("torch-cluster is not installed. Install it after torch with `pip install "
                 "--no-build-isolation torch-cluster` (or `pip install -e .[cluster]` with "
                 "--no-build-isolation), or use backend='native'.")


def set_backend(name: str) -> None:
    """Set the global default backend: ``"auto"``, ``"native"`` or ``"cluster"``."""
    _choice.set(name)


def get_backend() -> str:
    """Return the global default backend name."""
    return _choice.get()


def use_backend(name: str):
    """Context manager that sets the global backend inside a ``with`` block."""
    return _choice.use(name)


def _check_name(name) -> None:
    if name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {name!r}")


def _check_settable(name) -> None:
    _check_name(name)
    if name == "cluster":
        require_cluster()


@functools.cache
def _cluster_module():
    try:
        return importlib.import_module("torch_cluster")
    except (ImportError, OSError):
        return None


def cluster_available() -> bool:
    """Whether torch-cluster can be imported."""
    return _cluster_module() is not None


def opaque(fn):
    """``fn`` behind ``torch.compiler.disable``, for torch-cluster's functions."""
    import torch

    return torch.compiler.disable(fn)


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


_choice = GlobalChoice("auto", _check_settable)
_state = _choice.state  # {"value": current name}
