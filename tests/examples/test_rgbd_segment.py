"""examples/rgbd_segment.py on the bundled RGB-D frame with a small scene model (CPU)."""

import json

import numpy as np
import pytest
import torch
from _cli import SAMPLES

import pointctx
from pointctx.datasets import rgbd_frame
from pointctx.datasets.rgbd import frame_to_points
from pointctx.io import read_ply
from pointctx.viz import label_colors

pytest.importorskip("matplotlib")

SMALL = {"embed_dim": 8, "de_dims": [16, 16, 8, 8], "gmp_dim": 8, "head_hidden": 16}
NAMES = ["chair", "lamp", "sofa", "floor"]


@pytest.fixture(scope="module")
def demo(load_example):
    return load_example("rgbd_segment")


def _checkpoint(path, name="pointmlp_elite_seg", **extra):
    torch.manual_seed(0)
    kwargs = {"num_classes": len(NAMES), **SMALL, **extra}
    model = pointctx.create_model(name, **kwargs)
    torch.save({"model": model.state_dict(),
                "run_info": {"model": {"name": name, "create_kwargs": kwargs},
                             "dataset": {"classes": NAMES}}}, path)
    return path


def test_every_valid_pixel_gets_the_models_label(demo, tmp_path):
    ckpt = _checkpoint(tmp_path / "best.pt")
    out = tmp_path / "out"
    assert demo.main(["bundled", "--checkpoint", str(ckpt), "--num-points", "256",
                      "--out", str(out)]) == 0
    info = json.loads((out / "bundled_segment.json").read_text())
    assert "not a metric" in info["note"] and info["input_points"] == 256
    assert sum(info["pixel_share"].values()) == pytest.approx(1.0)
    assert (out / "bundled_segment.png").stat().st_size > 0
    ply = read_ply(out / "bundled_segment.ply")
    frame = rgbd_frame("tum", root=SAMPLES / "rgbd_sample")
    pts = frame_to_points(frame, depth_trunc=3.0, world=False)
    assert ply.pos.shape[0] == pts.xyz.shape[0] == info["points"]
    torch.testing.assert_close(ply.pos, pts.xyz)
    labels = ply.fields["label"].long()
    # the same labels as the model run directly on the scene-frame points
    model = pointctx.load_model(ckpt)
    ref = demo.segment(model, demo.to_scene_frame(pts.xyz, 2.0, 0.01), 256, 0)
    torch.testing.assert_close(labels, ref)
    rgb = (ply.rgb.numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(rgb, label_colors(len(NAMES))[labels.numpy()])


def test_scene_frame_is_z_up_with_the_floor_at_zero(demo):
    xyz = torch.tensor([[0.0, 1.0, 2.0], [1.0, -1.0, 3.0], [2.0, 0.5, 4.0]])  # camera: y down
    p = demo.to_scene_frame(xyz, 2.0, 0.0)
    torch.testing.assert_close(p[:, 2], torch.tensor([0.0, 4.0, 1.0]))  # up = -y, lowest = 0
    torch.testing.assert_close(p[:, :2].mean(0), torch.zeros(2))
    assert float(torch.linalg.det(torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]))) == 1.0


def test_random_weights_and_errors(demo, tmp_path, capsys):
    assert demo.main(["bundled", "--num-points", "128", "--num-classes", "3",
                      "--out", str(tmp_path / "r")]) == 0
    assert "random weights" in json.loads(
        (tmp_path / "r" / "bundled_segment.json").read_text())["weights"]
    capsys.readouterr()
    assert demo.main(["--model", "pointmlp_partseg", "--out", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == ["rgbd_segment.py: error: argument --model: pointmlp_partseg is a part "
                   "segmentation model, not a point segmentation model; choose one of "
                   + ", ".join(pointctx.list_models(task="point segmentation"))]
    part = _checkpoint(tmp_path / "part.pt", "pointmlp_partseg", cls_dim=8)
    assert demo.main(["--checkpoint", str(part), "--out", str(tmp_path)]) == 2
    assert "part.pt: pointmlp_partseg is a part segmentation model, not a point segmentation " \
        "model; choose one of pointmlp" in capsys.readouterr().err
    torch.manual_seed(0)  # a classifier run
    clf = pointctx.create_model("pointmlp_elite", num_classes=4, embed_dim=8)
    torch.save({"model": clf.state_dict(), "run_info": {
        "task": "point classification", "dataset": {"classes": NAMES},
        "model": {"name": "pointmlp_elite", "create_kwargs": {"num_classes": 4, "embed_dim": 8}}}},
        tmp_path / "clf.pt")
    assert demo.main(["--checkpoint", str(tmp_path / "clf.pt"), "--out", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "clf.pt: pointmlp_elite is a point classification model" in err[0]
    assert demo.main(["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
