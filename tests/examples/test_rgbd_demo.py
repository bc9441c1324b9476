"""examples/rgbd_demo.py on the bundled RGB-D frame (tiny settings, CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import SAMPLES

from pointctx.datasets import rgbd_frame
from pointctx.datasets.rgbd import frame_to_points
from pointctx.io import read_ply
from pointctx.viz import label_colors

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "rgbd_demo.py"
SMALL = json.dumps({"layers": [1, 1, 1, 1], "embed_dims": [8, 16, 16, 16],
                    "heads": [2, 2, 2, 2], "head_dims": 8})


@pytest.fixture(scope="module")
def demo(load_example):
    return load_example("rgbd_demo")


@pytest.fixture(scope="module")
def frame():
    return rgbd_frame("tum", root=SAMPLES / "rgbd_sample")


def _check_ply_colours(data):
    """Same colour iff same cluster label, and the colour is the label's palette entry."""
    lab = data.fields["cluster"].long().numpy()
    rgb = (data.rgb.numpy() * 255).round().astype(np.uint8)
    assert lab.min() >= 0
    np.testing.assert_array_equal(rgb, label_colors(int(lab.max()) + 1)[lab])
    pairs = {(tuple(c), int(v)) for c, v in zip(rgb.tolist(), lab.tolist())}
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(before)


def test_plane_mode_writes_png_and_ply(demo, frame, tmp_path, capsys, threads):
    rc = demo.main([*threads, "--out", str(tmp_path), "--space", "plane", "--stride", "8",
                    "--heads", "all", "--model-kwargs", SMALL, "--ply-stage", "2"])
    assert rc == 0
    for name in ("bundled_clusters.png", "bundled_clusters.ply", "bundled_scatter.png"):
        assert (tmp_path / name).stat().st_size > 0
    with PIL.open(tmp_path / "bundled_clusters.png") as im:
        assert im.format == "PNG"
    data = read_ply(tmp_path / "bundled_clusters.ply")
    # the points: valid depth (<= 3 m) on every 8th row and column, in pixel order
    pts = frame_to_points(frame, depth_trunc=3.0, world=False)
    w = frame.size[1]
    keep = ((pts.pixel // w) % 8 == 0) & ((pts.pixel % w) % 8 == 0)
    torch.testing.assert_close(data.pos, pts.xyz[keep])
    _check_ply_colours(data)
    assert torch.equal(data.fields["cluster"], data.fields["stage2_head0"])
    assert {f"stage{s}_head{h}" for s in range(1, 5) for h in range(2)} <= set(data.fields)
    out = capsys.readouterr().out
    assert "clusters per stage and head" in out


def test_xyz_mode_propagates_to_every_point(demo, frame, tmp_path, threads):
    rc = demo.main([*threads, "--out", str(tmp_path), "--max-points", "400",
                    "--model-kwargs", SMALL, "--depth-trunc", "2.5"])
    assert rc == 0
    data = read_ply(tmp_path / "bundled_clusters.ply")
    pts = frame_to_points(frame, depth_trunc=2.5, world=False)
    assert data.pos.shape == pts.xyz.shape
    _check_ply_colours(data)
    # few sampled points, so few clusters, shared by many points each
    assert int(data.fields["cluster"].max()) + 1 <= 400


def test_bad_arguments(demo, tmp_path, capsys):
    assert demo.main(["nope", "--out", str(tmp_path)]) == 2
    assert "unknown FRAME 'nope'" in capsys.readouterr().err
    assert demo.main(["a.png,b.png", "--out", str(tmp_path)]) == 2
    assert "--intrinsics" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--heads", "x"])
    with pytest.raises(SystemExit):
        demo.main(["--model-kwargs", "[1]"])
