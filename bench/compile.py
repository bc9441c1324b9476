"""Benchmark: ``pointctx.compile`` (torch.compile, dynamic shapes) against eager, per model.

For each model (default: ``coc_mnist`` on 28x28 images, ``pointmlp_elite`` on point clouds,
``cluenet_micro_cifar`` on 32x32 images) and mode (inference under ``no_grad`` in ``eval()``;
training = forward, cross-entropy, backward, SGD step in ``train()``):

* compile time: the first compiled call, minus one eager call;
* eager and compiled median time over ``--repeats`` calls, alternating, on batches whose sizes
  change from call to call (ragged point counts, or images with different batch sizes), so a
  recompilation per shape would show up: ``graphs`` is the number of graphs compiled on the
  first call (graph breaks split the model), ``new`` those compiled for the other shapes;
* ``speed-up`` = eager / compiled.

Results go to ``bench/results/compile.json``. Usage::

    python bench/compile.py [--models coc_mnist pointmlp_elite] [--backend inductor]
        [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import pointctx
from pointctx import PointBatch, create_model
from pointctx.train import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import conditions  # noqa: E402  (bench/)

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "compile.json"
MODELS = ["coc_mnist", "pointmlp_elite", "cluenet_micro_cifar"]


def make_inputs(name: str, count: int, batch: int):
    """``count`` (inputs, labels) pairs whose shapes differ from one to the next."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(count):
        if name.startswith("pointmlp"):
            n = [512, 480, 544][i % 3]
            pb = PointBatch.from_padded(torch.rand(batch, n, 3, generator=g) * 2 - 1)
            out.append((pb, torch.randint(0, 15, (batch,), generator=g)))
        else:
            side, ch = (28, 1) if name == "coc_mnist" else (32, 3)
            b = batch + (i % 2)
            out.append((torch.randn(b, ch, side, side, generator=g),
                        torch.randint(0, 10, (b,), generator=g)))
    return out


def _model(name):
    kw = {"num_classes": 15, "drop_rate": 0.0} if name.startswith("pointmlp") else {}
    torch.manual_seed(0)
    return create_model(name, **kw)


def run(name, mode, args):
    from torch._dynamo.utils import counters

    model = _model(name)
    compiled = pointctx.compile(model, backend=args.backend)
    batches = make_inputs(name, 3, args.batch if not name.startswith("pointmlp") else 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def call(m, inp, lab):
        if mode == "infer":
            model.eval()
            with torch.no_grad():
                m(inp)
        else:
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(inp), lab).backward()
            opt.step()

    t0 = time.perf_counter()
    call(model, *batches[0])
    eager_first = time.perf_counter() - t0
    counters.clear()
    t0 = time.perf_counter()
    call(compiled, *batches[0])
    compile_s = time.perf_counter() - t0 - eager_first
    graphs = int(counters["stats"].get("unique_graphs", 0))
    for inp, lab in batches[1:]:  # other shapes: dynamic graphs should not recompile
        call(compiled, inp, lab)
    times = {"eager": [], "compiled": []}
    for i in range(args.repeats):
        inp, lab = batches[i % len(batches)]
        for key, m in (("eager", model), ("compiled", compiled)):
            t0 = time.perf_counter()
            call(m, inp, lab)
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "mode": mode, "compile_s": compile_s, "eager_s": med["eager"],
            "compiled_s": med["compiled"], "speedup": med["eager"] / med["compiled"],
            "graphs": graphs, "graph_breaks": sum(counters["graph_break"].values()),
            "new_graphs_for_other_shapes": int(counters["stats"].get("unique_graphs", 0))
            - graphs}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    p.add_argument("--backend", default="inductor")
    p.add_argument("--batch", type=int, default=16, help="images per batch (clouds: 8)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"backend={args.backend}, threads={args.threads}, repeats={args.repeats}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'model':<22} {'mode':<6} {'compile s':>9} {'eager ms':>9} {'compiled ms':>11} "
          f"{'speed-up':>8} {'graphs':>6} {'new':>4}")
    rows = []
    for name in args.models:
        for mode in args.modes:
            r = run(name, mode, args)
            rows.append(r)
            print(f"{name:<22} {mode:<6} {r['compile_s']:>9.1f} {1e3 * r['eager_s']:>9.1f} "
                  f"{1e3 * r['compiled_s']:>11.1f} {r['speedup']:>8.2f} {r['graphs']:>6} "
                  f"{r['new_graphs_for_other_shapes']:>4}",
                  flush=True)
            torch._dynamo.reset()
    atomic_write_json(args.out, {
        "benchmark": "compile", "backend": args.backend, "threads": args.threads,
        "repeats": args.repeats, **conditions(), "results": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
