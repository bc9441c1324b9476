"""Benchmark: pointctx against the official Context-Cluster and PointMLP code, side by side.

The official code is never copied into pointctx and this script fetches nothing: it runs your own
checkouts of the official repositories, given by path::

    git clone https://github.com/ma-xu/Context-Cluster
    git clone https://github.com/ma-xu/pointMLP-pytorch
    python bench/peers.py --coc-repo Context-Cluster --pointmlp-repo pointMLP-pytorch

Without them it prints these instructions and exits (status 0, nothing measured). The official
code needs ``einops`` (and ``timm``, see below) in the same environment; pointctx must be
importable too. Both models run in one process, with the same threads, on the same inputs, the
two candidates alternating every repeat; the table gives median times and
``official / pointctx`` (above 1: pointctx is faster).

What is changed in the official code, at run time only (the files are not modified):

* PointMLP's farthest point sampling is a CUDA extension (``pointnet2_ops``). When it cannot be
  imported, a pure-torch ``pointnet2_ops.pointnet2_utils.furthest_point_sample`` is registered:
  the iterative algorithm of the official ``farthest_point_sample`` but starting at point 0, as
  the CUDA kernel does (the official pure-torch copy starts at a random point). The
  Context-Cluster point-cloud model (``pointMLP_CoC``) then uses the same function.
* ``models/context_cluster.py`` imports five names from ``timm`` 0.6.13 (``DropPath``,
  ``trunc_normal_``, ``register_model``, ``to_2tuple``, the ImageNet mean/std). When ``timm``
  cannot be imported (timm 0.6.13 needs a ``torchvision`` built for the installed torch),
  stand-ins with the same behaviour for these names are registered (``DropPath`` at rate 0 is
  the identity; the benchmark models use drop-path rate 0).

Cases (1000 classes for the image models, 15 for the point models, as in the official fixtures):

* ``coc_tiny``: images ``[B, 3, 224, 224]`` (default B = 16); the official model takes the
  tensor, pointctx the same tensor (packing included in its time). pointctx's default
  ``windows="adaptive"`` reproduces the official overlapping ``AdaptiveAvgPool2d`` center
  windows exactly; ``coc_tiny_partition`` is pointctx with ``windows="partition"`` (centers
  partition each region, the cheaper documented deviation).
* ``pointmlp_elite``, ``pointmlp``, ``pointmlp_coc``: B clouds of 1024 points (default B = 32);
  the official models take ``[B, 3, N]``, pointctx a ``PointBatch`` built once.

Inference: ``eval()`` forward under ``torch.no_grad``. Training: ``train()`` forward,
cross-entropy, backward, SGD step. Results go to ``bench/results/peers.json``.

Usage::

    python bench/peers.py --coc-repo PATH --pointmlp-repo PATH [--cases coc_tiny pointmlp_elite]
        [--repeats 5] [--threads 1] [--batch-images 16] [--batch-points 32]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pointctx import PointBatch, create_model
from pointctx.train import atomic_write_json

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import alternate, conditions  # noqa: E402  (bench/)

DEFAULT_OUT = ROOT / "results" / "peers.json"
CASES = ["coc_tiny", "coc_tiny_partition", "pointmlp_elite", "pointmlp", "pointmlp_coc"]
HOWTO = """bench/peers.py needs your own checkouts of the official code (nothing is fetched):
    git clone https://github.com/ma-xu/Context-Cluster
    git clone https://github.com/ma-xu/pointMLP-pytorch
    pip install einops            # the official models import it
    python bench/peers.py --coc-repo Context-Cluster --pointmlp-repo pointMLP-pytorch"""


# ----------------------------------------------------------------------------------------------
# Run-time stand-ins for the official code's CUDA / heavy imports
# ----------------------------------------------------------------------------------------------


def furthest_point_sample(xyz, npoint):
    """Pure-torch FPS with the CUDA kernel's contract: ``[B, N, 3] -> [B, npoint]`` int32.

    The official iterative algorithm, starting at point 0 like the CUDA kernel.
    """
    b, n, _ = xyz.shape
    centroids = torch.zeros(b, npoint, dtype=torch.long, device=xyz.device)
    distance = torch.full((b, n), 1e10, device=xyz.device, dtype=xyz.dtype)
    farthest = torch.zeros(b, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    for i in range(npoint):
        centroids[:, i] = farthest
        centroid = xyz[rows, farthest, :].view(b, 1, 3)
        distance = torch.minimum(distance, ((xyz - centroid) ** 2).sum(-1))
        farthest = distance.max(-1)[1]
    return centroids.int()


def _install_fps_stub() -> str:
    try:
        import pointnet2_ops.pointnet2_utils  # noqa: F401
        return "pointnet2_ops (CUDA extension)"
    except ImportError:
        pkg = types.ModuleType("pointnet2_ops")
        utils = types.ModuleType("pointnet2_ops.pointnet2_utils")
        utils.furthest_point_sample = furthest_point_sample
        pkg.pointnet2_utils = utils
        sys.modules["pointnet2_ops"] = pkg
        sys.modules["pointnet2_ops.pointnet2_utils"] = utils
        return "pure-torch stand-in (bench/peers.py furthest_point_sample, start at point 0)"


class _DropPath(nn.Module):
    """timm's DropPath (per-sample stochastic depth)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def _install_timm_stub() -> str:
    try:
        import timm  # noqa: F401
        return f"timm {timm.__version__}"
    except ImportError:
        pass
    mods = {}
    for name in ["timm", "timm.data", "timm.models", "timm.models.layers",
                 "timm.models.layers.helpers", "timm.models.registry"]:
        mods[name] = sys.modules[name] = types.ModuleType(name)
    mods["timm.data"].IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
    mods["timm.data"].IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
    mods["timm.models.layers"].DropPath = _DropPath
    mods["timm.models.layers"].trunc_normal_ = nn.init.trunc_normal_
    mods["timm.models.layers.helpers"].to_2tuple = lambda x: tuple(x) if isinstance(
        x, (tuple, list)) else (x, x)
    mods["timm.models.registry"].register_model = lambda fn: fn
    return "stand-ins for 5 timm names (timm not importable)"


def _load(path: Path, name: str):
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # the official files import their siblings
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------


def _steps(model, inputs, labels):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def infer():
        model.eval()
        with torch.no_grad():
            model(inputs)

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), labels).backward()
        opt.step()

    return infer, train


def build_case(case, args):
    """(official model, official input, pointctx model, pointctx input, labels)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if case.startswith("coc_tiny"):
        off = _load(args.coc_repo / "models" / "context_cluster.py", "peer_context_cluster")
        images = torch.randn(args.batch_images, 3, 224, 224, generator=g)
        labels = torch.randint(0, 1000, (args.batch_images,), generator=g)
        kw = {"windows": "partition"} if case == "coc_tiny_partition" else {}
        return off.coc_tiny(), images, create_model("coc_tiny", **kw), images, labels
    pos = torch.rand(args.batch_points, 1024, 3, generator=g) * 2 - 1
    labels = torch.randint(0, 15, (args.batch_points,), generator=g)
    pb = PointBatch.from_padded(pos)
    if case == "pointmlp_coc":
        off = _load(args.coc_repo / "pointcloud" / "models" / "contextcluster.py",
                    "peer_pointmlp_coc")
        official = off.pointMLP_CoC(num_classes=15)
    else:
        off = _load(args.pointmlp_repo / "classification_ModelNet40" / "models" / "pointmlp.py",
                    "peer_pointmlp")
        official = (off.pointMLPElite if case == "pointmlp_elite" else off.pointMLP)(
            num_classes=15)
    return official, pos.transpose(1, 2).contiguous(), create_model(case, num_classes=15), pb, \
        labels


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--coc-repo", type=Path, default=None, help="checkout of ma-xu/Context-Cluster")
    p.add_argument("--pointmlp-repo", type=Path, default=None,
                   help="checkout of ma-xu/pointMLP-pytorch")
    p.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    p.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per candidate")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-images", type=int, default=16)
    p.add_argument("--batch-points", type=int, default=32)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()

    need = {"coc_tiny": "coc_repo", "coc_tiny_partition": "coc_repo", "pointmlp_coc": "coc_repo",
            "pointmlp": "pointmlp_repo", "pointmlp_elite": "pointmlp_repo"}
    missing = sorted({need[c] for c in args.cases if getattr(args, need[c]) is None
                      or not getattr(args, need[c]).is_dir()})
    try:
        import einops  # noqa: F401
    except ImportError:
        missing.append("einops")
    if missing:
        print(f"skipped: missing {', '.join(missing)}\n{HOWTO}")
        return 0
    torch.set_num_threads(args.threads)
    changes = {"fps": _install_fps_stub(), "timm": _install_timm_stub()}
    print(f"threads={args.threads}, repeats={args.repeats} (alternating), load "
          f"{os.getloadavg()[0]:.1f}; official FPS: {changes['fps']}; timm: {changes['timm']}")
    print(f"{'case':<16} {'mode':<6} {'official ms':>12} {'pointctx ms':>12} {'off/ours':>9}")
    rows = []
    for case in args.cases:
        official, off_in, ours, our_in, labels = build_case(case, args)
        for mode in args.modes:
            fo = dict(zip(["infer", "train"], _steps(official, off_in, labels)))[mode]
            fp = dict(zip(["infer", "train"], _steps(ours, our_in, labels)))[mode]
            med = alternate({"official": fo, "pointctx": fp}, args.repeats)
            ratio = med["official"] / med["pointctx"]
            rows.append({"case": case, "mode": mode, "official_s": med["official"],
                         "pointctx_s": med["pointctx"], "official_over_pointctx": ratio})
            print(f"{case:<16} {mode:<6} {1e3 * med['official']:>12.1f} "
                  f"{1e3 * med['pointctx']:>12.1f} {ratio:>9.2f}", flush=True)
    atomic_write_json(args.out, {
        "benchmark": "peers",
        "threads": args.threads,
        "repeats": args.repeats,
        "batch_images": args.batch_images,
        "batch_points": args.batch_points,
        **conditions(),
        "official_changes": changes,
        "results": rows,
        "geomean_official_over_pointctx": math.exp(
            statistics.fmean(math.log(r["official_over_pointctx"]) for r in rows)),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
