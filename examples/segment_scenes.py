#!/usr/bin/env python
"""Scene segmentation on scenes composed of real ModelNet40 shapes, several models side by side.

Every scene (:class:`pointctx.datasets.ShapeScenes`) holds 4-8 real ModelNet40 shapes, turned,
scaled and set down on a floor; every point is labelled with its shape's class (floor points with
``floor``). The scenes are **composed from real shapes, not captured**: no clutter, occlusion or
sensor noise. Training scenes use only shapes of a seeded stratified training part of the source,
validation scenes only the held-out shapes. Each model sees only the points (xyz, no category)
and must recognise every object from its neighbourhood.

Each model of ``--models`` is trained with the same budget (scenes, epochs, batch, optimiser) in
its own run folder ``<output>/<model>/`` (``log.txt``, ``last.pt``, ``best.pt``,
``results.json``) and evaluated on the validation scenes after every epoch: per-class IoU, mIoU,
overall and mean class accuracy over points. ``<output>/summary.json`` and the printed table put
the models side by side (the last epoch's metrics; ``best.pt`` holds the epoch of the best val
mIoU).

Examples::

    # the CPU run of README (two CPU-sized models, about 10 minutes each on 1 thread)
    python examples/segment_scenes.py --output runs/scenes
    # continue after Ctrl-C (finished models are not retrained)
    python examples/segment_scenes.py --resume runs/scenes
    # the full-width models on a GPU
    python examples/segment_scenes.py --models pointmlp_coc_seg,pointmlp_seg --device cuda \
        --train-scenes 20000 --epochs 100 --batch-size 32 --classes all
    # the smoke run of the test suite (seconds; not an accuracy)
    python examples/segment_scenes.py --smoke --output /tmp/scenes-smoke

Exit status: 0 when done, 130 after Ctrl-C (143 after SIGTERM), 1 for missing data, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import _cli as T
import numpy as np
import torch

from pointctx import PointBatch
from pointctx.datasets import ShapeScenes, data_root
from pointctx.train import (
    SegmentationConfusion,
    Trainer,
    atomic_write_json,
    load_checkpoint,
    make_loader,
    setup_logger,
)

# the ten classes of the bundled ModelNet40 sample (datasets/README.md)
SAMPLE_CLASSES = ("airplane", "bed", "bottle", "car", "chair", "guitar", "lamp", "monitor",
                  "sofa", "toilet")
DEFAULTS = dict(
    models="pointmlp_coc_elite_seg,pointmlp_elite_seg", classes=",".join(SAMPLE_CLASSES),
    train_scenes=800, val_scenes=200, num_points=2048, epochs=3, batch_size=8,
    eval_batch_size=8, lr=2e-3, weight_decay=1e-4, threads=1,
)
SMOKE = dict(
    models="pointmlp_coc_elite_seg,pointmlp_elite_seg", classes="chair,lamp,airplane",
    train_scenes=8, val_scenes=4, num_points=256, epochs=1, batch_size=4, eval_batch_size=4,
    lr=2e-3, weight_decay=1e-4, threads=1,
)
SMOKE_KWARGS = dict(embed_dim=8, de_dims=(16, 16, 8, 8), gmp_dim=8, head_hidden=16)
IDENTITY_KEYS = ("source", "classes", "train_scenes", "val_scenes", "num_points", "objects",
                 "floor", "epochs", "batch_size", "lr", "weight_decay", "seed", "model_kwargs",
                 "val_fraction")
# run control: never taken from the stored configuration of a resumed run
RUN_CONTROL = ("resume", "output", "no_progress", "stop_after_epoch", "stop_after_steps",
               "threads", "device", "workers", "eval_batch_size", "amp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segment_scenes.py",
        description="Train scene-segmentation models side by side on scenes composed of real "
        "ModelNet40 shapes.",
    )
    g = p.add_argument_group("data")
    g.add_argument("--source", type=Path, default=None,
                   help="ModelNet40 npz (points [S, P, 3], labels, classes); default "
                   "<data>/modelnet40_train_1024.npz ($POINTCTX_DATA or ../shared/data)")
    g.add_argument("--classes", default=None,
                   help="comma-separated ModelNet40 classes, or 'all' (default: the 10 classes "
                   "of the bundled sample)")
    g.add_argument("--train-scenes", type=T.positive_int, default=None)
    g.add_argument("--val-scenes", type=T.positive_int, default=None)
    g.add_argument("--num-points", type=T.positive_int, default=None,
                   help="points per scene (default 2048)")
    g.add_argument("--objects", default="4-8", help="objects per scene, MIN-MAX (default 4-8)")
    g.add_argument("--no-floor", dest="floor", action="store_false",
                   help="no floor points (default: floor points as an extra class)")
    g.add_argument("--val-fraction", type=T.open_ratio, default=0.2,
                   help="share of each class's shapes held out for validation scenes")
    g = p.add_argument_group("models and optimisation")
    g.add_argument("--models", default=None,
                   help="comma-separated registered segmentation models (default: "
                   "pointmlp_coc_elite_seg,pointmlp_elite_seg)")
    g.add_argument("--model-kwargs", type=T.json_object, default=None,
                   help="JSON object of extra model arguments, for every model")
    T.add_budget_options(g, optimizer="AdamW", items="scenes")
    g.add_argument("--weight-decay", type=T.nonnegative_float, default=None)
    g = T.add_run_options(p, run_name="scenes", amp=False, resume_const=True, newest=False,
                          models=True, stop_after_epoch=False, threads_default="1")
    g.add_argument("--smoke", action="store_true",
                   help="a seconds-long smoke run of the pipeline (tiny models): not an accuracy")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = T.parse_explicit(parser, argv)
    base = SMOKE if args.smoke else DEFAULTS
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        err = T.wrong_task(m, "point segmentation", "argument --models")
        if err:
            parser.error(err)
    if len(set(args.models)) != len(args.models):
        parser.error("argument --models: a model is listed twice")
    args.classes = None if args.classes == "all" else [
        c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        lo, hi = (int(v) for v in args.objects.split("-"))
        if not 1 <= lo <= hi:
            raise ValueError
    except ValueError:
        parser.error(f"argument --objects: expected MIN-MAX with 1 <= MIN <= MAX, got "
                     f"{args.objects!r}")
    args.objects = [lo, hi]
    args.model_kwargs = dict(SMOKE_KWARGS if args.smoke else {}, **(args.model_kwargs or {}))
    T.resume_into_output(parser, args, "the folder of the runs")
    return args


def collate_scenes(items):
    """``[(points [n, 3], labels [n])]`` -> ``(PointBatch, labels [N])``."""
    return (PointBatch.from_list([p for p, _ in items]), torch.cat([lb for _, lb in items]))


def scene_forward(model, batch, device):
    """Trainer forward: per-point logits and labels; the loss weight is the number of scenes."""
    pb, target = batch
    pb = pb.to(device)
    return model(pb), target.to(device), pb.num_sets



def _usage_error(msg: str) -> int:
    return T.usage_error(build_parser(), msg)


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return T.run_command(argv, parse_args, _run, _usage_error, check_batch_split=True)


def _run(args, dist_info, argv, t_start) -> int:
    world = dist_info.world_size
    out = args.output or Path("runs") / f"scenes-{time.strftime('%Y%m%d-%H%M%S')}"
    out = T.share_run_folder(out, dist_info)
    if not args.resume and any((out / m / "last.pt").exists() for m in args.models):
        return _usage_error(f"argument --output: {out} already holds runs; pass --resume to "
                            "continue them or choose another folder")
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = setup_logger("pointctx.examples.segment_scenes", out / "log.txt", dist_info.is_main)
    device = dist_info.device
    saved = None
    if args.resume:  # the stored configuration, except what was typed or controls the run
        stored = sorted(out.glob("*/last.pt"))
        if stored:
            try:
                saved = load_checkpoint(stored[0]).get("run_info", {}).get("config", {})
                T.continue_config(build_parser(), args, saved, args._explicit, RUN_CONTROL)
            except ValueError as err:
                return _usage_error(f"--resume: {err}")
    config = T.args_config(args)
    log.info("config: " + json.dumps(config, default=str))

    source = args.source
    try:
        if source is None:
            source = data_root() / "modelnet40_train_1024.npz"
        common = dict(classes=args.classes, objects=tuple(args.objects), floor=args.floor,
                      num_points=args.num_points, val_fraction=args.val_fraction,
                      split_seed=args.seed)
        train_ds = ShapeScenes(source, seed=args.seed, num_scenes=args.train_scenes,
                               split="train", **common)
        val_ds = ShapeScenes(source, seed=args.seed + 1, num_scenes=args.val_scenes,
                             split="val", **common)
    except (FileNotFoundError, ValueError) as err:
        log.error(f"error: {err}")
        return 1
    names = train_ds.classes
    data_desc = (f"scenes composed from real ModelNet40 shapes of {source}: {len(train_ds)} "
                 f"train scenes from {len(train_ds.shape_rows)} shapes, {len(val_ds)} val "
                 f"scenes from {len(val_ds.shape_rows)} held-out shapes, {args.objects[0]}-"
                 f"{args.objects[1]} objects, {args.num_points} points per scene, "
                 f"{len(names)} classes")
    log.info("data: " + data_desc)
    per_rank = args.batch_size // world

    summary = {"config": config, "command": " ".join(["examples/segment_scenes.py", *argv]),
               "dataset": data_desc, "classes": names, "models": {}}
    for name in args.models:
        run = out / name
        if dist_info.is_main:
            run.mkdir(parents=True, exist_ok=True)
        if args.resume and (run / "last.pt").exists():
            saved = load_checkpoint(run / "last.pt").get("run_info", {}).get("config", {})
            pretty = T.config_mismatch(saved, config, IDENTITY_KEYS)
            if pretty:
                return _usage_error(f"--resume: the run in {run} used other settings: {pretty}")
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        model, err = T.build_model(name, args.model_kwargs, {"num_classes": len(names)})
        if err:
            return _usage_error(err)
        n_params = sum(p.numel() for p in model.parameters())
        model = T.place_model(model, dist_info, seed=args.seed)  # then reseeds per rank
        log.info(f"== {name}: {n_params / 1e6:.3f} M parameters")
        train_loader = make_loader(train_ds, batch_size=per_rank, train=True,
                                   dist_info=dist_info, seed=args.seed,
                                   collate_fn=collate_scenes)
        val_loader = make_loader(val_ds, batch_size=args.eval_batch_size, train=False,
                                 dist_info=dist_info, seed=args.seed, collate_fn=collate_scenes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                      weight_decay=args.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=args.epochs, eta_min=args.lr / 100)
        run_info = {"task": "point segmentation", "config": config,
                    "versions": T.run_versions(device), "seed": args.seed, "world_size": world,
                    "dataset": {"description": data_desc, "classes": names},
                    "inputs": {"kind": "points", "normalize": None},
                    "model": {"name": name, "kwargs": args.model_kwargs,
                              "create_kwargs": {"num_classes": len(names), **args.model_kwargs},
                              "parameters": n_params, "num_classes": len(names)}}
        trainer = Trainer(
            model, optimizer, train_loader, val_loader, num_classes=len(names),
            class_names=names, epochs=args.epochs, output_dir=run, dist_info=dist_info,
            scheduler=scheduler, forward=scene_forward, logger=log,
            progress=not args.no_progress, eval_name="val", run_info=run_info,
            stop_after_steps=args.stop_after_steps, session_start=time.perf_counter(),
            confusion=SegmentationConfusion, best_metric="miou",
        )
        if args.resume and (run / "last.pt").exists():
            trainer.load()
        results = trainer.fit()
        if results["status"] == "interrupted":
            return T.exit_status(trainer.stop_reason)
        last = results["last"]
        summary["models"][name] = {
            "parameters": n_params, "epoch": last["epoch"], "miou": last["miou"],
            "oa": last["oa"], "macc": last["macc"],
            "per_class_iou": {c: v["iou"] for c, v in last["per_class"].items()},
            "train_s": results["timing"]["train_s"], "wall_s": results["timing"]["wall_s"],
        }
        log.info(f"{name}: val mIoU {100 * last['miou']:.2f} %  OA {100 * last['oa']:.2f} %  "
                 f"mAcc {100 * last['macc']:.2f} % (last epoch)  (train "
                 f"{results['timing']['train_s']:.0f} s)")
    summary["wall_s"] = time.perf_counter() - t_start
    if dist_info.is_main:
        atomic_write_json(out / "summary.json", summary)
        print(format_summary(summary), flush=True)
    return 0


def format_summary(summary: dict) -> str:
    """A markdown table: one row per model, mIoU, OA and the IoU of every class (in %)."""
    names = summary["classes"]
    head = "| model | params | mIoU | OA | mAcc | train s | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (6 + len(names))]
    for model, r in summary["models"].items():
        ious = " | ".join("n/a" if v != v else f"{100 * v:.1f}"
                          for v in r["per_class_iou"].values())
        lines.append(f"| `{model}` | {r['parameters'] / 1e6:.2f} M | {100 * r['miou']:.1f} | "
                     f"{100 * r['oa']:.1f} | {100 * r['macc']:.1f} | {r['train_s']:.0f} | "
                     f"{ious} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
