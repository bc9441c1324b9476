"""End-to-end test of examples/segment_scenes.py: its smoke run on real ModelNet40 shapes."""

import json

import pytest

from pointctx.datasets import data_root


@pytest.fixture(scope="module")
def script(load_example):
    if not (data_root(must_exist=False) / "modelnet40_train_1024.npz").is_file():
        pytest.skip("shared modelnet40_train_1024.npz is absent")
    return load_example("segment_scenes")


def test_defaults_are_the_readme_run(script):
    args = script.parse_args([])
    assert args.models == ["pointmlp_coc_elite_seg", "pointmlp_elite_seg"]
    assert (args.train_scenes, args.val_scenes, args.num_points, args.epochs,
            args.batch_size) == (800, 200, 2048, 3, 8)
    assert len(args.classes) == 10 and args.objects == [4, 8]


def test_smoke_run_trains_both_models_side_by_side_and_resumes(script, tmp_path, capsys):
    out = tmp_path / "scenes"
    assert script.main(["--smoke", "--output", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["pointmlp_coc_elite_seg", "pointmlp_elite_seg"]
    assert summary["classes"] == ["chair", "lamp", "airplane", "floor"]
    for r in summary["models"].values():
        assert 0.0 <= r["miou"] <= 1.0 and set(r["per_class_iou"]) == set(summary["classes"])
    res = json.loads((out / "pointmlp_elite_seg" / "results.json").read_text())
    assert res["status"] == "finished" and "iou" in res["last"]["per_class"]["floor"]
    assert "composed from real ModelNet40 shapes" in res["dataset"]["description"]
    assert "| `pointmlp_elite_seg` |" in capsys.readouterr().out
    # the same folder again: refused without --resume; with it, nothing is retrained
    assert script.main(["--smoke", "--output", str(out), "--no-progress"]) == 2
    assert script.main(["--resume", str(out), "--no-progress"]) == 0  # stored configuration
    again = json.loads((out / "summary.json").read_text())["models"]
    for name, r in summary["models"].items():
        assert again[name]["miou"] == r["miou"] and again[name]["epoch"] == r["epoch"] == 1


def test_errors(script, capsys):
    for argv, msg in ((["--models", "pointmlp"], "pointmlp is a point classification model, not a "
                       "point segmentation model; choose one of pointmlp_coc_elite_seg"),
                      (["--models", "nope"], "argument --models: unknown model 'nope'"),
                      (["--objects", "5-2"], "--objects: expected MIN-MAX"),
                      (["--resume"], "--resume needs the folder")):
        with pytest.raises(SystemExit):
            script.parse_args(argv)
        assert msg in capsys.readouterr().err
    assert script.main(["--smoke", "--classes", "chair,unicorn", "--no-progress",
                        "--output", "/tmp/never-written-scenes"]) == 1
