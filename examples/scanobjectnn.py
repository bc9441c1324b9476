#!/usr/bin/env python
"""Train and evaluate a point-cloud classifier on ScanObjectNN or ModelNet40.

Any model registered in ``pointctx.list_models()`` that maps a padded batch of clouds
[B, N, 3] to logits [B, K] can be trained. Defaults follow PointMLP's recipe for the chosen dataset
(see ``RECIPES``); every value can be overridden on the command line.

Examples::

    # the demo (``make demo``): the bundled real ModelNet40 sample, no download, a few CPU minutes
    python examples/scanobjectnn.py --sample

    # ScanObjectNN PB_T50_RS (h5_files from https://hkust-vgd.github.io/scanobjectnn/)
    python examples/scanobjectnn.py --data-root /data/h5_files --model pointmlp_coc

    # ModelNet40 from the shared folder (train split only there: a stratified 20 % validation
    # split is held out and evaluated)
    python examples/scanobjectnn.py --dataset modelnet40 --data-root ../shared/data

    # 2 processes, data parallel (gloo on CPU, nccl on GPU)
    torchrun --nproc_per_node 2 examples/scanobjectnn.py --sample

    # Ctrl-C saves a checkpoint of the exact step; continue the same run (its stored
    # configuration) with
    python examples/scanobjectnn.py --resume runs/<run folder>

    # metrics of a trained model on the evaluation split (JSON beside the checkpoint)
    python examples/scanobjectnn.py --eval-only --checkpoint runs/<run folder>/best.pt

Outputs (in ``--output``, default ``runs/<dataset>-<model>-<time>``): ``log.txt``, ``last.pt``
(every epoch and on Ctrl-C), ``best.pt`` (best evaluation OA), ``results.json`` (config, versions,
seed, per-epoch history, OA / mAcc / per-class accuracy of the last and best epochs, timings,
throughput). Exit status: 0 when done (or stopped by ``--stop-after-*``), 130 after Ctrl-C
(143 after SIGTERM), 2 for bad arguments, 1 for missing or damaged files and for a run stopped by a
non-finite loss or gradient.

``--resume DIR`` continues the run in DIR with the configuration stored in its ``last.pt``: only
the options given on the command line are taken from it, and those that change the experiment
(``IDENTITY_KEYS``) are refused when they differ from the stored ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import _cli as T
import torch

from pointctx.datasets import SCANOBJECTNN_CLASSES, ModelNet40, ScanObjectNN
from pointctx.datasets.scanobjectnn import SCANOBJECTNN_VARIANTS
from pointctx.train import (
    Trainer,
    evaluate_model,
    make_loader,
    setup_logger,
    smoothed_cross_entropy,
    stale_temp_files,
)
from pointctx.transforms import reference_train_transform

DATASETS = ("scanobjectnn", "modelnet40", "sample")

# PointMLP's published recipes (classification_ScanObjectNN/main.py, classification_ModelNet40/).
# ``epochs`` None: 250 for PointMLP-CoC models, 200 for others (ScanObjectNN).
RECIPES = {
    "scanobjectnn": dict(
        model="pointmlp_coc", model_kwargs={}, epochs=None, batch_size=32, eval_batch_size=64,
        lr=0.01, min_lr_ratio=0.01, weight_decay=1e-4, label_smoothing=0.2, num_points=1024,
        grad_clip=0.0, sampling="first", threads=None,
    ),
    "modelnet40": dict(
        model="pointmlp_coc", model_kwargs={}, epochs=300, batch_size=32, eval_batch_size=32,
        lr=0.1, min_lr_ratio=0.01, weight_decay=2e-4, label_smoothing=0.2, num_points=1024,
        grad_clip=1.0, sampling="first", threads=None,
    ),
    # The demo on the bundled sample (400 train / 100 test shapes, 10 classes), sized to finish
    # in a few minutes on a 2-core CPU: PointMLP-CoC-elite with k = 16 neighbours on 128 points,
    # 12 epochs of batch 16 (measured on a 2-core machine shared with other jobs: 286 s and 72 %
    # test OA at load ~8; 133 s and 76 % (last) / 77 % (best) at load ~4; README). One torch
    # thread: on a small, busy CPU, OpenMP threads competing for cores made training steps >30x
    # slower in our measurements (pass --threads to change it).
    "sample": dict(
        model="pointmlp_coc_elite", model_kwargs={"k_neighbors": 16}, epochs=12, batch_size=16,
        eval_batch_size=50, lr=0.1, min_lr_ratio=0.01, weight_decay=1e-4, label_smoothing=0.2,
        num_points=128, grad_clip=1.0, sampling="first", threads=1,
    ),
}
# arguments whose change makes --resume continue a different experiment
IDENTITY_KEYS = (
    "dataset", "variant", "model", "model_kwargs", "num_points", "sampling", "batch_size", "lr",
    "min_lr_ratio", "weight_decay", "label_smoothing", "momentum", "grad_clip", "seed",
    "val_fraction", "epochs",
)
# run control: never taken from the stored configuration of a resumed or evaluated run
RUN_CONTROL = (
    "resume", "output", "no_progress", "stop_after_epoch", "stop_after_steps", "threads",
    "device", "workers", "eval_batch_size", "eval_only", "checkpoint",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scanobjectnn.py",
        description="Train and evaluate a point-cloud classifier on ScanObjectNN or ModelNet40.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Recipe defaults (shown as None below) depend on --dataset; see RECIPES in the "
        "script. Outputs: log.txt, last.pt, best.pt, results.json in --output.",
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="scanobjectnn (default), modelnet40, or sample (the bundled real sample)")
    g.add_argument("--sample", action="store_true",
                   help="the demo: --dataset sample with its small recipe (make demo)")
    g.add_argument("--data-root", type=T.existing_dir, default=None,
                   help="folder of the data (default: $POINTCTX_DATA or ../shared/data; for "
                   "scanobjectnn the unzipped h5_files folder, default <data>/scanobjectnn)")
    g.add_argument("--variant", choices=list(SCANOBJECTNN_VARIANTS), default="PB_T50_RS",
                   help="ScanObjectNN variant (default PB_T50_RS, the hardest)")
    g.add_argument("--num-points", type=T.positive_int, default=None,
                   help="points per cloud (recipe: 1024; sample: 512)")
    g.add_argument("--sampling", choices=("first", "fps", "random"), default=None,
                   help="how training clouds are cut to --num-points (evaluation uses 'first', "
                   "or 'fps' when training does)")
    g.add_argument("--val-fraction", type=T.open_ratio, default=0.2,
                   help="ModelNet40 without a test split (the shared npz): share of each class "
                   "held out for evaluation (default 0.2)")
    g.add_argument("--train-fraction", type=T.ratio, default=1.0,
                   help="use this stratified share of the training set (default 1.0, all)")
    g.add_argument("--workers", type=T.nonnegative_int, default=None,
                   help="DataLoader workers (default 0 on CPU, min(4, cpus/2) on CUDA)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="registered model name (see pointctx.list_models(); recipe: "
                   "pointmlp_coc, sample: pointmlp_coc_elite)")
    g.add_argument("--model-kwargs", type=T.json_object, default=None,
                   help='JSON object of model arguments, e.g. \'{"embed_dim": 32}\'; merged '
                   "over the recipe's (sample: {\"k_neighbors\": 16}) when --model is the "
                   "recipe's model")
    g = p.add_argument_group("optimisation")
    T.add_budget_options(g, optimizer="SGD", items="clouds", min_lr_ratio=True)
    g.add_argument("--momentum", type=T.nonnegative_float, default=0.9)
    g.add_argument("--weight-decay", type=T.nonnegative_float, default=None)
    g.add_argument("--label-smoothing", type=T.nonnegative_float, default=None,
                   help="PointMLP-style smoothing: 1-e on the true class, e/(K-1) on the others")
    g.add_argument("--grad-clip", type=T.nonnegative_float, default=None,
                   help="clip the gradient norm (0: off)")
    T.add_run_options(p, run_name="<dataset>-<model>", eval_split="<split>",
                      threads_default="torch's choice; sample: 1")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = T.parse_explicit(parser, argv)
    if args.sample:
        if args.dataset not in (None, "sample"):
            parser.error(f"--sample runs the bundled sample; it conflicts with --dataset "
                         f"{args.dataset}")
        args.dataset = "sample"
    args.dataset = args.dataset or "scanobjectnn"
    recipe = RECIPES[args.dataset]
    user_kwargs = args.model_kwargs or {}
    for key, value in recipe.items():
        if key != "model_kwargs" and getattr(args, key) is None:
            setattr(args, key, value)
    base = recipe["model_kwargs"] if args.model == recipe["model"] else {}
    args.model_kwargs = {**base, **user_kwargs}
    if args.epochs is None:
        args.epochs = 250 if args.model.startswith("pointmlp_coc") else 200
    err = T.wrong_task(args.model, "point classification")
    if err:
        parser.error(err)
    if args.eval_only != (args.checkpoint is not None):
        parser.error("argument --eval-only: give --eval-only and --checkpoint PATH together")
    if args.eval_only and args.resume is not None:
        parser.error("argument --eval-only: not allowed with --resume")
    if args.dataset == "sample" and args.data_root is not None:
        parser.error("--data-root does not apply to the bundled sample")
    return args


# --------------------------------------------------------------------------- data
def build_datasets(args, log):
    """Returns (train dataset, eval dataset, eval split name, class names, description)."""
    train_tf = reference_train_transform()
    eval_sampling = "fps" if args.sampling == "fps" else "first"
    n = args.num_points
    seed = args.seed
    if args.dataset == "scanobjectnn":
        root = args.data_root
        train = ScanObjectNN(root, args.variant, "train", n, args.sampling, train_tf, seed)
        test = ScanObjectNN(root, args.variant, "test", n, eval_sampling, None, seed)
        eval_name, desc = "test", f"ScanObjectNN {args.variant} ({train.source}, {test.source})"
    elif args.dataset == "sample":
        train = T.modelnet40_sample("train", num_points=n, sampling=args.sampling,
                                  transform=train_tf, seed=seed)
        test = T.modelnet40_sample("test", num_points=n, sampling=eval_sampling, seed=seed)
        eval_name, desc = "test", f"bundled ModelNet40 sample ({train.source})"
    else:
        root = args.data_root
        train = ModelNet40(root, "train", n, args.sampling, train_tf, seed=seed)
        try:
            test = ModelNet40(root, "test", n, eval_sampling, None, layout=train.layout, seed=seed)
            eval_name, desc = "test", f"ModelNet40 {train.layout} ({train.source})"
        except FileNotFoundError:
            split = train.split(args.val_fraction, seed=seed, val_transform=None,
                                val_sampling=eval_sampling)
            train, test = split.train, split.val
            eval_name = "val"
            desc = (f"ModelNet40 {train.layout} ({train.source}): no test split there, so a "
                    f"stratified {100 * args.val_fraction:g} % of train (seed {seed}) is held "
                    "out and evaluated as 'val'")
            log.info(f"no ModelNet40 test split found: evaluating on {len(test)} held-out "
                     f"training shapes ({100 * args.val_fraction:g} % per class, seed {seed})")
    if args.train_fraction < 1.0:
        train = train.split(1.0 - args.train_fraction, seed=seed + 1).train
    names = list(train.classes) if args.dataset != "scanobjectnn" else list(SCANOBJECTNN_CLASSES)
    return train, test, eval_name, names, desc


# --------------------------------------------------------------------------- run folder

# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return T.run_command(argv, parse_args, _run, _usage_error, evaluate=_evaluate)


def _usage_error(msg: str) -> int:
    return T.usage_error(build_parser(), msg)


def _run(args, dist_info, argv: list[str], t_start: float) -> int:
    world = dist_info.world_size
    # ---- run folder (rank 0 decides; every rank learns it)
    out, err = T.choose_run_folder(build_parser(), args, f"{args.dataset}-{args.model}",
                                   RUN_CONTROL, IDENTITY_KEYS, missing=_no_checkpoint)
    if err:
        return _usage_error(err)
    err = T.batch_split_error(args.batch_size, world)
    if err:
        return _usage_error(err)
    out, log = T.open_run_log(out, dist_info, "pointctx.examples.scanobjectnn")
    config = T.args_config(args)
    device = dist_info.device
    T.seed_everything(args.seed)
    log.info("config: " + json.dumps(config, default=str))

    # ---- data
    try:
        train_ds, eval_ds, eval_name, class_names, data_desc = build_datasets(args, log)
    except (FileNotFoundError, ValueError) as err:  # missing, corrupt or malformed data files
        log.error(f"error: {err}")
        return 1
    log.info(f"data: {data_desc}; train {len(train_ds)} clouds, {eval_name} {len(eval_ds)} "
             f"clouds, {len(class_names)} classes, {args.num_points} points")
    workers = args.workers
    if workers is None:
        workers = 0 if device.type == "cpu" else min(4, max(1, (os.cpu_count() or 2) // 2))
    per_rank = args.batch_size // world
    train_loader = make_loader(train_ds, batch_size=per_rank, train=True, dist_info=dist_info,
                               seed=args.seed, workers=workers, drop_last=True)
    eval_loader = make_loader(eval_ds, batch_size=args.eval_batch_size, train=False,
                              dist_info=dist_info, seed=args.seed, workers=workers)

    # ---- model
    create_kwargs = {"num_classes": len(class_names), **args.model_kwargs}
    model, err = T.build_model(args.model, args.model_kwargs, {"num_classes": len(class_names)},
                               override=True)
    if err:
        return _usage_error(err)
    n_params = sum(p.numel() for p in model.parameters())
    model = T.place_model(model, dist_info, seed=args.seed)  # then reseeds per rank
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log.info(f"model: {args.model} {args.model_kwargs or ''} ({n_params / 1e6:.3f} M parameters)")

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=args.epochs, eta_min=args.lr * args.min_lr_ratio
    )
    smoothing = args.label_smoothing
    k = len(class_names)
    if smoothing > (k - 1) / k:
        return _usage_error(f"argument --label-smoothing: must be <= (K-1)/K = {(k - 1) / k:.3f}")

    def loss_fn(logits, target):
        return smoothed_cross_entropy(logits, target, smoothing)

    run_info = {
        "task": "point classification",
        "config": config,
        "command": " ".join(["examples/scanobjectnn.py", *argv]),
        "versions": T.run_versions(device),
        "seed": args.seed,
        "world_size": world,
        "dataset": {
            "name": args.dataset,
            "description": data_desc,
            "train_size": len(train_ds),
            "eval_size": len(eval_ds),
            "eval_split": eval_name,
            "classes": class_names,
            "num_points": args.num_points,
        },
        "model": {"name": args.model, "kwargs": args.model_kwargs, "parameters": n_params,
                  "create_kwargs": create_kwargs},
        # what examples/predict.py does to a cloud before the model sees it
        "inputs": {"kind": "points", "num_points": args.num_points, "normalize": "unit_sphere"},
    }
    trainer = Trainer(
        model, optimizer, train_loader, eval_loader, num_classes=k, class_names=class_names,
        epochs=args.epochs, output_dir=out, dist_info=dist_info, loss_fn=loss_fn,
        scheduler=scheduler, amp_dtype=T.amp_dtype(args.amp, device), logger=log,
        progress=not args.no_progress, eval_name=eval_name, run_info=run_info,
        stop_after_epoch=args.stop_after_epoch, stop_after_steps=args.stop_after_steps,
        grad_clip=args.grad_clip or None, session_start=t_start,
    )
    if args.resume is not None:
        try:
            T.resume_trainer(trainer, log)
        except (ValueError, KeyError) as err:
            log.error(f"error: --resume: {err}")
            return 1
    try:
        results = trainer.fit()
    except FloatingPointError as err:
        log.error(f"error: {err}")
        return 1
    if results["status"] == "interrupted":
        return T.exit_status(trainer.stop_reason)
    if dist_info.is_main and "last" in results:
        last, best = results["last"], results["best"]
        t = results["timing"]
        print(
            f"{eval_name} OA {100 * last['oa']:.2f} %  mAcc {100 * last['macc']:.2f} %  "
            f"(last epoch {last['epoch']})  |  best OA {100 * best['oa']:.2f} %  mAcc "
            f"{100 * best['macc']:.2f} % (epoch {best['epoch']})  |  {t['wall_s']:.0f} s  |  "
            f"{trainer.results_path}",
            flush=True,
        )
    return 0


def _no_checkpoint(folder: Path) -> str:
    """Why ``folder`` cannot be resumed (it has no last.pt)."""
    if not folder.is_dir():
        return f"--resume: {folder / 'last.pt'} does not exist (no folder {folder})"
    partial = stale_temp_files(folder)
    if partial:
        return (f"--resume: the run in {folder} was interrupted before its first checkpoint was "
                f"complete ({partial[0].name} is a partial write); start it again without "
                "--resume (the partial file is removed then)")
    return (f"--resume: {folder / 'last.pt'} does not exist: the run stopped before its first "
            "checkpoint; start it again without --resume")


def _evaluate(args, dist_info) -> int:
    """--eval-only: metrics of --checkpoint on the evaluation split, as JSON."""
    model, err = T.load_eval_model(build_parser(), args, dist_info.device,
                                   "point classification", RUN_CONTROL)
    if model is None:
        return _usage_error(err)
    info = model.run_info
    log = setup_logger("pointctx.examples.scanobjectnn.eval", None, dist_info.is_main)
    try:
        _, eval_ds, eval_name, class_names, desc = build_datasets(args, log)
    except (FileNotFoundError, ValueError) as err:
        log.error(f"error: {err}")
        return 1
    loader = make_loader(eval_ds, batch_size=args.eval_batch_size, train=False,
                         dist_info=dist_info, seed=args.seed, workers=args.workers or 0)
    t0 = time.perf_counter()
    metrics = evaluate_model(model.model, loader, len(class_names), dist_info.device,
                             progress=not args.no_progress, desc=eval_name)
    seconds = time.perf_counter() - t0
    path = T.eval_output_path(args, eval_name)
    from pointctx.train import atomic_write_json

    atomic_write_json(path, {
        "checkpoint": str(args.checkpoint), "model": info["model"], "split": eval_name,
        "data": desc, "num_points": args.num_points, "size": len(eval_ds), "seconds": seconds,
        **metrics.as_dict(class_names),
    })
    print(f"{eval_name} OA {100 * metrics.oa:.2f} %  mAcc {100 * metrics.macc:.2f} %  "
          f"({len(eval_ds)} clouds, {args.checkpoint})  |  {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
