"""Follow Context Cluster assignments back to the input points of any model built on the layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import is_int
from ..batch import PointBatch
from ..nn.context_cluster import Assignment, ContextCluster
from ..nn.reducer import PointReducer

__all__ = ["ClusterLayer", "ClusterTrace", "trace_clusters", "local_labels"]

_CC_ARGS = ("x", "pos", "batch", "batch_size", "return_assignment")
_RED_ARGS = ("x", "pos", "batch", "batch_size", "coords", "grid_size")


class ClusterLayer(NamedTuple):
    """The clustering of one :class:`~pointctx.nn.ContextCluster` call, seen from the input.

    Attributes:
        name: qualified module name (``"#k"`` appended for a module's k-th extra call).
        stage: index of the point level among the levels with Context Cluster calls.
        level: number of reducer calls before this one (0: the input points).
        index: position of this call among the calls of its stage.
        heads: number of heads H.
        cluster: cluster of every input point per head (-1: none).
        num_centers: centers proposed by the call.
        num_points: points at the call's level.
        similarity: the weight ``s_i`` of the level point holding each input point.

    Shapes:
        cluster, similarity: [N, H] with N input points.
    """

    name: str
    stage: int
    level: int
    index: int
    heads: int
    cluster: Tensor
    num_centers: int
    num_points: int
    similarity: Tensor


class ClusterTrace(NamedTuple):
    """Clusterings of a model's Context Cluster calls, per input point.

    Attributes:
        layers: one :class:`ClusterLayer` per call, in call order.
        pos: [N, D] input point positions as the first traced module saw them.
        batch: [N] int64 sorted set id of each input point.
        batch_size: number of sets B.
        pixel: [N] int64 flat pixel index of each input point, or None (no pixel grid).
        image_size: ``(H, W)`` with ``pixel``, else None.
        output: what the model returned.

    Shapes:
        pos: [N, D]; batch: [N]; pixel: [N].
    """

    layers: tuple[ClusterLayer, ...]
    pos: Tensor
    batch: Tensor
    batch_size: int
    pixel: Tensor | None
    image_size: tuple[int, int] | None
    output: Any

    @property
    def num_stages(self) -> int:
        """Number of stages (distinct point levels holding Context Cluster calls)."""
        return 1 + max((layer.stage for layer in self.layers), default=-1)

    def stage_layers(self, which: str = "last") -> list[ClusterLayer]:
        """One layer per stage: its ``"last"`` (default) or ``"first"`` Context Cluster call."""
        if which not in ("first", "last"):
            raise ValueError(f"`which` must be 'first' or 'last', got {which!r}")
        picked: dict[int, ClusterLayer] = {}
        for layer in self.layers:
            if which == "last" or layer.stage not in picked:
                picked[layer.stage] = layer
        return [picked[s] for s in sorted(picked)]

    def layer(self, key) -> ClusterLayer:
        """A layer by position in :attr:`layers` (int) or by module name (str)."""
        if not (is_int(key) or isinstance(key, str)):
            raise TypeError(f"`key` must be an int or a module name, got {type(key).__name__}")
        if is_int(key):
            if not -len(self.layers) <= key < len(self.layers):
                raise IndexError(
                    f"layer index {key} is out of range for a trace of {len(self.layers)} layers")
            return self.layers[key]
        for layer in self.layers:
            if layer.name == key:
                return layer
        names = [layer.name for layer in self.layers]
        raise KeyError(f"no traced layer named {key!r}; traced layers: {names}")


def _bind(args: tuple, kwargs: dict, names: Sequence[str]) -> dict:
    """Map positional and keyword arguments of a forward call to parameter names."""
    out = dict(zip(names, args))
    out.update(kwargs)
    return out


def local_labels(cluster: Tensor, batch: Tensor) -> Tensor:
    """Renumber cluster ids ``0 .. k_b - 1`` within every set, in increasing id order.

    Shapes:
        cluster: [N] int64 ids (any non-negative values, -1 for none); batch: [N];
        return: [N] int64.
    """
    if cluster.dim() != 1 or batch.shape != cluster.shape:
        raise ValueError("`cluster` and `batch` must both have shape [N], got "
                         f"{tuple(cluster.shape)} and {tuple(batch.shape)}")
    out = torch.full_like(cluster, -1)
    has = cluster >= 0
    if not bool(has.any()):
        return out
    c = cluster[has].long()
    b = batch[has].long()
    key = b * (int(c.max()) + 1) + c
    uniq, inverse = torch.unique(key, return_inverse=True)
    set_of_uniq = torch.div(uniq, int(c.max()) + 1, rounding_mode="floor")
    first = torch.searchsorted(set_of_uniq, set_of_uniq, right=False)  # first rank of each set
    out[has] = inverse - first.index_select(0, inverse)
    return out


class _Recorder:
    """Hook state of one traced forward pass."""

    def __init__(self, names: dict[nn.Module, str]):
        self.names = names
        self.calls: dict[str, int] = {}
        self.wanted: list[bool] = []  # stack: did the caller ask for the assignment itself?
        self.n_in: int | None = None
        self.pos: Tensor | None = None
        self.batch: Tensor | None = None
        self.batch_size: int | None = None
        self.to_level: Tensor | None = None  # [N_in] index of the level point per input point
        self.level = 0
        self._level_n = 0  # points at the current level once a reducer ran
        self.layers: list[ClusterLayer] = []
        self.level_stage: dict[int, int] = {}
        self.stage_count: dict[int, int] = {}

    def _start(self, pos: Tensor, batch: Tensor, batch_size) -> None:
        if self.n_in is not None:
            return
        self.n_in, self.pos, self.batch = pos.shape[0], pos.detach(), batch.detach().long()
        if batch_size is None:
            batch_size = int(batch.max()) + 1 if batch.numel() else 0
        self.batch_size = int(batch_size)
        self.to_level = torch.arange(self.n_in, device=pos.device)

    def _check_level(self, n: int, what: str, name: str) -> None:
        level_n = self._level_points
        if n != level_n:
            raise ValueError(f"cannot follow the points to {what} {name!r}: it got {n} points but "
                             f"the current level has {level_n} (after {self.level} PointReducer "
                             "calls); the model changes the number of points without a "
                             "PointReducer, which trace_clusters cannot follow")

    def _name(self, module: nn.Module) -> str:
        base = self.names.get(module, type(module).__name__)
        k = self.calls.get(base, 0)
        self.calls[base] = k + 1
        return base if k == 0 else f"{base}#{k}"

    # ContextCluster hooks ----------------------------------------------------------------
    def cc_pre(self, module, args, kwargs):
        bound = _bind(args, kwargs, _CC_ARGS)
        self.wanted.append(bool(bound.get("return_assignment", False)))
        if len(args) >= 5:
            args = args[:4] + (True,) + args[5:]
        else:
            kwargs = {**kwargs, "return_assignment": True}
        return args, kwargs

    def cc_post(self, module, args, kwargs, output):
        wanted = self.wanted.pop()
        out, assignment = output
        if not isinstance(assignment, Assignment):
            raise TypeError(f"ContextCluster returned {type(assignment).__name__}, expected "
                            "an Assignment")
        bound = _bind(args, kwargs, _CC_ARGS)
        self._start(bound["pos"], bound["batch"], bound.get("batch_size"))
        name = self._name(module)
        n = bound["x"].shape[0]
        self._check_level(n, "ContextCluster", name)
        stage = self.level_stage.setdefault(self.level, len(self.level_stage))
        index = self.stage_count.get(stage, 0)
        self.stage_count[stage] = index + 1
        t = self.to_level
        valid = (t >= 0).unsqueeze(1)
        safe = t.clamp(min=0)
        center = assignment.center.detach().index_select(0, safe)
        sim = assignment.similarity.detach().index_select(0, safe)
        center = torch.where(valid, center, torch.full_like(center, -1))
        sim = torch.where(valid, sim, torch.zeros_like(sim))
        self.layers.append(ClusterLayer(
            name, stage, self.level, index, int(center.shape[1]), center,
            int(assignment.centers.pos.shape[0]), n, sim))
        return output if wanted else out

    # PointReducer hook --------------------------------------------------------------------
    def red_post(self, module, args, kwargs, output):
        bound = _bind(args, kwargs, _RED_ARGS)
        pos, batch = bound["pos"], bound["batch"]
        self._start(pos, batch, bound.get("batch_size"))
        name = self._name(module)
        self._check_level(pos.shape[0], "PointReducer", name)
        if output.assignment is not None:
            to_anchor = output.assignment.detach().long()
        else:
            to_anchor = _nearest_anchor(pos.detach(), batch.detach().long(), output,
                                        self.batch_size)
        t = self.to_level
        safe = t.clamp(min=0)
        nxt = to_anchor.index_select(0, safe)
        self.to_level = torch.where(t >= 0, nxt, torch.full_like(nxt, -1))
        self.level += 1
        self._level_n = int(output.x.shape[0])
        return None

    @property
    def _level_points(self) -> int:
        return self.n_in if self.level == 0 else self._level_n


def _nearest_anchor(pos: Tensor, batch: Tensor, reduced, batch_size: int) -> Tensor:
    """Index of the nearest anchor of the same set for every point (point-mode reducers)."""
    from ..ops.knn import knn

    if reduced.pos.shape[0] == 0:
        return torch.full((pos.shape[0],), -1, dtype=torch.long, device=pos.device)
    res = knn(reduced.pos.detach(), pos, 1, batch_x=reduced.batch.long(), batch_y=batch,
              batch_size=batch_size)
    return res.index[:, 0].long()


def _pixel_info(inputs, mask) -> tuple[Tensor | None, tuple[int, int] | None]:
    if isinstance(inputs, PointBatch):
        if inputs.pixel is not None and inputs.image_size is not None:
            return inputs.pixel, tuple(int(v) for v in inputs.image_size)
        return None, None
    if isinstance(inputs, Tensor) and inputs.dim() == 4:
        b, _, h, w = inputs.shape
        if mask is None:
            pixel = torch.arange(h * w, device=inputs.device).repeat(b)
        else:
            keep = mask.reshape(b, h * w)
            pixel = torch.arange(h * w, device=inputs.device).expand(b, h * w)[keep]
        return pixel, (int(h), int(w))
    return None, None


def trace_clusters(model: nn.Module, inputs, mask: Tensor | None = None, *, forward=None,
                   eval_mode: bool = True) -> ClusterTrace:
    """Run ``model`` once and record where every input point is clustered, per call and head.

    Args:
        model: a module with ContextCluster layers whose point count only changes in reducers.
        inputs: an image tensor ``[B, C, H, W]`` or a :class:`~pointctx.PointBatch`.
        mask: bool ``[B, H, W]`` pixel mask for image inputs.
        forward: ``forward(model, inputs, mask)`` to run instead of the model's call.
        eval_mode: run in ``eval()`` mode and restore the previous mode afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    names = {m: n or type(m).__name__ for n, m in model.named_modules()}
    clusters = [m for m in names if isinstance(m, ContextCluster)]
    if not clusters:
        raise ValueError(f"`model` ({type(model).__name__}) has no ContextCluster module to trace")
    rec = _Recorder(names)
    handles = []
    was_training = model.training
    try:
        for m in names:
            if isinstance(m, ContextCluster):
                handles.append(m.register_forward_pre_hook(rec.cc_pre, with_kwargs=True))
                handles.append(m.register_forward_hook(rec.cc_post, with_kwargs=True))
            elif isinstance(m, PointReducer):
                handles.append(m.register_forward_hook(rec.red_post, with_kwargs=True))
        if eval_mode:
            model.eval()
        with torch.no_grad():
            if forward is not None:
                output = forward(model, inputs, mask)
            output = model(inputs) if mask is None else model(inputs, mask)
    finally:
        for h in handles:
            h.remove()
        if eval_mode:
            model.train(was_training)
    if not rec.layers:
        raise ValueError("no ContextCluster layer ran during the forward pass")
    pixel, size = _pixel_info(inputs, mask)
    if pixel is not None and pixel.shape[0] != rec.n_in:
        pixel, size = None, None
    return ClusterTrace(tuple(rec.layers), rec.pos, rec.batch, rec.batch_size, pixel, size, output)
