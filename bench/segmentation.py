"""Benchmark: segmentation models on full and partial inputs: throughput, peak memory, time split.

Every row of the table is one *case* (``CASES``: model, input builder, keep pattern, output
mode); add rows (e.g. point clouds) by appending cases, and new input kinds by adding a builder
to ``INPUTS``. The default cases, at 360 x 480 (CamVid), batch B (default 2):

* ``coc_tiny_seg``, the CPU-sized ``coc_micro_seg`` and ``coc_micro_unet_seg`` (its backbone
  with the set U-Net decoder down to the input pixels) with

  - keep patterns ``full`` (every pixel), ``random25`` / ``random10`` (25 % / 10 % of the
    pixels, uniformly at random) and ``region25`` (a centred rectangle of 25 % of the image:
    an irregular input region);
  - ``input_pool`` (the option of the segmentation models, off = 1 by default): 1 for every
    pattern, and also ``f = input_pool_for_keep(keep)`` for the random patterns (2 at 25 %,
    3 at 10 %: the kept pixels of every f x f block averaged into one point before the stem);
  - output ``dense``: ``model(images, mask)`` -> logits for *every* pixel ``[B, K, H, W]``
    (the missing ones predicted from the kept ones), and ``points``: ``model(point_batch)`` ->
    logits at the kept pixels only;

* the CNN baselines ``unet_cpu_seg`` and ``unet_seg`` (missing pixels zero-filled + a mask
  channel; always every pixel).

``vs full`` is a row's throughput over the same model and output at ``full`` (without input
pooling), measured in the same run. For the point-set models the time is split into the
backbone (``forward_stages``, input pooling included), the head (Semantic FPN: logits at the
finest stage; set U-Net: at the input pixels) and the final interpolation of the logits to the
queries (every pixel or the kept ones); each part is a
median of its own timed runs (``total`` is measured separately, so the parts need not add up
exactly). ``stage_points`` in the JSON: the points of every stage (summed over the batch).

Every row runs in two fresh subprocesses (timing, then memory), each after one warm-up forward:
images/s = B / median of ``--iters`` forwards; peak memory as ``bench/models.py`` measures it
(``VmHWM`` after one forward minus ``VmRSS`` before, glibc mmap threshold 128 KiB).
Threads: ``--threads`` (default 1).

``--round-robin`` measures the throughput ratios more robustly on a shared machine: per point
model and output, one subprocess times every keep pattern / ``input_pool`` variant of one model
in turn (``--iters`` rounds, default 7; median per variant), so that a change of load hits every
variant alike; it writes ``bench/results/segmentation_input_pool.json`` (no memory, no split).

Point clouds: ``--points`` runs the point-cloud rows instead (``bench/segmentation_points.py``:
``pointmlp_partseg`` / ``pointmlp_coc_partseg`` at B = 16 x 2,048 points, inference and
training step, time shares of FPS, kNN, grouping and feature propagation, optionally the
official part-seg model for comparison); its options are that script's.

Usage::

    python bench/segmentation.py [--quick] [--batch 2] [--threads 1] [--size 360x480]
        [--cases coc_tiny_seg,unet_cpu_seg] [--out bench/results/segmentation.json]
    python bench/segmentation.py --round-robin [--iters 7] [--cases coc_micro_seg]
    python bench/segmentation.py --points [--quick] [--official /path/to/pointMLP-pytorch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import pointctx
from pointctx import PointBatch
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

DEFAULT_OUT = ROOT / "results" / "segmentation.json"
ROUND_ROBIN_OUT = ROOT / "results" / "segmentation_input_pool.json"
POINT_MODELS = ("coc_tiny_seg", "coc_micro_seg", "coc_micro_unet_seg")
CNN_MODELS = ("unet_cpu_seg", "unet_seg")
KEEPS = ("full", "random25", "random10", "region25")
#: keep ratio of the random patterns (their input_pool rows use input_pool_for_keep of it)
RANDOM_KEEP = {"random25": 0.25, "random10": 0.10}


def _cases() -> list[dict]:
    """The default rows: (model, input kind, keep pattern, output mode, input pooling)."""
    cases = []
    for model in POINT_MODELS:
        for output in ("dense", "points"):
            for keep in KEEPS:
                pools = [1]
                if keep in RANDOM_KEEP:
                    pools.append(pointctx.models.input_pool_for_keep(RANDOM_KEEP[keep]))
                for pool in pools:
                    cases.append({"model": model, "input": "image", "keep": keep,
                                  "output": output, "input_pool": pool})
    for model in CNN_MODELS:
        for keep in KEEPS:
            cases.append({"model": model, "input": "image", "keep": keep, "output": "dense"})
    return cases


CASES = _cases()


# --------------------------------------------------------------------------- inputs
def _mask(keep: str, b: int, h: int, w: int) -> torch.Tensor | None:
    if keep == "full":
        return None
    if keep in RANDOM_KEEP:
        g = torch.Generator().manual_seed(2)
        return torch.rand(b, h, w, generator=g) < RANDOM_KEEP[keep]
    if keep == "region25":  # a centred rectangle of half the height and half the width
        m = torch.zeros(b, h, w, dtype=torch.bool)
        m[:, h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = True
        return m
    raise ValueError(f"unknown keep pattern {keep!r}; choose one of {list(KEEPS)}")


def _image_input(case: dict, args, model):
    """Images (+ mask) for dense output, or the kept pixels as a PointBatch for point output.

    Returns ``(call, pixels_in)``: ``call()`` runs the model once, ``pixels_in`` counts the
    input points (kept pixels).
    """
    h, w = args.size
    c = int(getattr(model, "in_channels", 3))
    x = torch.randn(args.batch, c, h, w, generator=torch.Generator().manual_seed(1))
    mask = _mask(case["keep"], args.batch, h, w)
    kept = args.batch * h * w if mask is None else int(mask.sum())
    pool = int(case.get("input_pool", 1))
    kw = {"input_pool": pool} if pool > 1 else {}
    if case["output"] == "dense":
        return (lambda: model(x, mask, **kw)), kept, (x, mask)
    pb = PointBatch.from_images(x, mask)
    return (lambda: model(pb, **kw)), kept, (pb, None)


#: input builders by kind; point-cloud rows add their own
INPUTS = {"image": _image_input}


# --------------------------------------------------------------------------- child process
def _median_s(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _split(model, inputs, mask, iters: int) -> dict:
    """Median seconds of the backbone and of backbone + head (logits before the queries)."""
    backbone = _median_s(lambda: model._stages(inputs, mask, None), iters)  # + input pooling

    def head():
        packed = model.backbone.pack(inputs, mask, append_pos=True)
        model._predict(model._stages(packed, None, None), packed, inputs, mask, None, None)

    return {"backbone_s": round(backbone, 4),
            "backbone_head_s": round(_median_s(head, iters), 4)}


def child(args) -> dict:
    """Measure one case in this process (``--what time`` or ``--what memory``)."""
    torch.set_num_threads(args.threads)
    case = json.loads(args.case)
    torch.manual_seed(0)
    pool = int(case.get("input_pool", 1))
    model = pointctx.create_model(case["model"], **({"input_pool": pool} if pool > 1 else {}))
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    call, kept, (inputs, mask) = INPUTS[case["input"]](case, args, model)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = call()  # warm-up
        k = out.shape[1]  # [N, K] or [B, K, H, W]
        info = {"params": params, "pixels_in": kept, "outputs": out.numel() // k,
                "warmup_s": round(time.perf_counter() - t0, 3)}
        if args.what == "memory":
            peak, how = cpu_peak_bytes(call)
            return {**info, "peak_mib": round(max(0, peak) / 2**20, 1), "memory_from": how}
        med = _median_s(call, args.iters)
        res = {**info, "median_batch_s": round(med, 4),
               "images_per_s": round(args.batch / med, 3)}
        if hasattr(model, "backbone"):
            res.update(_split(model, inputs, mask, args.iters))
            stages = model._stages(inputs, mask, None)
            res["stage_points"] = [s.num_points for s in stages]
    return res


def child_round_robin(args) -> dict:
    """Time every variant of one model and output in turn (``--what round-robin``)."""
    torch.set_num_threads(args.threads)
    spec = json.loads(args.case)  # {"model", "output", "variants": [[keep, input_pool], ...]}
    torch.manual_seed(0)
    model = pointctx.create_model(spec["model"]).eval()
    calls, rows = [], []
    for keep, pool in spec["variants"]:
        case = {"model": spec["model"], "input": "image", "keep": keep,
                "output": spec["output"], "input_pool": pool}
        call, kept, _ = _image_input(case, args, model)
        calls.append(call)
        rows.append({"keep": keep, "input_pool": pool, "pixels_in": kept})
    times = [[] for _ in calls]
    with torch.no_grad():
        for call in calls:  # warm-up
            call()
        for _ in range(args.iters):
            for i, call in enumerate(calls):
                t0 = time.perf_counter()
                call()
                times[i].append(time.perf_counter() - t0)
    for r, t in zip(rows, times):
        med = statistics.median(t)
        r.update(median_batch_s=round(med, 4), images_per_s=round(args.batch / med, 3),
                 times_s=[round(v, 4) for v in t])
    base = next(r for r in rows if r["keep"] == "full" and r["input_pool"] == 1)
    for r in rows:
        r["vs_full"] = round(r["images_per_s"] / base["images_per_s"], 3)
    return {"model": spec["model"], "output": spec["output"], "rows": rows}


def round_robin_variants() -> list[list]:
    """``[keep, input_pool]`` of the round-robin runs: every pattern at 1, random ones also f."""
    out = []
    for keep in KEEPS:
        out.append([keep, 1])
        if keep in RANDOM_KEEP:
            out.append([keep, pointctx.models.input_pool_for_keep(RANDOM_KEEP[keep])])
    return out


def run_round_robin(args, models) -> int:
    """The ``--round-robin`` mode: one subprocess per model and output; table and JSON."""
    out = args.out if args.out != DEFAULT_OUT else ROUND_ROBIN_OUT
    result = {"benchmark": "segmentation_input_pool",
              "conditions": {"size": list(args.size), "batch": args.batch,
                             "threads": args.threads, "rounds": args.iters, "device": "cpu",
                             "cpu": cpu_name(), "torch": torch.__version__,
                             "pointctx": pointctx.__version__,
                             "timing": "one subprocess per model and output: one warm-up call "
                             "per variant, then --iters rounds over all variants; median",
                             "load_avg_1_5_15_at_start": [round(v, 2) for v in
                                                          os.getloadavg()]},
              "runs": []}
    for model in models:
        for output in ("dense", "points"):
            spec = {"model": model, "output": output, "variants": round_robin_variants()}
            t0 = time.perf_counter()
            got = measure(spec, args, "round-robin")
            got.update(wall_s=round(time.perf_counter() - t0, 1),
                       load_avg_1=round(os.getloadavg()[0], 2))
            result["runs"].append(got)
            atomic_write_json(out, result)
    result["conditions"]["load_avg_1_5_15_at_end"] = [round(v, 2) for v in os.getloadavg()]
    atomic_write_json(out, result)
    lines = [f"round robin, {args.size[0]}x{args.size[1]}, batch {args.batch}, "
             f"{args.threads} thread(s), median of {args.iters} rounds",
             f"{'model':<15} {'output':<7} {'keep':<9} {'pool':>4} {'img/s':>7} {'vs full':>7}"]
    for run in result["runs"]:
        if "error" in run:
            lines.append(f"{run.get('model', '?'):<15} error: {run['error']}")
            continue
        for r in run["rows"]:
            lines.append(f"{run['model']:<15} {run['output']:<7} {r['keep']:<9} "
                         f"{r['input_pool']:>4} {r['images_per_s']:>7.2f} {r['vs_full']:>7.2f}")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


def measure(case: dict, args, what: str) -> dict:
    """Run :func:`child` for one case in a fresh subprocess; returns its dict or an error."""
    cmd = [sys.executable, __file__, "--child", "--what", what, "--case", json.dumps(case),
           "--iters", str(args.iters), "--batch", str(args.batch), "--threads",
           str(args.threads), "--size", f"{args.size[0]}x{args.size[1]}"]
    return run_child(cmd, what, args.row_timeout)


# --------------------------------------------------------------------------- parent
def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 360x480, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"H and W must be >= 8, got {text!r}")
    return h, w


def add_ratios(rows: list[dict]) -> None:
    """``vs_full``: throughput over the same model and output at keep ``full``, no pooling."""
    for r in rows:
        base = next((b for b in rows if b["status"] == "ok" and b["keep"] == "full"
                     and b.get("input_pool", 1) == 1
                     and b["model"] == r["model"] and b["output"] == r["output"]
                     and b["input"] == r["input"]), None)
        if r["status"] == "ok" and base is not None:
            r["vs_full"] = round(r["images_per_s"] / base["images_per_s"], 3)


def format_table(rows, batch, threads, size) -> str:
    """The printed table."""
    head = (f"{'model':<15} {'keep':<9} {'output':<7} {'pool':>4} {'params':>10} {'img/s':>7} "
            f"{'vs full':>7} {'peak MiB':>9} {'backbone':>9} {'head':>6} {'upsample':>9}")
    lines = [f"inference, {size[0]}x{size[1]}, batch {batch}, cpu, {threads} thread(s); "
             "time split in % of the total", head, "-" * len(head)]
    for r in rows:
        pool = r.get("input_pool", 1) if "input_pool" in r else "-"
        name = f"{r['model']:<15} {r['keep']:<9} {r['output']:<7} {pool:>4}"
        if r["status"] != "ok":
            lines.append(f"{name} {r['status']}: {r.get('error', '')}")
            continue
        split = ["-", "-", "-"]
        if "backbone_s" in r:
            tot = r["median_batch_s"]
            bb, head = r["backbone_s"], r["backbone_head_s"] - r["backbone_s"]
            up = tot - r["backbone_head_s"]
            split = [f"{100 * v / tot:.0f}" for v in (bb, head, up)]
        ratio = f"{r['vs_full']:.2f}" if "vs_full" in r else "-"
        lines.append(f"{name} {r['params']:>10,} {r['images_per_s']:>7.2f} {ratio:>7} "
                     f"{r['peak_mib']:>9.1f} {split[0]:>9} {split[1]:>6} {split[2]:>9}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the benchmark (or, with ``--child``, one case); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--points" in argv:  # the point-cloud rows: bench/segmentation_points.py
        from segmentation_points import main as points_main

        return points_main([a for a in argv if a != "--points"])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 timed forward per case (default 3)")
    p.add_argument("--batch", type=positive_int, default=2)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--size", type=_size, default=(360, 480), help="HxW (default 360x480)")
    p.add_argument("--cases", default="",
                   help="comma-separated model names: run only their cases (default all)")
    p.add_argument("--iters", type=positive_int, default=None)
    p.add_argument("--row-timeout", type=positive_int, default=1800)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--what", choices=("time", "memory", "round-robin"), help=argparse.SUPPRESS)
    p.add_argument("--round-robin", action="store_true",
                   help="robust throughput ratios: all keep / input_pool variants of a point "
                   "model timed in turn in one process")
    args = p.parse_args(argv)
    if args.iters is None:
        args.iters = (2 if args.quick else 7) if args.round_robin else (1 if args.quick else 3)
    if args.child:
        run = child_round_robin if args.what == "round-robin" else child
        print(json.dumps(run(args)))
        return 0
    wanted = {v.strip() for v in args.cases.split(",") if v.strip()}
    if args.round_robin:
        unknown = wanted - set(POINT_MODELS)
        if unknown:
            p.error(f"argument --cases: --round-robin runs the point models only, got "
                    f"{sorted(unknown)}; choose from {list(POINT_MODELS)}")
        return run_round_robin(args, [m for m in POINT_MODELS if not wanted or m in wanted])
    known = set(pointctx.list_models())
    unknown = wanted - {c["model"] for c in CASES}
    if unknown:
        p.error(f"argument --cases: no cases for {sorted(unknown)}; choose from "
                f"{sorted({c['model'] for c in CASES})}")
    rows = []
    for c in CASES:
        if wanted and c["model"] not in wanted:
            continue
        row = {**c, "status": "pending"}
        if c["model"] not in known:
            row.update(status="skipped", error=f"{c['model']} is not registered")
        rows.append(row)
    result = {
        "benchmark": "segmentation",
        "conditions": {
            "size": list(args.size), "batch": args.batch, "threads": args.threads,
            "iters": args.iters, "device": "cpu", "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "pointctx": pointctx.__version__,
            "ops_backend_knn": pointctx.ops.resolve_backend(None, "knn", torch.device("cpu")),
            "mode": "model.eval(), torch.no_grad(), float32, seeded random N(0, 1) images",
            "timing": "fresh subprocess per case: one warm-up forward, then the timed "
            "forwards; images/s = batch / median",
            "memory_method": MEMORY_METHOD,
            "load_avg_1_5_15_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "rows": rows,
    }
    t_start = time.perf_counter()
    todo = [r for r in rows if r["status"] == "pending"]
    for r in tqdm(todo, desc="segmentation", disable=args.no_progress, dynamic_ncols=True):
        case = {k: r[k] for k in ("model", "input", "keep", "output", "input_pool") if k in r}
        t0 = time.perf_counter()
        got = measure(case, args, "time")
        if "error" not in got:
            mem = measure(case, args, "memory")
            got = {**mem, **got} if "error" not in mem else mem
        r["row_wall_s"] = round(time.perf_counter() - t0, 1)
        r["load_avg_1"] = round(os.getloadavg()[0], 2)
        r.update(status="error", error=got["error"]) if "error" in got else r.update(
            status="ok", **got)
        tqdm.write(f"{case['model']} {case['keep']} {case['output']} "
                   f"f={case.get('input_pool', 1)}: "
                   + (f"{r['images_per_s']:.2f} img/s, peak {r['peak_mib']:.1f} MiB"
                      if r["status"] == "ok" else r["error"]) + f" ({r['row_wall_s']} s)")
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        atomic_write_json(args.out, result)  # partial results survive an interrupted run
    add_ratios(rows)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["conditions"]["load_avg_1_5_15_at_end"] = [round(v, 2) for v in os.getloadavg()]
    atomic_write_json(args.out, result)
    print(format_table(rows, args.batch, args.threads, args.size))
    print(f"wrote {args.out} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
