"""Benchmark: inference images/s and peak memory of whole image models at 32x32 and 224x224.

Models (families): ``coc_tiny`` (the baseline of the ratios), ``cluenet_micro``, ``cluenet_tiny``
(``--models`` to change). Each family runs on

* 32 x 32 inputs with its 32 x 32 configuration ``<family>_cifar`` when that is registered (e.g.
  ``coc_tiny_cifar``, ``cluenet_micro_cifar``), else the family's own configuration on 32 x 32
  (the row says so);
* 224 x 224 inputs with the family's own configuration.

A family that is not registered (yet) gets a "not registered" row instead of an error; a model
that fails on an input size gets a row with the error. Each model is built with its registered
defaults (classes included) in ``eval()`` mode and run under ``torch.no_grad`` on a batch of B
(default 64) seeded random images.

Every row runs in two fresh subprocesses (so rows do not share allocator state or caches), each
starting with one warm-up forward (not measured: lazy initialisation, allocator growth):

1. ``--iters`` timed forwards (default 10 at 32 x 32 and 3 at 224 x 224; ``--quick``: 3 and 1):
   images/s = B / median time;
2. peak memory of one forward: on CPU the resident high-water mark is reset
   (``/proc/self/clear_refs``), ``VmRSS`` is read, the forward runs and ``VmHWM`` minus the
   earlier ``VmRSS`` is the peak extra resident memory of the call (weights and inputs excluded;
   where the reset is not allowed, ``ru_maxrss`` minus ``VmRSS``, which can only be larger). The
   child runs with a fixed glibc mmap threshold (``MALLOC_MMAP_THRESHOLD_=131072``) so freed
   tensors leave the resident set (the timing process keeps the default allocator). On CUDA
   it is ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.

``vs coc_tiny`` is the row's images/s divided by the ``coc_tiny`` row's at the same input size,
measured in the same run. Threads: ``torch.set_num_threads(--threads)`` (default 1: the machine is
shared and one thread gives the steadiest numbers).

``--windows`` runs instead the cost check of the CoC models' exact proposal at 224 x 224
(:class:`~pointctx.nn.proposal.GridProposal` ``windows="adaptive"``, the default, against
``windows="partition"``): for each ``--windows-models`` model (default ``coc_tiny``), both modes
with the same weights in ONE process, their forwards interleaved (``--iters`` rounds, default 5,
after one warm-up each) on full 224 x 224 images; it prints the median times, their ratio and the
logits' relative difference, and writes ``bench/results/models_windows.json``.

Usage::

    python bench/models.py [--quick] [--batch 64] [--threads 1] [--sizes 32,224] [--resume]
        [--out bench/results/models.json]
    python bench/models.py --windows [--batch 16] [--iters 5] [--windows-models coc_tiny]
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
from tqdm.auto import tqdm

import pointctx
from pointctx.train import atomic_write_json

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import (  # noqa: E402  (bench/)
    MEMORY_METHOD,
    cpu_name,
    cpu_peak_bytes,
    positive_int,
    run_child,
)

DEFAULT_OUT = ROOT / "results" / "models.json"
FAMILIES = ("coc_tiny", "cluenet_micro", "cluenet_tiny")
BASELINE = "coc_tiny"


# --------------------------------------------------------------------------- child process
def child(args) -> dict:
    """Measure one (model, size) row in this process: ``--what memory`` or ``--what time``."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = pointctx.create_model(args.model).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    in_ch = int(getattr(model, "in_channels", 3))
    x = torch.randn(args.batch, in_ch, args.size, args.size,
                    generator=torch.Generator().manual_seed(1)).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def run():
        out = model(x)
        sync()
        return out

    t0 = time.perf_counter()
    out = run()  # warm-up
    info = {"params": params, "num_classes": int(out.shape[-1]), "in_channels": in_ch,
            "warmup_s": round(time.perf_counter() - t0, 3)}
    if args.what == "memory":
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            run()
            peak, how = torch.cuda.max_memory_allocated() - before, "cuda"
        else:
            peak, how = cpu_peak_bytes(run)
        return {**info, "peak_mib": round(max(0, peak) / 2**20, 1), "memory_from": how}
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {**info, "batch_s": [round(t, 4) for t in times], "median_batch_s": round(med, 4),
            "images_per_s": round(args.batch / med, 2)}


def measure(model: str, size: int, iters: int, args, what: str) -> dict:
    """Run :func:`child` for one row in a fresh subprocess (``_common.run_child``)."""
    cmd = [sys.executable, __file__, "--child", "--what", what, "--model", model, "--size",
           str(size), "--iters", str(iters), "--batch", str(args.batch), "--threads",
           str(args.threads), "--device", args.device]
    return run_child(cmd, what, args.row_timeout)


# --------------------------------------------------------------------------- exact windows
def windows_check(args) -> dict:
    """Exact (adaptive) vs partition windows of CoC models at 224: same process, interleaved."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    iters = args.iters or 5
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    x = x.to(device)
    rows = []
    load = [round(v, 2) for v in os.getloadavg()]
    for name in [v.strip() for v in args.windows_models.split(",") if v.strip()]:
        torch.manual_seed(0)
        exact = pointctx.create_model(name, windows="adaptive").to(device).eval()
        part = pointctx.create_model(name, windows="partition").to(device).eval()
        part.load_state_dict(exact.state_dict())
        times = {"adaptive": [], "partition": []}
        with torch.no_grad():
            outs = {"adaptive": exact(x), "partition": part(x)}  # warm-up
            for _ in range(iters):
                for mode, model in (("adaptive", exact), ("partition", part)):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    model(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times[mode].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = (outs["adaptive"] - outs["partition"]).abs().max() / outs["partition"].abs().max()
        rows.append({"model": name, "input": "224x224", "batch": args.batch, "iters": iters,
                     "adaptive_s": [round(t, 4) for t in times["adaptive"]],
                     "partition_s": [round(t, 4) for t in times["partition"]],
                     "adaptive_median_s": round(med["adaptive"], 4),
                     "partition_median_s": round(med["partition"], 4),
                     "ratio_adaptive_over_partition": round(med["adaptive"] / med["partition"], 3),
                     "logits_rel_diff": float(diff)})
        r = rows[-1]
        print(f"{name} 224x224 B={args.batch}: adaptive {r['adaptive_median_s']:.3f} s, "
              f"partition {r['partition_median_s']:.3f} s, ratio "
              f"{r['ratio_adaptive_over_partition']:.3f} (logits differ by "
              f"{r['logits_rel_diff']:.1e} relative)")
    return {"benchmark": "models_windows", "device": args.device, "threads": args.threads,
            "torch": torch.__version__, "platform": platform.platform(),
            "load_avg_1_5_15_at_start": load,
            "load_avg_1_5_15_at_end": [round(v, 2) for v in os.getloadavg()],
            "timing": "one process, both modes interleaved per round after one warm-up each; "
            "median of the rounds", "rows": rows}


# --------------------------------------------------------------------------- parent
def plan_rows(families, sizes, known) -> list[dict]:
    """Which registered model runs each (family, size) row, with a note when it is not exact."""
    rows = []
    for size in sizes:
        for fam in families:
            row = {"family": fam, "input": f"{size}x{size}", "size": size}
            if fam not in known:
                row.update(model=None, status="skipped", note=f"{fam} is not registered")
            elif size <= 64 and f"{fam}_cifar" in known:
                row.update(model=f"{fam}_cifar", status="pending",
                           note=f"32x32 config {fam}_cifar")
            elif size <= 64:
                row.update(model=fam, status="pending",
                           note=f"no {fam}_cifar registered: {fam}'s own config on {size}x{size}")
            else:
                row.update(model=fam, status="pending", note="")
            rows.append(row)
    return rows


def _iters_for(size: int, args) -> int:
    if args.iters:
        return args.iters
    if size <= 64:
        return 3 if args.quick else 10
    return 1 if args.quick else 3


def _reuse_rows(path: Path, rows: list[dict], conditions: dict, args) -> int:
    """Copy finished rows of an earlier run at ``path`` with the same conditions into ``rows``."""
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return 0
    same = ("batch", "threads", "device", "torch")
    if any(old.get("conditions", {}).get(k) != conditions[k] for k in same):
        return 0
    done = {(r.get("model"), r.get("size"), r.get("iters")): r for r in old.get("rows", [])
            if r.get("status") == "ok"}
    kept = 0
    for i, r in enumerate(rows):
        prev = done.get((r["model"], r["size"], _iters_for(r["size"], args)))
        if r["status"] == "pending" and prev is not None:
            rows[i].update({k: v for k, v in prev.items() if k != "vs_coc_tiny"})
            kept += 1
    return kept


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 8 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 8, got {text!r}")
    return sizes


def format_table(rows, batch, threads, device) -> str:
    """The printed table."""
    head = (f"{'family':<14} {'input':>7} {'model':<22} {'params':>11} {'img/s':>9} "
            f"{'vs coc':>7} {'peak MiB':>9}  note")
    lines = [f"inference, batch {batch}, {device}, {threads} thread(s)", head, "-" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            what = r.get("error") or r.get("note", "")
            lines.append(f"{r['family']:<14} {r['input']:>7} {r['model'] or '-':<22} "
                         f"{'-':>11} {'-':>9} {'-':>7} {'-':>9}  {r['status']}: {what}")
            continue
        ratio = "-" if r.get("vs_coc_tiny") is None else f"{r['vs_coc_tiny']:.2f}"
        lines.append(f"{r['family']:<14} {r['input']:>7} {r['model']:<22} {r['params']:>11,} "
                     f"{r['images_per_s']:>9.1f} {ratio:>7} {r['peak_mib']:>9.1f}  {r['note']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the benchmark (or, with ``--child``, one row); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 timed batches at 32x32 and 1 at 224x224 (default 10 and 3)")
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--sizes", type=_sizes, default=[32, 224], help="input sizes (default 32,224)")
    p.add_argument("--models", default=",".join(FAMILIES),
                   help=f"comma-separated families (default {','.join(FAMILIES)})")
    p.add_argument("--iters", type=positive_int, default=None,
                   help="timed batches per row (overrides the per-size defaults)")
    p.add_argument("--row-timeout", type=positive_int, default=3600,
                   help="seconds before a row's subprocess is abandoned")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--resume", action="store_true",
                   help="keep the measured rows of --out taken under the same conditions (batch, "
                   "threads, device, torch, iterations) and measure only the others")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--windows", action="store_true",
                   help="only the exact-vs-partition windows check of the CoC models at 224")
    p.add_argument("--windows-models", default="coc_tiny",
                   help="models of the --windows check (default coc_tiny)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--what", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("argument --device: cuda is not available")
    if args.windows:
        out = args.out if args.out != DEFAULT_OUT else ROOT / "results" / "models_windows.json"
        atomic_write_json(out, windows_check(args))
        print(f"wrote {out}")
        return 0
    families = [v.strip() for v in args.models.split(",") if v.strip()]
    if not families:
        p.error("argument --models: give at least one model family")
    known = pointctx.list_models()
    rows = plan_rows(families, args.sizes, known)
    result = {
        "benchmark": "models",
        "conditions": {
            "batch": args.batch,
            "threads": args.threads,
            "device": args.device,
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "pointctx": pointctx.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "mode": "model.eval(), torch.no_grad(), float32, seeded random N(0, 1) images",
            "timing": "fresh subprocess per row: one warm-up forward, then the timed forwards; "
            "images/s = batch / median",
            "memory_method": MEMORY_METHOD,
            "baseline": BASELINE,
            "load_avg_1_5_15_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "rows": rows,
    }
    if args.resume:
        kept = _reuse_rows(args.out, rows, result["conditions"], args)
        print(f"--resume: {kept} row(s) of {args.out} kept")
    t_start = time.perf_counter()
    todo = [r for r in rows if r["status"] == "pending"]
    for r in tqdm(todo, desc="models", disable=args.no_progress, dynamic_ncols=True):
        iters = _iters_for(r["size"], args)
        t0 = time.perf_counter()
        got = measure(r["model"], r["size"], iters, args, "time")
        if "error" not in got:
            mem = measure(r["model"], r["size"], iters, args, "memory")
            got = {**mem, **got} if "error" not in mem else mem
        r["row_wall_s"] = round(time.perf_counter() - t0, 1)
        r["iters"] = iters
        if "error" in got:
            r.update(status="error", error=got["error"])
        else:
            r.update(status="ok", **got)
        tqdm.write(f"{r['model']} {r['input']}: "
                   + (f"{r['images_per_s']:.1f} img/s, peak {r['peak_mib']:.1f} MiB"
                      if r["status"] == "ok" else r["error"]) + f" ({r['row_wall_s']} s)")
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        atomic_write_json(args.out, result)  # partial results survive an interrupted run
    for r in rows:
        base = next((b for b in rows if b["family"] == BASELINE and b["size"] == r["size"]
                     and b["status"] == "ok"), None)
        if r["status"] == "ok" and base is not None:
            r["vs_coc_tiny"] = round(r["images_per_s"] / base["images_per_s"], 3)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["conditions"]["load_avg_1_5_15_at_end"] = [round(v, 2) for v in os.getloadavg()]
    atomic_write_json(args.out, result)
    print(format_table(rows, args.batch, args.threads, args.device))
    print(f"wrote {args.out} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
