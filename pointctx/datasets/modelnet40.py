"""ModelNet40 (Wu et al., CVPR 2015): 40 classes of CAD shapes, from any of three packagings."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._read import check_finite, check_labels, read_h5, read_names, read_npz
from ._root import data_root
from .points import PointCloudDataset, check_split

__all__ = ["ModelNet40", "MODELNET40_URL", "LAYOUTS"]

MODELNET40_URL = "https://modelnet.cs.princeton.edu/"

_NPZ_RE = re.compile(r"^modelnet40_(train|test)_(\d+)\.npz$")


class NpzLayout:
    """``modelnet40_<split>_<P>.npz`` files (or one ``.npz`` with a ``split`` array)."""

    name = "npz"

    def find(self, base: Path, split: str, num_points: int | None, looked: list[str],
             short: list[str]):
        """The npz file to read (the smallest with enough points), or None."""
        if base.suffix == ".npz":
            looked.append(str(base))
            return base if base.is_file() else None
        looked.append(str(base / f"modelnet40_{split}_<P>.npz"))
        hits = sorted(
            p for p in base.glob(f"modelnet40_{split}_*.npz") if _NPZ_RE.match(p.name)
        ) if base.is_dir() else []
        size = {p: int(_NPZ_RE.match(p.name).group(2)) for p in hits}
        if num_points is not None:  # the smallest file with enough points
            enough = sorted((p for p in hits if size[p] >= num_points), key=size.get)
            if hits and not enough:
                biggest = max(hits, key=size.get)
                short.append(f"{biggest} holds {size[biggest]} points per cloud, fewer than "
                             f"num_points = {num_points}: pass num_points <= {size[biggest]} (or "
                             "None for all stored points), or add a file with more points")
            hits = enough
        else:  # all points asked for: the largest file
            hits = sorted(hits, key=size.get, reverse=True)
        if split == "test" and not hits:
            looked.extend(str(p) for p in base.glob("modelnet40_train_*.npz"))
        return hits[0] if hits else None

    def load(self, ds: ModelNet40, path: Path, split: str) -> None:
        """Read the file's ``points``, ``labels``, ``classes`` (and ``split``, ``names``)."""
        if ds.use_normals:
            raise ValueError(f"{path}: the npz layout holds no normals; use use_normals=False")
        arrays = read_npz(path)
        missing = {"points", "labels", "classes"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: missing array(s) {sorted(missing)}; found {sorted(arrays)}")
        points, labels = arrays["points"], arrays["labels"]
        classes = [str(c) for c in arrays["classes"]]
        split_arr, names = arrays.get("split"), arrays.get("names")
        if points.ndim != 3 or points.shape[2] != 3 or points.dtype.kind != "f":
            raise ValueError(f"{path}: 'points' must be float [S, P, 3], got shape {points.shape} "
                             f"dtype {points.dtype}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(points):
            raise ValueError(f"{path}: 'labels' must be int [S] with S = {len(points)}, got shape "
                             f"{labels.shape} dtype {labels.dtype}")
        m = _NPZ_RE.match(path.name)
        if split_arr is not None:
            keep = np.asarray(split_arr).astype(str) == split
            if not keep.any():
                raise ValueError(f"{path}: its 'split' array has no {split!r} entries")
            points, labels = points[keep], labels[keep]
            names = names[keep] if names is not None else None
        elif m is None or m.group(1) != split:
            raise ValueError(
                f"{path}: cannot tell which split it holds (no 'split' array and the name is not "
                f"modelnet40_<train|test>_<P>.npz); {split!r} was asked for")
        check_labels(labels, len(classes), path)
        check_finite(points, path)
        ds.classes = classes
        ds._names = None if names is None else [str(n) for n in names]
        ds._source = str(path)
        ds._array = points  # kept in its stored dtype (float16 halves memory); cast per item
        ds._finish(labels, points.shape[1])


class PlyHdf5Layout:
    """PointNet's ``ply_data_<split><k>.h5`` files with ``shape_names.txt``."""

    name = "ply_hdf5"

    def find(self, base: Path, split: str, num_points, looked: list[str], short: list[str]):
        """The split's h5 files in order, or None."""
        for folder in (base / "modelnet40_ply_hdf5_2048", base):
            looked.append(str(folder / f"ply_data_{split}<k>.h5"))
            files = sorted(
                folder.glob(f"ply_data_{split}*.h5"),
                key=lambda p: int(re.sub(r"\D", "", p.stem.split(split)[-1]) or 0),
            ) if folder.is_dir() else []
            if files:
                return files
        return None

    def load(self, ds: ModelNet40, files: list[Path], split: str) -> None:
        """Read and concatenate the h5 files (with normals when asked)."""
        names_file = files[0].parent / "shape_names.txt"
        if not names_file.is_file():
            raise FileNotFoundError(
                f"{names_file} not found (the class names of {files[0].parent})")
        ds.classes = read_names(names_file)
        datas, labels = [], []
        for path in files:
            data, label, normal = read_h5(path, want_normals=ds.use_normals)
            check_labels(label, len(ds.classes), path)
            check_finite(data, path)
            if normal is not None:
                data = np.concatenate([data, normal], axis=2)
            if datas and data.shape[1:] != datas[0].shape[1:]:
                raise ValueError(f"{path}: clouds have shape {data.shape[1:]}, but {files[0]} has "
                                 f"{datas[0].shape[1:]}")
            datas.append(data.astype(np.float32, copy=False))
            labels.append(label)
        ds._names = None
        ds._source = ", ".join(str(p) for p in files)
        ds._array = np.concatenate(datas, 0)
        ds._finish(np.concatenate(labels), ds._array.shape[1])


class NormalResampledLayout:
    """PointNet++'s ``modelnet40_normal_resampled/`` folder of ``x,y,z,nx,ny,nz`` text files."""

    name = "normal_resampled"

    def find(self, base: Path, split: str, num_points, looked: list[str], short: list[str]):
        """The folder holding ``modelnet40_<split>.txt``, or None."""
        for folder in (base / "modelnet40_normal_resampled", base):
            looked.append(str(folder / f"modelnet40_{split}.txt"))
            if (folder / f"modelnet40_{split}.txt").is_file():
                return folder
        return None

    def load(self, ds: ModelNet40, folder: Path, split: str) -> None:
        """List the shape files (parsed per item by :meth:`read`)."""
        names_file = folder / "modelnet40_shape_names.txt"
        if not names_file.is_file():
            raise FileNotFoundError(f"{names_file} not found (the class names of {folder})")
        ds.classes = read_names(names_file)
        lookup = {c: i for i, c in enumerate(ds.classes)}
        shape_ids = read_names(folder / f"modelnet40_{split}.txt")
        files, labels = [], []
        for sid in shape_ids:
            cname = sid.rsplit("_", 1)[0]
            if cname not in lookup:
                raise ValueError(f"{folder / f'modelnet40_{split}.txt'}: shape id {sid!r} names "
                                 f"class {cname!r}, which is not in {names_file.name}")
            files.append(folder / cname / f"{sid}.txt")
            labels.append(lookup[cname])
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(files)} {split} shape files are "
                                    f"missing under {folder}, e.g. {missing[:3]}")
        ds._names = shape_ids
        ds._files = files
        ds._cache = {}
        ds._source = str(folder)
        first = self.read(ds, 0)
        ds._finish(np.asarray(labels), first.shape[0])

    @staticmethod
    def read(ds: ModelNet40, row: int) -> np.ndarray:
        """Parse the text file of ``row`` (xyz, or xyz + normals with ``use_normals``)."""
        path = ds._files[row]
        try:
            arr = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except (ValueError, OSError) as err:
            raise ValueError(
                f"{path}: cannot be parsed as 'x,y,z,nx,ny,nz' lines ({err})"
            ) from None
        if arr.shape[1] != 6 or arr.shape[0] < 1:
            raise ValueError(f"{path}: expected lines of 6 comma-separated numbers "
                             f"(x,y,z,nx,ny,nz), got an array of shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: has NaN/Inf values")
        if hasattr(ds, "_points_per_cloud") and arr.shape[0] < ds.points_per_item:
            raise ValueError(
                f"{path}: has {arr.shape[0]} points, fewer than num_points = {ds.points_per_item}")
        return arr if ds.use_normals else arr[:, :3]


#: The ModelNet40 readers, in the order ``layout="auto"`` tries them.
LAYOUTS = {lay.name: lay for lay in (NpzLayout(), PlyHdf5Layout(), NormalResampledLayout())}


class ModelNet40(PointCloudDataset):
    """ModelNet40 (Wu et al., CVPR 2015): 40 classes of CAD shapes, from any of three packagings.

    Args:
        root: data folder, layout folder or ``.npz`` file (default: the data root).
        split: ``"train"`` or ``"test"``.
        num_points, sampling, transform, seed: see :class:`PointCloudDataset`.
        layout: ``"auto"``, ``"npz"``, ``"ply_hdf5"`` or ``"normal_resampled"``.
        use_normals: return xyz + normals [n, 6] (layouts with normals).

    Shapes:
        item: ``(points [num_points, 3 or 6] float32, label int)``.
    """

    LAYOUTS = tuple(LAYOUTS)

    def __init__(self, root: str | Path | None = None, split: str = "train",
                 num_points: int | None = 1024, sampling: str = "first",
                 transform: Callable | None = None, layout: str = "auto", use_normals: bool = False,
                 seed: int = 0) -> None:
        super().__init__(num_points, sampling, transform, seed)
        check_split(split)
        if layout != "auto" and layout not in self.LAYOUTS:
            raise ValueError(f"`layout` must be one of {['auto', *self.LAYOUTS]}, got {layout!r}")
        self.split_name, self.use_normals = split, bool(use_normals)
        base = Path(root).expanduser() if root is not None else data_root()
        layouts = self.LAYOUTS if layout == "auto" else (layout,)
        looked: list[str] = []
        short: list[str] = []
        for lay in layouts:
            reader = LAYOUTS[lay]
            found = reader.find(base, split, self.num_points, looked, short)
            if found is not None:
                self.layout = lay
                reader.load(self, found, split)
                return
        if short:
            raise ValueError("ModelNet40: " + "; ".join(short))
        hint = ""
        if split == "test" and any("modelnet40_train_" in s for s in looked if Path(s).exists()):
            hint = (" The folder holds only the official train split (modelnet40_train_*.npz); "
                    "carve a validation set with ModelNet40(split='train').split(val_fraction).")
        raise FileNotFoundError(
            f"ModelNet40 {split} data not found under {base}; looked for: " + "; ".join(looked)
            + "." + hint + f" ModelNet40 comes from {MODELNET40_URL} (academic use); the "
            "ply_hdf5_2048 and normal_resampled packagings are those of PointNet / PointNet++.")

    def _cloud(self, row: int) -> np.ndarray:
        if self.layout != "normal_resampled":
            return self._array[row]
        return self._cache.get(row) if row in self._cache else NormalResampledLayout.read(self, row)

    def _select(self, row, cloud, rng):
        """The sampled points of one cloud (normals resampled with the layout's cache)."""
        out = super()._select(row, cloud, rng)
        if self.layout == "normal_resampled" and self.sampling != "random":
            self._cache[row] = out  # later reads select from the cached subset again
            if self.sampling == "fps":
                self._fps[row] = np.arange(len(out))
        return out

