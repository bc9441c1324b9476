"""Benchmark: segmentation models on full and partial inputs: throughput, peak memory, time split.

Every row of the table is one *case* (``CASES``: model, input builder, keep pattern, output
mode); add rows (e.g. point clouds) by appending cases, and new input kinds by adding a builder
to ``INPUTS``. The default cases, at 360 x 480 (CamVid), batch B (default 2):

* ``coc_tiny_seg`` and the CPU-sized ``coc_micro_seg`` (point-set models) with

  - keep patterns ``full`` (every pixel), ``random25`` (25 % of the pixels, uniformly at
    random) and ``region25`` (a centred rectangle of 25 % of the image: an irregular input
    region);
  - output ``dense``: ``model(images, mask)`` -> logits for *every* pixel ``[B, K, H, W]``
    (the missing ones predicted from the kept ones), and ``points``: ``model(point_batch)`` ->
    logits at the kept pixels only;

* the CNN baselines ``unet_cpu_seg`` and ``unet_seg`` (missing pixels zero-filled + a mask
  channel; always every pixel).

``vs full`` is a row's throughput over the same model and output at ``full``, measured in the
same run. For the point-set models the time is split into the backbone (``forward_stages``),
the Semantic-FPN head at the finest stage (laterals, propagation of every stage to the finest
one, MLP, classifier) and the final interpolation of the logits to the queries (every pixel or
the kept ones); each part is a median of its own timed runs (``total`` is measured separately,
so the parts need not add up exactly).

Every row runs in two fresh subprocesses (timing, then memory), each after one warm-up forward:
images/s = B / median of ``--iters`` forwards; peak memory as ``bench/models.py`` measures it
(``VmHWM`` after one forward minus ``VmRSS`` before, glibc mmap threshold 128 KiB).
Threads: ``--threads`` (default 1).

Point clouds: ``--points`` runs the point-cloud rows instead (``bench/segmentation_points.py``:
``pointmlp_partseg`` / ``pointmlp_coc_partseg`` at B = 16 x 2,048 points, inference and
training step, time shares of FPS, kNN, grouping and feature propagation, optionally the
official part-seg model for comparison); its options are that script's.

Usage::

    python bench/segmentation.py [--quick] [--batch 2] [--threads 1] [--size 360x480]
        [--cases coc_tiny_seg,unet_cpu_seg] [--out bench/results/segmentation.json]
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
from pointctx.train import cli as T

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import MEMORY_METHOD, cpu_name, cpu_peak_bytes, run_child  # noqa: E402  (bench/)

DEFAULT_OUT = ROOT / "results" / "segmentation.json"
POINT_MODELS = ("coc_tiny_seg", "coc_micro_seg")
CNN_MODELS = ("unet_cpu_seg", "unet_seg")
KEEPS = ("full", "random25", "region25")


def _cases() -> list[dict]:
    """The default rows: (model, input kind, keep pattern, output mode)."""
    cases = []
    for model in POINT_MODELS:
        for output in ("dense", "points"):
            for keep in KEEPS:
                cases.append({"model": model, "input": "image", "keep": keep, "output": output})
    for model in CNN_MODELS:
        for keep in KEEPS:
            cases.append({"model": model, "input": "image", "keep": keep, "output": "dense"})
    return cases


CASES = _cases()


# --------------------------------------------------------------------------- inputs
def _mask(keep: str, b: int, h: int, w: int) -> torch.Tensor | None:
    if keep == "full":
        return None
    if keep == "random25":
        g = torch.Generator().manual_seed(2)
        return torch.rand(b, h, w, generator=g) < 0.25
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
    if case["output"] == "dense":
        return (lambda: model(x, mask)), kept, (x, mask)
    pb = PointBatch.from_images(x, mask)
    return (lambda: model(pb)), kept, (pb, None)


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


def _split(model, inputs, mask, iters: int, image_size) -> dict:
    """Median seconds of the backbone and of backbone + head at the finest stage."""
    backbone = _median_s(lambda: model.backbone.forward_stages(inputs, mask), iters)

    def fpn():
        stages = model.backbone.forward_stages(inputs, mask)
        model.head(stages, grids=model._grids(stages, image_size))

    return {"backbone_s": round(backbone, 4), "backbone_fpn_s": round(_median_s(fpn, iters), 4)}


def child(args) -> dict:
    """Measure one case in this process (``--what time`` or ``--what memory``)."""
    torch.set_num_threads(args.threads)
    case = json.loads(args.case)
    torch.manual_seed(0)
    model = pointctx.create_model(case["model"]).eval()
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
            res.update(_split(model, inputs, mask, args.iters, args.size))
    return res


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
    """``vs_full``: throughput over the same model and output at keep ``full``."""
    for r in rows:
        base = next((b for b in rows if b["status"] == "ok" and b["keep"] == "full"
                     and b["model"] == r["model"] and b["output"] == r["output"]
                     and b["input"] == r["input"]), None)
        if r["status"] == "ok" and base is not None:
            r["vs_full"] = round(r["images_per_s"] / base["images_per_s"], 3)


def format_table(rows, batch, threads, size) -> str:
    """The printed table."""
    head = (f"{'model':<15} {'keep':<9} {'output':<7} {'params':>10} {'img/s':>7} "
            f"{'vs full':>7} {'peak MiB':>9} {'backbone':>9} {'FPN':>6} {'upsample':>9}")
    lines = [f"inference, {size[0]}x{size[1]}, batch {batch}, cpu, {threads} thread(s); "
             "time split in % of the total", head, "-" * len(head)]
    for r in rows:
        name = f"{r['model']:<15} {r['keep']:<9} {r['output']:<7}"
        if r["status"] != "ok":
            lines.append(f"{name} {r['status']}: {r.get('error', '')}")
            continue
        split = ["-", "-", "-"]
        if "backbone_s" in r:
            tot = r["median_batch_s"]
            bb, fpn = r["backbone_s"], r["backbone_fpn_s"] - r["backbone_s"]
            up = tot - r["backbone_fpn_s"]
            split = [f"{100 * v / tot:.0f}" for v in (bb, fpn, up)]
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
    p.add_argument("--batch", type=T.positive_int, default=2)
    p.add_argument("--threads", type=T.positive_int, default=1)
    p.add_argument("--size", type=_size, default=(360, 480), help="HxW (default 360x480)")
    p.add_argument("--cases", default="",
                   help="comma-separated model names: run only their cases (default all)")
    p.add_argument("--iters", type=T.positive_int, default=None)
    p.add_argument("--row-timeout", type=T.positive_int, default=1800)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--what", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.iters is None:
        args.iters = 1 if args.quick else 3
    if args.child:
        print(json.dumps(child(args)))
        return 0
    wanted = {v.strip() for v in args.cases.split(",") if v.strip()}
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
        case = {k: r[k] for k in ("model", "input", "keep", "output")}
        t0 = time.perf_counter()
        got = measure(case, args, "time")
        if "error" not in got:
            mem = measure(case, args, "memory")
            got = {**mem, **got} if "error" not in mem else mem
        r["row_wall_s"] = round(time.perf_counter() - t0, 1)
        r["load_avg_1"] = round(os.getloadavg()[0], 2)
        r.update(status="error", error=got["error"]) if "error" in got else r.update(
            status="ok", **got)
        tqdm.write(f"{case['model']} {case['keep']} {case['output']}: "
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
