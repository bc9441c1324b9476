"""ShapeNetPart (Yi et al., SIGGRAPH Asia 2016): 16 categories, 50 parts, per-point part labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_int, is_int
from ._root import data_root

__all__ = ["SHAPENETPART_CATEGORIES", "SHAPENETPART_SYNSETS", "SHAPENETPART_PARTS", "PART_OFFSETS",
           "ShapeNetPart", "PartSample", "category_part_mask"]

# (category, synset, parts), in the standard order (category id = position)
_TABLE = (("Airplane", "02691156", 4), ("Bag", "02773838", 2), ("Cap", "02954340", 2),
          ("Car", "02958343", 4), ("Chair", "03001627", 4), ("Earphone", "03261776", 3),
          ("Guitar", "03467517", 3), ("Knife", "03624134", 2), ("Lamp", "03636649", 4),
          ("Laptop", "03642806", 2), ("Motorbike", "03790512", 6), ("Mug", "03797390", 2),
          ("Pistol", "03948459", 3), ("Rocket", "04099429", 3), ("Skateboard", "04225987", 3),
          ("Table", "04379243", 3))
SHAPENETPART_CATEGORIES = tuple(t[0] for t in _TABLE)
SHAPENETPART_SYNSETS = tuple(t[1] for t in _TABLE)
PART_OFFSETS = tuple(int(v) for v in np.cumsum([0] + [t[2] for t in _TABLE])[:-1])
#: global part ids of each category, e.g. ``SHAPENETPART_PARTS[0] == (0, 1, 2, 3)`` (Airplane)
SHAPENETPART_PARTS = tuple(tuple(range(o, o + t[2])) for o, t in zip(PART_OFFSETS, _TABLE))
NUM_PARTS = 50
SPLITS = ("train", "val", "test", "trainval")
LAYOUT_DIRS = {"normal": "shapenetcore_partanno_segmentation_benchmark_v0_normal",
               "v0": "shapenetcore_partanno_segmentation_benchmark_v0"}


def category_part_mask(device=None) -> torch.Tensor:
    """[16, 50] bool: ``mask[c, p]`` is True when part ``p`` belongs to category ``c``."""
    mask = torch.zeros(len(_TABLE), NUM_PARTS, dtype=torch.bool, device=device)
    for c, parts in enumerate(SHAPENETPART_PARTS):
        mask[c, list(parts)] = True
    return mask


class PartSample(NamedTuple):
    """One shape (see :class:`ShapeNetPart`).

    Attributes:
        points: [n, 3] float32 xyz.
        normals: [n, 3] float32 unit normals, or None (older layout / ``use_normals=False``).
        category: category id 0..15.
        parts: [n] int64 global part ids 0..49.
    """

    points: torch.Tensor
    normals: torch.Tensor | None
    category: int
    parts: torch.Tensor


class ShapeNetPart(Dataset):
    """ShapeNetPart part segmentation in either official layout.

    Args:
        root: the dataset folder or its parent (default: found under the data root).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"trainval"``.
        num_points: points per returned shape (None: all).
        sampling: ``"random"`` (official: with replacement, seeded per item) or ``"first"``.
        use_normals: None (when the layout has them), True (required) or False.
        categories: restrict to these categories (names or ids).
        seed: base seed of the sampling.

    Attributes:
        layout: ``"normal"`` or ``"v0"``.
        has_normals: whether items carry normals.
        files: ``(category id, path)`` of the items.

    Shapes:
        item: :class:`PartSample` (points [n, 3], normals [n, 3] or None, category, parts [n]).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train",
                 num_points: int | None = 2048, sampling: str = "random",
                 use_normals: bool | None = None, categories=None, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}")
        if sampling not in ("random", "first"):
            raise ValueError(f"`sampling` must be 'random' or 'first', got {sampling!r}")
        check_int(num_points, "num_points", 1, type_error=ValueError, optional=True)
        check_int(seed, "seed", 0, type_error=ValueError)
        self.split, self.num_points, self.sampling = split, num_points, sampling
        self.seed, self.epoch = int(seed), 0
        self.root, self.layout = self._find_root(root)
        if use_normals and self.layout == "v0":
            raise ValueError(
                f"`use_normals=True` but {self.root} is in the older v0 layout (points/*.pts + "
                "points_label/*.seg), which has no normals; use the _normal download or "
                "use_normals=None/False (the models then take xyz only: in_channels=0)")
        self.has_normals = self.layout == "normal" and use_normals is not False
        wanted = self._categories(categories)
        ids = self._split_ids(split)
        self.files: list[tuple[int, Path]] = []
        for c in wanted:
            syn = SHAPENETPART_SYNSETS[c]
            folder = self.root / syn
            if not folder.is_dir():
                continue
            if self.layout == "normal":
                found = sorted(p for p in folder.glob("*.txt"))
            else:
                found = sorted(p for p in (folder / "points").glob("*.pts"))
            self.files += [(c, p) for p in found if (syn, p.stem) in ids]
        if not self.files:
            raise FileNotFoundError(
                f"no ShapeNetPart shape of split {split!r} under {self.root} (layout "
                f"{self.layout}): the split lists name {len(ids)} shapes, none found on disk")
        self._cache: dict[int, tuple] = {}

    # ---- discovery
    @staticmethod
    def _find_root(root):
        if root is None:
            base = data_root()
            cands = [base / LAYOUT_DIRS["normal"], base / LAYOUT_DIRS["v0"],
                     base / "shapenetpart_sample"]
        else:
            base = Path(root).expanduser()
            cands = [base, base / LAYOUT_DIRS["normal"], base / LAYOUT_DIRS["v0"]]
        for c in cands:
            if (c / "train_test_split").is_dir():
                layout = ShapeNetPart._detect_layout(c)
                if layout is not None:
                    return c, layout
        raise FileNotFoundError(
            "ShapeNetPart not found; looked for train_test_split/ and <synset>/ folders in: "
            + ", ".join(str(c) for c in cands) + ". Download "
            "shapenetcore_partanno_segmentation_benchmark_v0_normal (PointNet++ / PointMLP) "
            "and pass its folder as root")

    @staticmethod
    def _detect_layout(folder: Path):
        for syn in SHAPENETPART_SYNSETS:
            d = folder / syn
            if (d / "points").is_dir():
                return "v0"
            if d.is_dir() and any(d.glob("*.txt")):
                return "normal"
        return None

    @staticmethod
    def _categories(categories) -> list[int]:
        if categories is None:
            return list(range(len(_TABLE)))
        out = []
        for c in categories:
            if isinstance(c, str):
                names = [n.lower() for n in SHAPENETPART_CATEGORIES]
                if c.lower() in names:
                    out.append(names.index(c.lower()))
                elif c in SHAPENETPART_SYNSETS:
                    out.append(SHAPENETPART_SYNSETS.index(c))
                else:
                    raise ValueError(f"unknown ShapeNetPart category {c!r}; choose from "
                                     f"{list(SHAPENETPART_CATEGORIES)}")
            elif is_int(c) and 0 <= c < len(_TABLE):
                out.append(int(c))
            else:
                raise ValueError(f"`categories` entries must be names or ids 0..15, got {c!r}")
        return sorted(set(out))

    def _split_ids(self, split: str) -> set:
        names = ["train", "val"] if split == "trainval" else [split]
        ids = set()
        for n in names:
            path = self.root / "train_test_split" / f"shuffled_{n}_file_list.json"
            if not path.is_file():
                have = sorted(p.name for p in (self.root / "train_test_split").glob("*.json"))
                raise FileNotFoundError(f"ShapeNetPart split list {path} is missing (split "
                                        f"{split!r}); the folder holds {have}")
            try:
                entries = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
            for e in entries:
                parts = str(e).strip("/").split("/")
                if len(parts) < 2:
                    raise ValueError(f"{path}: entry {e!r} is not 'shape_data/<synset>/<id>'")
                ids.add((parts[-2], parts[-1]))
        return ids

    # ---- reading
    def _read(self, idx: int):
        if idx in self._cache:
            return self._cache[idx]
        cat, path = self.files[idx]
        if self.layout == "normal":
            data = _load_rows(path, 7)
            pts, nrm = data[:, :3], data[:, 3:6]
            parts = data[:, 6].astype(np.int64)
            ok = np.isin(parts, SHAPENETPART_PARTS[cat])
        else:
            pts = _load_rows(path, 3)
            seg_path = path.parent.parent / "points_label" / (path.stem + ".seg")
            if not seg_path.is_file():
                raise FileNotFoundError(f"part labels {seg_path} are missing for {path}")
            local = np.loadtxt(seg_path, dtype=np.int64, ndmin=1)
            if len(local) != len(pts):
                raise ValueError(f"{seg_path} has {len(local)} labels for {len(pts)} points in "
                                 f"{path}")
            n_parts = len(SHAPENETPART_PARTS[cat])
            ok = (local >= 1) & (local <= n_parts)
            parts = PART_OFFSETS[cat] + local - 1
            nrm = None
        if not ok.all():
            bad = np.unique(parts[~ok] if self.layout == "normal" else local[~ok])[:5].tolist()
            raise ValueError(
                f"{path}: part labels {bad} do not belong to category "
                f"{SHAPENETPART_CATEGORIES[cat]} (global parts {SHAPENETPART_PARTS[cat]})")
        item = (pts.astype(np.float32), None if nrm is None else nrm.astype(np.float32), parts)
        self._cache[idx] = item
        return item

    # ---- dataset protocol
    @property
    def categories(self) -> np.ndarray:
        """int64 [len(self)] category id of every item."""
        return np.array([c for c, _ in self.files], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Select the random resampling of an epoch (``sampling="random"``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> PartSample:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} shapes")
        idx = int(idx) % len(self)
        pts, nrm, parts = self._read(idx)
        if self.num_points is not None:
            n = len(pts)
            if self.sampling == "random":
                rng = np.random.default_rng([self.seed, self.epoch, idx])
                sel = rng.choice(n, self.num_points, replace=True)
            else:
                sel = np.arange(self.num_points) % n
            pts, parts = pts[sel], parts[sel]
            nrm = None if nrm is None else nrm[sel]
        normals = torch.from_numpy(np.ascontiguousarray(nrm)) if (
            self.has_normals and nrm is not None) else None
        return PartSample(torch.from_numpy(np.ascontiguousarray(pts)), normals,
                          self.files[idx][0], torch.from_numpy(np.ascontiguousarray(parts)))

    def __repr__(self) -> str:
        return (f"ShapeNetPart(split={self.split!r}, shapes={len(self)}, layout={self.layout!r}, "
                f"normals={self.has_normals}, num_points={self.num_points}, root={self.root})")


def _load_rows(path: Path, cols: int) -> np.ndarray:
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{path} is not a table of numbers: {err}") from None
    if data.shape[1] < cols or len(data) == 0:
        raise ValueError(f"{path}: expected at least {cols} columns per line, got shape "
                         f"{data.shape}")
    return data[:, :cols] if cols == 3 else data
