"""Model registry in the manner of timm: ``@register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

_MODELS: dict[str, Callable] = {}
_MODEL_MODULE: dict[str, str] = {}

__all__ = ["register_model", "create_model", "list_models", "is_model", "model_entrypoint",
           "model_task", "TASKS"]

TASKS = ("image classification", "point classification", "image segmentation",
         "point segmentation", "part segmentation")


def register_model(fn: Callable) -> Callable:
    """Register a model factory under its function name (decorator)."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model name {name!r} is already registered by {_MODEL_MODULE[name]}")
    _MODELS[name] = fn
    _MODEL_MODULE[name] = fn.__module__.split(".")[-1]
    return fn


def list_models(pattern: str | None = None, module: str | None = None,
                task: str | None = None) -> list[str]:
    """Sorted names of registered models, filtered by a glob ``pattern``, ``module``, ``task``."""
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if module:
        names = [n for n in names if _MODEL_MODULE[n] == module]
    if task:
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}")
        names = [n for n in names if model_task(n) == task]
    return names


def model_task(name: str) -> str:
    """The task of a registered model, one of :data:`TASKS`."""
    model_entrypoint(name)
    kind = "point" if _MODEL_MODULE[name].startswith("pointmlp") else "image"
    if name.endswith("_partseg"):
        return "part segmentation"
    return f"{kind} segmentation" if name.endswith("_seg") else f"{kind} classification"


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _MODELS


def model_entrypoint(name: str) -> Callable:
    """Return the factory of a registered model; unknown names list the choices."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")
    return _MODELS[name]


def create_model(name: str, pretrained: bool = False, **kwargs):
    """Build a registered model by name.

    Args:
        name: a name from :func:`list_models`.
        pretrained: must be False: no weights are downloaded by this library.
        **kwargs: passed to the model factory (e.g. ``num_classes``, ``in_channels``).
    """
    if pretrained:
        raise ValueError("`pretrained=True` is not supported: pointctx ships no weights and never "
                         "downloads; load a model you trained with pointctx.load_model(path), path "
                         "being its run folder, last.pt or best.pt")
    return model_entrypoint(name)(**kwargs)
