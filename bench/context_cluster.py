"""Benchmark: ragged ``pointctx.nn.ContextCluster`` vs the dense official formulation.

Setting (one stage-1 Context Cluster layer of the paper's small models): a batch of B = 32 images
of 56 x 56 points, C = 64 channels, 4 heads of head_dim 24, regions 8 x 8 (7 x 7 pixels each) with
2 x 2 centers per region.

* ``dense``: the official formulation written here as the baseline (1x1 convs, region fold by
  reshape, ``AdaptiveAvgPool2d`` centers, ``[B * heads * regions, M, n]`` cosine similarities,
  argmax mask by scatter, masked aggregate and dispatch over ``[b, M, n, d]``), with the
  post-2023-05-31 ``sum of similarities`` denominator. It always runs on the full (zero-filled)
  grid.
* ``ragged``: :class:`pointctx.nn.ContextCluster` with the grid proposal over the fixed box
  ``(-0.5, 0.5)`` on the kept pixels only (100%, 75%, 50%, 25% of the pixels kept, chosen at random
  per image). At 56 / 8 = 7 pixels per region the paper's ``AdaptiveAvgPool2d(2)`` uses two
  overlapping 4-pixel bins; the grid proposal's default ``windows="partition"`` uses a 4 / 3
  pixel partition instead.
* ``exact``: the same layer (same weights) with ``windows="adaptive"``: the official overlapping
  ``AdaptiveAvgPool2d`` windows (pixels at their lattice cell centers, pitch ``1 / 56``); the
  middle row / column of a region feeds two centers. Its cost over ``ragged`` (partition) is
  printed per case as ``exact / partition``, measured interleaved in the same process; on the
  full images the run also checks that ``exact`` equals the dense official formulation.

Reported per case: the median wall time of ``forward`` (under ``torch.no_grad``) and of
``forward + backward`` (training mode, gradient of ``out.sum()``), and the peak memory of one
``forward + backward``. Memory on CPU: each case runs again in a fresh subprocess: after one
warm-up call it resets the kernel's resident high-water mark (``/proc/self/clear_refs``), reads
``VmRSS``, runs the call once and reads ``VmHWM``; the difference is the peak extra resident memory
of that call (inputs and weights excluded). The subprocess runs with a fixed glibc mmap threshold
(``MALLOC_MMAP_THRESHOLD_=131072``) so that freed tensors leave the resident set. On CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.

Timings use ``torch.set_num_threads(--threads)`` (default 1: the benchmark box is shared, and one
thread gives the most stable numbers; both implementations get the same). Runs of the two
implementations are interleaved so that load changes hit both alike.

Usage::

    python bench/context_cluster.py [--quick] [--out bench/results/context_cluster.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pointctx.nn.context_cluster import ContextCluster
from pointctx.train import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_peak_bytes, run_child  # noqa: E402  (bench/)

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "context_cluster.json"


class DenseCluster(nn.Module):
    """The official dense Context Cluster formulation (baseline), sharing weights with ``layer``."""

    def __init__(self, layer: ContextCluster, fold: int, proposal: int):
        super().__init__()
        self.layer = layer
        self.fold = fold
        self.pool = nn.AdaptiveAvgPool2d((proposal, proposal))

    @staticmethod
    def _conv(lin: nn.Linear, t):
        return F.conv2d(t, lin.weight.view(*lin.weight.shape, 1, 1), lin.bias)

    def forward(self, x):
        """Dense Context Cluster on a [B, C, H, W] map."""
        layer, e, fo = self.layer, self.layer.heads, self.fold
        value = self._conv(layer.v, x)
        feat = self._conv(layer.f, x)
        b0, c0, h0, w0 = feat.shape
        c = c0 // e
        feat = feat.reshape(b0 * e, c, h0, w0)
        value = value.reshape(b0 * e, c, h0, w0)
        if fo > 1:
            def fold_in(t):
                t = t.reshape(b0 * e, c, fo, h0 // fo, fo, w0 // fo)
                return t.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, h0 // fo, w0 // fo)
            feat, value = fold_in(feat), fold_in(value)
        b, c, h, w = feat.shape
        centers = self.pool(feat)
        value_centers = self.pool(value).flatten(2).transpose(1, 2)  # [b, M, c]
        cen = F.normalize(centers.flatten(2).transpose(1, 2), dim=-1)
        pts = F.normalize(feat.flatten(2).transpose(1, 2), dim=-1)
        sim = torch.sigmoid(layer.beta + layer.alpha * cen @ pts.transpose(1, 2))  # [b, M, n]
        _, idx = sim.max(dim=1, keepdim=True)
        mask = torch.zeros_like(sim).scatter_(1, idx, 1.0)
        sim = sim * mask
        value2 = value.flatten(2).transpose(1, 2)  # [b, n, c]
        out = ((value2.unsqueeze(1) * sim.unsqueeze(-1)).sum(2) + value_centers) / (
            sim.sum(-1, keepdim=True) + 1.0
        )  # [b, M, c]
        out = (out.unsqueeze(2) * sim.unsqueeze(-1)).sum(1)  # [b, n, c]
        out = out.transpose(1, 2).reshape(b, c, h, w)
        if fo > 1:
            out = out.reshape(b0 * e, fo, fo, c, h, w).permute(0, 3, 1, 4, 2, 5)
            out = out.reshape(b0 * e, c, h0, w0)
        out = out.reshape(b0, e * c, h0, w0)
        return self._conv(layer.proj, out)


def make_case(cfg, keep: float, seed: int = 0):
    """Inputs for one case: the dense image (zero-filled), the ragged kept points, their cells.

    The last item holds the kept pixels' lattice cell centers (for the exact windows).
    """
    g = torch.Generator().manual_seed(seed)
    b, s, c = cfg["batch"], cfg["size"], cfg["dim"]
    img = torch.randn(b, c, s, s, generator=g)
    i, j = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    pix = torch.stack([j / (s - 1) - 0.5, i / (s - 1) - 0.5], -1).reshape(-1, 2)
    if keep >= 1.0:
        mask = torch.ones(b, s * s, dtype=torch.bool)
    else:
        k = int(round(keep * s * s))
        order = torch.rand(b, s * s, generator=g).argsort(1)[:, :k]
        mask = torch.zeros(b, s * s, dtype=torch.bool).scatter_(1, order, True)
    img = img * mask.view(b, 1, s, s)
    x = img.permute(0, 2, 3, 1).reshape(b, s * s, c)[mask].contiguous()
    pos = pix.unsqueeze(0).expand(b, -1, -1)[mask].contiguous()
    batch = torch.arange(b).unsqueeze(1).expand(b, s * s)[mask].contiguous()
    cell = torch.stack([(j + 0.5) / s - 0.5, (i + 0.5) / s - 0.5], -1).reshape(-1, 2)
    cell = cell.unsqueeze(0).expand(b, -1, -1)[mask].contiguous()
    return img, x, pos, batch, cell


def build(cfg, device):
    torch.manual_seed(0)
    layer = ContextCluster(
        cfg["dim"], heads=cfg["heads"], head_dim=cfg["head_dim"], proposal="grid",
        centers=(cfg["centers"],) * 2, regions=(cfg["regions"],) * 2, bounds=(-0.5, 0.5),
    ).to(device)
    dense = DenseCluster(layer, cfg["regions"], cfg["centers"]).to(device)
    exact = ContextCluster(
        cfg["dim"], heads=cfg["heads"], head_dim=cfg["head_dim"], proposal="grid",
        centers=(cfg["centers"],) * 2, regions=(cfg["regions"],) * 2, bounds=(-0.5, 0.5),
        proposal_kwargs={"windows": "adaptive"},
    ).to(device)
    exact.load_state_dict(layer.state_dict())
    layer.exact = exact  # the runner reaches it through the layer (same weights)
    return layer, dense


def runner(impl: str, mode: str, layer, dense, inputs, cfg):
    img, x, pos, batch, cell = inputs
    b = cfg["batch"]
    if impl == "exact":  # adaptive windows: lattice cell centers and their pitch
        layer, pos, kw = layer.exact, cell, {"spacing": 1.0 / cfg["size"]}
    else:
        kw = {}
    if impl == "dense":
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    return dense(img)
        else:
            xi = img.clone().requires_grad_(True)

            def run():
                dense.zero_grad(set_to_none=True)
                dense(xi).sum().backward()
    else:
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    return layer(x, pos, batch, batch_size=b, **kw)
        else:
            xr = x.clone().requires_grad_(True)

            def run():
                layer.zero_grad(set_to_none=True)
                layer(xr, pos, batch, batch_size=b, **kw).sum().backward()
    return run


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def memory_child(args) -> None:
    """Subprocess entry: peak extra memory of one call of one case; prints JSON."""
    cfg = json.loads(args.cfg)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    layer, dense = build(cfg, device)
    inputs = [t.to(device) for t in make_case(cfg, args.keep)]
    if args.impl == "dense":  # the dense baseline uses only the image
        inputs = [inputs[0], None, None, None, None]
    else:
        inputs = [None] + inputs[1:]
    run = runner(args.impl, args.mode, layer, dense, inputs, cfg)
    if device.type == "cuda":
        run()  # warm-up (lazy CUDA init)
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        sync(device)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        run()  # warm-up: one-time allocations (thread pools, lazy init) are not counted
        peak, _ = cpu_peak_bytes(run)
    print(json.dumps({"peak_bytes": max(0, int(peak))}))


def measure_memory(impl, mode, keep, cfg, device, threads) -> float:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--mode", mode, "--keep",
           str(keep), "--cfg", json.dumps(cfg), "--device", str(device), "--threads", str(threads)]
    # run_child fixes the glibc mmap threshold for memory children, so resident memory follows
    # live tensors (the default dynamic threshold keeps freed blocks resident)
    res = run_child(cmd, "memory", timeout=3600)
    if "error" in res:
        raise RuntimeError(f"memory child failed ({impl}, {mode}, keep {keep}): {res['error']}")
    return res["peak_bytes"] / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="B = 4 and 2 repeats (smoke run)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    # subprocess mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--keep", type=float, help=argparse.SUPPRESS)
    p.add_argument("--cfg", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        memory_child(args)
        return

    load_start = [round(v, 2) for v in os.getloadavg()]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = {"batch": 4 if args.quick else 32, "size": 56, "dim": 64, "heads": 4, "head_dim": 24,
           "regions": 8, "centers": 2}
    repeats = args.repeats or (2 if args.quick else 7)
    keeps = [1.0, 0.75, 0.5, 0.25]
    layer, dense = build(cfg, device)
    cases = {keep: [t.to(device) for t in make_case(cfg, keep)] for keep in keeps}

    # interleaved timing: every repeat runs the dense baseline once and every ragged case once
    times = {(impl, mode, keep): [] for mode in ("fwd", "fwdbwd")
             for impl, keep in [("dense", 1.0)] + [(i, k) for k in keeps
                                                   for i in ("ragged", "exact")]}
    runs = {key: runner(key[0], key[1], layer, dense, cases[key[2]], cfg) for key in times}
    for run in runs.values():  # warm-up
        run()
    sync(device)
    for _ in range(repeats):
        for key, run in runs.items():
            sync(device)
            t0 = time.perf_counter()
            run()
            sync(device)
            times[key].append(time.perf_counter() - t0)
    med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    with torch.no_grad():  # the exact windows are the official layer
        img, x, _, batch, cell = cases[1.0]
        ref = dense(img).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        got = layer.exact(x, cell, batch, batch_size=cfg["batch"], spacing=1.0 / cfg["size"])
        exact_rel = float((got - ref).abs().max() / ref.abs().max())

    mem = {}
    if not args.no_memory:
        for key in times:
            mem[key] = measure_memory(key[0], key[1], key[2], cfg, device, args.threads)

    rows = []
    for keep in keeps:
        row = {"keep": keep, "points": int(cases[keep][1].shape[0])}
        for mode in ("fwd", "fwdbwd"):
            d, r = med[("dense", mode, 1.0)], med[("ragged", mode, keep)]
            row[f"dense_{mode}_ms"] = round(d, 2)
            row[f"ragged_{mode}_ms"] = round(r, 2)
            row[f"speedup_{mode}"] = round(d / r, 2)
            row[f"exact_{mode}_ms"] = round(med[("exact", mode, keep)], 2)
            row[f"exact_over_partition_{mode}"] = round(med[("exact", mode, keep)] / r, 3)
            if mem:
                row[f"dense_{mode}_peak_mib"] = round(mem[("dense", mode, 1.0)], 1)
                row[f"ragged_{mode}_peak_mib"] = round(mem[("ragged", mode, keep)], 1)
                row[f"exact_{mode}_peak_mib"] = round(mem[("exact", mode, keep)], 1)
        rows.append(row)

    head = (f"{'kept':>5} {'points':>7} | {'fwd dense':>9} {'ragged':>8} {'x':>5} | "
            f"{'f+b dense':>9} {'ragged':>8} {'x':>5} | {'MiB fwd dense':>13} {'ragged':>7} | "
            f"{'MiB f+b dense':>13} {'ragged':>7}")
    print(f"ContextCluster B={cfg['batch']} {cfg['size']}x{cfg['size']} C={cfg['dim']} "
          f"heads={cfg['heads']}x{cfg['head_dim']} regions {cfg['regions']}x{cfg['regions']} "
          f"centers {cfg['centers']}x{cfg['centers']}; {device}, {args.threads} thread(s), "
          f"median of {repeats}; times in ms")
    print(head)
    print("-" * len(head))
    for r in rows:
        nan = float("nan")
        memtxt = (f"{r.get('dense_fwd_peak_mib', nan):>13.1f} "
                  f"{r.get('ragged_fwd_peak_mib', nan):>7.1f} | "
                  f"{r.get('dense_fwdbwd_peak_mib', nan):>13.1f} "
                  f"{r.get('ragged_fwdbwd_peak_mib', nan):>7.1f}")
        print(f"{r['keep']:>5.2f} {r['points']:>7d} | {r['dense_fwd_ms']:>9.1f} "
              f"{r['ragged_fwd_ms']:>8.1f} {r['speedup_fwd']:>5.2f} | {r['dense_fwdbwd_ms']:>9.1f} "
              f"{r['ragged_fwdbwd_ms']:>8.1f} {r['speedup_fwdbwd']:>5.2f} | {memtxt}")

    print("exact (adaptive) windows vs partition, same layer weights, interleaved:")
    print(f"{'kept':>5} | {'fwd part.':>9} {'exact':>8} {'ratio':>6} | {'f+b part.':>9} "
          f"{'exact':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['keep']:>5.2f} | {r['ragged_fwd_ms']:>9.1f} {r['exact_fwd_ms']:>8.1f} "
              f"{r['exact_over_partition_fwd']:>6.3f} | {r['ragged_fwdbwd_ms']:>9.1f} "
              f"{r['exact_fwdbwd_ms']:>8.1f} {r['exact_over_partition_fwdbwd']:>6.3f}")
    print(f"exact vs dense official formulation (full images): max |diff| / max |out| = "
          f"{exact_rel:.1e}")
    full, half = rows[0], rows[2]
    targets = {
        "full_not_slower_fwd": full["speedup_fwd"] >= 1.0,
        "full_not_slower_fwdbwd": full["speedup_fwdbwd"] >= 1.0,
        "half_kept_1.8x_fwd": half["speedup_fwd"] >= 1.8,
        "half_kept_1.8x_fwdbwd": half["speedup_fwdbwd"] >= 1.8,
        "exact_within_10pct_full_fwd": full["exact_over_partition_fwd"] <= 1.10,
        "exact_within_10pct_full_fwdbwd": full["exact_over_partition_fwdbwd"] <= 1.10,
        "exact_equals_dense": exact_rel <= 1e-4,
    }
    print("targets:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in targets.items()))
    result = {
        "benchmark": "context_cluster",
        "config": cfg,
        "device": str(device),
        "threads": args.threads,
        "repeats": repeats,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "memory_method": ("fresh subprocess per case, after a warm-up call: VmHWM after one call "
                          "(high-water mark reset via /proc/self/clear_refs) minus VmRSS before "
                          "it (CPU); cuda.max_memory_allocated minus allocated (CUDA)"),
        "rows": rows,
        "exact_vs_dense_rel_diff": exact_rel,
        "load_avg_1_5_15_at_start": load_start,
        "load_avg_1_5_15_at_end": [round(v, 2) for v in os.getloadavg()],
        "targets": targets,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
