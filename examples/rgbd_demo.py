#!/usr/bin/env python
"""Context Clusters on an RGB-D frame: clustering maps of every stage, as a PNG and a coloured PLY.

Each FRAME is back-projected to coloured camera-frame points (one per pixel with a valid depth,
up to ``--depth-trunc`` metres) and run through a CoC model once;
:func:`pointctx.viz.trace_clusters` follows every stage's Context Cluster assignment back to the
input pixels / points. Two ways to see the frame (``--space``):

* ``xyz`` (default): the frame is a *3-D point cloud*: a seeded random subset of
  ``--max-points`` points without pixel grid; the model (default ``coc_tiny_plain``, no regions)
  reduces it with farthest point sampling + kNN and proposes its centers on a grid over the
  cloud's own xyz bounding box (4x4x4 cells in stages 1 and 2, 2x2x2 after), so the clusters
  are pieces of 3-D space (the floor, a chair, the wall) refined by feature similarity. Every
  valid pixel then takes the labels of its nearest sampled point (in xyz) for the maps and the
  PLY.
* ``plane``: the frame is a *pixel set*: the points keep their pixel grid, the model
  (default ``coc_tiny``, built with ``in_channels=3`` and ``pos_dim=3``) takes the colour and the
  xyz (metres) as point features, its reducers pool pixel cells and its Context Clusters work on
  the image plane inside regions (8x8 regions in stage 1, ...): with random weights the maps
  mostly show that region grid. Pixels without depth are not points (black in the maps).

**Weights.** Without ``--checkpoint`` the model has random weights (seeded by ``--seed``). The
maps are then still informative about the *mechanism*, not about learned semantics: the
centers are proposed on a fixed grid (in regions), and each point joins the most similar center
of its region by the cosine similarity of a random linear projection of its features (colour,
xyz and, after the first stage, the pooled features of its cell), so clusters follow the grid
and split it along colour / depth edges. With ``--checkpoint`` (a state dict or a training
checkpoint with a ``"model"`` entry, for the same model and input channels) the maps show the
trained clustering.

Outputs in ``--out`` per frame ``NAME``: ``NAME_clusters.png`` (the colour image beside the
cluster map of every stage; one row per head with ``--heads all``), ``NAME_clusters.ply`` (the
points coloured by the cluster of stage ``--ply-stage``, with every stage's and head's labels as
vertex fields ``stage{s}_head{h}``) and ``NAME_scatter.png`` (3-D scatter plots of the points by
cluster). Each file is written atomically.

FRAME: ``bundled`` (default: the TUM frame in ``datasets/rgbd_sample``), a preset ``tum``,
``sun``, ``kinect`` or ``kinect:N`` (N = 1..5) from the shared data folder, or
``COLOR.png,DEPTH.png`` with ``--intrinsics`` and ``--depth-scale``. Examples::

    python examples/rgbd_demo.py --out runs/rgbd
    python examples/rgbd_demo.py tum sun kinect:3 --heads all --out runs/rgbd
    python examples/rgbd_demo.py --space plane --stride 1 --out runs/rgbd_plane
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _cli as T
import numpy as np
import torch

from pointctx import PointBatch
from pointctx.datasets import rgbd_frame
from pointctx.datasets.rgbd import RGBD_PRESETS, frame_to_points, load_rgbd
from pointctx.models import create_model
from pointctx.ops import knn
from pointctx.train import load_checkpoint
from pointctx.viz import (
    ClusterTrace,
    point_labels,
    save_cluster_grid,
    save_cluster_ply,
    save_cluster_scatter,
    trace_clusters,
)

DEFAULT_MODEL = {"plane": "coc_tiny", "xyz": "coc_tiny_plain"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("frames", nargs="*", metavar="FRAME", default=["bundled"],
                   help="bundled | tum | sun | kinect[:N] | COLOR,DEPTH (default: bundled)")
    p.add_argument("--out", default="runs/rgbd_demo", help="output folder")
    p.add_argument("--space", choices=("xyz", "plane"), default="xyz",
                   help="cluster the 3-D cloud in xyz (default), or the pixel set on the image "
                        "plane")
    p.add_argument("--model", default=None,
                   help="registered CoC model (default: coc_tiny_plain for xyz, coc_tiny "
                        "for plane)")
    p.add_argument("--model-kwargs", default="{}", help="JSON of extra model arguments")
    p.add_argument("--checkpoint", default=None, help="model weights (default: random init)")
    p.add_argument("--heads", default="0", help="head to show, or 'all' (one row per head)")
    p.add_argument("--ply-stage", type=int, default=1,
                   help="stage (1-based) whose clusters colour the PLY points")
    p.add_argument("--stride", type=int, default=2,
                   help="plane: keep every STRIDE-th pixel row and column (1: full resolution)")
    p.add_argument("--max-points", type=int, default=16384,
                   help="xyz: random subset of the points fed to the model")
    p.add_argument("--depth-trunc", type=float, default=3.0,
                   help="ignore depths beyond this many metres (default 3, as Open3D; 0: keep "
                        "all)")
    p.add_argument("--intrinsics", default=None,
                   help="for COLOR,DEPTH frames: an Open3D json file or 'fx,fy,cx,cy'")
    p.add_argument("--depth-scale", type=float, default=1000.0,
                   help="for COLOR,DEPTH frames: raw depth units per metre")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for this run (default: torch's choice; 1 is "
                        "much faster on a busy shared machine)")
    args = p.parse_args(argv)
    if args.heads != "all":
        try:
            args.heads = int(args.heads)
        except ValueError:
            p.error(f"--heads must be an int or 'all', got {args.heads!r}")
    try:
        args.model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as err:
        p.error(f"--model-kwargs must be JSON: {err}")
    if not isinstance(args.model_kwargs, dict):
        p.error("--model-kwargs must be a JSON object")
    if args.depth_trunc is not None and args.depth_trunc <= 0:
        args.depth_trunc = None
    if args.stride < 1 or args.max_points < 1 or args.ply_stage < 1 or (
            args.threads is not None and args.threads < 1):
        p.error("--stride, --max-points, --ply-stage and --threads must be >= 1")
    return args


def read_frame(spec: str, args):
    """An RGBDFrame from a FRAME argument."""
    if spec == "bundled":
        return rgbd_frame("tum", root=T.SAMPLES / "rgbd_sample")._replace(name="bundled")
    if "," in spec:
        color, depth = spec.split(",", 1)
        if args.intrinsics is None:
            raise ValueError("a COLOR,DEPTH frame needs --intrinsics (json file or fx,fy,cx,cy)")
        k = args.intrinsics
        if not Path(k).is_file():
            k = tuple(float(v) for v in k.split(","))
        return load_rgbd(color, depth, k, depth_scale=args.depth_scale, name=Path(color).stem)
    preset, _, num = spec.partition(":")
    if preset not in RGBD_PRESETS:
        raise ValueError(f"unknown FRAME {spec!r}: use bundled, {', '.join(RGBD_PRESETS)}, "
                         "kinect:N or COLOR,DEPTH")
    frame = rgbd_frame(preset, int(num) if num else None)
    return frame._replace(name=frame.name.replace("/", "_"))


def subsample_grid(pixel: torch.Tensor, h: int, w: int, stride: int):
    """Keep the pixels on every ``stride``-th row and column; their index in the smaller grid."""
    row = torch.div(pixel, w, rounding_mode="floor")
    col = pixel % w
    keep = (row % stride == 0) & (col % stride == 0)
    hs, ws = -(-h // stride), -(-w // stride)
    return keep, (row[keep] // stride) * ws + col[keep] // stride, (hs, ws)


def build_model(args, device):
    name = args.model or DEFAULT_MODEL[args.space]
    kwargs = {"in_channels": 3, "pos_dim": 3, "num_classes": 0, **args.model_kwargs}
    state = None
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
        if not isinstance(state, dict):
            raise ValueError(f"{args.checkpoint} holds no state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        if "head.weight" in state and "num_classes" not in args.model_kwargs:
            kwargs["num_classes"] = int(state["head.weight"].shape[0])
    torch.manual_seed(args.seed)
    model = create_model(name, **kwargs)
    if state is not None:
        model.load_state_dict(state)
    return name, model.to(device).eval()


def propagate(trace: ClusterTrace, sample_xyz, all_xyz, pixel, size) -> ClusterTrace:
    """Give every point the clusters of its nearest sampled point (in xyz)."""
    near = knn(sample_xyz, all_xyz, 1).index[:, 0]
    layers = tuple(lay._replace(cluster=lay.cluster.index_select(0, near),
                                similarity=lay.similarity.index_select(0, near))
                   for lay in trace.layers)
    n = all_xyz.shape[0]
    return ClusterTrace(layers, all_xyz, torch.zeros(n, dtype=torch.long), 1, pixel, size,
                        trace.output)


def run_frame(frame, model, model_name, args, out: Path, log) -> dict:
    t0 = time.perf_counter()
    pts = frame_to_points(frame, depth_trunc=args.depth_trunc, world=False)
    h, w = frame.size
    color = torch.from_numpy(np.ascontiguousarray(frame.color)).permute(2, 0, 1)[None].float()
    color = color / 255.0
    if args.space == "plane":
        keep, pixel, size = subsample_grid(pts.pixel, h, w, args.stride)
        xyz, rgb = pts.xyz[keep], pts.rgb[keep]
        color = color[:, :, ::args.stride, ::args.stride]
        batch = PointBatch(xyz, rgb, pixel=pixel, image_size=size)
        trace = trace_clusters(model, batch)
        n_model = xyz.shape[0]
    else:
        xyz, rgb, pixel, size = pts.xyz, pts.rgb, pts.pixel, (h, w)
        g = torch.Generator().manual_seed(args.seed)
        n_model = min(args.max_points, xyz.shape[0])
        pick = torch.randperm(xyz.shape[0], generator=g)[:n_model].sort().values
        trace = trace_clusters(model, PointBatch(xyz[pick], rgb[pick]))
        trace = propagate(trace, xyz[pick], xyz, pixel, size)
    t_model = time.perf_counter() - t0
    weights = f"weights: {args.checkpoint}" if args.checkpoint else (
        f"random init (seed {args.seed}, untrained)")
    title = (f"{frame.name}: {model_name} Context Cluster maps, {args.space} "
             f"({n_model} points); {weights}")
    stages = trace.stage_layers()
    png = save_cluster_grid(out / f"{frame.name}_clusters.png", trace, color,
                            heads=args.heads, rows="heads" if args.heads == "all" else "sets",
                            title=title, cell_inches=3.2)
    ply_stage = min(args.ply_stage, len(stages)) - 1
    head = 0 if args.heads == "all" else min(args.heads, stages[ply_stage].heads - 1)
    ply = save_cluster_ply(out / f"{frame.name}_clusters.ply", trace, stages[ply_stage], head,
                           pos=xyz)
    # look at the cloud roughly from the camera: x right, z (depth) away, -y up
    view_pos = torch.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], 1)
    scatter = save_cluster_scatter(out / f"{frame.name}_scatter.png", trace, head=head,
                                   pos=view_pos, colors=rgb, view=(15.0, -75.0),
                                   max_points=40000, seed=args.seed, title=title)
    counts = {f"stage{lay.stage + 1}": [int(point_labels(trace, lay, hd).max()) + 1
                                        for hd in range(lay.heads)] for lay in stages}
    log(f"{frame.name}: {xyz.shape[0]} points, model on {n_model}, {t_model:.1f} s; clusters "
        f"per stage and head {counts}")
    log(f"  wrote {png}, {ply}, {scatter}")
    return {"points": int(xyz.shape[0]), "model_points": int(n_model), "clusters": counts,
            "png": str(png), "ply": str(ply), "scatter": str(scatter)}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        frames = [read_frame(spec, args) for spec in args.frames]
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name, model = build_model(args, torch.device("cpu"))
    summary = {}
    for frame in frames:
        summary[frame.name] = run_frame(frame, model, name, args, out, print)
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
