#!/usr/bin/env python
"""Class probabilities of point-cloud files or images from a trained model.

The model comes from a run of ``examples/scanobjectnn.py`` / ``modelnet40.py`` (point clouds) or
``examples/train_images.py`` (images): give its run folder, ``last.pt`` or ``best.pt``
(:func:`pointctx.load_model`). Each input is prepared the way the run's data was:

* point clouds (``.ply``, ``.pcd``, ``.npy``, ``.txt`` / ``.xyz`` / ``.csv``): the first three
  columns are x, y, z (then ``in_channels`` feature columns, for models that take them);
  centred and scaled to the unit sphere (as the ModelNet40 / ScanObjectNN files are stored;
  ``--no-normalize`` keeps the coordinates), and cut to the run's number of points by farthest
  point sampling when larger (``--num-points`` changes it). ``.pcd`` needs open3d;
* images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``): converted to the run's channels, resized to
  its image size, scaled to [0, 1] and normalised with its mean / std.

Examples::

    python examples/predict.py runs/sample-pointmlp_coc_elite-20260101-120000 chair.ply desk.npy
    python examples/predict.py runs/cifar/coc_tiny_cifar/best.pt cat.png --top 3
    python examples/predict.py RUN *.ply --output predictions.json   # or .csv

Prints the ``--top`` classes of every file; ``--output`` writes every class's probability (JSON
or CSV by extension). Exit status: 0, 1 for an unreadable input file, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
import torch

import pointctx
from pointctx import PointBatch, ops
from pointctx.io import read_point_cloud
from pointctx.train import atomic_write_json, atomic_write_text
from pointctx.train import cli as T

PROG = "predict.py"
POINT_SUFFIXES = (".ply", ".pcd", ".npy", ".txt", ".xyz", ".csv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(prog=PROG, description="Class probabilities of point-cloud files "
                                "or images from a trained pointctx model.")
    p.add_argument("model", type=Path, help="run folder, last.pt or best.pt")
    p.add_argument("inputs", type=Path, nargs="+", metavar="FILE",
                   help=f"point clouds ({', '.join(POINT_SUFFIXES)}) or images "
                   f"({', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--top", type=T.positive_int, default=5, help="classes printed per file")
    p.add_argument("--output", type=Path, default=None,
                   help="write all probabilities to this .json or .csv file")
    p.add_argument("--num-points", type=T.positive_int, default=None,
                   help="points per cloud (default: the run's)")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep point coordinates as they are (no unit-sphere normalisation)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def input_kind(model) -> str:
    """``"points"`` or ``"images"``: what the run trained the model on."""
    kind = model.run_info.get("inputs", {}).get("kind")
    if kind is None:  # runs recorded before the inputs entry
        kind = "points" if "image_size" not in model.run_info.get("dataset", {}) else "images"
    return kind


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


def prepare_cloud(points: torch.Tensor, num_points: int | None, normalize: bool) -> torch.Tensor:
    """Unit-sphere normalisation of xyz and farthest point sampling down to ``num_points``."""
    points = points.clone()
    if normalize:
        xyz = points[:, :3] - points[:, :3].mean(0, keepdim=True)
        radius = float(xyz.norm(dim=1).max())
        points[:, :3] = xyz / radius if radius > 0 else xyz
    if num_points is not None and points.shape[0] > num_points:
        points = points[ops.fps(points[:, :3], num=num_points, backend="native")]
    return points


def read_image(path: Path, inputs: dict) -> torch.Tensor:
    """An image file as the run's normalised [C, H, W] float32 tensor."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = inputs["image_size"]
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    t = torch.from_numpy(arr).reshape(h, w, c).permute(2, 0, 1)
    mean = torch.tensor(inputs["mean"]).view(-1, 1, 1)
    std = torch.tensor(inputs["std"]).view(-1, 1, 1)
    return (t - mean) / std


@torch.no_grad()
def predict(model, files: list[Path], num_points=None, normalize=True, device="cpu"):
    """Probabilities [len(files), K] of ``files`` (one forward per file)."""
    kind = input_kind(model)
    info = model.run_info
    rows = []
    for path in files:
        if kind == "points":
            n = num_points or info.get("inputs", {}).get("num_points") or \
                info.get("config", {}).get("num_points")
            cols = 3 + int(getattr(model, "in_channels", 0))
            pts = prepare_cloud(read_points(path, cols), n, normalize)
            batch = PointBatch.from_list([pts[:, :3]], [pts[:, 3:]] if cols > 3 else None)
            logits = model(batch.to(device))
        else:
            logits = model(read_image(path, info["inputs"])[None].to(device))
        rows.append(logits.float().softmax(-1)[0].cpu())
    return torch.stack(rows)


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
    if args.output is not None and args.output.suffix.lower() not in (".json", ".csv"):
        return T.usage_error(parser, f"argument --output: must end in .json or .csv, got "
                             f"{args.output.name!r}")
    try:
        model = pointctx.load_model(args.model, map_location=args.device)
    except (FileNotFoundError, ValueError) as err:
        return T.usage_error(parser, f"argument model: {err}")
    kind = input_kind(model)
    allowed = POINT_SUFFIXES if kind == "points" else IMAGE_SUFFIXES
    for f in args.inputs:
        if f.suffix.lower() not in allowed:
            return T.usage_error(parser, f"argument FILE: {f.name}: the model takes {kind} "
                                 f"({', '.join(allowed)})")
        if not f.is_file():
            return T.usage_error(parser, f"argument FILE: {f} does not exist")
    try:
        probs = predict(model, args.inputs, args.num_points, not args.no_normalize, args.device)
    except (ValueError, ImportError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
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
