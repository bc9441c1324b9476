#!/usr/bin/env python
"""Part segmentation on ShapeNetPart with PointMLP's official recipe (pointmlp_partseg).

Defaults follow ``part_segmentation/main.py`` of ma-xu/pointMLP-pytorch: ``pointmlp_partseg``
(16.76 M parameters), 2,048 points per shape resampled with replacement (new every epoch), xyz +
normals, the one-hot category as input, train on ``trainval`` and evaluate on ``test`` every
epoch, batch 32, Adam (lr 0.003, betas 0.9 / 0.999, no weight decay), the learning rate halved
every 40 epochs down to 0.9e-5, 350 epochs, cross-entropy (the official NLL of log-softmax),
Xavier-normal initialisation, no augmentation. ``best.pt`` is the epoch with the best instance
mIoU (as the official ``best_insiou_model.pth``). Metrics: instance mIoU, class mIoU (category-
restricted predictions, parts absent from both prediction and truth count as 1), point accuracy,
per-category and per-part IoU (:class:`pointctx.train.PartSegConfusion`).

Examples::

    # the full recipe on the user's download (a GPU job)
    python examples/shapenetpart.py \
        --data-root /data/shapenetcore_partanno_segmentation_benchmark_v0_normal --device cuda
    torchrun --nproc_per_node 4 examples/shapenetpart.py --data-root /data/... --device cuda
    python examples/shapenetpart.py --data-root /data/... --resume runs/RUN   # after Ctrl-C
    # the smoke run on the 16 bundled real shapes: the whole pipeline in about a minute; it
    # trains and evaluates on the same 16 shapes and is NOT an accuracy
    python examples/shapenetpart.py --smoke

Outputs (``--output``, default ``runs/shapenetpart-<model>-<time>``): ``log.txt``, ``last.pt``,
``best.pt``, ``results.json`` (config, versions, per-epoch history with instance / class mIoU,
per-category and per-part IoU, timings). Exit status: 0 when done, 130 after Ctrl-C (143 after
SIGTERM), 1 for missing or corrupt data, 2 for bad arguments.
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

import pointctx
from pointctx import PointBatch
from pointctx.datasets import SHAPENETPART_CATEGORIES, SHAPENETPART_PARTS, ShapeNetPart
from pointctx.train import (
    PartSegConfusion,
    Trainer,
    load_checkpoint,
    make_loader,
    setup_logger,
)

# part_segmentation/main.py defaults
RECIPE = dict(model="pointmlp_partseg", epochs=350, batch_size=32, eval_batch_size=32,
              lr=0.003, step=40, gamma=0.5, min_lr=0.9e-5, num_points=2048, threads=None)
# the smoke run: tiny widths, 512 points, 16 shapes, 2 epochs
SMOKE = dict(model="pointmlp_partseg", epochs=2, batch_size=8, eval_batch_size=16, lr=0.003,
             step=40, gamma=0.5, min_lr=0.9e-5, num_points=512, threads=1)
SMOKE_KWARGS = dict(embed_dim=16, de_dims=(64, 32, 32, 32), de_blocks=(1, 1, 1, 1),
                    pre_blocks=(1, 1, 1, 1), pos_blocks=(1, 1, 1, 1), k_neighbors=16)
IDENTITY_KEYS = ("data_root", "model", "model_kwargs", "epochs", "batch_size", "lr", "step",
                 "gamma", "min_lr", "num_points", "seed", "no_normals", "smoke")
# run control: never taken from the stored configuration of a resumed run
RUN_CONTROL = ("resume", "output", "no_progress", "stop_after_epoch", "stop_after_steps",
               "threads", "device", "workers", "eval_batch_size", "amp")
PART_NAMES = [f"{c}:{i}" for c, n in zip(SHAPENETPART_CATEGORIES,
                                          (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3))
              for i in range(n)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shapenetpart.py",
        description="ShapeNetPart part segmentation with PointMLP's official recipe.",
        epilog="Defaults (None below) come from the official recipe, or the smoke run's.",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data-root", type=T.existing_dir, default=None,
                   help="the ShapeNetPart folder (either official layout), or its parent; "
                   "default: <data>/shapenetcore_partanno_segmentation_benchmark_v0_normal")
    g.add_argument("--num-points", type=T.positive_int, default=None,
                   help="points per shape, resampled with replacement (recipe 2048)")
    g.add_argument("--no-normals", action="store_true",
                   help="xyz only even when the data has normals (the model gets in_channels=0)")
    g.add_argument("--workers", type=T.nonnegative_int, default=0)
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--model", default=None, help="registered part-segmentation model "
                   "(pointmlp_partseg, pointmlp_coc_partseg)")
    g.add_argument("--model-kwargs", type=T.json_object, default=None,
                   help="JSON object of extra model arguments")
    T.add_budget_options(g, optimizer="Adam", items="shapes")
    g.add_argument("--step", type=T.positive_int, default=None,
                   help="halve the learning rate every STEP epochs (recipe 40)")
    g.add_argument("--gamma", type=T.open_ratio, default=None)
    g.add_argument("--min-lr", type=T.positive_float, default=None,
                   help="floor of the learning rate (recipe 0.9e-5)")
    g = T.add_run_options(p, run_name="shapenetpart-<model>", resume_const=True, newest=False,
                          threads_default="torch's choice; smoke: 1")
    g.add_argument("--smoke", action="store_true",
                   help="smoke run on the 16 bundled real shapes (trains and evaluates on the "
                   "same shapes: a pipeline check, not an accuracy)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = T.parse_explicit(parser, argv)
    base = SMOKE if args.smoke else RECIPE
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    kwargs = dict(SMOKE_KWARGS) if args.smoke else {}
    kwargs.update(args.model_kwargs or {})
    args.model_kwargs = kwargs
    err = T.wrong_task(args.model, "part segmentation")
    if err:
        parser.error(err)
    if args.smoke and args.data_root is not None:
        parser.error("--smoke runs on the bundled 16-shape sample; drop --data-root")
    T.resume_into_output(parser, args, "the run folder")
    if args.min_lr > args.lr:
        parser.error(f"argument --min-lr: {args.min_lr} exceeds --lr {args.lr}")
    return args


def collate_parts(items):
    """PartSamples -> ``(PointBatch (x = normals or None), category [B], target [N, 3])``."""
    pos = [s.points for s in items]
    normals = None if items[0].normals is None else [s.normals for s in items]
    pb = PointBatch.from_list(pos, normals)
    cats = torch.tensor([s.category for s in items], dtype=torch.long)
    parts = torch.cat([s.parts for s in items])
    target = torch.stack([parts, cats[pb.batch], pb.batch], 1)
    return pb, cats, target


def part_forward(model, batch, device):
    """Trainer forward: per-point logits, the ``[N, 3]`` target, and the number of shapes."""
    pb, cats, target = batch
    pb = pb.to(device)
    return model(pb, category=cats.to(device)), target.to(device), pb.num_sets


def part_loss(logits, target):
    """Cross-entropy over the points (the official NLL of log-softmax outputs)."""
    return torch.nn.functional.cross_entropy(logits, target[:, 0])


def official_init(model: torch.nn.Module) -> None:
    """``weight_init`` of part_segmentation/main.py: Xavier-normal weights, zero biases, BN 1/0."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.BatchNorm1d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)


def _usage_error(msg: str) -> int:
    return T.usage_error(build_parser(), msg)


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return T.run_command(argv, parse_args, _run, _usage_error, check_batch_split=True)


def _run(args, dist_info, argv, t_start) -> int:
    world = dist_info.world_size
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.output or Path("runs") / f"shapenetpart-{args.model}-{stamp}"
    out = T.share_run_folder(out, dist_info)
    if args.resume and not (out / "last.pt").is_file():
        return _usage_error(f"--resume: {out / 'last.pt'} does not exist")
    if not args.resume and (out / "last.pt").exists():
        return _usage_error(f"argument --output: {out} already holds a run (last.pt); pass "
                            "--resume to continue it or choose another folder")
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = setup_logger("pointctx.examples.shapenetpart", out / "log.txt", dist_info.is_main)
    saved = None
    if args.resume:  # the stored configuration, except what was typed or controls the run
        try:
            saved = load_checkpoint(out / "last.pt").get("run_info", {}).get("config", {})
            T.continue_config(build_parser(), args, saved, args._explicit, RUN_CONTROL)
        except ValueError as err:
            return _usage_error(f"--resume: {err}")
    config = T.args_config(args)
    if saved is not None:
        pretty = T.config_mismatch(saved, config, IDENTITY_KEYS)
        if pretty:
            return _usage_error(f"--resume: the run in {out} used other settings: {pretty}")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = dist_info.device
    log.info(f"pointctx {pointctx.__version__} | torch {torch.__version__} | device {device} | "
             f"processes {world} | run folder {out}")
    log.info("config: " + json.dumps(config, default=str))

    # ---- data
    normals = False if args.no_normals else None
    try:
        if args.smoke:
            train = ShapeNetPart(None, "train", args.num_points, use_normals=normals,
                                 seed=args.seed)
            test = ShapeNetPart(None, "train", args.num_points, use_normals=normals,
                                seed=args.seed + 1)
            eval_name = "smoke"
            desc = (f"SMOKE RUN on the {len(train)} bundled real shapes ({train.root}), trained "
                    "and evaluated on the same shapes: a pipeline check, not an accuracy")
        else:
            train = ShapeNetPart(args.data_root, "trainval", args.num_points,
                                 use_normals=normals, seed=args.seed)
            test = ShapeNetPart(args.data_root, "test", args.num_points, use_normals=normals,
                                seed=args.seed + 1)
            eval_name = "test"
            desc = f"ShapeNetPart {train.layout} layout at {train.root}"
    except (FileNotFoundError, ValueError) as err:
        log.error(f"error: {err}")
        return 1
    in_channels = 3 if train.has_normals else 0
    log.info(f"data: {desc}; train {len(train)} shapes, {eval_name} {len(test)} shapes, "
             f"{args.num_points} points, {'xyz + normals' if in_channels else 'xyz only'}")
    per_rank = args.batch_size // world
    if per_rank * world > len(train):
        return _usage_error(f"argument --batch-size: {args.batch_size} exceeds the "
                            f"{len(train)} training shapes (the last batch is dropped)")
    train_loader = make_loader(train, batch_size=per_rank, train=True, dist_info=dist_info,
                               seed=args.seed, workers=args.workers, drop_last=True,
                               collate_fn=collate_parts)
    test_loader = make_loader(test, batch_size=args.eval_batch_size, train=False,
                              dist_info=dist_info, seed=args.seed, workers=args.workers,
                              collate_fn=collate_parts)

    # ---- model
    model, err = T.build_model(args.model, args.model_kwargs,
                               {"num_classes": 50, "in_channels": in_channels})
    if err:
        return _usage_error(err)
    official_init(model)
    n_params = sum(p.numel() for p in model.parameters())
    model = T.place_model(model, dist_info, seed=args.seed)  # then reseeds per rank
    log.info(f"model: {args.model} {args.model_kwargs or ''} ({n_params / 1e6:.3f} M "
             "parameters)")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=0)
    floor = args.min_lr / args.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: max(args.gamma ** (e // args.step), floor))
    run_info = {
        "task": "part segmentation",
        "config": config,
        "command": " ".join(["examples/shapenetpart.py", *argv]),
        "versions": T.run_versions(device),
        "seed": args.seed,
        "world_size": world,
        "dataset": {"description": desc, "train_size": len(train), "eval_size": len(test),
                    "eval_split": eval_name, "num_points": args.num_points,
                    "normals": bool(in_channels), "categories": list(SHAPENETPART_CATEGORIES),
                    "classes": PART_NAMES,
                    "category_parts": [list(p) for p in SHAPENETPART_PARTS]},
        "model": {"name": args.model, "kwargs": args.model_kwargs,
                  "create_kwargs": {**args.model_kwargs, "num_classes": 50,
                                    "in_channels": in_channels},
                  "parameters": n_params, "num_classes": 50},
        "inputs": {"kind": "points", "normalize": None, "features": "normals" if in_channels
                   else None},
    }
    trainer = Trainer(
        model, optimizer, train_loader, test_loader, num_classes=50, class_names=PART_NAMES,
        epochs=args.epochs, output_dir=out, dist_info=dist_info, loss_fn=part_loss,
        scheduler=scheduler, amp_dtype=T.amp_dtype(args.amp, device), forward=part_forward,
        logger=log, progress=not args.no_progress, eval_name=eval_name, run_info=run_info,
        stop_after_epoch=args.stop_after_epoch, stop_after_steps=args.stop_after_steps,
        session_start=t_start, confusion=PartSegConfusion, best_metric="instance_miou",
    )
    if args.resume:
        T.resume_trainer(trainer, log)
    results = trainer.fit()
    if results["status"] == "interrupted":
        return T.exit_status(trainer.stop_reason)
    if dist_info.is_main and "last" in results:
        last, best = results["last"], results["best"]
        note = "  (SMOKE RUN: not an accuracy)" if args.smoke else ""
        print(f"{eval_name}: instance mIoU {100 * last['instance_miou']:.2f} %  class mIoU "
              f"{100 * last['class_miou']:.2f} %  acc {100 * last['oa']:.2f} % (last epoch "
              f"{last['epoch']})  |  best instance mIoU {100 * best['instance_miou']:.2f} % "
              f"(epoch {best['epoch']})  |  {results['timing']['wall_s']:.0f} s  |  "
              f"{trainer.results_path}{note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
