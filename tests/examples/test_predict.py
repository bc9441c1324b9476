"""examples/predict.py and pointctx.load_model on runs of the example scripts (tiny, real data)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pointctx
from pointctx.io import write_ply

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def point_run(tmp_path_factory, load_example, tiny_point_run):
    """One epoch of a narrow PointMLP-CoC on the bundled real ModelNet40 sample."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    argv = [*tiny_point_run.argv, "--epochs", "1", "--output", str(out)]
    assert load_example("scanobjectnn").main(argv) == 0
    torch.set_num_threads(1)
    return out


@pytest.fixture(scope="module")
def predict(load_example):
    return load_example("predict")


def _sample_clouds():
    ds = pointctx.datasets.modelnet40_sample("test")
    return [(ds[i][0].numpy(), ds.classes[ds[i][1]]) for i in (0, 50)]


def test_predict_point_files_of_every_format(predict, point_run, tmp_path, capsys):
    (a, _), (b, _) = _sample_clouds()
    files = [tmp_path / "a.ply", tmp_path / "b.npy", tmp_path / "c.txt", tmp_path / "d.xyz"]
    write_ply(files[0], torch.from_numpy(a[:, :3]))
    np.save(files[1], b)
    np.savetxt(files[2], a, delimiter=",")  # ModelNet40 normal_resampled style
    np.savetxt(files[3], a[:, :3])
    out = tmp_path / "p.json"
    assert predict.main([str(point_run), *map(str, files), "--top", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"{f}: " in printed for f in files)
    res = json.loads(out.read_text())
    model = pointctx.load_model(point_run)
    assert res["classes"] == model.class_names
    probs = torch.tensor([p["probabilities"] for p in res["predictions"]])
    assert probs.shape == (4, 10) and torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    # the same cloud in three formats gives the same probabilities
    assert torch.allclose(probs[0], probs[2], atol=1e-5) and torch.allclose(probs[0], probs[3])
    # and what the model gives on the prepared cloud directly
    direct = predict.predict(model, [files[1]])[0]
    assert torch.allclose(direct, probs[1], atol=1e-6)
    csv_out = tmp_path / "p.csv"
    assert predict.main([str(point_run / "last.pt"), str(files[1]), "--output", str(csv_out)]) == 0
    head = csv_out.read_text().splitlines()[0].split(",")
    assert head[:2] == ["file", "prediction"] and head[2:] == model.class_names


def test_predict_pcd_file(predict, point_run, tmp_path, capsys):
    pytest.importorskip("open3d")
    from pointctx.io import write_point_cloud

    (a, _), _ = _sample_clouds()
    write_point_cloud(tmp_path / "a.pcd", torch.from_numpy(a[:, :3]))
    np.save(tmp_path / "a.npy", a[:, :3])
    out = tmp_path / "p.json"
    assert predict.main([str(point_run), str(tmp_path / "a.pcd"), str(tmp_path / "a.npy"),
                         "--output", str(out)]) == 0
    probs = torch.tensor([p["probabilities"] for p in json.loads(out.read_text())["predictions"]])
    assert torch.allclose(probs[0], probs[1], atol=1e-5)


def test_predict_errors(predict, point_run, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[0.0, np.nan, 1.0]], dtype=np.float32))
    assert predict.main([str(point_run), str(bad)]) == 1
    assert re.search(r"bad\.npy: row 0 has NaN or Inf values", capsys.readouterr().err)
    assert predict.main([str(point_run), str(tmp_path / "cat.png")]) == 2
    assert "cat.png: the model takes points" in capsys.readouterr().err
    assert predict.main([str(tmp_path), str(bad)]) == 2
    assert "holds no best.pt or last.pt" in capsys.readouterr().err


def test_load_model_rebuilds_the_trained_model(point_run):
    model = pointctx.load_model(point_run / "last.pt")
    state = torch.load(point_run / "last.pt", weights_only=True)
    assert not model.training and model.class_names == state["run_info"]["dataset"]["classes"]
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    best = pointctx.load_model(point_run)  # the folder: best.pt
    assert best.run_info["model"]["name"] == "pointmlp_coc_elite"


def test_load_model_errors(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt is not a pointctx checkpoint: expected a "
                       r"dict with 'model' \(the weights\) and 'run_info'"):
        pointctx.load_model(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.pt: cannot be loaded as a checkpoint"):
        pointctx.load_model(tmp_path / "text.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pointctx.load_model(tmp_path / "missing")
    for m in ("a", "b"):
        (tmp_path / "multi" / m).mkdir(parents=True)
        torch.save({}, tmp_path / "multi" / m / "last.pt")
    with pytest.raises(ValueError, match=r"holds several runs \(a, b\); give one of"):
        pointctx.load_model(tmp_path / "multi")


def test_pretrained_message_names_the_working_path():
    with pytest.raises(ValueError, match=r"pretrained=True` is not supported.*pointctx\."
                       r"load_model\(path\)"):
        pointctx.create_model("pointmlp_elite", pretrained=True)
