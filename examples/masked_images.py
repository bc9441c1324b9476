#!/usr/bin/env python
"""Images as point sets in practice: Context Clusters vs a CNN on images with missing pixels.

A small CoC (``coc_mnist``: the image's kept pixels are a point set) and a small CNN of about the
same parameter count (the same images with the missing pixels set to 0 after normalisation,
i.e. to the dataset mean) are trained on real MNIST (or CIFAR-10, ``--dataset cifar10``) under
two training regimes (``--train-masks``):

* ``full``: every pixel;
* ``mixed``: per image and epoch one masking drawn uniformly from the random keep ratios
  (``--keep-ratios``, default 1.0 / 0.75 / 0.5 / 0.25) and the irregular shapes (a random
  polygon kept, random rectangles covering half the image dropped, a disc hole);

and every model is evaluated on a held-out stratified split of the training file (the shared
data holds training splits only) under every random keep ratio and every irregular shape, with
masks fixed per image (seeded by ``--seed`` and the image's row). The CNN and CoC see exactly the
same masks.

Outputs in ``--out`` (each written atomically):

* ``results.json``: configuration, parameter counts, training time, the accuracy table (model x
  condition), the mean kept fraction of every condition, and per keep ratio the inference
  throughput (images/s, batch ``--throughput-batch``) of the CoC and of the CNN under every
  condition. The CoC only processes the kept pixels, but its 4x4 stride-4 stem makes one point
  per non-empty 4x4 cell, so the later stages shrink only where whole cells are empty (the
  ``mean_nonempty_4x4_cells`` of each condition is recorded): random pixel drops leave almost
  every cell occupied, irregular shapes empty many. The CNN's cost never changes;
* ``accuracy.png``: accuracy vs keep ratio (one line per model; the irregular shapes as markers
  at their mean kept fraction) and throughput vs keep ratio;
* ``gallery.png``: masked test inputs under every condition with the clustering maps of every
  CoC stage (head 0) of the ``mixed`` CoC (or the first CoC) and its prediction.

Examples::

    python examples/masked_images.py --quick --threads 1      # a few minutes on one CPU core
    python examples/masked_images.py --epochs 4 --train-size 20000 --out runs/masked_mnist
    python examples/masked_images.py --dataset cifar10 --epochs 4 --train-size 10000

The models are tiny, so on a CPU shared with other jobs ``--threads 1`` is much faster than
torch's default thread count (the OpenMP threads otherwise wait on each other).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import _cli as T
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import pointctx
from pointctx.datasets import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, MNIST, MNIST_MEAN, MNIST_STD
from pointctx.models import create_model
from pointctx.train import atomic_write_json
from pointctx.transforms import BlockMask, DiscMask, PolygonMask, RandomKeep
from pointctx.viz import save_cluster_grid, save_figure, trace_clusters

SHAPES = ("polygon", "blocks", "hole")
SHAPE_TITLES = {
    "polygon": "random polygon kept",
    "blocks": "rectangles cover 50 %",
    "hole": "disc hole",
}


# ---------------------------------------------------------------------------------- CNN
class SmallCNN(nn.Module):
    """Four 3x3 conv layers (two with stride 2), BatchNorm, ReLU, global mean pool, linear.

    Widths ``w, 2w, 2w, 4w``; the baseline for the CoC, fed zero-filled images.

    Shapes:
        x: [B, C, H, W]; return: [B, num_classes].
    """

    def __init__(self, in_channels: int, num_classes: int, width: int):
        super().__init__()
        w = width

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, w, 1), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1),
            *block(2 * w, 4 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        """Logits of the (zero-filled) images."""
        return self.head(self.features(x))


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cnn_params(in_channels: int, num_classes: int, width: int) -> int:
    """Parameter count of ``SmallCNN(in_channels, num_classes, width)``."""
    w = width
    convs = 9 * (in_channels * w + w * 2 * w + 2 * w * 2 * w + 2 * w * 4 * w)
    norms = 2 * (w + 2 * w + 2 * w + 4 * w)
    return convs + norms + 4 * w * num_classes + num_classes


def matched_cnn(in_channels: int, num_classes: int, target: int) -> SmallCNN:
    """The SmallCNN whose parameter count is closest to ``target``."""
    width = min(range(1, 257), key=lambda w: abs(cnn_params(in_channels, num_classes, w)
                                                  - target))
    return SmallCNN(in_channels, num_classes, width)


# ---------------------------------------------------------------------------------- masks
def condition_names(keep_ratios) -> list[str]:
    return [f"keep{r:g}" for r in keep_ratios] + list(SHAPES)


def make_transform(name: str, seed: int):
    """The mask transform of a condition (seeded: masks depend on (seed, epoch, row))."""
    if name.startswith("keep"):
        return RandomKeep(ratio=float(name[4:]), seed=seed)
    if name == "polygon":
        return PolygonMask(radius=(0.5, 1.0), seed=seed)
    if name == "blocks":
        return BlockMask(fraction=0.5, seed=seed)
    if name == "hole":
        return DiscMask(radius=(0.4, 0.7), keep="outside", seed=seed)
    raise ValueError(f"unknown masking condition {name!r}")


def condition_masks(name: str, images: torch.Tensor, rows: np.ndarray, seed: int,
                    epoch: int = 0) -> torch.Tensor:
    """Masks [S, H, W] of one condition for the images (rows = their file rows)."""
    t = make_transform(name, seed)
    t.set_epoch(epoch)
    return torch.stack([t(images[i], index=int(r)) for i, r in enumerate(rows)])


def mixed_masks(names, images, rows, seed: int, epoch: int) -> torch.Tensor:
    """Per image a condition drawn uniformly from ``names`` (depends on seed and epoch)."""
    rng = np.random.default_rng([seed, epoch, 7])
    pick = rng.integers(0, len(names), size=len(rows))
    transforms = [make_transform(n, seed + 17 * (k + 1)) for k, n in enumerate(names)]
    for t in transforms:
        t.set_epoch(epoch)
    return torch.stack([transforms[k](images[i], index=int(r))
                        for i, (k, r) in enumerate(zip(pick, rows))])


# ---------------------------------------------------------------------------------- models
def run_model(kind: str, model: nn.Module, x: torch.Tensor, mask: torch.Tensor):
    """Forward pass: the CoC gets the kept pixels as a set, the CNN the zero-filled image."""
    if kind == "coc":
        return model(x, mask)
    return model(x * mask.unsqueeze(1).to(x.dtype))


def train_model(kind, model, images, labels, rows, regime, conds, args, device, log):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    n = len(images)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = max(1, steps_per_epoch * args.epochs)
    warm = min(total // 10, 100)

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    for epoch in range(args.epochs):
        if regime == "full":
            masks = torch.ones(n, *images.shape[2:], dtype=torch.bool)
        else:
            masks = mixed_masks(conds, images, rows, args.seed + 101, epoch)
        model.train()
        perm = torch.randperm(n, generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"{kind}-{regime} epoch {epoch + 1}/"
                   f"{args.epochs}", disable=args.no_progress, leave=False, file=sys.stderr)
        total_loss = correct = seen = 0
        for b in bar:
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            x = images[idx].to(device)
            m = masks[idx].to(device)
            y = labels[idx].to(device)
            logits = run_model(kind, model, x, m)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        log(f"  {kind}-{regime} epoch {epoch + 1}: loss {total_loss / seen:.4f}, "
            f"train acc {correct / seen:.4f}")


@torch.no_grad()
def evaluate(kind, model, images, labels, masks, batch_size, device) -> float:
    model.eval()
    correct = 0
    for lo in range(0, len(images), batch_size):
        x = images[lo:lo + batch_size].to(device)
        m = masks[lo:lo + batch_size].to(device)
        logits = run_model(kind, model, x, m)
        correct += int((logits.argmax(1).cpu() == labels[lo:lo + batch_size]).sum())
    return correct / max(1, len(images))


@torch.no_grad()
def throughput(kind, model, images, masks_by_cond: dict, repeats: int, device) -> dict:
    """Images per second of inference on one batch per condition.

    The conditions are timed round-robin ``repeats`` times and the fastest run of each counts:
    on a shared machine that is the run least disturbed by other processes, and slow periods
    hit every condition alike.
    """
    model.eval()
    x = images.to(device)
    masks = {c: m.to(device) for c, m in masks_by_cond.items()}
    for m in masks.values():  # warm-up
        run_model(kind, model, x, m)
    best = {c: math.inf for c in masks}
    for _ in range(repeats):
        for c, m in masks.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run_model(kind, model, x, m)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[c] = min(best[c], time.perf_counter() - t0)
    return {c: round(len(x) / t, 1) for c, t in best.items()}


def nonempty_cell_fraction(masks: torch.Tensor, cell: int) -> float:
    """Mean share of ``cell`` x ``cell`` pixel cells with at least one kept pixel.

    The CoC stem (a stride-``cell`` :class:`~pointctx.nn.PointReducer`) makes one point per
    non-empty cell, so this is the share of the full-image work left for every later stage.
    """
    pooled = F.max_pool2d(masks[:, None].float(), cell, cell, ceil_mode=True)
    return round(float(pooled.mean()), 4)


# ---------------------------------------------------------------------------------- outputs
def plot_results(path, results, keep_ratios):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.3))
    ax, ax2 = fig.subplots(1, 2)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    markers = {"polygon": "^", "blocks": "s", "hole": "D"}
    conds = results["conditions"]
    for k, (name, info) in enumerate(results["models"].items()):
        col = colours[k % len(colours)]
        acc = [info["accuracy"][f"keep{r:g}"] for r in keep_ratios]
        style = "-" if info["arch"] == "coc" else "--"
        ax.plot(keep_ratios, acc, style, marker="o", color=col, label=name)
        for shape in SHAPES:
            ax.scatter([conds[shape]["mean_kept_fraction"]], [info["accuracy"][shape]],
                       marker=markers[shape], color=col, s=36, zorder=3)
    for shape in SHAPES:
        ax.scatter([], [], marker=markers[shape], color="grey", label=SHAPE_TITLES[shape])
    ax.set_xlabel("kept fraction of the pixels")
    ax.set_ylabel("accuracy (held-out split)")
    ax.set_title(f"{results['dataset']}: accuracy vs keep ratio\n(lines: random pixels; markers: "
                 "irregular shapes)", fontsize=9)
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    tp = results["throughput"]
    for arch, style in (("coc", "-"), ("cnn", "--")):
        if arch in tp:
            vals = [tp[arch][f"keep{r:g}"] for r in keep_ratios]
            line = ax2.plot(keep_ratios, vals, style, marker="o",
                            label=f"{arch.upper()} ({results['params'][arch]:,} params)")
            for shape in SHAPES:
                if shape in tp[arch]:
                    ax2.scatter([conds[shape]["mean_kept_fraction"]], [tp[arch][shape]],
                                marker=markers[shape], color=line[0].get_color(), s=36, zorder=3)
    ax2.set_xlabel("kept fraction of the pixels")
    ax2.set_ylabel("images / s (inference)")
    ax2.set_title(f"throughput, batch {results['config']['throughput_batch']}, "
                  f"{results['environment']['device']}, "
                  f"{results['environment']['threads']} thread(s)", fontsize=9)
    ax2.invert_xaxis()
    ax2.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def gallery_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` held-out images of different classes where possible (seeded choice)."""
    rng = np.random.default_rng(seed)
    lab = labels.numpy()
    classes = rng.permutation(np.unique(lab))
    picks = [int(rng.choice(np.flatnonzero(lab == c))) for c in classes[:n]]
    rest = [i for i in rng.permutation(len(lab)) if i not in picks]
    return torch.tensor(picks + rest[:max(0, n - len(picks))], dtype=torch.long)


def write_gallery(path, model, images, labels, masks_by_cond, mean, std, n_images, device,
                  model_name):
    """Masked inputs (rows: condition x image) with the CoC's clustering map of every stage."""
    conds = list(masks_by_cond)
    xs, ms, names = [], [], []
    for c in conds:
        for i in range(n_images):
            xs.append(images[i])
            ms.append(masks_by_cond[c][i])
            names.append((c, i))
    x = torch.stack(xs).to(device)
    m = torch.stack(ms).to(device)
    tr = trace_clusters(model, x, m)
    pred = tr.output.argmax(1).cpu()
    row_labels = [f"{c}\npred {int(p)} / true {int(labels[i])}"
                  for (c, i), p in zip(names, pred)]
    display = x.cpu() * std + mean  # back to [0, 1] for display
    save_cluster_grid(path, tr, display, heads=0, sets=list(range(len(names))),
                      row_labels=row_labels, title=f"{model_name}: masked test inputs and "
                      "clustering maps (head 0 of every stage)")


# ---------------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument("--data-root", default=T.DATA,
                   help="folder with mnist_train.npz / cifar10_train_jpeg.npz "
                        "(default: $POINTCTX_DATA or ../shared/data)")
    p.add_argument("--out", default="runs/masked_images", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="small run (4000 train / 500 test images, 3 epochs of batch 64)")
    p.add_argument("--epochs", type=int, default=None, help="default 4 (quick: 3)")
    p.add_argument("--train-size", type=int, default=None, help="default 20000 (quick: 4000)")
    p.add_argument("--test-size", type=int, default=None, help="default 5000 (quick: 500)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (quick: 64)")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--keep-ratios", default="1,0.75,0.5,0.25",
                   help="comma-separated random keep ratios in (0, 1]")
    p.add_argument("--train-masks", default="full,mixed",
                   help="comma-separated training regimes: full, mixed")
    p.add_argument("--models", default="coc,cnn", help="comma-separated: coc, cnn")
    p.add_argument("--coc-model", default=None,
                   help="registered CoC model (default coc_mnist; its in_channels follow the "
                        "dataset)")
    p.add_argument("--throughput-batch", type=int, default=256)
    p.add_argument("--throughput-repeats", type=int, default=None,
                   help="timed runs per keep ratio, the fastest counts (default 5; quick: 3)")
    p.add_argument("--gallery-images", type=int, default=2,
                   help="test images per condition in gallery.png (0: no gallery)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for this run (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = p.parse_args(argv)
    quick = args.quick
    args.epochs = args.epochs if args.epochs is not None else (3 if quick else 4)
    args.train_size = args.train_size or (4000 if quick else 20000)
    args.test_size = args.test_size or (500 if quick else 5000)
    args.throughput_repeats = args.throughput_repeats or (3 if quick else 5)
    args.batch_size = args.batch_size or (64 if quick else 128)
    try:
        args.keep_ratios = [float(v) for v in args.keep_ratios.split(",") if v.strip()]
    except ValueError:
        p.error(f"--keep-ratios must be comma-separated numbers, got {args.keep_ratios!r}")
    if not args.keep_ratios or any(not 0 < r <= 1 for r in args.keep_ratios):
        p.error(f"--keep-ratios must be numbers in (0, 1], got {args.keep_ratios}")
    args.keep_ratios = sorted(set(args.keep_ratios), reverse=True)
    args.train_masks = [v.strip() for v in args.train_masks.split(",") if v.strip()]
    if not args.train_masks or any(v not in ("full", "mixed") for v in args.train_masks):
        p.error(f"--train-masks must list 'full' and/or 'mixed', got {args.train_masks}")
    args.models = [v.strip() for v in args.models.split(",") if v.strip()]
    if not args.models or any(v not in ("coc", "cnn") for v in args.models):
        p.error(f"--models must list 'coc' and/or 'cnn', got {args.models}")
    for name in ("epochs", "train_size", "test_size", "batch_size", "eval_batch_size",
                 "throughput_batch", "throughput_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.gallery_images < 0:
        p.error(f"--gallery-images must be >= 0, got {args.gallery_images}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def load_data(args):
    root = Path(args.data_root) if args.data_root else None
    total = args.train_size + args.test_size
    if args.dataset == "mnist":
        path = None if root is None else root / "mnist_train.npz"
        ds = MNIST(path, limit=total, seed=args.seed, normalize=True)
        mean, std = MNIST_MEAN, MNIST_STD
    else:
        path = None if root is None else root / "cifar10_train_jpeg.npz"
        ds = CIFAR10(path, limit=total, seed=args.seed, normalize=True, cache=True)
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    if len(ds) < total:
        raise SystemExit(f"error: the {args.dataset} file holds {len(ds)} images, fewer than "
                         f"--train-size + --test-size = {total}")
    split = ds.split(val_fraction=args.test_size / total, seed=args.seed)

    def tensors(view):
        x = torch.stack([view.image(i) for i in range(len(view))])
        return x, torch.from_numpy(view.labels), view.rows

    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return tensors(split.train), tensors(split.val), ds.num_classes, mean_t, std_t


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        tqdm.write(msg, file=sys.stdout)

    try:
        (x_tr, y_tr, rows_tr), (x_te, y_te, rows_te), num_classes, mean, std = load_data(args)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    in_ch = x_tr.shape[1]
    log(f"{args.dataset}: {len(x_tr)} train / {len(x_te)} held-out images "
        f"{list(x_tr.shape[1:])}, {num_classes} classes")
    conds = condition_names(args.keep_ratios)
    eval_masks = {c: condition_masks(c, x_te, rows_te, args.seed + 1000 + 31 * k)
                  for k, c in enumerate(conds)}
    cond_info = {}
    for c in conds:
        info = {"kind": "random_keep" if c.startswith("keep") else "shape",
                "mean_kept_fraction": float(eval_masks[c].float().mean()),
                "mean_nonempty_4x4_cells": nonempty_cell_fraction(eval_masks[c], 4)}
        if c.startswith("keep"):
            info["keep_ratio"] = float(c[4:])
        else:
            info["description"] = SHAPE_TITLES[c]
        cond_info[c] = info

    coc_name = args.coc_model or "coc_mnist"

    def build(kind):
        if kind == "coc":
            return create_model(coc_name, in_channels=in_ch, num_classes=num_classes)
        ref = create_model(coc_name, in_channels=in_ch, num_classes=num_classes)
        return matched_cnn(in_ch, num_classes, num_params(ref))

    results = {
        "dataset": args.dataset,
        "config": {k: v for k, v in vars(args).items() if k not in ("no_progress",)},
        "environment": {"torch": torch.__version__, "pointctx": pointctx.__version__,
                        "device": str(device), "threads": torch.get_num_threads(),
                        "machine": platform.machine(), "cluster_backend":
                        pointctx.ops.cluster_available()},
        "conditions": cond_info,
        "params": {},
        "models": {},
        "throughput": {},
    }
    trained = {}
    for k, kind in enumerate(args.models):
        for regime in args.train_masks:
            name = f"{kind}-{regime}"
            torch.manual_seed(args.seed * 1000 + 10 * k + (regime == "mixed"))
            model = build(kind).to(device)
            results["params"][kind] = num_params(model)
            log(f"training {name} ({num_params(model):,} parameters)")
            t0 = time.perf_counter()
            train_model(kind, model, x_tr, y_tr, rows_tr, regime, conds, args, device, log)
            train_s = time.perf_counter() - t0
            acc = {}
            for c in tqdm(conds, desc=f"evaluating {name}", disable=args.no_progress,
                          leave=False, file=sys.stderr):
                acc[c] = evaluate(kind, model, x_te, y_te, eval_masks[c], args.eval_batch_size,
                                  device)
            log(f"  {name}: " + ", ".join(f"{c} {a:.4f}" for c, a in acc.items()))
            results["models"][name] = {"arch": kind, "train_masks": regime,
                                       "params": num_params(model),
                                       "train_time_s": round(train_s, 2), "accuracy": acc}
            trained[name] = (kind, model)

    for kind in args.models:
        name, (_, model) = next((n, v) for n, v in trained.items() if v[0] == kind)
        tb = min(args.throughput_batch, len(x_te))
        tp = throughput(kind, model, x_te[:tb],
                        {c: eval_masks[c][:tb] for c in conds},
                        args.throughput_repeats, device)
        results["throughput"][kind] = tp
        log(f"throughput {kind} (images/s): " + ", ".join(f"{c} {v:g}" for c, v in tp.items()))

    results["total_time_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(out / "results.json", results)
    plot_results(out / "accuracy.png", results, args.keep_ratios)
    if args.gallery_images and "coc" in args.models:
        gname = "coc-mixed" if "coc-mixed" in trained else next(
            n for n, v in trained.items() if v[0] == "coc")
        pick = gallery_indices(y_te, args.gallery_images, args.seed)
        write_gallery(out / "gallery.png", trained[gname][1], x_te[pick], y_te[pick],
                      {c: eval_masks[c][pick] for c in conds}, mean, std, len(pick), device,
                      gname)
    results["total_time_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(out / "results.json", results)
    table = ["model".ljust(12) + "".join(c.rjust(10) for c in conds)]
    for name, info in results["models"].items():
        table.append(name.ljust(12) + "".join(f"{info['accuracy'][c]:10.4f}" for c in conds))
    log("\n".join(table))
    log(f"wrote {out / 'results.json'}, {out / 'accuracy.png'}"
        + (f", {out / 'gallery.png'}" if (out / "gallery.png").exists() else "")
        + f" in {results['total_time_s']:.0f} s")
    log(json.dumps(results["throughput"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
