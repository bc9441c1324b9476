"""End-to-end tests of examples/segment_images.py (tiny CamVid folders; the real file when slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pointctx.datasets import CamVid, data_root

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "segment_images.py"
UNET = json.dumps({"width": 4, "depth": 2})


@pytest.fixture(scope="module")
def script(load_example):
    return load_example("segment_images")


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _camvid(root, counts=(("train", 8), ("val", 3), ("test", 2)), h=24, w=32):
    """A tiny CamVid in the SegNet layout: label = class of a coloured vertical band, some void."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (11, 3))
    for split, n in counts:
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for i in range(n):
            lab = np.repeat(((np.arange(w) // 4 + i) % 12)[None], h, 0).astype(np.uint8)
            rgb = np.where(lab[..., None] < 11, palette[np.minimum(lab, 10)], 0)
            rgb = np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8)
            name = f"img{i:03d}.png"
            Image.fromarray(rgb).save(root / split / name)
            Image.fromarray(lab).save(root / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _tiny(root):
    return ["--data-root", str(root), "--model", "unet_cpu_seg", "--model-kwargs", UNET,
            "--size", "16x24", "--scale", "0.75,1.25", "--batch-size", "4", "--epochs", "2",
            "--device", "cpu", "--no-progress", "--threads", "1", "--num-predictions", "2"]


def _weights(run):
    return torch.load(Path(run) / "last.pt", map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--size", "4x4"], "argument --size: H and W must be >= 8"),
        (["--size", "big"], "argument --size: must be HxW"),
        (["--scale", "2,1"], "argument --scale: must be MIN,MAX with 0 < MIN <= MAX"),
        (["--keep-ratio", "0"], "argument --keep-ratio"),
        (["--model", "no_such_model"], "argument --model: unknown model 'no_such_model'"),
        (["--recipe", "tpu"], "argument --recipe: invalid choice"),
        (["--data-root", "/no/such/dir"], "argument --data-root: directory '/no/such/dir'"),
    ],
)
def test_argument_errors(script, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        script.parse_args(["--model", "unet_cpu_seg", *argv])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_recipes(script):
    cpu = script.parse_args(["--model", "unet_cpu_seg"])
    assert (cpu.size, cpu.threads, cpu.class_weights) == ((120, 160), 1, "median-freq")
    gpu = script.parse_args(["--recipe", "gpu", "--model", "unet_seg", "--epochs", "5"])
    assert gpu.size == (360, 480) and gpu.scale == (0.5, 2.0) and gpu.epochs == 5
    quick = script.parse_args(["--recipe", "quick", "--model", "unet_seg"])
    assert (quick.train_limit, quick.val_limit) == (48, 16)


def test_train_evaluate_write_predictions(script, tmp_path):
    root = _camvid(tmp_path / "camvid")
    out = tmp_path / "run"
    assert script.main([*_tiny(root), "--output", str(out), "--keep-ratio", "0.5"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "finished" and res["dataset"]["eval_split"] == "val"
    last = res["last"]
    assert set(last) >= {"miou", "oa", "macc", "per_class", "epoch"}
    assert set(last["per_class"]["road"]) == {"iou", "acc", "support"}
    # scored at the full 24x32 label resolution, void left out
    labels = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "valannot").iterdir())])
    assert last["total"] == int((labels != 11).sum())
    assert sum(v["support"] for v in last["per_class"].values()) == last["total"]
    pngs = sorted((out / "predictions").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (3 * 32 + 8, 24)
    assert len(res["dataset"]["class_weights"]) == 11
    # the test split of the folder layout
    out2 = tmp_path / "test"
    assert script.main([*_tiny(root), "--eval-split", "test", "--epochs", "1",
                        "--output", str(out2), "--class-weights", "none"]) == 0
    assert json.loads((out2 / "results.json").read_text())["eval_split"] == "test"


def test_stop_and_resume_equals_uninterrupted(script, tmp_path):
    root = _camvid(tmp_path / "camvid")
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert script.main([*_tiny(root), "--output", str(ref), "--keep-ratio", "0.5"]) == 0
    assert script.main([*_tiny(root), "--output", str(run), "--keep-ratio", "0.5",
                        "--stop-after-steps", "3"]) == 0
    assert torch.load(run / "last.pt", weights_only=False)["global_step"] == 3
    # --resume DIR alone continues with the stored settings
    assert script.main(["--resume", str(run), "--no-progress", "--threads", "1"]) == 0
    a, b = _weights(ref), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming with other settings is refused
    assert script.main([*_tiny(root), "--output", str(run), "--lr", "0.1", "--resume"]) == 2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--input-pool", "0"], "argument --input-pool: expected an int >= 1 or 'auto', got '0'"),
        (["--input-pool", "two"], "argument --input-pool: expected an int >= 1 or 'auto'"),
        (["--input-pool", "2", "--model", "unet_cpu_seg"],
         "argument --input-pool: unet_cpu_seg does not pool input pixels"),
        (["--input-pool", "auto"], "argument --input-pool: auto picks F from --keep-ratio"),
        (["--input-pool", "2", "--model-kwargs", '{"input_pool": 3}'],
         "argument --input-pool: 2 contradicts --model-kwargs input_pool 3"),
    ],
)
def test_input_pool_argument_errors(script, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        script.parse_args(["--model", "coc_micro_seg", *argv])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_input_pool_reaches_the_model(script, tmp_path):
    args = script.parse_args(["--model", "coc_micro_seg", "--keep-ratio", "0.1",
                              "--input-pool", "auto"])
    assert args.input_pool == 3 and args.model_kwargs == {"input_pool": 3}
    assert script.parse_args(["--model", "coc_micro_seg"]).model_kwargs == {}
    root = _camvid(tmp_path / "camvid", h=32, w=48)
    out = tmp_path / "run"
    argv = [a for a in _tiny(root) if a not in (UNET, "--model-kwargs")]
    argv[argv.index("unet_cpu_seg")] = "coc_micro_seg"
    assert script.main([*argv, "--size", "32x48", "--epochs", "1",
                        "--output", str(out), "--keep-ratio", "0.25", "--input-pool",
                        "auto"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "finished" and res["model"]["kwargs"] == {"input_pool": 2}
    assert res["config"]["input_pool"] == 2


def test_missing_data_names_the_file(script, tmp_path):
    root = _camvid(tmp_path / "camvid", counts=(("train", 8), ("val", 3)))
    (root / "valannot" / "img001.png").unlink()
    out = tmp_path / "run"
    assert script.main([*_tiny(root), "--output", str(out)]) == 1
    assert "valannot/img001.png" in (out / "log.txt").read_text()


def test_median_frequency_weights(script, tmp_path):
    root = _camvid(tmp_path / "camvid", counts=(("train", 3),))
    ds = CamVid(root, "train")
    w = script.median_frequency_weights(ds)
    labs = [ds.raw(i)[1] for i in range(3)]
    freq = {}
    for c in range(11):
        px = sum(int((lab == c).sum()) for lab in labs)
        img_px = sum(lab.size for lab in labs if (lab == c).any())
        if img_px:
            freq[c] = px / img_px
    assert 10 not in freq and float(w[10]) == 1.0  # class 10 never occurs: weight 1
    med = np.median(list(freq.values()))
    np.testing.assert_allclose([float(w[c]) for c in freq], [med / f for f in freq.values()],
                               rtol=1e-6)


def test_torchrun_two_processes_cpu(tmp_path):
    root = _camvid(tmp_path / "camvid")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), *_tiny(root), "--epochs", "1", "--output", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["status"] == "finished"
    labels = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "valannot").iterdir())])
    assert res["last"]["total"] == int((labels != 11).sum())  # every val pixel once
    assert res["history"][0]["val"]["samples"] == 3
    assert res["global_step"] == 2  # 8 images, global batch 4


@pytest.mark.slow
def test_make_segment_demo_on_real_camvid(tmp_path):
    """What `make segment-demo` runs: the quick recipe with the default model, real CamVid."""
    if not (data_root(must_exist=False) / "camvid_trainval.npz").is_file():
        pytest.skip("camvid_trainval.npz is absent")
    out = tmp_path / "demo"
    cmd = [sys.executable, str(SCRIPT), "--recipe", "quick", "--no-progress", "--output",
           str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"]["train_size"] == 48 and res["dataset"]["eval_size"] == 16
    assert res["last"]["miou"] > 0.05 and len(list((out / "predictions").glob("*.png"))) == 4


# --------------------------------------------------------------------------- the sparse study
def test_sparse_study_tables_and_resume(tmp_path, load_example):
    study = load_example("segment_sparse")
    root = _camvid(tmp_path / "camvid", counts=(("train", 8), ("val", 4)))
    out = tmp_path / "study"
    argv = ["--data-root", str(root), "--coc-model", "unet_cpu_seg", "--coc-kwargs", UNET,
            "--cnn-kwargs", json.dumps({"width": 3, "depth": 2}), "--size", "16x24",
            "--epochs", "2", "--batch-size", "4", "--conditions", "keep1,keep0.25,blocks",
            "--out", str(out), "--no-progress", "--repeats", "1", "--throughput-batch", "2"]
    assert study.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["conditions"] == ["keep1", "keep0.25", "blocks"]
    t = res["table"]
    assert t["keep1"]["kept_fraction"] == 1.0 and t["keep1"]["coc"]["missing_miou"] is None
    assert t["keep0.25"]["kept_fraction"] == pytest.approx(0.25, abs=0.01)
    assert t["blocks"]["kept_fraction"] == pytest.approx(0.5, abs=0.01)
    labels = np.stack([np.asarray(Image.open(p).resize((24, 16), Image.NEAREST))
                       for p in sorted((root / "valannot").iterdir())])
    labelled = int((labels != 11).sum())
    for c in ("keep0.25", "blocks"):
        for k in ("coc", "cnn"):
            r = t[c][k]
            assert 0 <= r["miou"] <= 1 and 0 <= r["missing_miou"] <= 1
            assert 0 < r["missing_pixels"] < labelled
            assert t[c]["throughput"][k] > 0
    assert res["models"]["coc"]["parameters"] != res["models"]["cnn"]["parameters"]
    assert (out / "accuracy.png").is_file()
    # a rerun reuses the finished trainings (same weights, same table)
    mtime = (out / "coc" / "last.pt").stat().st_mtime_ns
    assert study.main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["table"]["blocks"]["coc"] == t["blocks"]["coc"]
    assert (out / "coc" / "last.pt").stat().st_mtime_ns == mtime
    import pointctx  # each run folder is usable: the loaded model takes raw uint8 images

    cnn = pointctx.load_model(out / "cnn")
    assert cnn.task == "image segmentation" and cnn.class_names[0] == "sky"
    assert cnn(torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8)).shape == (1, 11, 30, 40)
    with pytest.raises(SystemExit):
        study.parse_args(["--conditions", "keep1,nothing"])
