"""Benchmark: the pixel-set reducers, set norms and input packing against their dense equivalents.

On full images (coc_tiny at 224x224, B = 16 by default) pointctx's pixel-set layers should cost
about what the official dense layers cost:

* ``reducers``: the four :class:`~pointctx.nn.PointReducer` of ``coc_tiny`` chained (4x4 stem,
  then three 3x3 stride-2 reducers), against the same four strided ``nn.Conv2d`` on NCHW tensors
  (the official model's stem and downsampling layers);
* ``norm C``: :class:`~pointctx.nn.SetGroupNorm` on the packed points of each stage against
  ``nn.GroupNorm(1, C)`` on the NCHW tensor of the same size; inference and forward+backward;
* ``pack``: :func:`pointctx.models._inputs.pack_input` of the image tensor (features with the
  positions appended, as the models' stems take them) against ``torch.cat`` of the image and
  two position planes (what the official model does).

Each pair alternates over ``--repeats`` calls after one warm-up; median ms. Results go to
``bench/results/stem.json``. Usage::

    python bench/stem.py [--batch 16] [--size 224] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

from pointctx import create_model
from pointctx.models._inputs import pack_input
from pointctx.nn import SetGroupNorm
from pointctx.train import atomic_write_json

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import alternate, conditions  # noqa: E402  (bench/)

DEFAULT_OUT = ROOT / "results" / "stem.json"


def alternate_ms(fns: dict, repeats: int) -> dict:
    """Median ms of each callable, calls alternating, after one warm-up each."""
    return {k: 1e3 * s for k, s in alternate(fns, repeats).items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, s = args.batch, args.size
    model = create_model("coc_tiny").eval()
    images = torch.randn(b, 3, s, s)
    planes = torch.randn(b, 2, s, s)
    rows = []

    def row(name, mode, med):
        ratio = med["pointctx"] / med["dense"]
        rows.append({"part": name, "mode": mode, "pointctx_ms": med["pointctx"],
                     "dense_ms": med["dense"], "pointctx_over_dense": ratio})
        print(f"{name:<12} {mode:<6} {med['pointctx']:>11.1f} {med['dense']:>9.1f} "
              f"{ratio:>8.2f}", flush=True)

    print(f"coc_tiny layers, B={b}, {s}x{s}, threads={args.threads}, repeats={args.repeats}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'part':<12} {'mode':<6} {'pointctx ms':>11} {'dense ms':>9} {'ratio':>8}")
    with torch.no_grad():
        packed = pack_input(images, append_pos=True)
        convs = [nn.Conv2d(r.in_dim, r.out_dim, r.kernel_size, r.stride, r.padding)
                 for r in model.reducers]
        dense_in = torch.cat([images, planes], 1)

        def ours():
            f, pos, batch = packed.x, packed.plane, packed.batch
            coords, grid = packed.coords, packed.grid_size
            for red in model.reducers:
                o = red(f, pos, batch, b, coords, grid)
                f, pos, batch, coords, grid = o.x, o.pos, o.batch, o.coords, o.grid_size

        def dense():
            x = dense_in
            for conv in convs:
                x = conv(x)

        row("reducers", "infer", alternate_ms({"pointctx": ours, "dense": dense}, args.repeats))
        row("pack", "infer", alternate_ms({
            "pointctx": lambda: pack_input(images, append_pos=True),
            "dense": lambda: torch.cat([images, planes], 1)}, args.repeats))

    side = s // 4
    for c in model.embed_dims:
        n = side * side
        x = torch.randn(b * n, c, requires_grad=True)
        batch = torch.arange(b).repeat_interleave(n)
        xi = torch.randn(b, c, side, side, requires_grad=True)
        ours_norm, ref = SetGroupNorm(c), nn.GroupNorm(1, c)
        with torch.no_grad():
            row(f"norm {c}", "infer", alternate_ms({
                "pointctx": lambda: ours_norm(x, batch, b),  # noqa: B023
                "dense": lambda: ref(xi)}, args.repeats))  # noqa: B023
        gx, gi = torch.randn(b * n, c), torch.randn(b, c, side, side)
        row(f"norm {c}", "train", alternate_ms({
            "pointctx": lambda: ours_norm(x, batch, b).backward(gx),  # noqa: B023
            "dense": lambda: ref(xi).backward(gi)}, args.repeats))  # noqa: B023
        side = -(-side // 2)
    atomic_write_json(args.out, {
        "benchmark": "stem", "batch": b, "size": s, "threads": args.threads,
        "repeats": args.repeats, **conditions(), "results": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
