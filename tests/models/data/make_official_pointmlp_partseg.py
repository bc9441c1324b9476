r"""Rebuild ``official_pointmlp_partseg.pt``: the official part-segmentation PointMLP's outputs.

Runs OUTSIDE this repository with the official file (not copied here) and einops installed::

    git -C pointMLP-pytorch checkout 1ab7f04e88d2aeb8fd16921a2b2fc4fba950b6df
    python make_official_pointmlp_partseg.py pointMLP-pytorch/part_segmentation/model/pointMLP.py \\
        ../shared/fixtures/official/fill.py official_pointmlp_partseg.pt

The official file imports the CUDA-only ``pointnet2_ops``; this script installs a CPU stand-in
for ``pointnet2_utils.furthest_point_sample`` that starts at index 0 of every cloud, as the CUDA
kernel does (no input point is near the origin, so the kernel's skipping of points with
``|p|^2 <= 1e-3`` does not matter). Weights: ``fill.fill_state_dict(manifest, seed)`` of the
shared fixtures. Stored: the manifest, the seed, the input (xyz and unit normals ``[2, 3, 2048]``,
one-hot categories 3 and 11 of 16), and the official ``log_softmax`` outputs in eval mode, float32
and float64, at every 16th point (``kept_points``).
"""

import importlib.util
import sys
import types

import torch


def furthest_point_sample(xyz, npoint):
    b, n, _ = xyz.shape
    out = torch.zeros(b, npoint, dtype=torch.long)
    dist = torch.full((b, n), 1e10, dtype=xyz.dtype)
    far = torch.zeros(b, dtype=torch.long)
    ar = torch.arange(b)
    for i in range(npoint):
        out[:, i] = far
        c = xyz[ar, far].view(b, 1, 3)
        dist = torch.minimum(dist, ((xyz - c) ** 2).sum(-1))
        far = dist.max(-1)[1]
    return out.int()


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(official_file, fill_file, out_file):
    utils = types.ModuleType("pointnet2_ops.pointnet2_utils")
    utils.furthest_point_sample = furthest_point_sample
    pkg = types.ModuleType("pointnet2_ops")
    pkg.pointnet2_utils = utils
    sys.modules.update({"pointnet2_ops": pkg, "pointnet2_ops.pointnet2_utils": utils})
    fill, off = load("fill", fill_file), load("official_partseg", official_file)
    torch.manual_seed(0)
    model = off.pointMLP(50)
    manifest = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    seed = 1313
    model.load_state_dict(fill.fill_state_dict(manifest, seed))
    g = torch.Generator().manual_seed(4242)
    xyz = torch.rand(2, 3, 2048, generator=g) * 2 - 1
    normal = torch.nn.functional.normalize(torch.randn(2, 3, 2048, generator=g), dim=1)
    cls = torch.zeros(2, 16)
    cls[0, 3] = cls[1, 11] = 1
    keep = torch.arange(0, 2048, 16)
    model.eval()
    with torch.no_grad():
        out = model(xyz, normal, cls)[:, keep].clone()
        out64 = model.double()(xyz.double(), normal.double(), cls.double())[:, keep].clone()
    torch.save({"official_model": "pointMLP(num_classes=50)",
                "source": "ma-xu/pointMLP-pytorch@1ab7f04e88d2aeb8fd16921a2b2fc4fba950b6df:"
                "part_segmentation/model/pointMLP.py (CPU FPS from index 0 for pointnet2_ops)",
                "manifest": manifest, "seed": seed,
                "weights": "fill.fill_state_dict(manifest, seed)",
                "xyz": xyz, "normal": normal, "cls_label": cls, "kept_points": keep,
                "log_probs_eval": out, "log_probs_eval_float64": out64}, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
