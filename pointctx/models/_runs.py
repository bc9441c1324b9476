"""Trained runs: :func:`load_model` and :class:`TrainedModel` (the network and its inputs)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._files import load_torch_file
from ..batch import PointBatch
from ..ops import fps
from ..ops.scatter import scatter_max, scatter_mean
from ._inputs import as_float, cast_input, padded_batch
from ._registry import TASKS, create_model, is_model, list_models, model_task

__all__ = ["load_model", "TrainedModel", "build_kwargs", "key_mismatch"]

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
        raise ValueError(f"`path`: {path} holds several runs ({', '.join(sorted(set(runs)))}); "
                         "give one of their folders")
    raise FileNotFoundError(f"`path`: {path} holds no best.pt or last.pt: not a run folder")


def build_kwargs(run_info: dict) -> dict:
    """The ``create_model`` keyword arguments of a run's model (``create_kwargs``)."""
    info = run_info["model"]
    if isinstance(info.get("create_kwargs"), dict):
        return dict(info["create_kwargs"])
    kwargs = {"num_classes": len(run_info["dataset"]["classes"]), **(info.get("kwargs") or {})}
    image_size = run_info.get("dataset", {}).get("image_size")
    if image_size:
        kwargs["in_channels"] = int(image_size[0])
    return kwargs


def key_mismatch(expected: Mapping, given: Mapping, limit: int = 4) -> str | None:
    """``"missing keys (3): a, b, c; unexpected keys (1): d"`` of two state dicts, else None."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in given and tuple(getattr(given[k], "shape", ())) != tuple(v.shape)]
    parts = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("keys of another shape (checkpoint vs model)", shapes)):
        if items:
            more = f", ... {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{what} ({len(items)}): {', '.join(items[:limit])}{more}")
    return "; ".join(parts) or None


class TrainedModel(nn.Module):
    """A trained network with its run's input preprocessing: it takes raw inputs.

    Attributes:
        model: the registered network (takes inputs as the training data loader gave them).
        task: one of :data:`pointctx.models.TASKS`.
        inputs: the stored preprocessing (``kind``, ``image_size``, ``mean``, ``std``,
            ``num_points``, ``normalize``).
        class_names: ``class_names[k]`` names logit ``k``.
        run_info: the run's record.
    """

    def __init__(self, model: nn.Module, run_info: dict):
        super().__init__()
        self.model, self.run_info = model, run_info
        task = run_info.get("task") or model_task(run_info["model"]["name"])
        if task not in TASKS:
            raise ValueError(f"run_info['task'] must be one of {list(TASKS)}, got {task!r}")
        self.task, self.inputs = task, dict(run_info.get("inputs") or {})
        self.inputs.setdefault("kind", "images" if task.startswith("image") else "points")
        self.class_names = [str(c) for c in run_info.get("dataset", {}).get("classes", [])] or [
            str(k) for k in range(getattr(model, "num_classes", 0))]

    def forward(self, inputs, **kwargs) -> Tensor:
        if self.inputs["kind"] == "images":
            return self._images(inputs, **kwargs)
        return self._points(inputs, **kwargs)

    def _images(self, images, mask: Tensor | None = None, **kwargs) -> Tensor:
        if not isinstance(images, Tensor) or images.dim() != 4:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a tensor [B, C, H, W] (uint8 or float in [0, 1]), "
                             f"got {got}")
        size = tuple(images.shape[-2:])
        x = as_float(images, torch.float32, image=True)
        stored = self.inputs.get("image_size")
        if stored and tuple(stored[1:]) != size:
            x = F.interpolate(x, size=tuple(stored[1:]), mode="bilinear", align_corners=False,
                              antialias=True)
            if isinstance(mask, Tensor):  # nearest, as the datasets resize masks
                mask = F.interpolate(mask[:, None].float(), size=tuple(stored[1:]))[:, 0] > 0.5
        if "mean" in self.inputs:
            mean = torch.tensor(self.inputs["mean"], device=x.device).view(-1, 1, 1)
            x = (x - mean) / torch.tensor(self.inputs["std"], device=x.device).view(-1, 1, 1)
        out = self.model(x, **kwargs) if mask is None else self.model(x, mask=mask, **kwargs)
        if out.dim() == 4 and tuple(out.shape[-2:]) != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def _points(self, points, lengths=None, features=None, **kwargs) -> Tensor:
        unit = self.inputs.get("normalize") == "unit_sphere"
        num = self.inputs.get("num_points") if self.task.endswith("classification") else None
        if not unit and num is None:
            extra = {k: v for k, v in (("lengths", lengths), ("features", features))
                     if v is not None}
            return self.model(points, **extra, **kwargs)
        pb = cast_input(padded_batch(points, lengths, features, torch.float32), torch.float32)
        pos, b = pb.pos, pb.num_sets
        if unit:
            pos = pos - scatter_mean(pos, pb.batch, b)[pb.batch]
            radius = scatter_max(pos.norm(dim=1), pb.batch, b).values
            pos = pos / torch.where(radius > 0, radius, torch.ones_like(radius))[pb.batch, None]
        pb = pb._replace(pos=pos)
        if num is not None and int(pb.sizes.max()) > num:
            keep = fps(pos, pb.batch, num=num, batch_size=b)
            pb = PointBatch(pos[keep], None if pb.x is None else pb.x[keep],
                            batch=pb.batch[keep], batch_size=b)
        return self.model(pb, **kwargs)


def load_model(path: str | os.PathLike, map_location=None) -> TrainedModel:
    """A trained model, ready for inference on raw inputs, from a run folder or a checkpoint.

    Args:
        path: a run folder (its ``best.pt``, else ``last.pt``) or a ``last.pt`` / ``best.pt``
            file of :class:`pointctx.train.Trainer` (the example scripts).
        map_location: device of the returned model; ``None``: the CPU.
    """
    file = _resolve(Path(path))
    state = load_torch_file(file)
    info = state.get("run_info") if isinstance(state, dict) else None
    weights = state.get("model") if isinstance(state, dict) else None
    if (not isinstance(info, dict) or not isinstance(weights, dict)
            or not isinstance(info.get("model"), dict) or "name" not in info["model"]):
        keys = sorted(map(str, state))[:10] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{file} is not a pointctx checkpoint: expected a dict with 'model' (the "
                         "weights) and 'run_info' (the model's name and arguments), as "
                         f"pointctx.train.Trainer writes in last.pt / best.pt; got {keys}")
    name = info["model"]["name"]
    if not is_model(name):
        raise ValueError(f"{file}: model {name!r} is not registered; known: {list_models()}")
    kwargs = build_kwargs(info)
    model = create_model(name, **kwargs)
    wrong = key_mismatch(model.state_dict(), weights)
    if wrong:
        raise ValueError(f"{file}: the weights do not fit {name}: {wrong}")
    model.load_state_dict(weights)
    trained = TrainedModel(model, info)
    if map_location is not None:
        trained.to(torch.device(map_location) if isinstance(map_location, str) else map_location)
    return trained.eval()
