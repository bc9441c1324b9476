"""Benchmark: point ops (FPS, kNN, voxel grid) native vs torch-cluster vs naive reference.

Workloads (all in one run, B sets each):

* ``modelnet40-1024``: B = 32 real ModelNet40 shapes of 1024 points (3-D, from
  ``$POINTCTX_DATA/modelnet40_train_1024.npz``, 32 shapes drawn with seed 0; uniform random
  points in [-1, 1]^3 when the file is missing, which the table and JSON say).
* ``uniform-2048``: B = 32 sets of 2048 uniform random points in [-1, 1]^3 (the ModelNet40 file
  only holds 1024 points per shape).
* ``pixels-224``: B = 32 images of 224 x 224 pixel centres (2-D), coordinates scaled to [0, 1].
* ``knn-uneven`` (kNN only): one set of 20,000 uniform points in [-1, 1]^3 beside 64 sets of 10
  (``--quick``: 5,000 beside 16).

Ops: ``fps`` (ratio 0.25 on the 3-D sets, num = 512 per image on the pixel sets), ``knn``
(k = 16, queries = the FPS centres of the same set) and ``grid`` (``grid_cluster``, voxel size
0.05). Implementations: ``native`` (pointctx's vectorised PyTorch path), ``cluster``
(torch-cluster through pointctx's ``backend="cluster"``; skipped when not installed) and
``naive`` (the per-set / per-query Python-loop references ``fps_naive``, ``knn_naive``,
``grid_cluster_naive``).

Timing: median of ``--repeats`` runs (3 at most when one run takes over 5 s) after one warm-up
run; native and cluster runs are interleaved so that load changes hit both alike (``--clock
cpu``: the CPU time of the process instead of the wall time, steadier when other processes
share the cores). The naive reference is timed on the full batch when one set predicts the full
batch to take under ``--naive-budget`` seconds (30 s; one run, or the median of the repeats
when it is fast); otherwise it runs on the first sets only and the full-batch time is
extrapolated linearly in the number of sets, marked ``extrapolated`` with the number of sets
timed. ``torch.set_num_threads(--threads)`` (default 1: the benchmark box is shared; every
implementation gets the same). Each row also says whether the outputs agree (torch-cluster:
same picked positions for FPS, same distances for kNN, same cells for grid; naive: identical
outputs).

Batched against alone (``uneven_knn`` in the JSON): the native kNN of the ``knn-uneven`` batch
against the sum of the native times of every set run alone (target: within 2x), and with
``--former-padded`` once with the former single padded pass (every set padded to the largest).

Usage::

    python bench/ops.py [--quick] [--device cpu|cuda] [--out bench/results/ops.json]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pointctx.ops import (
    cluster_available,
    fps,
    fps_naive,
    grid_cluster,
    grid_cluster_naive,
    knn,
    knn_naive,
)
from pointctx.train import atomic_write_json

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "ops.json"
K = 16
VOXEL = 0.05
UNEVEN, UNEVEN_QUICK = (20000, 64, 10), (5000, 16, 10)  # one big set + many tiny ones


# ---------------------------------------------------------------------------------- workloads


def _modelnet(b: int, n: int, gen: torch.Generator):
    try:
        from pointctx.datasets import data_root

        default = Path(__file__).resolve().parents[2] / "shared" / "data"  # the checkout's
        path = data_root(os.environ.get("POINTCTX_DATA", default)) / "modelnet40_train_1024.npz"
        if not path.is_file():
            raise FileNotFoundError(path)
    except (FileNotFoundError, ImportError):
        return None
    with np.load(path) as f:
        pts = f["points"]
        pick = torch.randperm(pts.shape[0], generator=gen)[:b].sort().values.numpy()
        sets = torch.from_numpy(pts[pick, :n].astype(np.float32))
    return sets.reshape(-1, 3)


def make_workloads(quick: bool, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    b = 8 if quick else 32
    side = 64 if quick else 224
    out = []
    pos = _modelnet(b, 1024, gen)
    source = "ModelNet40 train shapes" if pos is not None else "uniform random (npz missing)"
    if pos is None:
        pos = torch.rand(b * 1024, 3, generator=gen) * 2 - 1
    out.append(dict(name="modelnet40-1024", pos=pos, b=b, n=1024, source=source,
                    fps=dict(ratio=0.25)))
    pos = torch.rand(b * 2048, 3, generator=gen) * 2 - 1
    out.append(dict(name="uniform-2048", pos=pos, b=b, n=2048, source="uniform random",
                    fps=dict(ratio=0.25)))
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    img = torch.stack([xx, yy], -1).reshape(-1, 2).float() / (side - 1)
    out.append(dict(name=f"pixels-{side}", pos=img.repeat(b, 1), b=b, n=side * side,
                    source=f"{side}x{side} pixel grid", fps=dict(num=512)))
    big, small, tiny = UNEVEN_QUICK if quick else UNEVEN
    sizes = [big] + [tiny] * small
    gen = torch.Generator().manual_seed(1)  # the data of uneven_knn
    out.append(dict(name="knn-uneven", pos=torch.rand(sum(sizes), 3, generator=gen) * 2 - 1,
                    b=len(sizes), n=f"{big} + {small} x {tiny}", sizes=sizes, ops=("knn",),
                    source="uniform random", fps=dict(ratio=0.25)))
    for w in out:
        w["pos"] = w["pos"].to(device)
        sizes = torch.tensor(w.get("sizes", [w["n"]] * w["b"]))
        w["ptr"] = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]).tolist()
        w["batch"] = torch.repeat_interleave(torch.arange(w["b"]), sizes).to(device)
    return out


def _subset(w, sets: int):
    """The first ``sets`` sets of a workload."""
    m = w["ptr"][sets]
    return w["pos"][:m], w["batch"][:m]


# ---------------------------------------------------------------------------------- ops


def make_calls(w, centres):
    """For each op: {impl: zero-argument callable} plus a callable for a naive subset run."""
    pos, batch, b = w["pos"], w["batch"], w["b"]
    cpos, cbatch = pos[centres], batch[centres]
    f = w["fps"]

    def naive_fps(sets):
        p, bt = _subset(w, sets)
        return fps_naive(p, bt, batch_size=sets, **f)

    def naive_knn(sets):
        p, bt = _subset(w, sets)
        keep = cbatch < sets
        return knn_naive(p, cpos[keep], K, bt, cbatch[keep], batch_size=sets)

    def naive_grid(sets):
        p, bt = _subset(w, sets)
        return grid_cluster_naive(p, bt, size=VOXEL, batch_size=sets)

    return {
        "fps": ({be: (lambda be=be: fps(pos, batch, batch_size=b, backend=be, **f))
                 for be in ("native", "cluster")}, naive_fps),
        "knn": ({be: (lambda be=be: knn(pos, cpos, K, batch, cbatch, batch_size=b, backend=be))
                 for be in ("native", "cluster")}, naive_knn),
        "grid": ({be: (lambda be=be: grid_cluster(pos, batch, size=VOXEL, batch_size=b,
                                                  backend=be))
                  for be in ("native", "cluster")}, naive_grid),
    }


def agree(op: str, w, a, c, exact: bool) -> bool:
    """Whether two outputs agree (exact, or up to ties for torch-cluster)."""
    if op == "fps":
        if exact:
            return torch.equal(a, c)
        return a.shape == c.shape and torch.equal(w["pos"][a], w["pos"][c])
    if op == "knn":
        same_d = torch.equal(a.dist2, c.dist2)
        return same_d and (not exact or torch.equal(a.index, c.index))
    return all(torch.equal(u, v) for u, v in zip(a, c))


# ---------------------------------------------------------------------------------- timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def timed(fn, device):
    _sync(device)
    t0 = _clock[0]()
    out = fn()
    _sync(device)
    return _clock[0]() - t0, out


def time_naive(naive, b: int, repeats: int, budget: float, device, even: bool = True):
    """Time the naive reference, on the full batch when it fits the budget.

    The time of the first set predicts the batch's when all sets have the same size; in an
    uneven batch the first set is the largest and dominates.
    """
    t1, _ = timed(lambda: naive(1), device)
    predicted = t1 * b if even else t1
    if predicted <= budget:
        runs = repeats if predicted < 2.0 else 1
        times, out = [], None
        for _ in range(runs):
            t, out = timed(lambda: naive(b), device)
            times.append(t)
        return dict(seconds=statistics.median(times), sets_timed=b, runs=runs,
                    extrapolated=False), out, b
    sets = max(1, min(b, int(budget / max(t1, 1e-9) / 2)))
    t, out = timed(lambda: naive(sets), device)
    return dict(seconds=t * b / sets, sets_timed=sets, runs=1, extrapolated=True), out, sets


def run(args) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    load_start = _loadavg()
    have_cluster = cluster_available()
    repeats = 2 if args.quick and args.repeats is None else (args.repeats or 5)
    results = []
    for w in make_workloads(args.quick, device):
        centres = fps(w["pos"], w["batch"], batch_size=w["b"], backend="native", **w["fps"])
        calls = make_calls(w, centres)
        for op, (fast, naive) in calls.items():
            if op not in w.get("ops", calls):
                continue
            impls = ["native"] + (["cluster"] if have_cluster else [])
            warm = {be: timed(fast[be], device) for be in impls}  # warm-up
            outs = {be: warm[be][1] for be in impls}
            reps = repeats if max(t for t, _ in warm.values()) < 5.0 else min(repeats, 3)
            times = {be: [] for be in impls}
            for _ in range(reps):
                for be in impls:
                    times[be].append(timed(fast[be], device)[0])
            row = dict(workload=w["name"], source=w["source"], op=op, sets=w["b"],
                       points_per_set=w["n"], dim=w["pos"].shape[1],
                       native_s=statistics.median(times["native"]), repeats=reps)
            if have_cluster:
                row["cluster_s"] = statistics.median(times["cluster"])
                row["cluster_vs_native"] = row["cluster_s"] / row["native_s"]
                row["cluster_agrees"] = agree(op, w, outs["native"], outs["cluster"], False)
            if not args.no_naive:
                info, out, sets = time_naive(naive, w["b"], repeats, args.naive_budget, device,
                                             even="sizes" not in w)
                row["naive"] = info
                row["naive_vs_native"] = info["seconds"] / row["native_s"]
                ref = outs["native"] if sets == w["b"] else _native_subset(op, w, centres, sets)
                row["naive_agrees"] = agree(op, w, ref, out, True)
            results.append(row)
            print_row(row, have_cluster, not args.no_naive)
    uneven = uneven_knn(args, device, repeats)
    return dict(
        benchmark="pointctx point ops: native vs torch-cluster vs naive",
        uneven_knn=uneven,
        device=str(device),
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or platform.machine()),
        torch=torch.__version__,
        torch_cluster=_cluster_version(),
        threads=args.threads,
        clock=args.clock,
        cpu_count=os.cpu_count(),
        load_avg_1min_start_end=[load_start, _loadavg()],
        quick=args.quick,
        repeats=repeats,
        naive_budget_s=args.naive_budget,
        k=K,
        voxel=VOXEL,
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
        results=results,
    )


def uneven_knn(args, device, repeats) -> dict:
    """The knn-uneven row: one big set beside many tiny ones, batched vs each set alone."""
    knn_mod = importlib.import_module("pointctx.ops.knn")
    gen = torch.Generator().manual_seed(1)
    big, small, tiny = UNEVEN_QUICK if args.quick else UNEVEN
    sizes = [big] + [tiny] * small
    pos = (torch.rand(sum(sizes), 3, generator=gen) * 2 - 1).to(device)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
    b = len(sizes)
    centres = fps(pos, batch, ratio=0.25, batch_size=b, backend="native")
    cpos, cbatch = pos[centres], batch[centres]
    ptr = [0]
    for n in sizes:
        ptr.append(ptr[-1] + n)
    cptr = torch.searchsorted(cbatch, torch.arange(b + 1, device=device)).tolist()

    def batched():
        return knn(pos, cpos, K, batch, cbatch, batch_size=b, backend="native")

    def alone():
        return [knn(pos[ptr[i]:ptr[i + 1]], cpos[cptr[i]:cptr[i + 1]], K, backend="native")
                for i in range(b)]

    out_b, out_a = timed(batched, device)[1], timed(alone, device)[1]  # warm-up
    idx = torch.cat([r.index + torch.where(r.index >= 0, ptr[i], 0) for i, r in enumerate(out_a)])
    agrees = torch.equal(idx, out_b.index) and torch.equal(
        torch.cat([r.dist2 for r in out_a]), out_b.dist2)
    tb, ta = [], []
    for _ in range(repeats):
        tb.append(timed(batched, device)[0])
        ta.append(timed(alone, device)[0])
    row = dict(workload="knn-uneven", sets=b, sizes=f"1 x {big} + {small} x {tiny}", k=K,
               queries=int(centres.numel()), native_s=statistics.median(tb),
               alone_sum_s=statistics.median(ta), agrees_with_alone=agrees, repeats=repeats)
    row["native_vs_alone"] = row["native_s"] / row["alone_sum_s"]
    if getattr(args, "former_padded", False):
        sx = torch.tensor(sizes, device=device)
        sy = torch.tensor([cptr[i + 1] - cptr[i] for i in range(b)], device=device)
        px = torch.tensor(ptr, device=device)
        py = torch.tensor(cptr, device=device)
        chunk = knn_mod._DEFAULT_CHUNK.get(device.type, 2**22)
        row["single_padded_pass_s"] = timed(lambda: knn_mod._knn_padded(
            pos, cpos, K, batch, cbatch, b, sx, px, sy, py, chunk), device)[0]
    print(f"\nknn-uneven ({row['sizes']} points, {row['queries']} queries, k={K}): native "
          f"{row['native_s'] * 1e3:.1f} ms, sets alone (sum) {row['alone_sum_s'] * 1e3:.1f} ms,"
          f" ratio {row['native_vs_alone']:.2f}"
          + (f", former single padded pass {row['single_padded_pass_s'] * 1e3:.0f} ms"
             if "single_padded_pass_s" in row else "")
          + f"; agrees: {agrees}", flush=True)
    return row


def _native_subset(op, w, centres, sets):
    p, bt = _subset(w, sets)
    if op == "fps":
        return fps(p, bt, batch_size=sets, backend="native", **w["fps"])
    if op == "knn":
        keep = w["batch"][centres] < sets
        c = centres[keep]
        return knn(p, w["pos"][c], K, bt, w["batch"][c], batch_size=sets, backend="native")
    return grid_cluster(p, bt, size=VOXEL, batch_size=sets, backend="native")


def _loadavg():
    """1-minute load average of the machine (other processes slow every timing alike)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cluster_version():
    try:
        import torch_cluster

        return torch_cluster.__version__
    except ImportError:
        return None


# ---------------------------------------------------------------------------------- output

HEADER = f"{'workload':<16} {'op':<5} {'native ms':>10} {'cluster ms':>11} {'cl/nat':>7} " \
         f"{'naive ms':>11} {'nv/nat':>8}  agree  naive timed on"


def print_row(row, have_cluster, have_naive):
    if print_row.first:
        print(HEADER)
        print("-" * len(HEADER))
        print_row.first = False
    cl = f"{row['cluster_s'] * 1e3:11.1f} {row['cluster_vs_native']:7.2f}" if have_cluster \
        else f"{'n/a':>11} {'':>7}"
    if have_naive:
        nv = row["naive"]
        note = f"{nv['sets_timed']} sets" + (" (extrapolated)" if nv["extrapolated"] else "")
        nvs = f"{nv['seconds'] * 1e3:11.1f} {row['naive_vs_native']:8.1f}"
    else:
        note, nvs = "skipped", f"{'':>11} {'':>8}"
    ag = ("c" if row.get("cluster_agrees") else "-" if have_cluster else " ") + \
         ("n" if row.get("naive_agrees") else "-" if have_naive else " ")
    print(f"{row['workload']:<16} {row['op']:<5} {row['native_s'] * 1e3:10.1f} {cl} {nvs}"
          f"  {ag:<5}  {note}", flush=True)


print_row.first = True


def write_json(data: dict, out: Path) -> None:
    """Write ``data`` to ``out`` atomically (:func:`pointctx.train.atomic_write_json`)."""
    atomic_write_json(out, data)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="8 sets, 64x64 images, 2 repeats")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or CPU time of this process (steadier on a loaded machine)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5)")
    p.add_argument("--naive-budget", type=float, default=30.0,
                   help="seconds allowed for one full-batch naive run before extrapolating")
    p.add_argument("--no-naive", action="store_true", help="skip the naive references")
    p.add_argument("--former-padded", action="store_true",
                   help="knn-uneven: also time the former single padded pass (~2 min)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = p.parse_args(argv)
    _clock[0] = CLOCKS[args.clock]
    data = run(args)
    write_json(data, args.out)
    print(f"\nagree: c = torch-cluster agrees with native, n = naive agrees exactly; "
          f"threads={args.threads}, clock={args.clock}, device={data['device']}, "
          f"torch {data['torch']}, torch-cluster {data['torch_cluster']}, 1-min load average "
          f"start/end {data['load_avg_1min_start_end']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
