#!/usr/bin/env python
"""Predictions of a trained model on point-cloud files or images, for every task.

The model comes from a run of the example scripts: give its run folder, ``last.pt`` or
``best.pt`` (:func:`pointctx.load_model`, which applies the run's stored input preprocessing).

* classifiers (``scanobjectnn.py``, ``modelnet40.py``, ``train_images.py``): the ``--top``
  classes of every file; ``--output`` writes every class's probability (``.json`` or ``.csv``);
* image segmenters (``segment_images.py``): a label map per image at the image's own size,
  ``<stem>.png`` (dataset colours) and ``<stem>.npy`` in ``--output`` (a folder, default
  ``predictions``);
* point segmenters (``segment_scenes.py``, ``shapenetpart.py``: give ``--category``): per-point
  labels ``<stem>.npy`` and a coloured ``<stem>.ply`` (vertex field ``label``) in ``--output``.

Point files (``.ply``, ``.pcd``, ``.npy``, ``.txt`` / ``.xyz`` / ``.csv`` / ``.pts``): x, y, z,
then the model's feature columns; ``.pcd`` needs open3d. A part segmenter labels each point with
a part of the given category. Images: ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``.

Examples::

    python examples/predict.py runs/sample-pointmlp_coc_elite-20260101-120000 chair.ply desk.npy
    python examples/predict.py runs/cifar/coc_tiny_cifar/best.pt cat.png --top 3
    python examples/predict.py runs/camvid-coc_micro_seg-20260101-120000 street.png --output out
    python examples/predict.py runs/parts plane.txt --category Airplane --output out

Exit status: 0, 1 for an unreadable input file, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import _cli as T
import numpy as np
import torch

import pointctx
from pointctx import PointBatch
from pointctx._files import atomic_output
from pointctx.io import read_point_cloud, write_ply
from pointctx.train import atomic_write_json, atomic_write_text

PROG = "predict.py"
POINT_SUFFIXES = (".ply", ".pcd", ".npy", ".txt", ".xyz", ".csv", ".pts")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(prog=PROG, description="Predictions of a trained pointctx model "
                                "on point-cloud files or images.")
    p.add_argument("model", type=Path, help="run folder, last.pt or best.pt")
    p.add_argument("inputs", type=Path, nargs="+", metavar="FILE",
                   help=f"point clouds ({', '.join(POINT_SUFFIXES)}) or images "
                   f"({', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--top", type=T.positive_int, default=5,
                   help="classifiers: classes printed per file")
    p.add_argument("--output", type=Path, default=None,
                   help="classifiers: a .json or .csv file of all probabilities; segmenters: "
                   "the folder of the label files (default predictions)")
    p.add_argument("--category", default=None,
                   help="part segmenters: the object category of every file (name or index)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def read_points(path: Path, columns: int) -> torch.Tensor:
    """The first ``columns`` columns of a point file, float32 [N, columns]."""
    suffix = path.suffix.lower()
    if suffix in (".ply", ".pcd"):
        data = read_point_cloud(path)
        arr = data.pos.numpy()
        if columns > 3:
            extra = [t.numpy() for t in (data.rgb, data.normals) if t is not None]
            arr = np.concatenate([arr, *extra], 1) if extra else arr
    elif suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        text = path.read_text()
        first = next((line for line in text.splitlines() if line.strip()), "")
        arr = np.loadtxt(io.StringIO(text), delimiter="," if "," in first else None, ndmin=2)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] < columns or arr.shape[0] == 0:
        raise ValueError(f"{path}: expected a table [N >= 1, >= {columns} columns] (x, y, z"
                         f"{', features' if columns > 3 else ''}), got shape {list(arr.shape)}")
    if not np.isfinite(arr[:, :columns]).all():
        row = int(np.flatnonzero(~np.isfinite(arr[:, :columns]).all(1))[0])
        raise ValueError(f"{path}: row {row} has NaN or Inf values")
    return torch.from_numpy(np.ascontiguousarray(arr[:, :columns]))


def read_image(path: Path, channels: int) -> torch.Tensor:
    """An image file as a uint8 tensor [1, C, H, W] (converted to ``channels``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    return torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1).copy()).permute(
        2, 0, 1)[None]


def category_index(model, category: str | None) -> int | None:
    """The category id of a part segmenter's ``--category`` (None for other tasks)."""
    if model.task != "part segmentation":
        return None
    names = list(model.run_info.get("dataset", {}).get("categories", []))
    if category is None:
        raise ValueError(f"argument --category: a part segmenter needs the object category, "
                         f"one of {', '.join(names)}")
    lower = [n.lower() for n in names]
    if category.lower() in lower:
        return lower.index(category.lower())
    if category.isdigit() and int(category) < len(names):
        return int(category)
    raise ValueError(f"argument --category: unknown category {category!r}; choose one of "
                     f"{', '.join(names)}")


@torch.no_grad()
def predict(model, path: Path, category: int | None = None, device="cpu") -> torch.Tensor:
    """The model's output on one file.

    Probabilities [K] (classifiers), logits [K, H, W] (image segmenters) or [N, K] (point
    segmenters).
    """
    if model.inputs["kind"] == "images":
        out = model(read_image(path, int(model.inputs["image_size"][0])).to(device))[0]
    else:
        pts = read_points(path, 3 + int(getattr(model.model, "in_channels", 0))).to(device)
        pb = PointBatch.from_list([pts[:, :3]], [pts[:, 3:]] if pts.shape[1] > 3 else None)
        kw = {} if category is None else {"category": torch.tensor([category], device=device)}
        out = model(pb, **kw)
        out = out[0] if model.task.endswith("classification") else out
        parts = model.run_info.get("dataset", {}).get("category_parts")
        if category is not None and parts:  # only the category's parts
            other = torch.ones(out.shape[-1], dtype=torch.bool)
            other[parts[category]] = False
            out = out.masked_fill(other.to(out.device), float("-inf"))
    out = out.float().cpu()
    return out.softmax(-1) if model.task.endswith("classification") else out


def palette(model) -> np.ndarray:
    """RGB uint8 colours of the labels: the dataset's, else distinct ones."""
    stored = model.run_info.get("dataset", {}).get("palette")
    if stored:
        return np.asarray(stored, np.uint8)
    from pointctx.viz.draw import label_colors

    return label_colors(len(model.class_names))


def write_labels(model, path: Path, out: torch.Tensor, folder: Path) -> str:
    """Write the label files of one input; returns the line printed for it."""
    colors = palette(model)
    if out.dim() == 3:  # [K, H, W]
        labels = out.argmax(0).numpy()
        atomic_output(folder / f"{path.stem}.npy", lambda t: np.save(t, labels))
        rgb = colors[labels]

        def save_png(tmp):
            from PIL import Image

            Image.fromarray(rgb).save(tmp, format="PNG")

        atomic_output(folder / f"{path.stem}.png", save_png)
        written = f"{folder / path.stem}.png, .npy ({labels.shape[0]}x{labels.shape[1]})"
    else:  # [N, K]
        labels = out.argmax(1).numpy()
        atomic_output(folder / f"{path.stem}.npy", lambda t: np.save(t, labels))
        pts = read_points(path, 3)
        write_ply(folder / f"{path.stem}.ply", pts, rgb=torch.from_numpy(colors[labels]),
                  fields={"label": torch.from_numpy(labels).int()})
        written = f"{folder / path.stem}.ply, .npy ({labels.shape[0]} points)"
    counts = np.bincount(labels.reshape(-1), minlength=len(model.class_names))
    top = ", ".join(f"{model.class_names[k]} {100 * counts[k] / labels.size:.0f} %"
                    for k in np.argsort(-counts)[:3] if counts[k])
    return f"{path}: {written}: {top}"


def write_output(path: Path, files, classes, probs) -> None:
    """All probabilities as JSON (``{"classes", "predictions"}``) or CSV (one row per file)."""
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["file", "prediction", *classes])
        for f, p in zip(files, probs):
            w.writerow([str(f), classes[int(p.argmax())], *(f"{v:.6f}" for v in p.tolist())])
        atomic_write_text(path, buf.getvalue())
        return
    atomic_write_json(path, {"classes": classes, "predictions": [
        {"file": str(f), "prediction": classes[int(p.argmax())], "probabilities": p.tolist()}
        for f, p in zip(files, probs)]})


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model = pointctx.load_model(args.model, map_location=args.device)
        category = category_index(model, args.category)
    except (FileNotFoundError, ValueError) as err:
        return T.usage_error(parser, str(err) if str(err).startswith("argument")
                             else f"argument model: {err}")
    classify = model.task.endswith("classification")
    if classify and args.output is not None and args.output.suffix.lower() not in (
            ".json", ".csv"):
        return T.usage_error(parser, f"argument --output: a classifier's probabilities go to a "
                             f".json or .csv file, got {args.output.name!r}")
    kind = model.inputs["kind"]
    allowed = POINT_SUFFIXES if kind == "points" else IMAGE_SUFFIXES
    for f in args.inputs:
        if f.suffix.lower() not in allowed:
            return T.usage_error(parser, f"argument FILE: {f.name}: the model ({model.task}) "
                                 f"takes {kind} ({', '.join(allowed)})")
        if not f.is_file():
            return T.usage_error(parser, f"argument FILE: {f} does not exist")
    try:
        outputs = [predict(model, f, category, args.device) for f in args.inputs]
        if not classify:
            for f, out in zip(args.inputs, outputs):
                print(write_labels(model, f, out, args.output or Path("predictions")))
            return 0
    except (ValueError, ImportError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    probs = torch.stack(outputs)
    classes = model.class_names
    for f, p in zip(args.inputs, probs):
        top = p.topk(min(args.top, p.numel()))
        best = ", ".join(f"{classes[int(i)]} {100 * float(v):.1f} %"
                         for v, i in zip(top.values, top.indices))
        print(f"{f}: {best}")
    if args.output is not None:
        write_output(args.output, args.inputs, classes, probs)
        print(f"probabilities of {len(classes)} classes: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
