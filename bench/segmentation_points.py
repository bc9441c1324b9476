"""Benchmark: point-cloud part segmentation (PointMLP / PointMLP-CoC), and where the time goes.

The point-cloud rows of ``bench/segmentation.py`` (``python bench/segmentation.py --points``
runs this file). For ``pointmlp_partseg`` and ``pointmlp_coc_partseg`` (50 parts, xyz +
normals, category input) on one batch of B = 16 clouds of 2,048 random points (a ``PointBatch``):

* inference: ``model.eval()`` forward under ``torch.no_grad``; samples/s = B / median time;
* training: ``model.train()`` forward, cross-entropy over the points, backward and an Adam step
  (the official optimiser); samples/s = B / median time;
* time shares of one profiled inference forward, from the models' :mod:`torch.profiler`
  ranges: ``fps``, ``knn`` (the encoder's grouping kNN), ``group`` (gathers and the geometric
  affine), ``propagate`` (the decoder's interpolation, its kNN included), ``coc`` (Context
  Clusters), ``mlp`` (every MLP, heads included); ``other`` is the rest (pooling, packing,
  concatenations, profiler overhead). The ranges do not nest.

``--official PATH`` adds the official model for comparison, run in the same process on the same
batch: ``PATH`` is a checkout of ma-xu/pointMLP-pytorch (its
``part_segmentation/model/pointMLP.py`` is imported from there, nothing of it is copied here).
Its CUDA-only ``pointnet2_ops`` FPS is replaced by the pure-torch ``farthest_point_sample`` of
the same file (random start, one Python step per sample), ``einops`` by a stub when missing;
its padded tensors are ``[B, 3, N]`` xyz, normals and the one-hot category. Its shares are only
``fps`` and ``knn`` (its ``farthest_point_sample`` / ``knn_point`` wrapped in profiler ranges).
The official model keeps fixed anchor counts (512 / 128 / 32 / 8, for 2,048 points), so the
comparison is only like for like at ``--points 2048`` (not with ``--quick``). Without
``--official`` no comparison is made.

Timings: ``torch.set_num_threads(--threads)`` (default 1), one untimed warm-up per case, then
``--repeats`` rounds that time every case in turn (round-robin, so a change of load on the
shared CPU hits all cases alike), median per case; compare them only within a run. Results go to
``bench/results/segmentation_points.json`` (written atomically), with the load average.

Usage::

    python bench/segmentation_points.py [--quick] [--batch 16] [--points 2048]
        [--official /path/to/pointMLP-pytorch] [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import pointctx
from pointctx import PointBatch
from pointctx.train import atomic_write_json

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from _common import positive_int  # noqa: E402  (bench/)
from pointmlp import timed  # noqa: E402  (bench/pointmlp.py)

DEFAULT_OUT = ROOT / "results" / "segmentation_points.json"
MODELS = ("pointmlp_partseg", "pointmlp_coc_partseg")
LABELS = ("fps", "knn", "group", "propagate", "coc", "mlp")


def make_batch(b: int, n: int, seed: int = 0):
    """Random clouds in [-0.5, 0.5]^3 with unit normals, categories and part labels."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(b, n, 3, generator=g) - 0.5
    nrm = F.normalize(torch.randn(b, n, 3, generator=g), dim=-1)
    cat = torch.randint(0, 16, (b,), generator=g)
    parts = torch.randint(0, 50, (b, n), generator=g)
    return pos, nrm, cat, parts


def profile_shares(fn) -> dict:
    """Seconds per ``pointctx.*`` label and the total of one call under the profiler."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("bench.forward"):
            fn()
    totals = dict.fromkeys((*LABELS, "total"), 0.0)
    for ev in prof.events():
        if ev.name == "bench.forward":
            totals["total"] += ev.cpu_time_total * 1e-6
        elif ev.name.startswith("pointctx.") and ev.name[9:] in totals:
            totals[ev.name[9:]] += ev.cpu_time_total * 1e-6
    return totals


class Case:
    """One model on the batch: ``infer()``, ``step()`` (a training step) and ``shares()``."""

    def __init__(self, name, model, infer, step, shares):
        self.name, self.model = name, model
        self.params = sum(p.numel() for p in model.parameters())
        self.infer, self.step, self.shares = infer, step, shares


def ours_case(name: str, batch) -> Case:
    pos, nrm, cat, parts = batch
    pb = PointBatch.from_padded(pos, nrm)
    target = parts.reshape(-1)
    torch.manual_seed(0)
    model = pointctx.create_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)

    def infer():
        model.eval()
        with torch.no_grad():
            model(pb, category=cat)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(pb, category=cat), target).backward()
        opt.step()

    def shares():
        model.eval()
        prof = profile_shares(lambda: model(pb, category=cat))
        total = prof["total"] or 1.0
        out = {k: prof[k] / total for k in LABELS}
        out["other"] = max(0.0, 1.0 - sum(out.values()))
        return out, prof["total"]

    return Case(name, model, infer, step, shares)


def load_official(path: Path):
    """Import ``part_segmentation/model/pointMLP.py`` from a checkout, with a pure-torch FPS."""
    file = path / "part_segmentation" / "model" / "pointMLP.py"
    if not file.is_file():
        raise FileNotFoundError(f"--official: {file} does not exist (give the root of a "
                                "ma-xu/pointMLP-pytorch checkout)")
    if importlib.util.find_spec("einops") is None:
        stub = types.ModuleType("einops")
        stub.rearrange = stub.repeat = None  # imported by the file, unused by the part-seg model
        sys.modules.setdefault("einops", stub)
    ops = types.ModuleType("pointnet2_ops")
    utils = types.ModuleType("pointnet2_ops.pointnet2_utils")
    ops.pointnet2_utils = utils
    sys.modules["pointnet2_ops"], sys.modules["pointnet2_ops.pointnet2_utils"] = ops, utils
    spec = importlib.util.spec_from_file_location("official_partseg_pointmlp", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fps, knn = mod.farthest_point_sample, mod.knn_point

    def furthest_point_sample(xyz, npoint):  # the file's own pure-torch FPS, labelled
        with record_function("official.fps"):
            return fps(xyz, npoint)

    def knn_point(nsample, xyz, new_xyz):
        with record_function("official.knn"):
            return knn(nsample, xyz, new_xyz)

    utils.furthest_point_sample = furthest_point_sample
    mod.knn_point = knn_point  # looked up in the module's globals by LocalGrouper
    return mod


def official_case(mod, batch) -> Case:
    pos, nrm, cat, parts = batch
    torch.manual_seed(0)
    model = mod.pointMLP(50)
    xyz, normals = pos.transpose(1, 2).contiguous(), nrm.transpose(1, 2).contiguous()
    onehot = F.one_hot(cat, 16).float()
    target = parts.reshape(-1)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)

    def infer():
        model.eval()
        with torch.no_grad():
            model(xyz, normals, onehot)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        F.nll_loss(model(xyz, normals, onehot).reshape(-1, 50), target).backward()
        opt.step()

    def shares():
        model.eval()
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("bench.forward"):
                model(xyz, normals, onehot)
        secs = {k: sum(ev.cpu_time_total for ev in prof.events() if ev.name == k) * 1e-6
                for k in ("official.fps", "official.knn", "bench.forward")}
        total = secs["bench.forward"] or 1.0
        return {"fps": secs["official.fps"] / total, "knn": secs["official.knn"] / total}, total

    return Case("official pointMLP (part seg, pure-torch FPS)", model, infer, step, shares)


def measure(cases, b: int, repeats: int) -> list[dict]:
    """Warm up every case, then time them round-robin (so load drift hits all alike)."""
    for c in cases:
        c.infer()
        c.step()
    t_inf = {c.name: [] for c in cases}
    t_step = {c.name: [] for c in cases}
    for _ in range(repeats):
        for c in cases:
            t_inf[c.name].append(timed(c.infer, torch.device("cpu"), 1))
        for c in cases:
            t_step[c.name].append(timed(c.step, torch.device("cpu"), 1))
    rows = []
    for c in cases:
        share, prof_total = c.shares()
        inf, st = statistics.median(t_inf[c.name]), statistics.median(t_step[c.name])
        rows.append({"model": c.name, "params": c.params, "infer_s": inf, "train_s": st,
                     "infer_samples_per_s": b / inf, "train_samples_per_s": b / st,
                     "infer_runs_s": t_inf[c.name], "train_runs_s": t_step[c.name],
                     "profiled_forward_s": prof_total, "share": share})
        print(f"{c.name}: done", flush=True)
    return rows


def format_table(rows, args) -> str:
    head = ("| model | params | inference samples/s | training samples/s | "
            + " | ".join(LABELS) + " | other |")
    lines = [f"B = {args.batch} x {args.points} points, {args.threads} thread(s), median of "
             f"{args.repeats}", head, "|" + "---|" * (5 + len(LABELS))]
    for r in rows:
        sh = r["share"]
        cells = " | ".join("—" if sh.get(k) is None else f"{100 * sh[k]:.1f} %"
                           for k in (*LABELS, "other"))
        lines.append(f"| `{r['model']}` | {r['params'] / 1e6:.3f} M | "
                     f"{r['infer_samples_per_s']:.2f} | {r['train_samples_per_s']:.2f} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="B = 2 x 512 points, 1 repeat")
    p.add_argument("--batch", type=positive_int, default=16)
    p.add_argument("--points", type=positive_int, default=2048)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--official", type=Path, default=None,
                   help="root of a ma-xu/pointMLP-pytorch checkout (optional comparison)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.points, args.repeats = 2, 512, 1
    torch.set_num_threads(args.threads)
    official = None
    if args.official is not None:
        try:
            official = load_official(args.official)
        except (FileNotFoundError, ImportError) as err:
            p.error(str(err))
    load_before = os.getloadavg()
    batch = make_batch(args.batch, args.points)
    cases = [ours_case(name, batch) for name in args.models.split(",") if name]
    if official is not None:
        cases.append(official_case(official, batch))
    rows = measure(cases, args.batch, args.repeats)
    table = format_table(rows, args)
    print(table)
    atomic_write_json(args.out, {
        "batch": args.batch, "points": args.points, "threads": args.threads,
        "repeats": args.repeats, "rows": rows,
        "comparison": ("official model in the same process, pure-torch FPS" if official
                       else "no comparison with the official model was made"),
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "torch": str(torch.__version__), "platform": platform.platform(),
        "note": "shared CPU: compare timings only within a run",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
