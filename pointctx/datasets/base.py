"""What every dataset here shares: views of loaded rows, seeded subsets and splits, epochs."""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset

from .._checks import check_callable, check_int

__all__ = ["RowDataset", "DatasetSplit", "SplitIndices", "stratified_split", "stratified_subset",
           "select_rows"]


class SplitIndices(NamedTuple):
    """Row indices of a train / validation split (each sorted ascending).

    Shapes:
        train: [S_train] int64; val: [S_val] int64.
    """

    train: np.ndarray
    val: np.ndarray


class DatasetSplit(NamedTuple):
    """A train / validation pair of dataset views (see :meth:`RowDataset.split`)."""

    train: Dataset
    val: Dataset


def _check_labels_1d(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"`labels` must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    return labels


def stratified_split(labels, val_fraction: float = 0.1, seed: int = 0) -> SplitIndices:
    """Seeded stratified split of sample indices into disjoint train and validation parts.

    Args:
        labels: integer class label per sample.
        val_fraction: share of each class held out, in (0, 1).
        seed: seed of the choice.

    Shapes:
        labels: [S]; return: :class:`SplitIndices` (train [S_train], val [S_val]).
    """
    labels = _check_labels_1d(labels)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"`val_fraction` must lie in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        k = min(max(int(round(val_fraction * n)), 1), n - 1) if n >= 2 else 0
        val.append(members[rng.permutation(n)[:k]])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return SplitIndices(np.flatnonzero(mask).astype(np.int64), val_idx.astype(np.int64))


def stratified_subset(labels, count: int, seed: int = 0) -> np.ndarray:
    """Seeded class-balanced subset: ``count`` row indices, classes in proportion to their size.

    Args:
        labels: integer label per row.
        count: rows to pick, 1..S.
        seed: seed of the shuffles.

    Shapes:
        labels: [S]; return: [count].
    """
    labels = _check_labels_1d(labels)
    check_int(count, "count", 1, len(labels), type_error=ValueError)
    rng = np.random.default_rng(seed)
    rows, keys, cls = [], [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        rows.append(members[rng.permutation(n)])
        keys.append((np.arange(n) + 0.5) / n)
        cls.append(np.full(n, c))
    rows, keys, cls = np.concatenate(rows), np.concatenate(keys), np.concatenate(cls)
    order = np.lexsort((cls, keys))[:count]
    return np.sort(rows[order]).astype(np.int64)


def select_rows(num_rows: int, indices=None, limit: int | None = None, seed: int = 0,
                labels=None) -> np.ndarray:
    """The int64 file rows a dataset serves, from its ``indices`` / ``limit`` arguments.

    Args:
        num_rows: rows in the file.
        indices: integer rows, or a bool mask (None: all rows).
        limit: at most this many (class-balanced with ``labels``, else the first ones).
        seed: seed of the subset.
        labels: label per file row, or None.
    """
    rows = np.arange(num_rows, dtype=np.int64)
    if indices is not None:
        idx = np.asarray(indices).reshape(-1)
        if idx.dtype == np.bool_:
            if idx.size != num_rows:
                raise ValueError(
                    f"bool `indices` must have {num_rows} entries (one per row), got {idx.size}")
            idx = np.flatnonzero(idx)
        if idx.size and idx.dtype.kind not in "iu":
            raise ValueError(f"`indices` must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= num_rows):
            raise ValueError(
                f"`indices` must lie in [0, {num_rows}), got range [{idx.min()}, {idx.max()}]")
        rows = idx
    if limit is not None:
        check_int(limit, "limit", 1, type_error=ValueError)
        if limit < len(rows):
            if labels is None:
                rows = rows[:limit]
            else:
                rows = rows[stratified_subset(np.asarray(labels)[rows], int(limit), seed)]
    return rows


def check_transform(transform):
    """Raise ``TypeError`` unless ``transform`` is callable or None; return it."""
    return check_callable(transform, "transform", optional=True)


class RowDataset(Dataset):
    """Base of the datasets: a view of some rows of loaded data.

    Attributes:
        classes: class names, ``classes[label]``.
        rows: int64 file rows of the items of this view.
        labels: int64 labels of the items of this view.
        epoch: the current epoch (see :meth:`set_epoch`).
    """

    classes: list[str]
    transform = None
    epoch: int = 0
    _rows: np.ndarray
    _labels: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        """File rows of the items of this view, int64 [len(self)]."""
        return self._rows

    @property
    def labels(self) -> np.ndarray:
        """Labels of the items of this view, int64 [len(self)]."""
        return self._labels[self._rows].astype(np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self._rows)

    def _row(self, idx: int) -> int:
        """The file row of item ``idx`` (negative indices count from the end)."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} is out of range for a dataset of {len(self)} items")
        return int(self._rows[idx])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws the items use."""
        self.epoch = check_int(epoch, "epoch", 0, type_error=ValueError)

    def subset(self, indices, transform="keep"):
        """A view of some items (indices of this view) sharing the loaded data.

        Args:
            indices: item indices (integer array-like).
            transform: the view's transform (``"keep"``: this one; ``None``: none).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(f"`indices` must lie in [-{len(self)}, {len(self)}), got range "
                             f"[{idx.min()}, {idx.max()}]")
        view = copy.copy(self)
        view._rows = self._rows[idx]
        if not (isinstance(transform, str) and transform == "keep"):
            view.transform = check_transform(transform)
        return view

    def _split(self, val_fraction: float, seed: int, **val_view) -> DatasetSplit:
        """Stratified ``(train, val)`` views; ``val_view``: keyword arguments of the val subset."""
        parts = stratified_split(self.labels, val_fraction, seed)
        return DatasetSplit(self.subset(parts.train), self.subset(parts.val, **val_view))
