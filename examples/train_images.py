#!/usr/bin/env python
r"""Train registered image models on real CIFAR-10 or MNIST with the CoC / CLUENet recipe.

Any model of ``pointctx.list_models()`` built by ``create_model(name, num_classes=K,
in_channels=C)`` that maps images ``[B, C, H, W]`` (and, with ``--masked``, a keep-mask
``[B, H, W]``) to logits ``[B, K]`` can be trained. The recipe is the timm one that Context
Clusters and CLUENet train with, at a CPU-friendly batch size:

* AdamW (weight decay 0.05, not applied to biases and normalisation weights, as timm's
  ``filter_bias_and_bn``), learning rate 1e-3;
* cosine schedule with linear warm-up, stepped once per epoch (timm's default): epoch ``e < W``
  uses ``lr * (e + 1) / (W + 1)``, then a cosine from ``lr`` down to ``lr * --min-lr-ratio``;
* label smoothing 0.1 (``torch.nn.functional.cross_entropy(label_smoothing=...)``, timm's form);
* augmentation: random crop with zero padding (4 px on CIFAR-10, 2 px on MNIST) and a horizontal
  flip (CIFAR-10 only), a pure function of ``(seed, epoch, image)`` so resuming is exact.

The data are the training files of the shared folder (``../shared/data`` or ``$POINTCTX_DATA``):
a seeded, class-balanced validation split of ``--val-size`` images is held out first, and
``--train-size`` images (default: all the rest) are drawn from the remainder, so the
validation set does not depend on ``--train-size``.

Examples::

    # one model, a few CPU minutes
    python examples/train_images.py --dataset cifar10 --model coc_tiny_cifar --quick

    # two models with the same budget (data, epochs, batch, seed), side by side
    python examples/train_images.py --dataset cifar10 --models cluenet_micro_cifar,coc_tiny_cifar \
        --train-size 10000 --val-size 2000 --epochs 5 --threads 2 --output runs/cifar_cmp

    # MNIST on random 25 % pixel sets
    python examples/train_images.py --dataset mnist --masked 0.25 --quick

    # Ctrl-C saves a checkpoint of the exact step; continue (with the stored configuration)
    python examples/train_images.py --resume runs/cifar_cmp

    # metrics of a trained model on the validation split (JSON beside the checkpoint)
    python examples/train_images.py --eval-only --checkpoint runs/cifar_cmp/coc_tiny_cifar

Outputs (``--output``, default ``runs/train_images-<dataset>-<time>``): one folder per model with
``log.txt``, ``last.pt`` (every epoch, atomically, and on Ctrl-C), ``best.pt`` and
``results.json`` (config, versions, seed, per-epoch history with validation top-1, last / best,
timings and throughput), and ``summary.json`` with the side-by-side table of all models. Exit
status: 0 when done (or stopped by ``--stop-after-*``), 130 after Ctrl-C (143 after SIGTERM), 2
for bad arguments, 1 for missing data, damaged checkpoints and runs stopped by a non-finite loss
or gradient.

``--resume DIR`` continues with the configuration stored in the run's checkpoints: options given
on the command line override it, except those that change the experiment (``IDENTITY_KEYS``),
which are refused when they differ.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import _cli as T
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import pointctx
from pointctx.datasets import (
    CIFAR10,
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST,
    MNIST_MEAN,
    MNIST_STD,
    ImageDataset,
    data_root,
    stratified_subset,
)
from pointctx.train import (
    DistInfo,
    Trainer,
    atomic_write_json,
    default_forward,
    evaluate_model,
    load_checkpoint,
    make_loader,
    resolve_device,
    setup_logger,
    stale_temp_files,
)
from pointctx.transforms import RandomKeep

PROG = "train_images.py"
FILES = {"cifar10": "cifar10_train_jpeg.npz", "mnist": "mnist_train.npz"}
STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "mnist": (MNIST_MEAN, MNIST_STD)}
# The timm recipe of CoC / CLUENet (AdamW 1e-3, wd 0.05, cosine, 5 warm-up epochs, smoothing 0.1)
# at batch 128; ``epochs`` as the CIFAR runs of the papers (300) and a short MNIST schedule.
RECIPES = {
    "cifar10": dict(model="coc_tiny_cifar", epochs=300, batch_size=128, lr=1e-3,
                    min_lr_ratio=0.01, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.1,
                    crop_padding=4, flip=True, val_size=5000),
    "mnist": dict(model="coc_mnist", epochs=20, batch_size=128, lr=1e-3, min_lr_ratio=0.01,
                  weight_decay=0.05, warmup_epochs=2, label_smoothing=0.1, crop_padding=2,
                  flip=False, val_size=5000),
}
# --quick: a few CPU minutes
QUICK = dict(epochs=3, train_size=2000, val_size=500, batch_size=64)
# arguments whose change makes --resume continue a different experiment
IDENTITY_KEYS = (
    "dataset", "model", "model_kwargs", "epochs", "batch_size", "lr", "min_lr_ratio",
    "weight_decay", "warmup_epochs", "label_smoothing", "grad_clip", "crop_padding", "flip",
    "train_size", "val_size", "masked", "seed",
)
# run control: never taken from the stored configuration of a resumed or evaluated run
RUN_CONTROL = (
    "resume", "output", "no_progress", "stop_after_epoch", "stop_after_steps", "threads",
    "device", "workers", "eval_batch_size", "eval_only", "checkpoint",
)


class UsageError(Exception):
    """A bad combination of arguments found after parsing (reported as a usage error, exit 2)."""


# --------------------------------------------------------------------------- arguments
def _model_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated model names, got {text!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a model is listed twice: {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (recipe defaults show as None and depend on ``--dataset``)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train registered image models on real CIFAR-10 or MNIST (CoC / CLUENet "
        "recipe).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults shown as None come from the recipe of --dataset (RECIPES in the script).",
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=tuple(RECIPES), default="cifar10")
    g.add_argument("--data-root", type=T.existing_dir, default=None,
                   help="folder with cifar10_train_jpeg.npz / mnist_train.npz (default: "
                   "$POINTCTX_DATA or ../shared/data)")
    g.add_argument("--val-size", type=T.positive_int, default=None,
                   help="validation images held out of the training file (stratified, seeded; "
                   "recipe 5000, quick 500)")
    g.add_argument("--train-size", type=T.positive_int, default=None,
                   help="training images drawn (stratified) from the rest (default: all; quick "
                   "2000)")
    g.add_argument("--crop-padding", type=T.nonnegative_int, default=None,
                   help="random-crop zero padding in pixels (0: no crop; recipe 4 CIFAR, 2 MNIST)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (recipe: on for CIFAR-10, off for MNIST)")
    g.add_argument("--masked", type=T.ratio, default=None, metavar="KEEP",
                   help="train and evaluate on random pixel sets keeping this share of the "
                   "pixels (RandomKeep: fresh masks per epoch in training, fixed ones in "
                   "validation)")
    g.add_argument("--workers", type=T.nonnegative_int, default=0, help="DataLoader workers")
    g = p.add_argument_group("models")
    g.add_argument("--model", default=None,
                   help="registered model (recipe: coc_tiny_cifar / coc_mnist)")
    g.add_argument("--models", type=_model_list, default=None, metavar="A,B,...",
                   help="train several models in sequence with the same budget and print a "
                   "side-by-side table (exclusive with --model)")
    g.add_argument("--model-kwargs", type=T.json_object, default={},
                   help='JSON object of extra model arguments, e.g. \'{"drop_path_rate": 0.1}\'')
    g = p.add_argument_group("optimisation")
    g.add_argument("--quick", action="store_true",
                   help="a few CPU minutes: 2000 train / 500 val images, 3 epochs of batch 64")
    g.add_argument("--epochs", type=T.positive_int, default=None)
    g.add_argument("--batch-size", type=T.positive_int, default=None)
    g.add_argument("--eval-batch-size", type=T.positive_int, default=256)
    g.add_argument("--lr", type=T.positive_float, default=None, help="AdamW peak learning rate")
    g.add_argument("--min-lr-ratio", type=T.ratio, default=None,
                   help="the cosine ends at lr * this (recipe 0.01)")
    g.add_argument("--warmup-epochs", type=T.nonnegative_int, default=None,
                   help="linear warm-up epochs (recipe 5 CIFAR / 2 MNIST, at most epochs // 5 "
                   "when not given)")
    g.add_argument("--weight-decay", type=T.nonnegative_float, default=None)
    g.add_argument("--label-smoothing", type=T.nonnegative_float, default=None,
                   help="label smoothing in [0, 1) (recipe 0.1)")
    g.add_argument("--grad-clip", type=T.nonnegative_float, default=0.0,
                   help="clip the gradient norm (0: off)")
    T.add_run_options(p, run_name="train_images-<dataset>", amp=False, eval_split="val",
                      newest=False, models=True)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse ``argv``, fill the recipe defaults and check the values (usage errors exit 2)."""
    parser = build_parser()
    args = T.parse_explicit(parser, argv)
    if args.eval_only != (args.checkpoint is not None):
        parser.error("argument --eval-only: give --eval-only and --checkpoint PATH together")
    recipe = RECIPES[args.dataset]
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    explicit_warmup = args.warmup_epochs is not None
    for key, value in recipe.items():
        if key != "model" and getattr(args, key) is None:
            setattr(args, key, value)
    if not explicit_warmup:
        args.warmup_epochs = min(args.warmup_epochs, args.epochs // 5)
    elif args.warmup_epochs >= args.epochs:
        parser.error(f"argument --warmup-epochs: must be < --epochs = {args.epochs}, got "
                     f"{args.warmup_epochs}")
    if args.model is not None and args.models is not None:
        parser.error("argument --models: give --model or --models, not both")
    args.models = args.models or [args.model or recipe["model"]]
    args.model = None
    for name in args.models:
        err = T.wrong_task(name, "image classification")
        if err:
            parser.error(err)
    if args.label_smoothing >= 1:
        parser.error(f"argument --label-smoothing: must lie in [0, 1), got {args.label_smoothing}")
    return args


# --------------------------------------------------------------------------- data
class ImageSet(ImageDataset):
    """Decoded uint8 images in memory, with the recipe's seeded augmentation and pixel masks.

    An :class:`pointctx.datasets.ImageDataset` (rows, labels, subsets and splits come from it).

    Item ``i`` is ``(image [C, H, W] float32 normalised, label)``, or ``((image, mask [H, W]
    bool), label)`` with a mask transform. Crop offsets and flips are drawn from
    ``numpy.random.default_rng((seed, epoch, row))`` and masks from the transform with
    ``index=row`` (``row``: the image's row in the data file), so every item is a pure function
    of (seed, epoch, item): the trainer's exact resume holds. The crop pads the [0, 1] image with
    zeros before the normalisation, as timm's ``RandomCrop`` on PIL images.

    Args:
        images: uint8 images.
        labels: int64 labels.
        rows: the images' rows in the data file (the seeding index).
        mean, std: per-channel normalisation of the [0, 1] images.
        crop_padding: random-crop padding (0: none).
        flip: random horizontal flips.
        mask: a :class:`pointctx.transforms.MaskTransform` or None.
        seed: seed of the augmentation.
        classes: class names (default ``"0"``, ``"1"``, ...).

    Shapes:
        images: [S, C, H, W]; labels, rows: [S].
    """

    def __init__(self, images, labels, rows, mean, std, crop_padding=0, flip=False, mask=None,
                 seed=0, classes=None) -> None:
        self.images = images
        self.file_rows = np.asarray(rows, dtype=np.int64)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._channels = int(images.shape[1])
        self._default_norm = (tuple(mean), tuple(std))
        self._source = "decoded images in memory"
        self.classes = list(classes) if classes is not None else [
            str(c) for c in range(int(self._labels.max(initial=0)) + 1)]
        self._setup(None, None, seed, None, normalize=False)  # normalised after the crop
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.crop_padding, self.flip, self.mask, self.seed = crop_padding, flip, mask, seed
        self.epoch = 0

    def _image(self, row: int) -> np.ndarray:
        return self.images[row].permute(1, 2, 0).numpy()

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation (and masks) of ``epoch``."""
        self.epoch = int(epoch)
        if self.mask is not None:
            self.mask.set_epoch(self.epoch)

    def __getitem__(self, i: int):
        img = self.image(i)
        item = int(self.rows[i])
        row = int(self.file_rows[item])
        pad = self.crop_padding
        if pad or self.flip:
            rng = np.random.default_rng((self.seed, self.epoch, row))
            if pad:
                h, w = img.shape[-2:]
                dy, dx = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
                img = nn.functional.pad(img, (pad, pad, pad, pad))[:, dy:dy + h, dx:dx + w]
            if self.flip and rng.random() < 0.5:
                img = img.flip(-1)
        img = (img - self.mean) / self.std
        label = int(self._labels[item])
        if self.mask is None:
            return img, label
        return (img, self.mask(img, index=row)), label


def _file_labels(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        if "labels" not in z.files:
            raise ValueError(f"{path} must hold an array 'labels', got {z.files}")
        return z["labels"].astype(np.int64)


def select_rows(labels: np.ndarray, val_size: int, train_size: int | None,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded class-balanced validation rows, then training rows drawn from the rest.

    Returns:
        ``(train_rows, val_rows)``, disjoint sorted int64 file rows.

    Raises:
        ValueError: the file holds fewer than ``val_size + train_size`` images.
    """
    total = len(labels)
    want = val_size + (train_size or 1)
    if want > total:
        raise ValueError(f"the file holds {total} images, fewer than --val-size + --train-size "
                         f"= {want}")
    val = stratified_subset(labels, val_size, seed)
    rest = np.setdiff1d(np.arange(total), val)
    if train_size is not None and train_size < len(rest):
        rest = rest[stratified_subset(labels[rest], train_size, seed + 1)]
    return rest.astype(np.int64), val


def load_data(args, log):
    """Read the file, split it and decode the images; returns ``(train, val, classes, desc)``."""
    root = args.data_root if args.data_root is not None else data_root()
    path = Path(root) / FILES[args.dataset]
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    train_rows, val_rows = select_rows(_file_labels(path), args.val_size, args.train_size,
                                       args.seed)
    rows = np.concatenate([train_rows, val_rows])
    reader = CIFAR10 if args.dataset == "cifar10" else MNIST
    ds = reader(path, indices=rows, normalize=False)
    images = None
    for i in tqdm(range(len(ds)), desc=f"decoding {args.dataset}", disable=args.no_progress,
                  leave=False, dynamic_ncols=True):
        img = ds.image(i)
        if images is None:
            images = torch.empty((len(ds), *img.shape), dtype=torch.uint8)
        images[i] = (img * 255.0).round_().to(torch.uint8)
    labels = torch.from_numpy(ds.labels)
    n = len(train_rows)
    mean, std = STATS[args.dataset]
    train_mask = val_mask = None
    if args.masked is not None:
        train_mask = RandomKeep(args.masked, seed=args.seed)
        val_mask = RandomKeep(args.masked, seed=args.seed + 1)
    train = ImageSet(images[:n], labels[:n], train_rows, mean, std, args.crop_padding,
                     args.flip, train_mask, args.seed, classes=ds.classes)
    val = ImageSet(images[n:], labels[n:], val_rows, mean, std, mask=val_mask,
                   classes=ds.classes)
    desc = (f"{args.dataset} ({path}): {len(train)} train / {len(val)} val images "
            f"{list(images.shape[1:])} (seeded stratified split, seed {args.seed})"
            + (f", random pixel sets keeping {args.masked:g} of the pixels" if args.masked else ""))
    log.info(desc)
    return train, val, list(ds.classes), desc


def masked_forward(model, batch, device):
    """Trainer forward for ``((images, masks), target)`` batches."""
    (images, masks), target = batch
    return model(images.to(device), masks.to(device)), target.to(device), int(target.shape[0])


# --------------------------------------------------------------------------- recipe
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weights with >= 2 dims only (timm's filter_bias_and_bn)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(epoch: int, epochs: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier of ``epoch`` (0-based): linear warm-up, then cosine."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    span = max(epochs - warmup, 1)
    t = min((epoch - warmup) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _usage_error(msg: str) -> int:
    return T.usage_error(build_parser(), msg)


# --------------------------------------------------------------------------- one model
def train_one(name, args, data, out, dist_info, argv, log, resume: bool) -> dict:
    """Train (or continue) one model in ``out``; returns its results dict plus ``params``."""
    train_ds, val_ds, classes, desc = data
    device = dist_info.device
    config = _config(args)
    config["model"] = name
    if resume:
        try:
            saved = load_checkpoint(out / "last.pt").get("run_info", {}).get("config", {})
        except ValueError as err:
            raise UsageError(f"--resume: {err}") from None
        pretty = T.config_mismatch(saved, config, IDENTITY_KEYS)
        if pretty:
            raise UsageError(f"--resume: the run in {out} used other settings: {pretty}")
    mlog = setup_logger(f"pointctx.examples.train_images.{name}", out / "log.txt")
    T.seed_everything(args.seed)
    in_ch = int(train_ds.images.shape[1])
    create_kwargs = {"num_classes": len(classes), "in_channels": in_ch, **args.model_kwargs}
    try:
        model = pointctx.create_model(name, **create_kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"argument --model: {name}(num_classes={len(classes)}, in_channels="
                         f"{in_ch}, **{json.dumps(args.model_kwargs)}) failed: {err}") from err
    n_params = sum(p.numel() for p in model.parameters())
    model.to(device)
    mlog.info(f"model {name} {args.model_kwargs or ''}: {n_params / 1e6:.3f} M parameters; "
              f"config: {json.dumps(config, default=str)}")
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda e: lr_factor(e, args.epochs, args.warmup_epochs, args.min_lr_ratio),
    )
    smoothing = args.label_smoothing

    def loss_fn(logits, target):
        return nn.functional.cross_entropy(logits, target, label_smoothing=smoothing)

    train_loader = make_loader(train_ds, batch_size=args.batch_size, train=True,
                               dist_info=dist_info, seed=args.seed, workers=args.workers,
                               drop_last=len(train_ds) >= args.batch_size)
    val_loader = make_loader(val_ds, batch_size=args.eval_batch_size, train=False,
                             dist_info=dist_info, seed=args.seed, workers=args.workers)
    run_info = {
        "task": "image classification",
        "config": config,
        "command": " ".join([f"examples/{PROG}", *argv]),
        "versions": T.run_versions(device),
        "seed": args.seed,
        "dataset": {"name": args.dataset, "description": desc, "train_size": len(train_ds),
                    "val_size": len(val_ds), "classes": classes,
                    "image_size": list(train_ds.images.shape[1:])},
        "model": {"name": name, "kwargs": args.model_kwargs, "parameters": n_params,
                  "create_kwargs": create_kwargs},
        # what examples/predict.py does to an image before the model sees it
        "inputs": {"kind": "images", "image_size": list(train_ds.images.shape[1:]),
                   "mean": list(STATS[args.dataset][0]), "std": list(STATS[args.dataset][1])},
        "recipe": {"optimizer": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                   "schedule": f"linear warm-up {args.warmup_epochs} epochs, cosine to "
                   f"lr*{args.min_lr_ratio:g}, per epoch", "label_smoothing": smoothing,
                   "crop_padding": args.crop_padding, "flip": args.flip,
                   "masked_keep": args.masked},
    }
    trainer = Trainer(
        model, optimizer, train_loader, val_loader, num_classes=len(classes),
        class_names=classes, epochs=args.epochs, output_dir=out, dist_info=dist_info,
        loss_fn=loss_fn, scheduler=scheduler, logger=mlog, progress=not args.no_progress,
        eval_name="val", run_info=run_info, stop_after_epoch=args.stop_after_epoch,
        stop_after_steps=args.stop_after_steps, grad_clip=args.grad_clip or None,
        forward=masked_forward if args.masked is not None else default_forward,
    )
    if resume:
        try:
            trainer.load()
        except (ValueError, KeyError) as err:
            raise UsageError(f"--resume: {err}") from None
        mlog.info(f"resumed {name} from {out / 'last.pt'}: {trainer.epoch} epochs and "
                  f"{trainer.step_in_epoch} steps of epoch {trainer.epoch + 1} done")
    results = trainer.fit()  # FloatingPointError: a non-finite loss or gradient
    results["params"] = n_params
    results["stop_reason"] = trainer.stop_reason
    return results


def summarize(name: str, res: dict) -> dict:
    """One row of the side-by-side table (fractions; seconds)."""
    hist = res.get("history", [])
    t = res.get("timing", {})
    done = res.get("epochs_done", 0)
    return {
        "model": name,
        "status": res.get("status"),
        "params": res.get("params"),
        "epochs_done": done,
        "val_top1": [h["val"]["oa"] for h in hist],
        "best_top1": res["best"]["oa"] if "best" in res else None,
        "best_epoch": res["best"]["epoch"] if "best" in res else None,
        "last_top1": res["last"]["oa"] if "last" in res else None,
        "train_s_per_epoch": (sum(h["train_s"] for h in hist) / len(hist)) if hist else None,
        "eval_s_per_epoch": (sum(h["eval_s"] for h in hist) / len(hist)) if hist else None,
        "train_images_per_s": t.get("train_samples_per_s"),
        "eval_images_per_s": t.get("eval_samples_per_s"),
        "wall_s": t.get("wall_s"),
    }


def format_table(rows: list[dict]) -> str:
    """The side-by-side table printed at the end."""
    head = (f"{'model':<24} {'params':>10} {'epochs':>6} {'best top-1':>10} {'last top-1':>10} "
            f"{'s/epoch':>8} {'train img/s':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def pct(v):
            return "-" if v is None else f"{100 * v:.2f}"

        lines.append(
            f"{r['model']:<24} {r['params'] or 0:>10,} {r['epochs_done']:>6} "
            f"{pct(r['best_top1']):>10} {pct(r['last_top1']):>10} "
            f"{'-' if r['train_s_per_epoch'] is None else format(r['train_s_per_epoch'], '.1f'):>8}"
            f" {'-' if not r['train_images_per_s'] else format(r['train_images_per_s'], '.1f'):>11}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        return _usage_error(f"argument --device: {err}")
    dist_info = DistInfo(0, 1, 0, device, False)
    try:
        if args.eval_only:
            return _evaluate(args, dist_info)
        return _run(args, dist_info, argv, t_start)
    except KeyboardInterrupt:  # outside the training loop (data loading, between models)
        print("interrupted outside training: finished epochs are saved", file=sys.stderr)
        return 130


def _run(args, dist_info, argv, t_start) -> int:
    resume = args.resume is not None
    if resume:
        out = Path(args.resume) if args.resume != "auto" else args.output
        if out is None:
            return _usage_error("--resume: give the run folder (--resume DIR or --output DIR)")
        err = _continue_stored(args, out)
        if err:
            return _usage_error(err)
        if not any((out / m / "last.pt").is_file() for m in args.models):
            partial = [p for m in args.models for p in stale_temp_files(out / m)]
            if partial:
                return _usage_error(
                    f"--resume: the run in {out} was interrupted before its first checkpoint "
                    f"was complete ({partial[0].parent.name}/{partial[0].name} is a partial "
                    "write); start it again without --resume (the partial file is removed then)")
            return _usage_error(f"--resume: no {out}/<model>/last.pt of "
                                f"{', '.join(args.models)} to continue")
    else:
        out = args.output or Path("runs") / (
            f"train_images-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        held = [m for m in args.models if (out / m / "last.pt").exists()]
        if held:
            return _usage_error(f"argument --output: {out} already holds a run of "
                                f"{', '.join(held)} (last.pt); pass --resume to continue it or "
                                "choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    log = setup_logger("pointctx.examples.train_images", out / "log.txt")
    log.info(f"pointctx {pointctx.__version__} | torch {torch.__version__} | device "
             f"{dist_info.device} | threads {torch.get_num_threads()} | run folder {out}")
    try:
        data = load_data(args, log)
    except (FileNotFoundError, ValueError) as err:
        log.error(f"error: {err}")
        return 1
    if len(data[0]) < args.batch_size:
        log.warning(f"only {len(data[0])} training images < --batch-size {args.batch_size}: one "
                    "smaller batch per epoch")
    rows, status = [], 0
    summary = {"config": _config(args), "versions": T.run_versions(dist_info.device),
               "dataset": data[3], "models": rows}
    for name in args.models:
        mdir = out / name
        log.info(f"== {name} ==")
        try:
            res = train_one(name, args, data, mdir, dist_info, argv, log,
                            resume and (mdir / "last.pt").is_file())
        except UsageError as err:
            return _usage_error(str(err))
        except FloatingPointError as err:
            log.error(f"error: {name}: {err}")
            return 1
        rows.append(summarize(name, res))
        summary["wall_s"] = time.perf_counter() - t_start
        atomic_write_json(out / "summary.json", summary)
        if res["status"] == "interrupted":
            status = T.exit_status(res["stop_reason"])
            log.info(f"{name} stopped ({res['stop_reason']}); continue with --output {out} "
                     "--resume")
            break
    log.info("\n" + format_table(rows))
    log.info(f"summary: {out / 'summary.json'} ({time.perf_counter() - t_start:.0f} s)")
    return status


def _config(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if not k.startswith("_")}


def _continue_stored(args, out: Path) -> str | None:
    """--resume: take the stored configuration for every option not typed; error text or None."""
    stored = sorted(out.glob("*/last.pt")) if out.is_dir() else []
    if not stored:
        return None  # the caller explains what is missing
    explicit = set(args._explicit) | ({"models"} if "model" in args._explicit else set())
    try:
        saved = load_checkpoint(stored[0]).get("run_info", {}).get("config", {})
        T.continue_config(build_parser(), args, saved, explicit, (*RUN_CONTROL, "model"))
    except ValueError as err:
        return f"--resume: {err}"
    return None


def _evaluate(args, dist_info) -> int:
    """--eval-only: metrics of --checkpoint on the validation split, as JSON."""
    model, err = T.load_eval_model(build_parser(), args, dist_info.device,
                                   "image classification", (*RUN_CONTROL, "model", "models"))
    if model is None:
        return _usage_error(err)
    info = model.run_info
    log = setup_logger("pointctx.examples.train_images.eval", None)
    try:
        _, val, classes, desc = load_data(args, log)
    except (FileNotFoundError, ValueError) as err:
        log.error(f"error: {err}")
        return 1
    loader = make_loader(val, batch_size=args.eval_batch_size, train=False, dist_info=dist_info,
                         seed=args.seed, workers=args.workers)
    forward = masked_forward if args.masked is not None else default_forward
    t0 = time.perf_counter()
    metrics = evaluate_model(model.model, loader, len(classes), dist_info.device, forward,
                             progress=not args.no_progress, desc="val")
    seconds = time.perf_counter() - t0
    path = T.eval_output_path(args, "val")
    atomic_write_json(path, {"checkpoint": str(args.checkpoint), "model": info["model"],
                             "split": "val", "data": desc, "size": len(val), "seconds": seconds,
                             **metrics.as_dict(classes)})
    print(f"val top-1 {100 * metrics.oa:.2f} %  mAcc {100 * metrics.macc:.2f} %  ({len(val)} "
          f"images, {args.checkpoint})  |  {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
