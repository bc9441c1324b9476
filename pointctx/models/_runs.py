"""Load a trained model from a training run: :func:`load_model`.

The :class:`pointctx.train.Trainer` writes ``last.pt`` and ``best.pt`` into a run folder. Both are
dicts of plain tensors, numbers and strings (they load with ``torch.load(weights_only=True)``)
holding ``"model"`` (the state dict) and ``"run_info"`` (what the example scripts record: the
model's registered name and the keyword arguments it was built with, the dataset's class names
and input conventions). :func:`load_model` rebuilds the model from these and loads the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ._registry import create_model, is_model, list_models

__all__ = ["load_model", "build_kwargs"]

_CHECKPOINTS = ("best.pt", "last.pt")


def _resolve(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"`path`: {path} does not exist (give a run folder, last.pt or "
                                "best.pt)")
    for name in _CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    runs = sorted(p.parent.name for name in _CHECKPOINTS for p in path.glob(f"*/{name}"))
    if runs:
        raise ValueError(
            f"`path`: {path} holds several runs ({', '.join(sorted(set(runs)))}); give one of "
            "their folders"
        )
    raise FileNotFoundError(f"`path`: {path} holds no best.pt or last.pt: not a run folder")


def build_kwargs(run_info: dict) -> dict:
    """The ``create_model`` keyword arguments a run's model was built with.

    ``run_info["model"]["create_kwargs"]`` when recorded; older runs are rebuilt from
    ``num_classes = len(classes)``, the model kwargs and, for images, ``in_channels``.
    """
    info = run_info["model"]
    if isinstance(info.get("create_kwargs"), dict):
        return dict(info["create_kwargs"])
    kwargs = {"num_classes": len(run_info["dataset"]["classes"]), **(info.get("kwargs") or {})}
    image_size = run_info.get("dataset", {}).get("image_size")
    if image_size:
        kwargs["in_channels"] = int(image_size[0])
    return kwargs


def load_model(path: str | os.PathLike, map_location=None) -> nn.Module:
    """A trained model, ready for inference, from a run folder or a checkpoint.

    Args:
        path: a run folder (its ``best.pt``, else ``last.pt``: ``best.pt`` holds the epoch with
            the best evaluation accuracy), or a ``last.pt`` / ``best.pt`` file written by
            :class:`pointctx.train.Trainer` (the example scripts).
        map_location: device of the returned model (``"cuda"``, ``torch.device``...); ``None``:
            the CPU.

    Returns:
        The registered model, rebuilt with the arguments of the run, with the trained weights, in
        eval mode. ``model.class_names`` lists its classes (``class_names[k]`` is logit ``k``)
        and ``model.run_info`` holds the run's record (config, dataset, normalisation).

    Raises:
        FileNotFoundError: ``path`` does not exist or the folder holds no checkpoint.
        ValueError: the file is not a pointctx checkpoint (names the file and what it lacks), or
            its weights do not fit the model it names.
    """
    from ..train.checkpoint import load_checkpoint

    file = _resolve(Path(path))
    state = load_checkpoint(file, map_location="cpu")
    info = state.get("run_info")
    weights = state.get("model")
    if (not isinstance(info, dict) or not isinstance(weights, dict)
            or not isinstance(info.get("model"), dict) or "name" not in info["model"]):
        raise ValueError(
            f"{file} is not a pointctx checkpoint: expected a dict with 'model' (the weights) and "
            "'run_info' (the model's name and arguments), as pointctx.train.Trainer writes in "
            f"last.pt / best.pt; got keys {sorted(map(str, state))[:10]}"
        )
    name = info["model"]["name"]
    if not is_model(name):
        raise ValueError(f"{file}: model {name!r} is not registered; known: {list_models()}")
    kwargs = build_kwargs(info)
    model = create_model(name, **kwargs)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{file}: the weights do not fit {name}(**{kwargs}): {first}") from None
    model.class_names = [str(c) for c in info.get("dataset", {}).get("classes", [])] or [
        str(k) for k in range(getattr(model, "num_classes", 0))
    ]
    model.run_info = info
    if map_location is not None:
        model.to(torch.device(map_location) if isinstance(map_location, str) else map_location)
    return model.eval()
