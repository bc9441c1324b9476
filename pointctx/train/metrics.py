"""Classification metrics from a confusion matrix: overall accuracy, mean class accuracy, per class.

The confusion matrix is the one object to accumulate and reduce: summing it over batches and over
processes (``all_reduce``) gives exactly the metrics of the whole split, however it was sharded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "ConfusionMatrix",
    "ClassificationMetrics",
    "format_class_table",
    "smoothed_cross_entropy",
]


class ClassificationMetrics(NamedTuple):
    """Metrics of one evaluation (fractions in [0, 1]).

    Attributes:
        oa: overall accuracy, correct / total.
        macc: mean class accuracy: mean of the per-class recalls over classes with support > 0
            (``sklearn.metrics.balanced_accuracy_score``, PointMLP's ``acc_avg``).
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
        k = len(self.per_class)
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        return {
            "oa": self.oa,
            "macc": self.macc,
            "total": self.total,
            "per_class": {
                n: {"acc": a, "support": s} for n, a, s in zip(names, self.per_class, self.support)
            },
        }


class ConfusionMatrix:
    """Accumulates a [K, K] int64 confusion matrix (rows: true class, columns: predicted).

    Args:
        num_classes: K >= 1.
        device: where the matrix lives (the predictions' device avoids host syncs).
    """

    def __init__(self, num_classes: int, device=None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be an int >= 1, got {num_classes!r}")
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
            raise ValueError(
                f"`pred` and `target` must both have shape [B], got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        k = self.num_classes
        target = target.to(self.matrix.device, torch.long)
        pred = pred.to(self.matrix.device, torch.long)
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(f"`target` values must lie in [0, {k}), got range "
                             f"[{int(target.min())}, {int(target.max())}]")
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
        return ClassificationMetrics(
            oa=oa,
            macc=macc,
            per_class=[float(v) for v in per_class],
            support=[int(v) for v in support],
            total=int(total),
        )

    def state_dict(self) -> dict:
        """The counts, for checkpoints."""
        return {"matrix": self.matrix.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore counts saved by :meth:`state_dict`."""
        mat = state["matrix"]
        if tuple(mat.shape) != (self.num_classes, self.num_classes):
            raise ValueError(
                f"saved confusion matrix has shape {tuple(mat.shape)}, expected "
                f"{(self.num_classes, self.num_classes)}"
            )
        self.matrix.copy_(mat.to(self.matrix.device))


def format_class_table(
    metrics: ClassificationMetrics, class_names: Sequence[str], title: str = ""
) -> str:
    """A plain-text table of per-class accuracy (in %) and support, with OA and mAcc below."""
    names = list(class_names)
    width = max([len("class")] + [len(n) for n in names])
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  {'acc %':>7}  {'n':>6}")
    lines.append("-" * (width + 17))
    for n, a, s in zip(names, metrics.per_class, metrics.support):
        acc = "    n/a" if a != a else f"{100 * a:7.2f}"
        lines.append(f"{n:<{width}}  {acc}  {s:>6d}")
    lines.append("-" * (width + 17))
    lines.append(f"{'OA':<{width}}  {100 * metrics.oa:7.2f}  {metrics.total:>6d}")
    lines.append(f"{'mAcc':<{width}}  {100 * metrics.macc:7.2f}")
    return "\n".join(lines)


def smoothed_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with label smoothing in PointMLP's form (mean over the batch).

    The target distribution puts ``1 - smoothing`` on the true class and ``smoothing / (K - 1)``
    on each other class. (``torch.nn.functional.cross_entropy(label_smoothing=e)`` spreads ``e``
    over all K classes, true one included; the two agree for ``e = smoothing * K / (K - 1)``, which
    is what is computed here.)

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
            f"`smoothing` must lie in [0, (K-1)/K = {(k - 1) / k:.4f}], got {smoothing}"
        )
    eps = smoothing * k / (k - 1) if k > 1 else 0.0
    return torch.nn.functional.cross_entropy(logits.float(), target, label_smoothing=eps)
