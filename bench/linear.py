"""Benchmark: the models' dense products on aten (MKL) against oneDNN, per shape and per step.

Every point-wise layer of the models is one call of :func:`pointctx.ops.linear.linear`. This
script records the product shapes of one forward pass of each model (rows x in -> out, with
how often each occurs), then times each shape forward + backward (input, weight and bias
gradients) with the ``"aten"`` and the ``"onednn"`` backend, calls alternating, and reports
GFLOP/s (3 products of 2 * rows * in * out flops) and the ratio. Then it times whole steps of
each model with ``"aten"`` against the default ``"auto"`` backend (training: forward, loss,
backward, SGD step; inference: forward under ``torch.no_grad``). Inputs are those of
``bench/peers.py`` (images ``[B, 3, 224, 224]`` for coc_tiny, ``B`` clouds of 1,024 points for
pointmlp_elite). Results go to ``bench/results/linear.json``. Usage::

    python bench/linear.py [--models coc_tiny pointmlp_elite] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from pointctx.train import atomic_write_json

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import alternate, conditions  # noqa: E402  (bench/)
from profile_step import build  # noqa: E402  (bench/)

L = importlib.import_module("pointctx.ops.linear")  # the module; pointctx.ops.linear is the op
DEFAULT_OUT = ROOT / "results" / "linear.json"
DEFAULT_BATCH = {"coc_tiny": 16, "pointmlp_elite": 32}


def record_shapes(model, inp) -> collections.Counter:
    """(rows, in, out, has_bias) -> calls, for one forward pass of ``model``."""
    shapes = collections.Counter()
    real = L._use_onednn

    def spy(backend, x, weight, bias):
        if x.dim() >= 1 and x.shape[-1] > 0:
            rows = x.numel() // x.shape[-1]
            shapes[(rows, weight.shape[1], weight.shape[0], bias is not None)] += 1
        return real(backend, x, weight, bias)

    L._use_onednn = spy
    try:
        with torch.no_grad():
            model(inp)
    finally:
        L._use_onednn = real
    return shapes


def time_shape(rows, cin, cout, has_bias, repeats) -> dict:
    """Median ms of forward + backward of one product shape, per backend."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cin, generator=g, requires_grad=True)
    w = torch.randn(cout, cin, generator=g, requires_grad=True)
    b = torch.randn(cout, generator=g, requires_grad=True) if has_bias else None
    grad = torch.randn(rows, cout, generator=g)

    def run(backend):
        def fn():
            L.linear(x, w, b, backend=backend).backward(grad)
            x.grad = w.grad = None
            if b is not None:
                b.grad = None
        return fn

    med = alternate({"aten": run("aten"), "onednn": run("onednn")}, repeats)
    return {k: 1e3 * v for k, v in med.items()}


def time_steps(model, inp, labels, repeats) -> dict:
    """Median ms of a training step and of inference, ``aten`` against ``auto``."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def train(backend):
        def fn():
            with L.use_linear_backend(backend):
                model.train()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(inp), labels).backward()
                opt.step()
        return fn

    def infer(backend):
        def fn():
            with L.use_linear_backend(backend), torch.no_grad():
                model.eval()
                model(inp)
        return fn

    out = {}
    for mode, make in (("infer", infer), ("train", train)):
        med = alternate({"aten": make("aten"), "auto": make("auto")}, repeats)
        out[mode] = {k: 1e3 * v for k, v in med.items()}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_BATCH))
    p.add_argument("--batch", type=int, default=None,
                   help="batch size for every model (default: 16 for coc_tiny, 32 otherwise)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-steps", action="store_true", help="only the per-shape products")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not L.onednn_linear_available():
        raise SystemExit("this PyTorch build has no oneDNN (torch.backends.mkldnn): nothing to "
                         "compare")
    result = {"conditions": {**conditions(), "threads": args.threads,
                             "repeats": args.repeats, "cpu_vendor": L._cpu_vendor(),
                             "auto_prefers_onednn": L._auto_prefers_onednn()},
              "models": {}}
    print(f"auto -> oneDNN on this machine: {L._auto_prefers_onednn()} "
          f"(CPU vendor {L._cpu_vendor()}, products >= {L.ONEDNN_MIN_MACS} multiply-adds)")
    for name in args.models:
        batch = args.batch or DEFAULT_BATCH.get(name, 32)
        model, inp, labels = build(name, batch)
        shapes = record_shapes(model, inp)
        print(f"\n{name} (B = {batch}): {sum(shapes.values())} products, {len(shapes)} shapes; "
              "forward + backward, median ms")
        print(f"{'rows':>8} {'in':>5} {'out':>5} {'calls':>5} {'aten ms':>9} {'oneDNN ms':>10} "
              f"{'aten GF/s':>10} {'oneDNN GF/s':>12} {'speed-up':>9}")
        rows_out, tot = [], {"aten": 0.0, "onednn": 0.0}
        for (rows, cin, cout, has_bias), calls in sorted(shapes.items(), key=lambda kv: -(
                kv[0][0] * kv[0][1] * kv[0][2] * kv[1])):
            ms = time_shape(rows, cin, cout, has_bias, args.repeats)
            flops = 3 * 2 * rows * cin * cout
            gf = {k: flops / (v * 1e-3) / 1e9 for k, v in ms.items()}
            for k in tot:
                tot[k] += calls * ms[k]
            rows_out.append({"rows": rows, "in": cin, "out": cout, "bias": has_bias,
                             "calls": calls, "ms": ms, "gflops": gf})
            print(f"{rows:>8} {cin:>5} {cout:>5} {calls:>5} {ms['aten']:>9.2f} "
                  f"{ms['onednn']:>10.2f} {gf['aten']:>10.1f} {gf['onednn']:>12.1f} "
                  f"{ms['aten'] / ms['onednn']:>8.2f}x")
        print(f"{'all products, weighted by calls':>34} {tot['aten']:>9.1f} {tot['onednn']:>10.1f}"
              f" {'':>23} {tot['aten'] / tot['onednn']:>8.2f}x")
        entry = {"batch": batch, "shapes": rows_out, "products_ms": tot}
        if not args.no_steps:
            steps = time_steps(model, inp, labels, args.repeats)
            entry["steps_ms"] = steps
            for mode, ms in steps.items():
                print(f"{name} {mode} step: aten {ms['aten']:.1f} ms, auto {ms['auto']:.1f} ms "
                      f"({ms['aten'] / ms['auto']:.2f}x)")
        result["models"][name] = entry
    result["conditions"] = {**result["conditions"], **conditions()}
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
