"""File readers and content checks shared by the dataset families (npz, HDF5, name lists)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from .._checks import optional_import

__all__ = ["read_npz", "read_h5", "read_names", "check_labels", "check_finite"]

NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read now (so that a damaged member fails here)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except NPZ_ERRORS as err:
        why = (str(err).splitlines() or [""])[0]
        raise ValueError(f"{path}: cannot be read as an .npz file ({type(err).__name__}: {why}); "
                         "it is truncated or corrupt: copy or download it again") from None


def read_h5(path: Path, want_normals: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``data`` [S, P, 3], ``label`` [S] or [S, 1] (and ``normal``) from one h5 file."""
    h5py = optional_import("h5py", "reading .h5 point-cloud files", "h5py")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{path}: cannot be read as an HDF5 file ({err}); it may be truncated or corrupt"
        ) from None
    with f:
        missing = [k for k in ("data", "label") if k not in f]
        if want_normals and "normal" not in f:
            missing.append("normal")
        if missing:
            raise ValueError(
                f"{path}: missing HDF5 dataset(s) {missing}; found {sorted(f.keys())}, expected "
                "'data' [S, P, 3] float and 'label' [S] int")
        try:
            data = f["data"][()]
            label = f["label"][()]
            normal = f["normal"][()] if want_normals else None
        except (OSError, TypeError, AttributeError) as err:
            raise ValueError(
                f"{path}: cannot read its datasets ({err}); the file is corrupt"
            ) from None
    if data.ndim != 3 or data.shape[2] != 3 or data.dtype.kind != "f":
        raise ValueError(f"{path}: dataset 'data' must be float [S, P, 3], got shape {data.shape} "
                         f"dtype {data.dtype}")
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 1 or label.dtype.kind not in "iu":
        raise ValueError(f"{path}: dataset 'label' must be int [S] (or [S, 1]), got shape "
                         f"{label.shape} dtype {label.dtype}")
    if len(label) != len(data):
        raise ValueError(
            f"{path}: 'label' has {len(label)} entries but 'data' has {len(data)} clouds")
    if normal is not None and normal.shape != data.shape:
        raise ValueError(f"{path}: dataset 'normal' must have the shape of 'data' {data.shape}, "
                         f"got {normal.shape}")
    return data, label.astype(np.int64), normal


def check_labels(labels: np.ndarray, num_classes: int, path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {num_classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")


def check_finite(data: np.ndarray, path) -> None:
    bad = ~np.isfinite(data).all(axis=tuple(range(1, data.ndim)))
    if bad.any():
        raise ValueError(f"{path}: cloud {int(np.flatnonzero(bad)[0])} has NaN/Inf coordinates "
                         f"({int(bad.sum())} clouds affected)")


def read_names(path: Path) -> list[str]:
    try:
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as a text list ({err})") from None
    if not names:
        raise ValueError(f"{path}: is empty, expected one name per line")
    return names
