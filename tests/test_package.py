"""The package root: lazy subpackages, one version source, and what README says to pass."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pointctx
from pointctx import PointBatch

ROOT = Path(__file__).resolve().parents[1]


def test_subpackages_reachable_after_import_pointctx_alone():
    code = (
        "import sys, pointctx\n"
        "lazy = ['pointctx.datasets', 'pointctx.transforms', 'pointctx.viz', 'pointctx.train',\n"
        "        'matplotlib']\n"
        "print([m for m in lazy if m in sys.modules])\n"
        "print(pointctx.datasets.ScanObjectNN.__name__, pointctx.nn.ContextCluster.__name__,\n"
        "      pointctx.transforms.RandomKeep.__name__, pointctx.viz.trace_clusters.__name__,\n"
        "      pointctx.train.Trainer.__name__, pointctx.io.__name__)\n"
        "print(sorted(m for m in ('pointctx.datasets', 'pointctx.viz') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.splitlines()
    assert out[0] == "[]"  # nothing heavy loaded by `import pointctx`
    assert out[1] == "ScanObjectNN ContextCluster RandomKeep trace_clusters Trainer pointctx.io"
    assert out[2] == "['pointctx.datasets', 'pointctx.viz']"


def test_import_loads_no_compiler():
    # torch._dynamo (loaded by torch.compiler.disable and torch.compile) takes about a second
    code = ("import sys, pointctx\n"
            "print([m for m in ('torch._dynamo', 'sympy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert out.strip() == "[]"


def test_unknown_attribute_and_dir():
    with pytest.raises(AttributeError, match="module 'pointctx' has no attribute 'nope'"):
        pointctx.nope  # noqa: B018
    assert {"datasets", "transforms", "viz", "train", "nn", "ops"} <= set(dir(pointctx))


def test_one_version_source():
    text = (ROOT / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, flags=re.M)  # no second copy
    assert re.search(r'^dynamic = \["version"\]', project, flags=re.M)
    dynamic = text.split("\n[tool.setuptools.dynamic]\n")[1]
    assert 'version = {attr = "pointctx.__version__"}' in dynamic
    assert re.fullmatch(r"\d+\.\d+\.\d+", pointctx.__version__)


def test_image_models_on_3d_point_clouds_take_pos_dim_as_readme_says():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'create_model("coc_tiny", in_channels=C, pos_dim=D)' in text
    g = torch.Generator().manual_seed(0)
    pb = PointBatch.from_list([torch.randn(n, 3, generator=g) for n in (300, 200)],
                              [torch.randn(n, 3, generator=g) for n in (300, 200)])
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"pos_dim = 2 coordinates, got D = 3 \(build the model "
                       r"with pos_dim=3"):
        pointctx.create_model("coc_tiny", in_channels=3, num_classes=4)(pb)
    for name in ("coc_tiny", "cluenet_micro"):
        model = pointctx.create_model(name, in_channels=3, pos_dim=3, num_classes=4).eval()
        with torch.no_grad():
            assert model(pb).shape == (2, 4)


def test_gfc_takes_the_proposed_centers_as_proposed():
    from pointctx.nn import GFCStage

    torch.manual_seed(0)
    stage = GFCStage(8, 2, heads=2, head_dim=4, centers=2, bounds=(-0.5, 0.5), mlp_ratio=2)
    x, pos = torch.randn(20, 8), torch.rand(20, 2) - 0.5
    batch = torch.zeros(20, dtype=torch.long)
    proposed = stage.blocks[0].token_mixer.proposal(pos, batch, 1)  # centers=2: a count
    out = stage(x, pos, batch, proposed=proposed)
    torch.testing.assert_close(out, stage(x, pos, batch))
