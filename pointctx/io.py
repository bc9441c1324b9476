"""Point-cloud files: a native PLY writer/reader and Open3D-based readers/writers (.pcd, ...)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._checks import optional_import

__all__ = ["PointCloudData", "write_ply", "read_ply", "write_point_cloud", "read_point_cloud"]

# PLY scalar type names -> numpy dtypes (both spellings of the spec).
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
              "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
              "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
# numpy kind+size -> PLY name used when writing.
_NP_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
              "f4": "float", "f8": "double"}
_RESERVED = ("x", "y", "z", "red", "green", "blue", "nx", "ny", "nz")


class PointCloudData(NamedTuple):
    """A point cloud read from a file.

    Attributes:
        pos: positions.
        rgb: colours in [0, 1], or None.
        normals: normals, or None.
        fields: other per-vertex scalars by name (native PLY reader only).

    Shapes:
        pos: [N, 3]; rgb: [N, 3]; normals: [N, 3]; fields[name]: [N].
    """

    pos: Tensor
    rgb: Tensor | None
    normals: Tensor | None
    fields: dict[str, Tensor]


# helpers
def _as_numpy(value, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _check_rows(arr: np.ndarray, n: int, cols: int | None, name: str) -> None:
    shape = "[N, 3]" if cols else "[N]"
    if (cols and (arr.ndim != 2 or arr.shape[1] != cols)) or (not cols and arr.ndim != 1):
        raise ValueError(f"`{name}` must have shape {shape}, got {list(arr.shape)}")
    if arr.shape[0] != n:
        raise ValueError(f"`{name}` must have one row per point: expected {n}, got {arr.shape[0]}")


def _colors_uchar(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype.kind != "f":
        raise ValueError(
            f"`rgb` must be uint8 (0..255) or floating point (0..1), got dtype {rgb.dtype}")
    if rgb.size and not np.isfinite(rgb).all():
        raise ValueError("`rgb` has NaN or Inf values")
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _field_dtype(arr: np.ndarray, name: str) -> np.dtype:
    if arr.dtype == np.bool_:
        return np.dtype("u1")
    if arr.dtype == np.float16:
        return np.dtype("f4")
    key = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    if key in _NP_TO_PLY:
        return np.dtype(key)
    if key in ("i8", "u8"):  # PLY has no 64-bit integers: narrow when the values fit
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if -(2**31) <= lo and hi < 2**31:
            return np.dtype("i4")
        raise ValueError(f"field {name!r} holds 64-bit integers outside the int32 range ([{lo}, "
                         f"{hi}]); PLY has no 64-bit integer type")
    raise ValueError(f"field {name!r} has unsupported dtype {arr.dtype} for PLY")


# PLY writer
def write_ply(path, pos, rgb=None, normals=None, fields: Mapping[str, object] | None = None,
              binary: bool = True, double: bool = False, comments=()) -> Path:
    """Write a point cloud as a PLY file (native, no dependencies); returns the path.

    Args:
        path: output file.
        pos: positions (tensor or array).
        rgb: colours, uint8 or float in [0, 1].
        normals: normals.
        fields: extra per-vertex scalars by name (e.g. ``{"label": ...}``).
        binary: ``binary_little_endian`` (default) or ``ascii``.
        double: store positions and normals as ``double``.
        comments: header comment lines.

    Shapes:
        pos: [N, 3]; rgb: [N, 3]; normals: [N, 3]; fields[name]: [N].
    """
    path = Path(path)
    p = _as_numpy(pos, "pos")
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"`pos` must have shape [N, 3], got {list(p.shape)}")
    if p.dtype.kind != "f":
        raise ValueError(f"`pos` must be floating point, got dtype {p.dtype}")
    if p.size and not np.isfinite(p).all():
        raise ValueError("`pos` has NaN or Inf values; PLY readers would choke on them")
    n = p.shape[0]
    fdt = np.dtype("f8") if double else np.dtype("f4")
    cols: list[tuple[str, np.dtype, np.ndarray]] = [(a, fdt, p[:, i]) for i, a in enumerate("xyz")]
    if normals is not None:
        nrm = _as_numpy(normals, "normals")
        _check_rows(nrm, n, 3, "normals")
        cols += [(a, fdt, nrm[:, i]) for i, a in enumerate(("nx", "ny", "nz"))]
    if rgb is not None:
        c = _as_numpy(rgb, "rgb")
        _check_rows(c, n, 3, "rgb")
        c = _colors_uchar(c)
        cols += [(a, np.dtype("u1"), c[:, i]) for i, a in enumerate(("red", "green", "blue"))]
    for key, value in (fields or {}).items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"field name {key!r} must be an identifier (letters, digits, _)")
        if key in _RESERVED:
            raise ValueError(f"field name {key!r} is reserved (use pos / rgb / normals)")
        arr = _as_numpy(value, f"fields[{key!r}]")
        _check_rows(arr, n, None, f"fields[{key!r}]")
        cols.append((key, _field_dtype(arr, key), arr))

    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += [f"comment {str(c).replace(chr(10), ' ')}" for c in comments]
    header.append(f"element vertex {n}")
    header += [f"property {_NP_TO_PLY[f'{dt.kind}{dt.itemsize}']} {name}" for name, dt, _ in cols]
    header.append("end_header")
    head = ("\n".join(header) + "\n").encode("ascii")

    with open(path, "wb") as fh:
        fh.write(head)
        if binary:
            rec = np.empty(n, dtype=[(name, dt.newbyteorder("<")) for name, dt, _ in cols])
            for name, _, arr in cols:
                rec[name] = arr
            fh.write(rec.tobytes())
        else:
            fmts = []
            for _, dt, _ in cols:
                fmts.append(("%.17g" if dt.itemsize == 8 else "%.9g") if dt.kind == "f" else "%d")
            table = np.empty((n, len(cols)), dtype=object)
            for j, (_, dt, arr) in enumerate(cols):
                table[:, j] = arr.astype(dt).tolist()
            if n:
                np.savetxt(fh, table, fmt=fmts, delimiter=" ")
    return path


# PLY reader
def _parse_header(fh, path: Path):
    first = fh.readline()
    if first.strip() != b"ply":
        raise ValueError(f"{path} is not a PLY file (it does not start with 'ply')")
    fmt = None
    elements: list[list] = []  # [name, count, [(prop, dtype or ('list', cnt, item))]]
    while True:
        line = fh.readline()
        if not line:
            raise ValueError(f"{path}: PLY header has no 'end_header'")
        parts = line.decode("ascii", errors="replace").split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "end_header":
            break
        if parts[0] == "format":
            fmt = parts[1]
            if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise ValueError(f"{path}: unknown PLY format {fmt!r}")
        elif parts[0] == "element":
            elements.append([parts[1], int(parts[2]), []])
        elif parts[0] == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element")
            if parts[1] == "list":
                elements[-1][2].append((parts[4], ("list", parts[2], parts[3])))
            else:
                if parts[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown PLY property type {parts[1]!r}")
                elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt is None:
        raise ValueError(f"{path}: PLY header has no 'format' line")
    return fmt, elements


def read_ply(path, dtype: torch.dtype = torch.float32) -> PointCloudData:
    """Read the vertices of a PLY file natively (ASCII or binary, any scalar properties).

    Args:
        path: the file.
        dtype: floating dtype of ``pos``, ``rgb`` and ``normals``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY file {path} does not exist")
    with open(path, "rb") as fh:
        fmt, elements = _parse_header(fh, path)
        names = [e[0] for e in elements]
        if "vertex" not in names:
            raise ValueError(f"{path}: PLY file has no 'vertex' element")
        vi = names.index("vertex")
        name, count, props = elements[vi]
        if any(isinstance(t, tuple) for _, t in props):
            raise ValueError(f"{path}: list properties in the vertex element are not supported")
        if fmt == "ascii":
            skip = sum(e[1] for e in elements[:vi])
            for _ in range(skip):
                fh.readline()
            rows = [fh.readline() for _ in range(count)]
            if count and not rows[-1]:
                raise ValueError(f"{path}: PLY body is truncated (expected {count} vertices)")
            table = np.array([r.split()[: len(props)] for r in rows], dtype=np.float64)
            table = table.reshape(count, len(props))
            rec = {p: table[:, j].astype(t) for j, (p, t) in enumerate(props)}
        else:
            order = "<" if fmt == "binary_little_endian" else ">"
            for ename, ecount, eprops in elements[:vi]:
                if any(isinstance(t, tuple) for _, t in eprops):
                    raise ValueError(f"{path}: binary PLY element {ename!r} with list properties "
                                     "comes before the vertices; not supported")
                fh.seek(ecount * sum(np.dtype(t).itemsize for _, t in eprops), 1)
            dt = np.dtype([(p, order + t) for p, t in props])
            buf = fh.read(dt.itemsize * count)
            if len(buf) != dt.itemsize * count:
                raise ValueError(f"{path}: PLY body is truncated (expected {count} vertices of "
                                 f"{dt.itemsize} bytes, got {len(buf)} bytes)")
            arr = np.frombuffer(buf, dtype=dt)
            rec = {p: arr[p].astype(np.dtype(t).newbyteorder("=")) for p, t in props}
    for a in "xyz":
        if a not in rec:
            raise ValueError(f"{path}: PLY vertices have no {a!r} property")

    def stack(keys):
        return torch.from_numpy(np.stack([rec.pop(k) for k in keys], 1).astype(np.float64)).to(
            dtype)

    pos = stack("xyz")
    normals = stack(("nx", "ny", "nz")) if all(k in rec for k in ("nx", "ny", "nz")) else None
    rgb = None
    if all(k in rec for k in ("red", "green", "blue")):
        kinds = {rec[k].dtype.kind for k in ("red", "green", "blue")}
        rgb = stack(("red", "green", "blue"))
        if "f" not in kinds:
            rgb = rgb / 255.0
    fields = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rec.items()}
    return PointCloudData(pos, rgb, normals, fields)


# Open3D
def _import_open3d():
    return optional_import("open3d", "reading/writing this point-cloud format",
                           "open3d-cpu (on Linux it also needs the system library libusb-1.0)")


def read_point_cloud(path, backend: str = "auto", dtype: torch.dtype = torch.float32):
    """Read a point cloud file (``.ply``, ``.pcd``, ``.xyz``, ``.xyzrgb``, ``.pts``, ...).

    Args:
        path: the file.
        backend: ``"auto"`` (native :func:`read_ply` for ``.ply``, Open3D otherwise),
            ``"native"`` (``.ply`` only) or ``"open3d"``.
        dtype: floating dtype of the returned tensors.
    """
    if backend not in ("auto", "native", "open3d"):
        raise ValueError(f"`backend` must be one of ['auto', 'native', 'open3d'], got {backend!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point-cloud file {path} does not exist")
    is_ply = path.suffix.lower() == ".ply"
    if backend == "native" and not is_ply:
        raise ValueError(f"the native backend reads .ply only, got {path.name}")
    if backend == "native" or (backend == "auto" and is_ply):
        return read_ply(path, dtype=dtype)
    o3d = _import_open3d()
    pcd = o3d.io.read_point_cloud(str(path))
    if not pcd.has_points():
        raise ValueError(f"Open3D read no points from {path} (empty or unsupported file)")

    def tens(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float64).copy()).to(dtype)

    return PointCloudData(tens(pcd.points), tens(pcd.colors) if pcd.has_colors() else None,
                          tens(pcd.normals) if pcd.has_normals() else None, {})


def write_point_cloud(path, pos, rgb=None, normals=None, binary: bool = True) -> Path:
    """Write a point cloud; the format follows the extension.

    Args:
        path: output file.
        pos: positions.
        rgb: colours (uint8 0..255 or float 0..1).
        normals: normals.
        binary: binary (default) or ASCII encoding, where the format has both.

    Shapes:
        pos: [N, 3]; rgb: [N, 3]; normals: [N, 3].
    """
    path = Path(path)
    if path.suffix.lower() == ".ply":
        return write_ply(path, pos, rgb=rgb, normals=normals, binary=binary)
    p = _as_numpy(pos, "pos")
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"`pos` must have shape [N, 3], got {list(p.shape)}")
    o3d = _import_open3d()
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(p.astype(np.float64))
    if rgb is not None:
        c = _as_numpy(rgb, "rgb")
        _check_rows(c, p.shape[0], 3, "rgb")
        c = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else c.astype(np.float64)
        pcd.colors = o3d.utility.Vector3dVector(c)
    if normals is not None:
        nrm = _as_numpy(normals, "normals")
        _check_rows(nrm, p.shape[0], 3, "normals")
        pcd.normals = o3d.utility.Vector3dVector(nrm.astype(np.float64))
    if not o3d.io.write_point_cloud(str(path), pcd, write_ascii=not binary):
        raise ValueError(f"Open3D could not write {path} (unknown extension or unwritable path)")
    return path
