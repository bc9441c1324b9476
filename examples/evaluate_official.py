#!/usr/bin/env python
r"""Evaluate an official PointMLP(-CoC) checkpoint with pointctx on ModelNet40 or ScanObjectNN.

Download the official checkpoint (``best_checkpoint.pth`` of pointMLP-pytorch, links in its
README; the PointMLP-CoC one from Context-Cluster's ``pointcloud/README.md``) and the test split,
then::

    python examples/evaluate_official.py --arch pointmlp --checkpoint best_checkpoint.pth \
        --dataset modelnet40 --data-root /data/modelnet40_ply_hdf5_2048
    python examples/evaluate_official.py --arch pointmlp_elite --checkpoint best_checkpoint.pth \
        --dataset scanobjectnn --data-root /data/h5_files          # PB_T50_RS
    python examples/evaluate_official.py --arch pointmlp --checkpoint ckpt.pth --sample  # no data

The checkpoint is converted by :func:`pointctx.load_official` (wrappers such as PointMLP's
``{"net": ..., "epoch": ..., "acc": ...}`` and ``module.`` prefixes are handled; the model gets
the official FPS start). The test clouds are read as the official test loaders read them: the
first 1024 stored points, no augmentation, no voting. Prints and (``--output``) writes the
overall accuracy (OA) and the mean of the per-class accuracies (mAcc) over the classes present.
``--sample`` uses the bundled ModelNet40 sample (test part: 100 shapes of 10 of the 40 classes),
which checks the pipeline, not the published accuracy.

Exit status: 0 on success, 2 for bad arguments or an unusable checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _cli as T
import torch
from torch.utils.data import DataLoader, Subset

import pointctx
from pointctx.datasets import ModelNet40, ScanObjectNN
from pointctx.train import atomic_write_json

ARCHS = ("pointmlp", "pointmlp_elite", "pointmlp_coc")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="the official checkpoint file (torch.save output)")
    p.add_argument("--dataset", choices=("modelnet40", "scanobjectnn"), default="modelnet40")
    p.add_argument("--data-root", type=Path, default=None, help="the dataset folder")
    p.add_argument("--sample", action="store_true",
                   help="the bundled ModelNet40 sample instead of --data-root")
    p.add_argument("--variant", default="PB_T50_RS", help="ScanObjectNN variant")
    p.add_argument("--num-points", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N shapes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--trust-pickle", action="store_true",
                   help="load checkpoints that pickle more than tensors (weights_only=False): "
                   "only for files you trust")
    p.add_argument("--output", type=Path, default=None, help="write the metrics as JSON")
    return p, p.parse_args(argv)


def test_set(args):
    if args.sample:
        return T.modelnet40_sample("test", num_points=args.num_points)
    if args.dataset == "modelnet40":
        return ModelNet40(args.data_root, split="test", num_points=args.num_points)
    return ScanObjectNN(args.data_root, variant=args.variant, split="test",
                        num_points=args.num_points)


@torch.no_grad()
def evaluate(model, data, batch_size: int, device) -> dict:
    """Overall accuracy and mean per-class accuracy of ``model`` on ``data``."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    preds, labels = [], []
    for points, label in loader:
        preds.append(model(points.to(device)).argmax(1).cpu())
        labels.append(label)
    pred, label = torch.cat(preds), torch.cat(labels)
    present = label.unique()
    per_class = {int(c): float((pred[label == c] == c).float().mean()) for c in present}
    return {"shapes": int(label.numel()), "overall_accuracy": float((pred == label).float().mean()),
            "mean_class_accuracy": sum(per_class.values()) / len(per_class),
            "classes_present": len(per_class), "per_class_accuracy": per_class}


def main(argv=None) -> int:
    p, args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.sample and args.data_root is None:
        p.error("give --data-root (the dataset folder) or --sample")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = pointctx.load_official(args.arch, args.checkpoint,
                                       weights_only=not args.trust_pickle)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: cannot load {args.checkpoint} as {args.arch}: {err}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    model = model.to(device).eval()
    data = test_set(args)
    if args.limit is not None:
        data = Subset(data, range(min(args.limit, len(data))))
    res = evaluate(model, data, args.batch_size, device)
    res.update(arch=args.arch, checkpoint=str(args.checkpoint),
               dataset="modelnet40_sample" if args.sample else args.dataset)
    print(f"{args.arch} on {res['dataset']} ({res['shapes']} shapes): "
          f"OA {100 * res['overall_accuracy']:.2f} %, mAcc {100 * res['mean_class_accuracy']:.2f} %"
          f" ({res['classes_present']} classes present)")
    if args.output is not None:
        atomic_write_json(args.output, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
