"""examples/evaluate_official.py on a checkpoint file written in the official wrapper format."""

import json
from pathlib import Path

import pytest
import torch
from _cli import modelnet40_sample

import pointctx

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "official"
pytestmark = pytest.mark.skipif(
    not (FIXTURES / "fill.py").is_file(),
    reason=f"official-output fixtures not found at {FIXTURES} (shared/fixtures/official)",
)


def official_elite_40_classes(load_module):
    """An official pointMLPElite(num_classes=40) state_dict (ModelNet40), rebuilt by fill.py."""
    fill = load_module(FIXTURES / "fill.py", "official_fill")
    fx = torch.load(FIXTURES / "pointmlp_elite.pt", weights_only=True)
    manifest = [[k, [40 if (k.startswith("classifier.8.") and i == 0) else s
                     for i, s in enumerate(shape)], dt] for k, shape, dt in fx["manifest"]]
    return fill.fill_state_dict(manifest, fx["seed"])


def test_evaluates_an_official_checkpoint_file(tmp_path, load_example, load_module):
    script = load_example("evaluate_official")
    sd = official_elite_40_classes(load_module)
    ckpt = tmp_path / "best_checkpoint.pth"
    # pointMLP-pytorch's save_model: {"net": DataParallel state_dict, "epoch", "acc", ...}
    torch.save({"net": {f"module.{k}": v for k, v in sd.items()}, "epoch": 299, "acc": 85.0,
                "best_test_acc": 85.0}, ckpt)
    out = tmp_path / "metrics.json"
    rc = script.main(["--arch", "pointmlp_elite", "--checkpoint", str(ckpt), "--sample",
                      "--limit", "24", "--batch-size", "8", "--threads", "1",
                      "--output", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["shapes"] == 24 and res["dataset"] == "modelnet40_sample"
    # the same numbers as the converted model evaluated by hand
    model = pointctx.load_official("pointmlp_elite", sd)
    data = modelnet40_sample("test", num_points=1024)
    pts = torch.stack([torch.as_tensor(data[i][0]) for i in range(24)])
    labels = torch.tensor([int(data[i][1]) for i in range(24)])
    with torch.no_grad():
        pred = model(pts).argmax(1)
    assert res["overall_accuracy"] == pytest.approx(float((pred == labels).float().mean()))
    per_class = [float((pred[labels == c] == c).float().mean()) for c in labels.unique()]
    assert res["mean_class_accuracy"] == pytest.approx(sum(per_class) / len(per_class))


def test_unusable_checkpoint_exits_2(tmp_path, capsys, load_example):
    script = load_example("evaluate_official")
    bad = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3}, bad)
    assert script.main(["--arch", "pointmlp", "--checkpoint", str(bad), "--sample"]) == 2
    assert "no state_dict found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--arch", "pointmlp", "--checkpoint", str(bad)])  # no data given
