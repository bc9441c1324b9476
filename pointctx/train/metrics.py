"""Metrics from a confusion matrix: classification (OA, mAcc) and semantic segmentation (mIoU)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["ConfusionMatrix", "ClassificationMetrics", "PartIoU", "PartMetrics", "PartSegConfusion",
           "PartSegMetrics", "SegmentationConfusion", "SegmentationMetrics", "format_class_table",
           "smoothed_cross_entropy"]


class ClassificationMetrics(NamedTuple):
    """Metrics of one evaluation (fractions in [0, 1]).

    Attributes:
        oa: overall accuracy, correct / total.
        macc: mean per-class recall over classes with support (PointMLP's ``acc_avg``).
        per_class: recall of each class (``nan`` for classes with no sample).
        support: number of samples of each class.
        total: number of samples.

    Shapes:
        per_class, support: [K] lists.
    """

    oa: float
    macc: float
    per_class: list[float]
    support: list[int]
    total: int

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict; per-class entries are keyed by name when ``class_names`` is given."""
        return _as_dict(self, ("oa", "macc", "total"), class_names, acc=self.per_class,
                        support=self.support)


def _as_dict(metrics, scalars, class_names, **columns) -> dict:
    """``{scalar: value, ..., "per_class": {name: {column: value}}}`` (one results schema)."""
    k = len(metrics.support)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    out = {name: getattr(metrics, name) for name in scalars}
    out["per_class"] = {n: {c: v[i] for c, v in columns.items()} for i, n in zip(range(k), names)}
    return out


class ConfusionMatrix:
    """Accumulates a [K, K] int64 confusion matrix (rows: true class, columns: predicted).

    Args:
        num_classes: K >= 1.
        device: where the matrix lives (the predictions' device avoids host syncs).
    """

    metrics_class = ClassificationMetrics

    def __init__(self, num_classes: int, device=None) -> None:
        check_int(num_classes, "num_classes", 1, type_error=ValueError)
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and true labels (or logits [B, K] as ``pred``).

        Shapes:
            pred: [B] int or [B, K] logits; target: [B] int, values in [0, K).
        """
        if pred.dim() == 2:
            pred = pred.argmax(1)
        if pred.shape != target.shape or pred.dim() != 1:
            raise ValueError("`pred` and `target` must both have shape [B], got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        self._add(pred, target)

    def _add(self, pred: Tensor, target: Tensor) -> None:
        """Count flat label pairs (both [P], target checked to lie in [0, K))."""
        k = self.num_classes
        target = target.to(self.matrix.device, torch.long)
        pred = pred.to(self.matrix.device, torch.long)
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(f"`target` values must lie in [0, {k}), got range "
                             f"[{int(target.min())}, {int(target.max())}]")
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= k):
            raise ValueError(f"`pred` labels must lie in [0, {k}), got range "
                             f"[{int(pred.min())}, {int(pred.max())}]")
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrix over all processes of the default group (no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self) -> ClassificationMetrics:
        """Metrics of the counts so far (``nan`` accuracies when there is no sample)."""
        m = self.matrix.double().cpu()
        support = m.sum(1)
        total = float(support.sum())
        correct = m.diag()
        per_class = torch.where(support > 0, correct / support.clamp(min=1), float("nan"))
        has = support > 0
        macc = float(per_class[has].mean()) if bool(has.any()) else float("nan")
        oa = float(correct.sum() / total) if total > 0 else float("nan")
        return ClassificationMetrics(oa=oa, macc=macc, per_class=[float(v) for v in per_class],
                                     support=[int(v) for v in support], total=int(total))

    def state_dict(self) -> dict:
        """The counts, for checkpoints."""
        return {"matrix": self.matrix.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore counts saved by :meth:`state_dict`."""
        mat = state["matrix"]
        if tuple(mat.shape) != (self.num_classes, self.num_classes):
            raise ValueError(f"saved confusion matrix has shape {tuple(mat.shape)}, expected "
                             f"{(self.num_classes, self.num_classes)}")
        self.matrix.copy_(mat.to(self.matrix.device))


class SegmentationMetrics(NamedTuple):
    """Semantic-segmentation metrics of one evaluation (fractions in [0, 1]).

    Attributes:
        miou: mean of ``iou`` over the classes where it is defined.
        oa: global pixel accuracy, ``trace(M) / sum(M)``.
        macc: mean of ``per_class`` over classes with support > 0.
        iou: per-class ``M_cc / (sum_j M_cj + sum_i M_ic - M_cc)`` (``nan``: absent class).
        per_class: per-class recall ``M_cc / sum_j M_cj`` (``nan`` without support).
        support: labelled pixels of each class.
        total: labelled pixels.

    Shapes:
        iou, per_class, support: [K] lists.
    """

    miou: float
    oa: float
    macc: float
    iou: list[float]
    per_class: list[float]
    support: list[int]
    total: int

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict; per-class entries are keyed by name when ``class_names`` is given."""
        return _as_dict(self, ("miou", "oa", "macc", "total"), class_names, iou=self.iou,
                        acc=self.per_class, support=self.support)


class SegmentationConfusion(ConfusionMatrix):
    """A [K, K] confusion matrix over labelled pixels (or points), with an ignore index.

    Args:
        num_classes: K >= 1 (the ignore index is not one of them, e.g. 11 for CamVid).
        device: where the matrix lives.
        ignore_index: target value to leave out (``None``: every target must lie in [0, K)).
    """

    metrics_class = SegmentationMetrics

    def __init__(self, num_classes: int, device=None, ignore_index: int | None = None) -> None:
        super().__init__(num_classes, device)
        check_int(ignore_index, "ignore_index", optional=True)
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"`ignore_index` must not be a class id in [0, {num_classes}), got {ignore_index}")
        self.ignore_index = ignore_index

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predictions and targets (ignored targets are skipped).

        Shapes:
            pred: [B, K, *S] logits or [B, *S] labels; target: [B, *S] int.
        """
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"`pred` logits must have K = {self.num_classes} channels in dim "
                                 f"1, got shape {tuple(pred.shape)}")
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError("`pred` must be [B, K, *S] logits or [B, *S] labels matching `target` "
                             f"[B, *S], got {tuple(pred.shape)} and {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError(
                f"labels must be integers, got `pred` {pred.dtype} and `target` {target.dtype}")
        pred, target = pred.reshape(-1), target.reshape(-1)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        self._add(pred, target)

    def compute(self) -> SegmentationMetrics:
        """Metrics of the counts so far (``nan`` where undefined)."""
        m = self.matrix.double().cpu()
        support = m.sum(1)
        predicted = m.sum(0)
        tp = m.diag()
        total = float(support.sum())
        union = support + predicted - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), float("nan"))
        acc = torch.where(support > 0, tp / support.clamp(min=1), float("nan"))
        has_iou, has = union > 0, support > 0
        return SegmentationMetrics(
            miou=float(iou[has_iou].mean()) if bool(has_iou.any()) else float("nan"),
            oa=float(tp.sum() / total) if total > 0 else float("nan"),
            macc=float(acc[has].mean()) if bool(has.any()) else float("nan"),
            iou=[float(v) for v in iou], per_class=[float(v) for v in acc],
            support=[int(v) for v in support], total=int(total))


def _pct(v: float) -> str:
    return "    n/a" if v != v else f"{100 * v:7.2f}"


def format_class_table(metrics: ClassificationMetrics | SegmentationMetrics,
                       class_names: Sequence[str], title: str = "") -> str:
    """A plain-text table of per-class accuracy (in %) and support, with OA and mAcc below."""
    names = list(class_names)
    seg = isinstance(metrics, SegmentationMetrics)
    width = max([len("class")] + [len(n) for n in names])
    rule = "-" * (width + (26 if seg else 17) + (4 if seg else 0))
    n_w = 10 if seg else 6
    lines = [title] if title else []
    head = f"{'class':<{width}}  " + (f"{'IoU %':>7}  " if seg else "") + f"{'acc %':>7}  "
    lines.append(head + f"{'n':>{n_w}}")
    lines.append(rule)
    ious = metrics.iou if seg else [None] * len(names)
    for n, u, a, s in zip(names, ious, metrics.per_class, metrics.support):
        lines.append(f"{n:<{width}}  " + (f"{_pct(u)}  " if seg else "") + f"{_pct(a)}  "
                     f"{s:>{n_w}d}")
    lines.append(rule)
    pad = " " * 9 if seg else ""
    if seg:
        lines.append(f"{'mIoU':<{width}}  {_pct(metrics.miou)}")
    lines.append(f"{'OA':<{width}}  {pad}{_pct(metrics.oa)}  {metrics.total:>{n_w}d}")
    lines.append(f"{'mAcc':<{width}}  {pad}{_pct(metrics.macc)}")
    return "\n".join(lines)


def smoothed_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with label smoothing in PointMLP's form (mean over the batch).

    Args:
        logits: unnormalised scores (computed in float32).
        target: true class ids.
        smoothing: in ``[0, (K - 1) / K]``.

    Shapes:
        logits: [B, K]; target: [B]; returns a scalar.
    """
    k = logits.shape[-1]
    if not 0.0 <= smoothing <= (k - 1) / k:
        raise ValueError(
            f"`smoothing` must lie in [0, (K-1)/K = {(k - 1) / k:.4f}], got {smoothing}")
    eps = smoothing * k / (k - 1) if k > 1 else 0.0
    return torch.nn.functional.cross_entropy(logits.float(), target, label_smoothing=eps)


# --------------------------------------------------------------------------- part segmentation
class PartMetrics(NamedTuple):
    """Part-segmentation metrics as PointMLP / PointNet report them (fractions in [0, 1]).

    Attributes:
        instance_miou: mean over shapes of each shape's mean part IoU ("Inst. mIoU").
        class_miou: mean over categories of their mean shape IoU ("Cls. mIoU").
        per_category: mean shape IoU of each category (``nan`` without shapes).
        shapes: number of shapes of each category.
        accuracy: point accuracy over all shapes.

    Shapes:
        per_category, shapes: [C] lists.
    """

    instance_miou: float
    class_miou: float
    per_category: list[float]
    shapes: list[int]
    accuracy: float

    def as_dict(self, category_names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict; per-category entries keyed by name when names are given."""
        names = (list(category_names) if category_names is not None
                 else [str(i) for i in range(len(self.per_category))])
        return {
            "instance_miou": self.instance_miou,
            "class_miou": self.class_miou,
            "accuracy": self.accuracy,
            "per_category": {n: {"miou": v, "shapes": s}
                             for n, v, s in zip(names, self.per_category, self.shapes)}}


class PartIoU:
    """Accumulates per-shape part IoUs: instance mIoU and class mIoU (ShapeNetPart protocol).

    Args:
        category_parts: global part ids of each category (default: ShapeNetPart's 16 x 50).
        mode: ``"category"`` or ``"present"``.
        restrict: arg-max of logits over the category's parts only.
        device: where the sums live.
    """

    def __init__(self, category_parts=None, mode: str = "category", restrict: bool = True,
                 device=None) -> None:
        if category_parts is None:
            from ..datasets.shapenetpart import SHAPENETPART_PARTS

            category_parts = SHAPENETPART_PARTS
        parts = [list(map(int, p)) for p in category_parts]
        if not parts or any(len(p) == 0 for p in parts) or min(min(p) for p in parts) < 0:
            raise ValueError("`category_parts` must be non-empty lists of part ids >= 0 per "
                             "category")
        if mode not in ("category", "present"):
            raise ValueError(f"`mode` must be 'category' or 'present', got {mode!r}")
        self.num_categories, self.num_parts = len(parts), max(max(p) for p in parts) + 1
        self.mode, self.restrict = mode, bool(restrict)
        mask = torch.zeros(self.num_categories, self.num_parts, dtype=torch.bool, device=device)
        for c, p in enumerate(parts):
            mask[c, p] = True
        self.category_mask = mask
        self.iou_sum = torch.zeros(self.num_categories, dtype=torch.float64, device=device)
        self.count = torch.zeros(self.num_categories, dtype=torch.long, device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.points = torch.zeros((), dtype=torch.long, device=device)

    def reset(self) -> None:
        """Zero the sums."""
        for t in (self.iou_sum, self.count, self.correct, self.points):
            t.zero_()

    @torch.no_grad()
    def shape_ious(self, pred: Tensor, target: Tensor, category: Tensor,
                   batch: Tensor | None = None) -> Tensor:
        """IoU of every shape of a batch (no accumulation).

        Args:
            pred: part ids, or logits (see ``restrict``).
            target: true part ids.
            category: category id of each shape.
            batch: sorted shape index of each point (None: one shape).

        Shapes:
            pred: [N] or [N, P]; target: [N]; category: [B]; batch: [N]; return: [B] float64.
        """
        pred, target, category, batch = self._check(pred, target, category, batch)
        return self._ious(pred, target, category, batch)

    def _check(self, pred, target, category, batch):
        dev = self.iou_sum.device
        target = torch.as_tensor(target, device=dev).long().reshape(-1)
        category = torch.as_tensor(category, device=dev).long().reshape(-1)
        n, b = target.numel(), category.numel()
        if batch is None:
            if b != 1:
                raise ValueError(f"`batch` is required for {b} shapes (one category each)")
            batch = torch.zeros(n, dtype=torch.long, device=dev)
        batch = torch.as_tensor(batch, device=dev).long().reshape(-1)
        if batch.numel() != n:
            raise ValueError(f"`batch` must have one entry per point ({n}), got {batch.numel()}")
        if n and (int(batch.min()) < 0 or int(batch.max()) >= b):
            raise ValueError(f"`batch` values must lie in [0, {b}) (one per category entry), "
                             f"got range [{int(batch.min())}, {int(batch.max())}]")
        if b and (int(category.min()) < 0 or int(category.max()) >= self.num_categories):
            raise ValueError(f"`category` values must lie in [0, {self.num_categories}), got "
                             f"range [{int(category.min())}, {int(category.max())}]")
        if n and (int(target.min()) < 0 or int(target.max()) >= self.num_parts):
            raise ValueError(f"`target` values must lie in [0, {self.num_parts}), got range "
                             f"[{int(target.min())}, {int(target.max())}]")
        pred = torch.as_tensor(pred, device=dev)
        if pred.dim() == 2:
            if pred.shape != (n, self.num_parts):
                raise ValueError(f"logits `pred` must have shape [N, {self.num_parts}] = "
                                 f"[{n}, {self.num_parts}], got {tuple(pred.shape)}")
            logits = pred.float()
            if self.restrict:
                allowed = self.category_mask[category.index_select(0, batch)]
                logits = logits.masked_fill(~allowed, float("-inf"))
            pred = logits.argmax(1)
        elif pred.shape != target.shape:
            raise ValueError(f"`pred` must have shape [N] = [{n}] (part ids) or [N, P] "
                             f"(logits), got {tuple(pred.shape)}")
        return pred.long(), target, category, batch

    def _ious(self, pred, target, category, batch) -> Tensor:
        b, p = category.numel(), self.num_parts
        size = b * p
        inter = torch.bincount(batch[pred == target] * p + target[pred == target],
                               minlength=size).view(b, p)
        valid_pred = (pred >= 0) & (pred < p)
        n_pred = torch.bincount(batch[valid_pred] * p + pred[valid_pred], minlength=size).view(b, p)
        n_true = torch.bincount(batch * p + target, minlength=size).view(b, p)
        union = n_pred + n_true - inter
        iou = torch.where(union > 0, inter.double() / union.clamp(min=1), 1.0)
        mask = self.category_mask[category] if self.mode == "category" else n_true > 0
        m = mask.double()
        return (iou * m).sum(1) / m.sum(1).clamp(min=1)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, category: Tensor,
               batch: Tensor | None = None) -> Tensor:
        """Add a batch of shapes; returns their IoUs (see :meth:`shape_ious` for the shapes)."""
        pred, target, category, batch = self._check(pred, target, category, batch)
        ious = self._ious(pred, target, category, batch)
        self.iou_sum.index_add_(0, category, ious)
        self.count += torch.bincount(category, minlength=self.num_categories)
        self.correct += (pred == target).sum()
        self.points += target.numel()
        return ious

    def all_reduce(self) -> None:
        """Sum over all processes of the default group (no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in (self.iou_sum, self.count, self.correct, self.points):
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def compute(self) -> PartMetrics:
        """Metrics of the shapes so far (``nan`` where there are none)."""
        s, c = self.iou_sum.double().cpu(), self.count.cpu()
        per = torch.where(c > 0, s / c.clamp(min=1), float("nan"))
        total = int(c.sum())
        seen = c > 0
        return PartMetrics(
            instance_miou=float(s.sum() / total) if total else float("nan"),
            class_miou=float(per[seen].mean()) if bool(seen.any()) else float("nan"),
            per_category=[float(v) for v in per], shapes=[int(v) for v in c],
            accuracy=float(self.correct) / int(self.points) if int(self.points) else float("nan"))

    def state_dict(self) -> dict:
        """The sums, for checkpoints."""
        return {k: getattr(self, k).cpu().clone()
                for k in ("iou_sum", "count", "correct", "points")}

    def load_state_dict(self, state: dict) -> None:
        """Restore sums saved by :meth:`state_dict`."""
        if tuple(state["count"].shape) != (self.num_categories,):
            raise ValueError(f"saved part sums have {tuple(state['count'].shape)} categories, "
                             f"expected {self.num_categories}")
        for k in ("iou_sum", "count", "correct", "points"):
            getattr(self, k).copy_(state[k].to(getattr(self, k).device))


class PartSegMetrics(NamedTuple):
    """Part-segmentation metrics of one evaluation: :class:`PartMetrics` + point-level ones.

    Attributes:
        instance_miou, class_miou, per_category, shapes: as :class:`PartMetrics`.
        miou, oa, macc, iou, per_class, support, total: as :class:`SegmentationMetrics`.

    Shapes:
        per_category, shapes: [C] lists; iou, per_class, support: [P] lists.
    """

    instance_miou: float
    class_miou: float
    miou: float
    oa: float
    macc: float
    iou: list[float]
    per_class: list[float]
    support: list[int]
    total: int
    per_category: list[float]
    shapes: list[int]

    def as_dict(self, class_names: Sequence[str] | None = None,
                category_names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict (per-part entries keyed by ``class_names``, categories by name)."""
        seg = SegmentationMetrics(self.miou, self.oa, self.macc, self.iou, self.per_class,
                                  self.support, self.total).as_dict(class_names)
        if category_names is None:
            from ..datasets.shapenetpart import SHAPENETPART_CATEGORIES

            if len(self.per_category) == len(SHAPENETPART_CATEGORIES):
                category_names = SHAPENETPART_CATEGORIES
        part = PartMetrics(self.instance_miou, self.class_miou, self.per_category, self.shapes,
                           self.oa).as_dict(category_names)
        return {**part, **{k: v for k, v in seg.items() if k != "per_class"},
                "per_part": seg["per_class"]}


class PartSegConfusion(SegmentationConfusion):
    """Trainer accumulator for part segmentation: a point confusion matrix plus :class:`PartIoU`.

    Args:
        num_classes: parts P (50).
        device: where the counts live.
        category_parts: part ids per category (default ShapeNetPart's).
    """

    metrics_class = PartSegMetrics

    def __init__(self, num_classes: int, device=None, category_parts=None) -> None:
        super().__init__(num_classes, device)
        self.parts = PartIoU(category_parts, device=device)
        if self.parts.num_parts > num_classes:
            raise ValueError(f"`category_parts` use part ids up to {self.parts.num_parts - 1}, "
                             f"more than num_classes = {num_classes}")

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch (see the class docstring).

        Shapes:
            pred: [N, P] logits; target: [N, 3] int64 (part, category, shape index).
        """
        if target.dim() != 2 or target.shape[1] != 3:
            raise ValueError(f"`target` must be [N, 3] (part, category, shape index), got "
                             f"shape {tuple(target.shape)}")
        part, cat, shape = target.long().unbind(1)
        super().update(pred, part)
        first = torch.ones_like(shape, dtype=torch.bool)
        first[1:] = shape[1:] != shape[:-1]
        self.parts.update(pred, part, cat[first], shape)

    def reset(self) -> None:
        """Zero all counts."""
        super().reset()
        self.parts.reset()

    def all_reduce(self) -> None:
        """Sum over all processes (no-op when not distributed)."""
        super().all_reduce()
        self.parts.all_reduce()

    def compute(self) -> PartSegMetrics:
        """Metrics of the counts so far."""
        s, p = super().compute(), self.parts.compute()
        return PartSegMetrics(p.instance_miou, p.class_miou, s.miou, s.oa, s.macc, s.iou,
                              s.per_class, s.support, s.total, p.per_category, p.shapes)

    def state_dict(self) -> dict:
        """Counts for checkpoints."""
        return {**super().state_dict(),
                **{f"part_{k}": v for k, v in self.parts.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        self.parts.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("part_")})
