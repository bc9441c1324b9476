"""ScanObjectNN (Uy et al., ICCV 2019): real scanned objects, read from the official h5 files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._read import check_finite, check_labels, read_h5
from ._root import data_root
from .points import PointCloudDataset, check_split

__all__ = ["ScanObjectNN", "SCANOBJECTNN_CLASSES", "SCANOBJECTNN_URL", "SCANOBJECTNN_VARIANTS"]

SCANOBJECTNN_URL = "https://hkust-vgd.github.io/scanobjectnn/"

#: The 15 ScanObjectNN classes, in label order (the dataset's ``shape_names.txt``).
SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf",
                        "table", "bed", "pillow", "sink", "sofa", "toilet")

#: Variant name -> (folder under the ``h5_files`` root, file-name suffix after ``objectdataset``).
#: Files are ``<folder>/training_objectdataset<suffix>.h5`` and ``<folder>/test_...``.
SCANOBJECTNN_VARIANTS = {"OBJ_BG": ("main_split", ""), "OBJ_ONLY": ("main_split_nobg", ""),
                         "PB_T25": ("main_split", "_augmented25_norot"),
                         "PB_T25_R": ("main_split", "_augmented25rot"),
                         "PB_T50_R": ("main_split", "_augmentedrot"),
                         "PB_T50_RS": ("main_split", "_augmentedrot_scale75")}


class ScanObjectNN(PointCloudDataset):
    """ScanObjectNN (Uy et al., ICCV 2019): 15 classes of real scanned objects, official h5 files.

    Args:
        root: folder holding ``main_split/``, or its parent (default: under the data root).
        variant: one of :data:`SCANOBJECTNN_VARIANTS`.
        split: ``"train"`` or ``"test"``.
        num_points, sampling, transform, seed: see :class:`PointCloudDataset`.

    Shapes:
        item: ``(points [num_points, 3] float32, label int)``.
    """

    def __init__(self, root: str | Path | None = None, variant: str = "PB_T50_RS",
                 split: str = "train", num_points: int | None = 1024, sampling: str = "first",
                 transform: Callable | None = None, seed: int = 0) -> None:
        super().__init__(num_points, sampling, transform, seed)
        if variant not in SCANOBJECTNN_VARIANTS:
            raise ValueError(
                f"`variant` must be one of {list(SCANOBJECTNN_VARIANTS)}, got {variant!r}")
        check_split(split)
        self.variant, self.split_name, self.classes = variant, split, list(SCANOBJECTNN_CLASSES)
        path = self.find_file(root, variant, split)
        self._source = str(path)
        data, labels, _ = read_h5(path)
        check_labels(labels, len(self.classes), path)
        check_finite(data, path)
        self._array = np.ascontiguousarray(data, dtype=np.float32)
        self._finish(labels, data.shape[1])

    @staticmethod
    def expected_paths(root: str | Path | None, variant: str, split: str) -> list[Path]:
        """The paths where the file of ``variant``/``split`` is looked for, in order."""
        folder, suffix = SCANOBJECTNN_VARIANTS[variant]
        prefix = "training" if split == "train" else "test"
        rel = Path(folder) / f"{prefix}_objectdataset{suffix}.h5"
        if root is None:
            root = data_root(must_exist=False) / "scanobjectnn"
        base = Path(root).expanduser()
        return [base / rel, base / "h5_files" / rel]

    @classmethod
    def find_file(cls, root, variant: str, split: str) -> Path:
        """Return the first existing expected path, or raise ``FileNotFoundError`` naming them."""
        paths = cls.expected_paths(root, variant, split)
        for p in paths:
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"ScanObjectNN {variant} {split} file not found; looked for "
            + " and ".join(str(p) for p in paths)
            + f". Get h5_files.zip from the dataset's site {SCANOBJECTNN_URL} (its terms require "
            "registration), unzip it and pass the folder holding main_split/ as `root` "
            "(or --data-root)")
