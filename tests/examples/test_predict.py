"""examples/predict.py and pointctx.load_model on runs of the example scripts (tiny, real data).

One tiny run per task: point classification (ModelNet40 sample), image segmentation (CamVid),
scene segmentation (ShapeScenes smoke run) and part segmentation (ShapeNetPart sample).
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import modelnet40_sample

import pointctx
from pointctx import PointBatch
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
    ds = modelnet40_sample("test")
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
    # and what the loaded model gives on the raw cloud directly
    direct = model(torch.from_numpy(b)[None, :, :3]).softmax(-1)[0]
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
    assert "cat.png: the model (point classification) takes points" in capsys.readouterr().err
    assert predict.main([str(tmp_path), str(bad)]) == 2
    assert "holds no best.pt or last.pt" in capsys.readouterr().err


def test_load_model_rebuilds_the_trained_model(point_run):
    model = pointctx.load_model(point_run / "last.pt")
    state = torch.load(point_run / "last.pt", weights_only=True)
    assert not model.training and model.class_names == state["run_info"]["dataset"]["classes"]
    assert all(torch.equal(v, state["model"][k]) for k, v in model.model.state_dict().items())
    assert model.task == "point classification" and model.inputs["normalize"] == "unit_sphere"
    best = pointctx.load_model(point_run)  # the folder: best.pt
    assert best.run_info["model"]["name"] == "pointmlp_coc_elite"
    # raw input: any scale and position, more points than trained, any dtype
    cloud = torch.from_numpy(_sample_clouds()[0][0][:, :3])
    with torch.no_grad():
        ref = best(cloud[None])
        torch.testing.assert_close(best((cloud * 7 + 3)[None].double()), ref)
        grid = (cloud * 50 + 100).round()  # integer coordinates are cast, not rescaled
        torch.testing.assert_close(best(grid.to(torch.uint8)[None]), best(grid[None]))
        assert best.model(cloud[None]).shape == ref.shape == (1, 10)


def test_load_model_errors(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt is not a pointctx checkpoint: expected a "
                       r"dict with 'model' \(the weights\) and 'run_info'"):
        pointctx.load_model(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.pt is damaged or not a checkpoint") as err:
        pointctx.load_model(tmp_path / "text.pt")
    assert "weights_only=False" not in str(err.value)
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


def test_load_model_names_the_keys_of_another_architecture(point_run, tmp_path):
    state = torch.load(point_run / "last.pt", weights_only=True)
    other = pointctx.create_model("pointmlp", num_classes=10)  # another architecture's weights
    torch.save({**state, "model": other.state_dict()}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: the weights do not fit pointmlp_coc_elite: "
                       r"missing keys \(\d+\): .*, \.\.\. \d+ more; unexpected keys \(") as err:
        pointctx.load_model(tmp_path)
    assert len(str(err.value)) < 3000 and "\n" not in str(err.value)
    data = (point_run / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(ValueError, match=r"last\.pt is damaged or not a checkpoint \(truncated"):
        pointctx.load_model(tmp_path)


# ----------------------------------------------------------------------------- segmentation runs
UNET = json.dumps({"width": 4, "depth": 2})


@pytest.fixture(scope="module")
def camvid_run(tmp_path_factory, load_example):
    from pointctx.datasets import data_root

    root = data_root(must_exist=False)
    if not (root / "camvid_trainval.npz").is_file():
        pytest.skip(f"{root / 'camvid_trainval.npz'} is not available")
    out = tmp_path_factory.mktemp("runs") / "camvid"
    argv = ["--data-root", str(root), "--model", "unet_cpu_seg", "--model-kwargs", UNET,
            "--size", "32x48", "--train-limit", "8", "--val-limit", "2", "--batch-size", "4",
            "--epochs", "1", "--class-weights", "none", "--num-predictions", "0", "--device",
            "cpu", "--no-progress", "--threads", "1", "--output", str(out)]
    assert load_example("segment_images").main(argv) == 0
    return out


def test_image_segmenter_predicts_a_label_map_per_image(predict, camvid_run, tmp_path, capsys):
    from PIL import Image

    from pointctx.datasets import CAMVID_PALETTE, CamVid

    model = pointctx.load_model(camvid_run)
    assert model.task == "image segmentation" and model.inputs["image_size"] == [3, 32, 48]
    rgb = CamVid(None, "val", limit=1).raw(0)[0]
    files = [tmp_path / "full.png", tmp_path / "small.jpg"]
    Image.fromarray(rgb).save(files[0])
    Image.fromarray(rgb).resize((100, 75)).save(files[1], quality=95)
    out = tmp_path / "labels"
    assert predict.main([str(camvid_run), *map(str, files), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'full'}.png, .npy (360x480)" in printed and "(75x100)" in printed
    for f, size in zip(files, [(360, 480), (75, 100)]):
        labels = np.load(out / f"{f.stem}.npy")
        assert labels.shape == size and labels.min() >= 0 and labels.max() < 11
        png = np.asarray(Image.open(out / f"{f.stem}.png"))
        np.testing.assert_array_equal(png, np.asarray(CAMVID_PALETTE, np.uint8)[labels])
    # the same labels as the loaded model on the raw uint8 image
    image = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = model(image)
        assert logits.shape == (1, 11, 360, 480)
        np.testing.assert_array_equal(logits.argmax(1)[0].numpy(), np.load(out / "full.npy"))
        torch.testing.assert_close(model(image.double() / 255), logits)
        mask = torch.rand(1, 360, 480) > 0.5  # resized with the image
        assert model(image, mask=mask).shape == (1, 11, 360, 480)


def test_examples_refuse_models_of_another_task(predict, camvid_run, point_run, load_example,
                                                capsys):
    seg = load_example("segment_images")
    fits = ", ".join(pointctx.list_models(task="image segmentation"))
    for name, task in (("pointmlp_elite_seg", "a point segmentation"),
                       ("coc_tiny", "an image classification")):
        with pytest.raises(SystemExit) as exc:
            seg.parse_args(["--model", name])
        assert exc.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert err == [f"segment_images.py: error: argument --model: {name} is {task} model, "
                       f"not an image segmentation model; choose one of {fits}"]
    assert predict.main([str(camvid_run), str(ROOT / "README.md")]) == 2
    assert "the model (image segmentation) takes images" in capsys.readouterr().err
    assert predict.main([str(point_run), "x.npy", "--output", "p.txt"]) == 2
    assert "a .json or .csv file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory, load_example):
    from pointctx.datasets import data_root

    if not (data_root(must_exist=False) / "modelnet40_train_1024.npz").is_file():
        pytest.skip("modelnet40_train_1024.npz is not available")
    out = tmp_path_factory.mktemp("runs") / "scenes"
    assert load_example("segment_scenes").main(["--smoke", "--output", str(out),
                                                "--no-progress", "--threads", "1"]) == 0
    return out / "pointmlp_elite_seg"


@pytest.fixture(scope="module")
def part_run(tmp_path_factory, load_example):
    from pointctx.datasets import data_root

    if not (data_root(must_exist=False) / "shapenetpart_sample").is_dir():
        pytest.skip("shapenetpart_sample is not available")
    out = tmp_path_factory.mktemp("runs") / "parts"
    argv = ["--smoke", "--num-points", "128", "--epochs", "1", "--no-progress", "--device",
            "cpu", "--threads", "1", "--output", str(out), "--model-kwargs",
            json.dumps({"embed_dim": 8, "de_dims": [16, 16, 8, 8], "gmp_dim": 8, "cls_dim": 8,
                        "head_hidden": 16})]
    assert load_example("shapenetpart").main(argv) == 0
    return out


def test_point_segmenters_write_labels_and_a_coloured_ply(predict, scene_run, part_run, tmp_path,
                                                          capsys):
    from pointctx.io import read_ply
    from pointctx.viz import label_colors

    (cloud, _), _ = _sample_clouds()
    np.savetxt(tmp_path / "scene.xyz", cloud[:, :3] * 2)
    out = tmp_path / "labels"
    assert predict.main([str(scene_run), str(tmp_path / "scene.xyz"), "--output", str(out)]) == 0
    assert f"{out / 'scene'}.ply, .npy ({len(cloud)} points)" in capsys.readouterr().out
    model = pointctx.load_model(scene_run)
    assert model.task == "point segmentation"
    labels = np.load(out / "scene.npy")
    with torch.no_grad():
        ref = model(PointBatch.from_list([torch.from_numpy(cloud[:, :3] * 2)])).argmax(1)
    np.testing.assert_array_equal(labels, ref.numpy())
    ply = read_ply(out / "scene.ply")
    assert torch.equal(ply.fields["label"].long(), ref)
    rgb = (ply.rgb.numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(rgb, label_colors(len(model.class_names))[labels])

    parts = pointctx.load_model(part_run)
    assert parts.task == "part segmentation" and parts.inputs["kind"] == "points"
    assert predict.main([str(part_run), str(tmp_path / "scene.xyz"), "--output", str(out)]) == 2
    assert "argument --category: a part segmenter needs the object category, one of Airplane, " \
        in capsys.readouterr().err
    assert predict.main([str(part_run), str(tmp_path / "scene.xyz"), "--output", str(out),
                         "--category", "chair"]) == 0
    labels = np.load(out / "scene.npy")
    assert set(labels.tolist()) <= set(range(12, 16))  # the Chair parts only
