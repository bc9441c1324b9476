"""Benchmark: PointMLP / PointMLP-CoC throughput on ragged point clouds, and where the time goes.

For each of ``pointmlp``, ``pointmlp_elite``, ``pointmlp_coc`` and ``pointmlp_coc_elite``
(15 classes) on a batch of B = 32 clouds of 1024 random points (one ``PointBatch``):

* inference: ``model.eval()`` forward under ``torch.no_grad``; samples/s = B / median time;
* training: ``model.train()`` forward, cross-entropy, backward and an SGD (momentum) step;
  samples/s = B / median time;
* time shares of one inference forward, from :mod:`torch.profiler` ``record_function`` ranges
  placed in the model: ``pointctx.fps``, ``pointctx.knn``, ``pointctx.group`` (gathers and the
  geometric affine), ``pointctx.coc`` (Context Cluster layers), ``pointctx.mlp`` (embedding,
  residual MLPs, head); ``other`` is the rest of the forward (max pooling, input packing,
  profiler overhead). The ranges do not nest, so the shares add up to 1.

* the cost of the NaN / Inf policy: models check their features ``x`` with one fused
  ``isfinite().all()`` per forward (:func:`pointctx._checks.check_finite_features`); its time on
  ``x [N, 3]`` (the features of a model with ``in_channels=3``; positions are checked by
  ``PointBatch`` as before) is reported as a share of one inference forward (target: < 2 %).

Every case gets one untimed warm-up call; the profiled forward is a separate call. Timings use
``torch.set_num_threads(--threads)`` (default 1: the benchmark box is shared by other jobs and one
thread gives the steadiest numbers); on a shared CPU they are noisy, compare them only within a
run. Results go to ``bench/results/pointmlp.json`` (written atomically).

Usage::

    python bench/pointmlp.py [--quick] [--device cpu|cuda] [--out PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from pointctx import PointBatch, create_model
from pointctx._checks import check_finite_features
from pointctx.ops import resolve_backend
from pointctx.train import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import conditions  # noqa: E402  (bench/)

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "pointmlp.json"
MODELS = ["pointmlp", "pointmlp_elite", "pointmlp_coc", "pointmlp_coc_elite"]
LABELS = ["fps", "knn", "group", "coc", "mlp"]


def write_json(data: dict, out: Path) -> None:
    """Write ``data`` to ``out`` atomically (:func:`pointctx.train.atomic_write_json`)."""
    atomic_write_json(out, data)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_shares(model, pb, device):
    """Run one inference forward under the profiler; return seconds per label and the total."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad(), profile(activities=acts) as prof:
        with record_function("bench.forward"):
            model(pb)
        sync(device)
    totals = dict.fromkeys(LABELS + ["total"], 0.0)
    for ev in prof.events():
        name = ev.name
        if name == "bench.forward":
            totals["total"] += ev.cpu_time_total * 1e-6
        elif name.startswith("pointctx.") and name[9:] in totals:
            totals[name[9:]] += ev.cpu_time_total * 1e-6
    return totals


def run_model(name, pb, labels, args, device):
    torch.manual_seed(0)
    model = create_model(name, num_classes=15).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    b = pb.num_sets

    model.eval()

    def infer():
        with torch.no_grad():
            model(pb)

    infer()  # warm-up
    prof = profile_shares(model, pb, device)
    infer_s = timed(infer, device, args.repeats)
    feats = torch.randn(pb.num_points, 3, device=device)
    check_s = timed(lambda: check_finite_features(feats, pb.batch), device, 20)

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(pb), labels)
        loss.backward()
        opt.step()

    train_step()  # warm-up
    train_s = timed(train_step, device, args.repeats)

    total = prof["total"] or 1.0
    shares = {k: prof[k] / total for k in LABELS}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return {
        "model": name,
        "params_m": round(n_params / 1e6, 3),
        "infer_s": infer_s,
        "train_s": train_s,
        "infer_samples_per_s": b / infer_s,
        "train_samples_per_s": b / train_s,
        "profiled_forward_s": prof["total"],
        "finite_check_s": check_s,
        "finite_check_share": check_s / infer_s,
        "share": shares,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 timed repeat per case (default 3)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
    p.add_argument("--batch", type=int, default=32, help="clouds per batch (default 32)")
    p.add_argument("--points", type=int, default=1024, help="points per cloud (default 1024)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = p.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(0)
    pos = torch.randn(args.batch, args.points, 3, generator=g)
    pb = PointBatch.from_padded(pos).to(device)
    labels = torch.randint(0, 15, (args.batch,), generator=g).to(device)

    head = (f"{'model':<20} {'params M':>8} {'infer/s':>9} {'train/s':>9} "
            + " ".join(f"{k:>6}" for k in LABELS + ["other"]) + f" {'isfinite':>8}")
    print(f"B={args.batch}, N={args.points}, threads={args.threads}, device={device}, "
          f"repeats={args.repeats} (shares: % of one inference forward)")
    print(head)
    rows = []
    for name in args.models:
        r = run_model(name, pb, labels, args, device)
        rows.append(r)
        print(f"{r['model']:<20} {r['params_m']:>8.2f} {r['infer_samples_per_s']:>9.2f} "
              f"{r['train_samples_per_s']:>9.2f} "
              + " ".join(f"{100 * r['share'][k]:>5.1f}%" for k in LABELS + ["other"])
              + f" {100 * r['finite_check_share']:>7.3f}%", flush=True)
    write_json({
        "benchmark": "pointmlp",
        "batch": args.batch,
        "points": args.points,
        "threads": args.threads,
        "repeats": args.repeats,
        "quick": args.quick,
        "device": str(device),
        **conditions(),
        "ops_backend": {op: resolve_backend(None, op, device) for op in ("fps", "knn", "grid")},
        "note": "shared CPU: timings are noisy; shares are of one profiled inference forward",
        "results": rows,
    }, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
