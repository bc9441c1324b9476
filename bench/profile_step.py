"""Profile: where one training (or inference) step of a pointctx model spends its CPU time.

Runs one step of ``--model`` under :mod:`torch.profiler` (after ``--warmup`` untimed steps) and
groups the operators' self CPU time into categories (matrix products, BatchNorm / GroupNorm,
activations, element-wise, copies, reductions, gathers / scatters, ...), the shares the
speed issue asked for "before and after". The inputs are those of ``bench/peers.py``: images
``[B, 3, 224, 224]`` for the CoC models, ``B`` clouds of 1,024 points uniform in ``[-1, 1]^3``
for the point models. Results go to ``bench/results/profile_<model>_<mode>.json``. Usage::

    python bench/profile_step.py --model pointmlp_elite --mode train [--batch 32] [--top 15]

To compare with an older tree, run the same command from a checkout of that commit (the script
only needs ``pointctx.create_model``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from pointctx import PointBatch, create_model
from pointctx.train import atomic_write_json

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import conditions  # noqa: E402  (bench/)

# operator name -> category (the first matching rule wins; unmatched operators: "other")
CATEGORIES = [
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                         "aten::mkldnn_convolution", "aten::convolution_backward",
                         "aten::_convolution", "aten::linear", "mkldnn::_linear_pointwise")),
    ("BatchNorm / GroupNorm / LayerNorm", ("batch_norm", "group_norm", "layer_norm")),
    ("activations (fwd + bwd)", ("aten::gelu", "aten::relu", "aten::threshold",
                                 "aten::clamp_min", "aten::sigmoid", "gelu_backward",
                                 "threshold_backward", "sigmoid_backward")),
    ("copies / casts / fills", ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::fill_",
                                "aten::zero_", "aten::cat", "aten::contiguous")),
    ("reductions (sum, max, norm)", ("aten::sum", "aten::amax", "aten::max", "aten::mean",
                                     "aten::linalg_vector_norm", "aten::var", "aten::std",
                                     "aten::argmax", "aten::sort", "aten::topk")),
    ("gathers / scatters", ("aten::index", "aten::index_select", "aten::index_add",
                            "aten::scatter", "aten::gather", "aten::_index_put_impl_",
                            "aten::index_put", "aten::masked_fill", "aten::nonzero")),
    ("element-wise arithmetic", ("aten::mul", "aten::add", "aten::sub", "aten::div",
                                 "aten::neg", "aten::where", "aten::addcmul", "aten::pow",
                                 "aten::eq", "aten::gt", "aten::lt", "aten::ge", "aten::le",
                                 "aten::reciprocal", "aten::sqrt", "aten::rsqrt",
                                 "aten::maximum", "aten::minimum", "aten::clamp")),
    ("kNN / FPS kernels", ("torch_cluster::", "knn", "fps")),
]


def category(name: str) -> str:
    """The category of one profiler operator name (see :data:`CATEGORIES`)."""
    for cat, keys in CATEGORIES:
        if any(name.startswith(k) or (k in name and not k.startswith("aten::")) for k in keys):
            return cat
    return "other"


def build(model_name: str, batch: int):
    """(model, input, labels) as ``bench/peers.py`` builds them."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if model_name.startswith("coc"):
        images = torch.randn(batch, 3, 224, 224, generator=g)
        return create_model(model_name), images, torch.randint(0, 1000, (batch,), generator=g)
    pos = torch.rand(batch, 1024, 3, generator=g) * 2 - 1
    model = create_model(model_name, num_classes=15)
    return model, PointBatch.from_padded(pos), torch.randint(0, 15, (batch,), generator=g)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="pointmlp_elite")
    p.add_argument("--mode", default="train", choices=["train", "infer"])
    p.add_argument("--batch", type=int, default=None,
                   help="sets per batch (default: 16 images for CoC, 32 clouds otherwise)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=12, help="operators listed by self time")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batch = args.batch or (16 if args.model.startswith("coc") else 32)
    model, inputs, labels = build(args.model, batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        if args.mode == "train":
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs), labels).backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model(inputs)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    step()
    step_ms = 1e3 * (time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()]
    total = sum(ms for _, ms, _ in ops)
    shares = defaultdict(float)
    for name, ms, _ in ops:
        shares[category(name)] += ms
    rows = sorted(shares.items(), key=lambda kv: -kv[1])
    top = sorted(ops, key=lambda o: -o[1])[:args.top]
    print(f"{args.model} {args.mode}, B = {batch}, {args.threads} thread(s): step "
          f"{step_ms:.0f} ms unprofiled, {total:.0f} ms self CPU time profiled")
    print(f"{'category':38s} {'ms':>9s} {'share':>7s}")
    for cat, ms in rows:
        print(f"{cat:38s} {ms:9.1f} {100 * ms / total:6.1f}%")
    print(f"\n{'operator':38s} {'ms':>9s} {'share':>7s} {'calls':>6s}")
    for name, ms, count in top:
        print(f"{name[:38]:38s} {ms:9.1f} {100 * ms / total:6.1f}% {count:6d}")
    out = args.out or ROOT / "results" / f"profile_{args.model}_{args.mode}.json"
    atomic_write_json(out, {
        "conditions": {**conditions(), "threads": args.threads, "batch": batch},
        "model": args.model, "mode": args.mode, "step_ms_unprofiled": step_ms,
        "profiled_self_cpu_ms": total,
        "categories": {cat: {"ms": ms, "share": ms / total} for cat, ms in rows},
        "top_operators": [{"name": n, "ms": ms, "share": ms / total, "calls": c}
                          for n, ms, c in top],
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
