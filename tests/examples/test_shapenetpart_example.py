"""End-to-end tests of examples/shapenetpart.py: the smoke run on the 16 bundled real shapes."""

import json

import pytest
import torch

import pointctx
from pointctx.datasets import data_root

TINY = ["--smoke", "--num-points", "128", "--epochs", "1", "--no-progress", "--device", "cpu",
        "--model-kwargs", json.dumps({"embed_dim": 8, "de_dims": [16, 16, 8, 8],
                                      "gmp_dim": 8, "cls_dim": 8, "head_hidden": 16})]


@pytest.fixture(scope="module")
def script(load_example):
    if not (data_root(must_exist=False) / "shapenetpart_sample").is_dir():
        pytest.skip("shared shapenetpart_sample/ is absent")
    return load_example("shapenetpart")


def test_recipe_defaults_are_the_official_ones(script):
    args = script.parse_args([])
    assert (args.model, args.epochs, args.batch_size, args.lr, args.step, args.gamma,
            args.min_lr, args.num_points) == ("pointmlp_partseg", 350, 32, 0.003, 40, 0.5,
                                              0.9e-5, 2048)
    assert args.model_kwargs == {}


def test_smoke_run_then_resume_is_a_no_op(script, tmp_path, capsys):
    out = tmp_path / "run"
    assert script.main([*TINY, "--output", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "finished" and res["eval_split"] == "smoke"
    assert "SMOKE RUN" in res["dataset"]["description"]
    last = res["last"]
    for key in ("instance_miou", "class_miou", "oa", "miou"):
        assert 0.0 <= last[key] <= 1.0
    assert set(last["per_category"]) == set(res["dataset"]["categories"])
    assert all(v["shapes"] == 1 for v in last["per_category"].values())
    assert res["model"]["create_kwargs"]["in_channels"] == 0  # the sample has no normals
    model = pointctx.load_model(out)
    assert model.model.num_classes == 50 and model.class_names[0] == "Airplane:0"
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert "not an accuracy" in capsys.readouterr().out
    # resuming a finished run trains nothing more; the stored configuration needs no retyping
    assert script.main(["--resume", str(out), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["epochs_done"] == 1
    # ... but a typed option that changes the experiment is refused
    assert script.main(["--resume", str(out), "--lr", "0.1"]) == 2
    assert "--lr was 0.003, now 0.1" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_same_weights(script, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    two = [*TINY, "--epochs", "2", "--batch-size", "4", "--threads", "1"]
    assert script.main([*two, "--output", str(a)]) == 0
    assert script.main([*two, "--output", str(b), "--stop-after-steps", "5"]) == 0
    assert json.loads((b / "results.json").read_text())["status"] == "interrupted"
    assert script.main(["--resume", str(b), "--no-progress"]) == 0
    wa = torch.load(a / "last.pt", map_location="cpu", weights_only=False)["model"]
    wb = torch.load(b / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_errors(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--model", "pointmlp"])
    assert ("argument --model: pointmlp is a point classification model, not a part "
            "segmentation model; choose one of pointmlp_coc_partseg, pointmlp_partseg"
            ) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--resume"])
    assert "--resume needs the run folder" in capsys.readouterr().err
    assert script.main(["--data-root", str(tmp_path), "--output", str(tmp_path / "r"),
                        "--no-progress"]) == 1
    assert script.main([*TINY, "--output", str(tmp_path / "r2"), "--batch-size", "64"]) == 2
    assert "exceeds the 16 training shapes" in capsys.readouterr().err
