"""pointctx: Context Clusters and learning on ragged point sets, in native PyTorch."""

import importlib

from . import nn, ops
from ._compile import compile
from .batch import PointBatch
from .data import collate
from .models import create_model, list_models, load_model, load_official
from .rgbd import rgbd_to_points

__version__ = "0.1.0"  # the one version source (pyproject.toml reads it)

__all__ = ["PointBatch", "collate", "ops", "create_model", "list_models", "__version__",
           "rgbd_to_points", "load_model", "load_official", "compile", "nn", "models", "datasets",
           "transforms", "viz", "train", "io"]

# subpackages imported on first attribute access (heavy or optional dependencies)
_LAZY = ("datasets", "transforms", "viz", "train", "io")


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
