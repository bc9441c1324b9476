#!/usr/bin/env python
"""Segmentation from sparse pixels: a CoC segmenter on the kept pixels vs a U-Net with zero-fill.

The masked-images study, redone for dense prediction on real CamVid. Two models with about the
same number of parameters are trained with the same budget (data, epochs, batch, optimiser,
augmentation and masks):

* the CoC segmentation model (``--coc-model``, default ``coc_micro_unet_seg``): its input set is the
  kept pixels only; it predicts every pixel of the image (the missing ones from the kept ones);
* a convolutional baseline (``--cnn-model``, default ``unet_cpu_seg``, a small U-Net): the
  image with missing pixels set to 0 after normalisation (the mean) plus a mask channel.

Training (``mixed``): per image and epoch one masking drawn uniformly from the evaluation
conditions, on top of random rescale / crop / flip; the loss covers every labelled pixel, kept
or not. Evaluation on the official CamVid val split (101 images) under every condition, with
masks fixed per image (seeded by ``--seed`` and the image) and identical for both models:

* ``keep1``, ``keep0.5``, ``keep0.25``, ``keep0.1``: random pixel subsets (100/50/25/10 %);
* ``blocks``: random rectangles hide 50 % of the pixels (:class:`~pointctx.transforms.BlockMask`);
* ``polygon``: only a random polygon is kept (:class:`~pointctx.transforms.PolygonMask`).

For each: mIoU (void ignored) over **all** pixels and over the **missing** pixels only, pixel
accuracy, per-class IoU, and inference throughput (images/s, batch ``--throughput-batch``, one
thread, median of ``--repeats`` rounds; one model at a time, each round timing it on every
condition's batch in turn; the 1-minute load average is recorded, the CPU being shared). Scores are
at the input resolution ``--size`` (labels resampled nearest).

Outputs: ``--out`` holds one training run per model (``Trainer`` folders: ``last.pt``,
``results.json``, resumable; a finished one is reused), ``--results`` the JSON tables and
``--figure`` the accuracy / throughput vs kept-pixels figure.

Examples::

    python examples/segment_sparse.py                   # the README run (~20 CPU minutes)
    python examples/segment_sparse.py --quick           # a few minutes, small data
    python examples/segment_sparse.py --out runs/sparse # rerun: finished models are reused
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import _cli as T
import numpy as np
import segment_images as seg
import torch
import torch.nn.functional as F
from tqdm import tqdm

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
from pointctx.train import (
    SegmentationConfusion,
    Trainer,
    atomic_write_json,
    init_distributed,
    make_loader,
    setup_logger,
)
from pointctx.transforms import BlockMask, MaskTransform, PolygonMask, RandomKeep

CONDITIONS = ("keep1", "keep0.5", "keep0.25", "keep0.1", "blocks", "polygon")
TITLES = {"blocks": "rectangles hide 50 %", "polygon": "random polygon kept"}


def make_mask(name: str, seed: int) -> MaskTransform | None:
    """The mask transform of a condition (``None`` for ``keep1``: every pixel)."""
    if name.startswith("keep"):
        r = float(name[4:])
        return None if r >= 1.0 else RandomKeep(ratio=r, seed=seed)
    if name == "blocks":
        return BlockMask(fraction=0.5, seed=seed)
    if name == "polygon":
        return PolygonMask(radius=(0.5, 1.0), seed=seed)
    raise ValueError(f"unknown masking condition {name!r}; choose from {list(CONDITIONS)}")


class MixedMask(MaskTransform):
    """Per image and epoch one of several conditions, drawn uniformly from ``(seed, epoch, index)``.

    Args:
        names: condition names (see :func:`make_mask`).
        seed: base seed.
    """

    def __init__(self, names, seed: int) -> None:
        super().__init__(seed)
        self.names = list(names)
        self.parts = [make_mask(n, seed + 17 * (k + 1)) for k, n in enumerate(self.names)]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch here and in every part."""
        super().set_epoch(epoch)
        for p in self.parts:
            if p is not None:
                p.set_epoch(epoch)

    def __call__(self, image, index=None):
        """Keep-mask [H, W] of the condition drawn for this image."""
        k = int(torch.randint(len(self.parts), (1,), generator=self._generator(index)))
        part = self.parts[k]
        if part is None:
            return torch.ones(image.shape[1:], dtype=torch.bool, device=image.device)
        return part(image, index=index)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segment_sparse.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-root", type=T.existing_dir, default=None,
                   help="camvid_trainval.npz folder or the SegNet CamVid/ layout")
    p.add_argument("--coc-model", default="coc_micro_unet_seg")
    p.add_argument("--cnn-model", default="unet_cpu_seg")
    p.add_argument("--coc-kwargs", type=T.json_object, default={})
    p.add_argument("--cnn-kwargs", type=T.json_object, default={})
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help="comma-separated evaluation (and mixed-training) conditions")
    p.add_argument("--size", type=seg._size, default=(90, 120),
                   help="input and scoring size HxW (default 90x120, a quarter of 360x480)")
    p.add_argument("--scale", type=seg._scale, default=(0.75, 1.5))
    p.add_argument("--epochs", type=T.positive_int, default=6)
    p.add_argument("--batch-size", type=T.positive_int, default=8)
    p.add_argument("--lr", type=T.positive_float, default=2e-3)
    p.add_argument("--weight-decay", type=T.nonnegative_float, default=0.01)
    p.add_argument("--class-weights", choices=("none", "median-freq"), default="median-freq")
    p.add_argument("--train-limit", type=T.positive_int, default=None)
    p.add_argument("--val-limit", type=T.positive_int, default=None,
                   help="val images evaluated under every condition (default all 101)")
    p.add_argument("--monitor-limit", type=T.positive_int, default=16,
                   help="val images evaluated (full) after every training epoch")
    p.add_argument("--throughput-batch", type=T.positive_int, default=8)
    p.add_argument("--repeats", type=T.positive_int, default=7,
                   help="timed rounds over every model and condition (median reported)")
    p.add_argument("--seed", type=T.nonnegative_int, default=0)
    p.add_argument("--threads", type=T.positive_int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/segment_sparse"))
    p.add_argument("--results", type=Path, default=None,
                   help="JSON tables (default <out>/results.json)")
    p.add_argument("--figure", type=Path, default=None,
                   help="figure (default <out>/accuracy.png)")
    p.add_argument("--quick", action="store_true",
                   help="a few minutes: 48 train / 24 val images, 2 epochs")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.conditions = [c for c in args.conditions.split(",") if c]
    for c in args.conditions:
        try:
            make_mask(c, 0)
        except ValueError as err:
            parser.error(f"argument --conditions: {err}")
    if not args.conditions:
        parser.error("argument --conditions: give at least one condition")
    for flag in ("coc_model", "cnn_model"):
        name = getattr(args, flag)
        if name not in pointctx.list_models():
            parser.error(f"argument --{flag.replace('_', '-')}: unknown model {name!r}; choose "
                         f"one of {pointctx.list_models('*_seg')}")
    if args.quick:
        args.train_limit = args.train_limit or 48
        args.val_limit = args.val_limit or 24
        args.epochs = min(args.epochs, 2)
    args.results = args.results or args.out / "results.json"
    args.figure = args.figure or args.out / "accuracy.png"
    return args


# --------------------------------------------------------------------------- training
def train(kind: str, name: str, kwargs: dict, args, log) -> tuple[torch.nn.Module, dict]:
    """Train (or resume, or reuse) one model with the mixed masks; returns (model, results)."""
    info = init_distributed("cpu")
    h, w = args.size
    train_tf = SegCompose(
        RandomScaleCrop((h, w), scale=args.scale, base_size=(h, w), ignore_index=CAMVID_VOID,
                        seed=args.seed),
        RandomHorizontalFlip(seed=args.seed + 1),
        PixelSubset(MixedMask(args.conditions, seed=args.seed + 101)),
    )
    train_ds = CamVid(args.data_root, "train", transform=train_tf, limit=args.train_limit)
    monitor = CamVid(args.data_root, "val", transform=Resize((h, w)),
                     limit=min(args.monitor_limit, args.val_limit or 10**9))
    torch.manual_seed(args.seed)
    model = pointctx.create_model(name, num_classes=len(CAMVID_CLASSES), **kwargs)
    weights = (seg.median_frequency_weights(train_ds) if args.class_weights == "median-freq"
               else None)

    def loss_fn(logits, target):
        return F.cross_entropy(logits.float(), target, weight=weights, ignore_index=CAMVID_VOID)

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs, args.lr * 0.01)
    out = args.out / kind
    trainer = Trainer(
        model, opt,
        make_loader(train_ds, batch_size=args.batch_size, train=True, dist_info=info,
                    seed=args.seed),
        make_loader(monitor, batch_size=8, train=False, dist_info=info),
        num_classes=len(CAMVID_CLASSES), class_names=list(CAMVID_CLASSES), epochs=args.epochs,
        output_dir=out, dist_info=info, loss_fn=loss_fn, scheduler=sched,
        forward=seg.seg_forward, logger=log, progress=not args.no_progress, eval_name="val",
        run_info={"task": "image segmentation",
                  "config": {"model": name, "kwargs": kwargs, "study": _identity(args)},
                  "model": {"name": name, "create_kwargs": {
                      "num_classes": len(CAMVID_CLASSES), **kwargs}},
                  "dataset": {"name": "camvid", "classes": list(CAMVID_CLASSES),
                              "palette": [list(c) for c in CAMVID_PALETTE[:11]]},
                  "inputs": {"kind": "images", "image_size": [3, h, w],
                             "mean": list(CAMVID_MEAN), "std": list(CAMVID_STD)}},
        confusion=partial(SegmentationConfusion, ignore_index=CAMVID_VOID), best_metric="miou",
    )
    if (out / "last.pt").is_file():
        saved = trainer.load()["run_info"]["config"]
        if saved.get("study") != _identity(args) or saved.get("model") != name:
            raise ValueError(f"{out / 'last.pt'} belongs to another study configuration; "
                             "choose another --out")
        log.info(f"{kind}: resuming {out / 'last.pt'} at epoch {trainer.epoch}")
    res = trainer.fit()
    if res["status"] != "finished":
        raise KeyboardInterrupt
    model.eval()
    return model, res


def _identity(args) -> dict:
    keys = ("conditions", "size", "scale", "epochs", "batch_size", "lr", "weight_decay",
            "class_weights", "train_limit", "seed", "coc_model", "cnn_model", "coc_kwargs",
            "cnn_kwargs")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
            if k in keys}


# --------------------------------------------------------------------------- evaluation
def condition_dataset(cond: str, args) -> CamVid:
    """The val split at ``--size`` with the condition's masks (fixed per image)."""
    parts = [Resize(args.size)]
    mask = make_mask(cond, args.seed + 999)
    if mask is not None:
        parts.append(PixelSubset(mask))
    return CamVid(args.data_root, "val", transform=SegCompose(*parts), limit=args.val_limit)


@torch.no_grad()
def evaluate(models: dict, cond: str, args) -> dict:
    """MIoU over all and over missing pixels of every model under one condition."""
    ds = condition_dataset(cond, args)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)
    cms = {k: (SegmentationConfusion(11, ignore_index=CAMVID_VOID),
               SegmentationConfusion(11, ignore_index=CAMVID_VOID)) for k in models}
    kept = []
    for batch in tqdm(loader, desc=f"eval {cond}", disable=args.no_progress, leave=False):
        kept.append(batch["mask"].float().mean((1, 2)))
        missing_target = batch["label"].masked_fill(batch["mask"], CAMVID_VOID)
        for k, m in models.items():
            logits, label, _ = seg.seg_forward(m, batch, torch.device("cpu"))
            cms[k][0].update(logits, label)
            cms[k][1].update(logits, missing_target)
    out = {"kept_fraction": float(torch.cat(kept).mean()), "images": len(ds)}
    for k, (all_cm, miss_cm) in cms.items():
        a, m = all_cm.compute(), miss_cm.compute()
        out[k] = {
            "miou": a.miou, "pixel_acc": a.oa, "class_acc": a.macc,
            "iou": dict(zip(CAMVID_CLASSES, a.iou)),
            "missing_miou": m.miou if m.total else None,
            "missing_pixel_acc": m.oa if m.total else None,
            "missing_pixels": m.total,
        }
    return out


@torch.no_grad()
def throughput(models: dict, conditions, args) -> dict:
    """Inference images/s per condition and model, on one batch each (median of ``--repeats``).

    One model at a time (the other's working set stays out of the caches); every round times
    it on every condition in turn, so a change of load hits the conditions alike.
    """
    batches = {}
    for cond in conditions:
        ds = condition_dataset(cond, args)
        n = min(args.throughput_batch, len(ds))
        batches[cond] = (n, torch.utils.data.default_collate([ds[i] for i in range(n)]))
    times = {(c, k): [] for c in conditions for k in models}
    for k, m in models.items():
        for rnd in range(args.repeats + 1):  # round 0: warm-up
            for cond, (_, batch) in batches.items():
                t0 = time.perf_counter()
                seg.seg_forward(m, batch, torch.device("cpu"))
                if rnd:
                    times[cond, k].append(time.perf_counter() - t0)
    return {c: {k: batches[c][0] / float(np.median(times[c, k])) for k in models}
            for c in conditions}


# --------------------------------------------------------------------------- figure
def save_plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from pointctx.viz import save_figure

    conds = results["conditions"]
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    styles = {"coc": ("tab:blue", "CoC (kept pixels only)"),
              "cnn": ("tab:orange", "U-Net (zero-fill + mask)")}
    keys = [("miou", "mIoU, all pixels (%)"), ("missing_miou", "mIoU, missing pixels (%)"),
            ("throughput", "inference images/s")]
    for ax, (key, label) in zip(axes, keys):
        for kind, (color, name) in styles.items():
            xs, ys = [], []
            for c in conds:
                r = results["table"][c]
                v = r["throughput"][kind] if key == "throughput" else r[kind][key]
                if v is None:
                    continue
                v = v if key == "throughput" else 100 * v
                if c.startswith("keep"):
                    xs.append(100 * r["kept_fraction"])
                    ys.append(v)
                else:
                    marker = "s" if c == "blocks" else "^"
                    ax.scatter([100 * r["kept_fraction"]], [v], color=color, marker=marker,
                               s=50, zorder=3)
            order = np.argsort(xs)
            ax.plot(np.array(xs)[order], np.array(ys)[order], "o-", color=color, label=name)
        ax.set_xlabel("kept pixels (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_title("random pixels: lines; ■ blocks hide 50 %; ▲ polygon kept", fontsize=9)
    fig.suptitle(f"CamVid val, {results['size'][0]}x{results['size'][1]}: CoC vs U-Net, same "
                 f"budget ({results['epochs']} epochs, mixed masks)")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    t0 = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = setup_logger("pointctx.examples.segment_sparse", args.out / "log.txt", True)
    log.info("config: " + json.dumps(_identity(args)))
    try:
        models, runs = {}, {}
        for kind, name, kw in (("coc", args.coc_model, args.coc_kwargs),
                               ("cnn", args.cnn_model, args.cnn_kwargs)):
            models[kind], runs[kind] = train(kind, name, kw, args, log)
    except (FileNotFoundError, ValueError) as err:
        log.error(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        log.info(f"interrupted: training checkpoints are in {args.out}; rerun to continue")
        return 130
    table = {}
    load_before = os.getloadavg()[0]
    for cond in args.conditions:
        table[cond] = evaluate(models, cond, args)
    speed = throughput(models, args.conditions, args)
    for cond in args.conditions:
        table[cond]["throughput"] = speed[cond]
        r = table[cond]
        log.info(
            f"{cond:>9}: kept {100 * r['kept_fraction']:5.1f} %  |  mIoU all CoC "
            f"{100 * r['coc']['miou']:5.2f} / CNN {100 * r['cnn']['miou']:5.2f}  |  missing "
            + (f"CoC {100 * r['coc']['missing_miou']:5.2f} / CNN "
               f"{100 * r['cnn']['missing_miou']:5.2f}" if r["coc"]["missing_miou"] is not None
               else "   n/a")
            + f"  |  img/s CoC {r['throughput']['coc']:.1f} / CNN {r['throughput']['cnn']:.1f}"
        )
    results = {
        "study": "CamVid segmentation from sparse pixels: CoC on kept pixels vs U-Net zero-fill",
        "config": _identity(args),
        "size": list(args.size),
        "epochs": args.epochs,
        "conditions": args.conditions,
        "models": {
            k: {"name": getattr(args, f"{k}_model"), "kwargs": getattr(args, f"{k}_kwargs"),
                "parameters": sum(p.numel() for p in models[k].parameters()),
                "train_s": runs[k]["timing"]["train_s"],
                "monitor_val_miou_last_epoch": runs[k]["last"]["miou"]}
            for k in models
        },
        "table": table,
        "versions": {"torch": torch.__version__, "pointctx": pointctx.__version__,
                     "platform": platform.platform(), "threads": args.threads},
        "wall_s": time.perf_counter() - t0,
        "load_average_1min": {"evaluation_start": load_before,
                              "evaluation_end": os.getloadavg()[0]},
    }
    atomic_write_json(args.results, results)
    try:
        save_plot(results, args.figure)
    except ImportError as err:  # matplotlib missing: the JSON is the result
        log.warning(f"no figure: {err}")
    log.info(f"results in {args.results}, figure {args.figure} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
