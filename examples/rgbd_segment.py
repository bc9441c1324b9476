#!/usr/bin/env python
"""Per-point segmentation of an RGB-D frame with a scene-segmentation model: labels per pixel.

A demonstration of the path, **not a metric**: no labelled RGB-D data is available here, and the
model was trained on scenes composed of ModelNet40 shapes (``examples/segment_scenes.py``), so
its labels on a real room are only as meaningful as that domain gap allows.

The frame is back-projected to camera-frame points (one per pixel with valid depth up to
``--depth-trunc`` metres). They are put into the scene frame the models were trained in: z up
(the camera's -y; the camera is assumed roughly level), the lowest ``--floor-quantile`` of the
heights on the floor ``z = 0``, x / y centred, ``--scale`` scene units per metre (ShapeScenes
objects have radius 0.75-1.25 units, about the size of furniture at the default 2 units per
metre). A seeded random subset of ``--num-points`` points is the model's input set (xyz only:
the scene models take no colour), and the model predicts at **every valid pixel** through its
``query`` input (decoded features interpolated from the 3 nearest input points). Pixels without
depth get no label.

Outputs in ``--out`` per frame ``NAME``: ``NAME_segment.png`` (the colour image beside the label
map, with a legend; pixels without depth are black), ``NAME_segment.ply`` (every labelled point in
camera-frame metres, coloured by label, with the vertex field ``label``) and
``NAME_segment.json`` (settings and the share of pixels per class). Files are written atomically.

Examples::

    # a model trained by examples/segment_scenes.py (a run folder or its best.pt / last.pt)
    python examples/rgbd_segment.py tum --checkpoint runs/scenes/pointmlp_coc_elite_seg
    python examples/rgbd_segment.py bundled kinect:2 --checkpoint runs/scenes/pointmlp_elite_seg
    # without --checkpoint: random weights (the path only; the labels mean nothing)
    python examples/rgbd_segment.py --model pointmlp_elite_seg --num-classes 11

FRAME: ``bundled`` (default: the TUM frame in ``datasets/rgbd_sample``), ``tum``, ``sun``,
``kinect`` or ``kinect:N`` (N = 1..5) from the shared data folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import _cli as T
import numpy as np
import torch

import pointctx
from pointctx import PointBatch
from pointctx.datasets import rgbd_frame
from pointctx.datasets.rgbd import frame_to_points
from pointctx.io import write_ply
from pointctx.train import atomic_write_json
from pointctx.viz import label_colors

log = logging.getLogger("pointctx.examples.rgbd_segment")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rgbd_segment.py",
                                description="Segment an RGB-D frame with a scene-segmentation "
                                "model (a demonstration of the path, not a metric).")
    p.add_argument("frames", nargs="*", metavar="FRAME", default=["bundled"],
                   help="bundled | tum | sun | kinect[:N] (default: bundled)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="run folder or best.pt / last.pt of examples/segment_scenes.py")
    p.add_argument("--model", default="pointmlp_elite_seg",
                   help="registered scene model for random weights (without --checkpoint)")
    p.add_argument("--num-classes", type=T.positive_int, default=11,
                   help="classes of the random-weight model (without --checkpoint)")
    p.add_argument("--num-points", type=T.positive_int, default=2048,
                   help="points of the model's input set (default 2048, as in training)")
    p.add_argument("--depth-trunc", type=T.positive_float, default=3.0,
                   help="largest depth used, metres (default 3)")
    p.add_argument("--scale", type=T.positive_float, default=2.0,
                   help="scene units per metre (default 2)")
    p.add_argument("--floor-quantile", type=T.ratio, default=0.01,
                   help="height quantile put on the floor z = 0 (default 0.01)")
    p.add_argument("--seed", type=T.nonnegative_int, default=0)
    p.add_argument("--threads", type=T.positive_int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/rgbd_segment"))
    return p


def read_frame(spec: str):
    """An RGBDFrame from a FRAME argument."""
    if spec == "bundled":
        return rgbd_frame("tum", root=T.SAMPLES / "rgbd_sample")._replace(name="bundled")
    name, _, num = spec.partition(":")
    if num:
        try:
            return rgbd_frame(name, int(num))
        except ValueError:
            raise ValueError(f"bad FRAME {spec!r}: expected kinect:N with N = 1..5") from None
    return rgbd_frame(name)


def to_scene_frame(xyz: torch.Tensor, scale: float, floor_quantile: float) -> torch.Tensor:
    """Camera frame (x right, y down, z forward; metres) -> scene frame (z up, floor at 0).

    ``(x, y, z) -> (x, z, -y)`` (a proper rotation), heights shifted so that the
    ``floor_quantile`` of them is 0, x / y centred on their mean, everything times ``scale``.

    Shapes:
        xyz: [N, 3]; return: [N, 3].
    """
    p = torch.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], 1)
    p[:, 2] -= torch.quantile(p[:, 2], floor_quantile)
    p[:, :2] -= p[:, :2].mean(0)
    return p * scale


def load(args):
    """(model in eval mode, class names, description of the weights)."""
    if args.checkpoint is not None:
        model = pointctx.load_model(args.checkpoint)
        err = T.wrong_task(model.run_info["model"]["name"], "point segmentation",
                           f"argument --checkpoint: {args.checkpoint}", model.task)
        if err:
            raise ValueError(err)
        return model, list(model.class_names), f"trained weights from {args.checkpoint}"
    err = T.wrong_task(args.model, "point segmentation")
    if err:
        raise ValueError(err)
    torch.manual_seed(args.seed)
    model = pointctx.create_model(args.model, num_classes=args.num_classes).eval()
    log.warning("no --checkpoint: random weights, the labels mean nothing (the path only)")
    return model, [str(k) for k in range(args.num_classes)], "random weights (no --checkpoint)"


@torch.no_grad()
def segment(model, xyz_scene: torch.Tensor, num_points: int, seed: int) -> torch.Tensor:
    """Labels of every point: the model on a random subset, queried at all points.

    Shapes:
        xyz_scene: [N, 3]; return: [N] int64.
    """
    g = torch.Generator().manual_seed(seed)
    n = xyz_scene.shape[0]
    sel = torch.randperm(n, generator=g)[:num_points] if n > num_points else torch.arange(n)
    inp = PointBatch(xyz_scene[sel], None, ptr=torch.tensor([0, len(sel)]))
    query = PointBatch(xyz_scene, None, ptr=torch.tensor([0, n]))
    return model(inp, query=query).argmax(1)


def save_png(path: Path, color: np.ndarray, label_map: np.ndarray, names, title: str) -> Path:
    """The colour image beside the label map (black: no depth), with a legend."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from pointctx.viz.draw import save_figure

    palette = label_colors(len(names))
    shown = np.zeros(label_map.shape + (3,), np.uint8)
    has = label_map >= 0
    shown[has] = palette[label_map[has]]
    fig = Figure(figsize=(12, 4.8))
    ax = fig.subplots(1, 2)
    ax[0].imshow(color)
    ax[0].set_title("colour")
    ax[1].imshow(shown)
    ax[1].set_title(title)
    for a in ax:
        a.axis("off")
    present = sorted(set(label_map[has].tolist()))
    fig.legend(handles=[Patch(color=palette[k] / 255.0, label=names[k]) for k in present],
               loc="lower center", ncol=min(len(present), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    return save_figure(fig, path)


def run_frame(spec: str, model, names, weights: str, args) -> dict:
    frame = read_frame(spec)
    pts = frame_to_points(frame, depth_trunc=args.depth_trunc, world=False)
    if pts.xyz.shape[0] == 0:
        raise ValueError(f"frame {spec!r} has no pixel with depth <= {args.depth_trunc} m")
    t0 = time.perf_counter()
    labels = segment(model, to_scene_frame(pts.xyz, args.scale, args.floor_quantile),
                     args.num_points, args.seed)
    seconds = time.perf_counter() - t0
    color = np.asarray(frame.color)
    h, w = color.shape[:2]
    label_map = np.full(h * w, -1, np.int64)
    label_map[pts.pixel.numpy()] = labels.numpy()
    label_map = label_map.reshape(h, w)
    out = args.out
    name = frame.name.replace(":", "_").replace("/", "_")
    png = save_png(out / f"{name}_segment.png", color, label_map, names,
                   f"labels per valid pixel ({len(labels):,} points)")
    ply = out / f"{name}_segment.ply"
    tmp = ply.with_suffix(".ply.tmp")
    write_ply(tmp, pts.xyz, rgb=label_colors(len(names))[labels.numpy()],
              fields={"label": labels.to(torch.int32)},
              comments=[f"pointctx rgbd_segment: {weights}", "labels: " + ", ".join(names)])
    tmp.replace(ply)
    counts = torch.bincount(labels, minlength=len(names))
    info = {
        "frame": spec, "weights": weights, "points": int(labels.numel()),
        "input_points": min(args.num_points, int(labels.numel())), "seconds": seconds,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pixel_share": {n: float(c) / labels.numel() for n, c in zip(names, counts.tolist())},
        "note": "a demonstration of the path, not a metric (no labelled RGB-D data)",
        "files": [str(png), str(ply)],
    }
    atomic_write_json(out / f"{name}_segment.json", info)
    log.info(f"{spec}: {labels.numel():,} pixels labelled in {seconds:.1f} s -> {png}, {ply}")
    return info


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    try:
        model, names, weights = load(args)
    except (FileNotFoundError, ValueError) as err:
        parser.print_usage(sys.stderr)
        print(f"rgbd_segment.py: error: {err}", file=sys.stderr)
        return 2
    if getattr(getattr(model, "model", model), "in_channels", 0):
        print("rgbd_segment.py: error: the model needs point features; use a scene model "
              "(xyz only)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.frames:
        try:
            run_frame(spec, model, names, weights, args)
        except (FileNotFoundError, ValueError) as err:
            print(f"rgbd_segment.py: error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
