"""examples/train_images.py: recipe pieces and tiny end-to-end runs on the real MNIST / CIFAR-10."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pointctx.datasets import data_root

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_images.py"
# coc_mnist is a 0.3 M-parameter three-stage CoC: an epoch of 200 images takes well under a second
# on one core; one thread also makes runs compared bit for bit use the same reduction order
TINY = ["--dataset", "mnist", "--model", "coc_mnist", "--train-size", "200", "--val-size", "100",
        "--batch-size", "32", "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def script(load_example):
    return load_example("train_images")


def _need(name):
    try:
        path = data_root() / name
    except FileNotFoundError:
        pytest.skip("shared data folder not available")
    if not path.is_file():
        pytest.skip(f"{path} not available")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--epochs", "0"], r"argument --epochs: must be a positive integer \(>= 1\)"),
        (["--lr", "-1"], "argument --lr: must be > 0"),
        (["--batch-size", "x"], "argument --batch-size: expected an integer, got 'x'"),
        (["--masked", "1.5"], r"argument --masked: must be a ratio in \(0, 1\]"),
        (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (["--model", "no_such_model"], "argument --model: unknown model 'no_such_model'"),
        (["--models", "coc_mnist,nope"], "argument --model: unknown model 'nope'"),
        (["--models", "coc_mnist,coc_mnist"], "argument --models: a model is listed twice"),
        (["--model", "coc_mnist", "--models", "coc_tiny"], "give --model or --models, not both"),
        (["--epochs", "3", "--warmup-epochs", "3"], "argument --warmup-epochs: must be < --epochs"),
        (["--label-smoothing", "1"], r"argument --label-smoothing: must lie in \[0, 1\)"),
        (["--data-root", "/no/such/dir"], "argument --data-root: directory '/no/such/dir'"),
        (["--model-kwargs", "[1]"], "argument --model-kwargs: must be a JSON object"),
        (["--threads", "0"], r"argument --threads: must be a positive integer"),
    ],
)
def test_bad_arguments_are_usage_errors(script, capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        script.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert re.search(match, err), err


def test_recipe_defaults(script):
    a = script.parse_args([])
    assert a.models == ["coc_tiny_cifar"] and a.dataset == "cifar10"
    assert (a.epochs, a.batch_size, a.lr, a.weight_decay, a.label_smoothing) == (
        300, 128, 1e-3, 0.05, 0.1)
    assert (a.warmup_epochs, a.crop_padding, a.flip, a.val_size, a.train_size) == (
        5, 4, True, 5000, None)
    m = script.parse_args(["--dataset", "mnist", "--no-flip", "--epochs", "4"])
    assert m.models == ["coc_mnist"] and m.crop_padding == 2 and m.flip is False
    assert m.warmup_epochs == 0  # the recipe's warm-up is capped at epochs // 5 unless given
    q = script.parse_args(["--quick", "--epochs", "5"])
    assert (q.epochs, q.train_size, q.val_size, q.batch_size) == (5, 2000, 500, 64)
    two = script.parse_args(["--models", "coc_mnist, coc_tiny_cifar"])
    assert two.models == ["coc_mnist", "coc_tiny_cifar"]


def test_lr_schedule_warms_up_then_follows_a_cosine(script):
    f = [script.lr_factor(e, 10, 2, 0.01) for e in range(10)]
    assert f[0] == pytest.approx(1 / 3) and f[1] == pytest.approx(2 / 3) and f[2] == 1.0
    assert all(a > b for a, b in zip(f[2:], f[3:]))
    assert script.lr_factor(10, 10, 2, 0.01) == pytest.approx(0.01)
    assert script.lr_factor(0, 5, 0, 0.0) == 1.0


def test_param_groups_skip_decay_on_biases_and_norms(script):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay, no_decay = script.param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 3


def test_select_rows_is_stratified_and_val_does_not_depend_on_train_size(script):
    labels = np.repeat(np.arange(10), 50)
    tr, va = script.select_rows(labels, 100, 200, seed=1)
    assert len(va) == 100 and len(tr) == 200 and not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [10] * 10
    assert np.bincount(labels[tr]).tolist() == [20] * 10
    tr_all, va2 = script.select_rows(labels, 100, None, seed=1)
    assert np.array_equal(va, va2) and len(tr_all) == 400
    assert set(tr) <= set(tr_all)
    with pytest.raises(ValueError, match="fewer than --val-size"):
        script.select_rows(labels, 400, 200, seed=1)


def test_augmentation_is_a_function_of_seed_epoch_and_item(script):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(4)
    rows = np.array([10, 11, 12, 13])
    mask = script.RandomKeep(0.5, seed=2)
    ds = script.ImageSet(images, labels, rows, (0.5,) * 3, (0.25,) * 3, crop_padding=2,
                         flip=True, mask=mask, seed=5)
    (x0, m0), y = ds[1]
    assert x0.shape == (3, 8, 8) and m0.shape == (8, 8) and m0.dtype == torch.bool
    assert int(m0.sum()) == 32 and y == 1
    (x0b, m0b), _ = ds[1]
    assert torch.equal(x0, x0b) and torch.equal(m0, m0b)
    epochs = []
    for e in range(1, 6):
        ds.set_epoch(e)
        epochs.append(ds[1][0][0])
    assert any(not torch.equal(x0, x) for x in epochs)  # fresh crops/flips per epoch
    plain = script.ImageSet(images, labels, rows, (0.5,) * 3, (0.25,) * 3)
    x, _ = plain[2]
    assert torch.allclose(x, (images[2].float() / 255 - 0.5) / 0.25)


def test_real_mnist_run_writes_results(script, tmp_path, capsys):
    _need("mnist_train.npz")
    out = tmp_path / "run"
    assert script.main([*TINY, "--epochs", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best top-1" in printed and "coc_mnist" in printed
    res = json.loads((out / "coc_mnist" / "results.json").read_text())
    assert res["status"] == "finished" and res["epochs_done"] == 2 and res["seed"] == 3
    assert res["config"]["model"] == "coc_mnist" and res["config"]["lr"] == 1e-3
    assert {"python", "torch", "pointctx", "numpy", "threads"} <= set(res["versions"])
    assert res["dataset"]["train_size"] == 200 and res["dataset"]["val_size"] == 100
    assert res["recipe"]["optimizer"] == "AdamW" and res["recipe"]["flip"] is False
    assert res["eval_split"] == "val" and len(res["history"]) == 2
    for which in ("last", "best"):
        r = res[which]
        assert 0 <= r["oa"] <= 1 and r["total"] == 100 and len(r["per_class"]) == 10
        acc = sum(v["acc"] * v["support"] for v in r["per_class"].values()) / 100
        assert acc == pytest.approx(r["oa"])
    t = res["timing"]
    assert t["train_samples_per_s"] > 0 and t["eval_samples_per_s"] > 0 and t["wall_s"] > 0
    lrs = [h["lr"] for h in res["history"]]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] < lrs[0]  # cosine, no warm-up at 2 epochs
    summary = json.loads((out / "summary.json").read_text())
    row = summary["models"][0]
    assert row["model"] == "coc_mnist" and row["params"] == res["model"]["parameters"]
    assert row["val_top1"] == [h["val"]["oa"] for h in res["history"]]
    assert row["best_top1"] == res["best"]["oa"] and row["train_s_per_epoch"] > 0
    assert (out / "coc_mnist" / "best.pt").is_file()
    assert not [p for p in (out / "coc_mnist").iterdir() if p.name.endswith(".tmp")]


def test_interrupted_and_resumed_run_is_exact(script, tmp_path, same_weights, last_weights):
    _need("mnist_train.npz")
    full, part = tmp_path / "full", tmp_path / "part"
    args = [*TINY, "--epochs", "2"]
    assert script.main([*args, "--output", str(full)]) == 0
    # 200 images / batch 32 = 6 steps per epoch: stop in the middle of epoch 2
    assert script.main([*args, "--output", str(part), "--stop-after-steps", "8"]) == 0
    state = torch.load(part / "coc_mnist" / "last.pt", weights_only=False)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state it starts with
    assert script.main([*args, "--output", str(part), "--resume"]) == 0
    assert same_weights(last_weights(full / "coc_mnist"), last_weights(part / "coc_mnist"))
    a = json.loads((full / "coc_mnist" / "results.json").read_text())
    b = json.loads((part / "coc_mnist" / "results.json").read_text())
    assert a["last"] == b["last"] and a["best"] == b["best"]
    assert b["timing"]["sessions"] == 2


def test_output_and_resume_guards(script, tmp_path, capsys):
    _need("mnist_train.npz")
    out = tmp_path / "run"
    assert script.main([*TINY, "--epochs", "1", "--output", str(out),
                        "--stop-after-steps", "1"]) == 0
    capsys.readouterr()
    assert script.main([*TINY, "--epochs", "1", "--output", str(out)]) == 2
    assert "already holds a run of coc_mnist" in capsys.readouterr().err
    assert script.main([*TINY, "--epochs", "1", "--output", str(out), "--resume",
                        "--lr", "0.5"]) == 2
    assert "--lr was 0.001, now 0.5" in capsys.readouterr().err
    assert script.main([*TINY, "--epochs", "1", "--resume", str(tmp_path / "none")]) == 2
    assert "no " in capsys.readouterr().err
    assert script.main([*TINY, "--epochs", "1", "--output", str(tmp_path / "kw"),
                        "--model-kwargs", '{"bogus": 1}']) == 2
    assert "argument --model: coc_mnist(num_classes=10, in_channels=1" in capsys.readouterr().err


def test_two_models_on_real_cifar_pixel_sets(script, tmp_path, capsys):
    """--models trains each with the same budget; --masked feeds random-keep pixel sets."""
    _need("cifar10_train_jpeg.npz")
    out = tmp_path / "cmp"
    argv = ["--dataset", "cifar10", "--models", "coc_mnist,coc_tiny_plain", "--masked", "0.5",
            "--train-size", "64", "--val-size", "50", "--batch-size", "32", "--epochs", "1",
            "--device", "cpu", "--threads", "1", "--no-progress", "--output", str(out)]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "summary.json").read_text())["models"]
    assert [r["model"] for r in rows] == ["coc_mnist", "coc_tiny_plain"]
    for r in rows:
        assert r["status"] == "finished" and r["epochs_done"] == 1 and len(r["val_top1"]) == 1
        assert 0 <= r["best_top1"] <= 1 and r["params"] > 0
        assert r["model"] in printed
        res = json.loads((out / r["model"] / "results.json").read_text())
        assert res["dataset"]["image_size"] == [3, 32, 32]
        assert res["recipe"]["masked_keep"] == 0.5 and res["recipe"]["flip"] is True
        assert res["last"]["total"] == 50


def test_ctrl_c_saves_a_checkpoint(tmp_path):
    _need("mnist_train.npz")
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *TINY, "--epochs", "200", "--output", str(run)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run / "coc_mnist" / "last.pt").exists():  # epoch 1 done
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint after epoch 1"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "SIGINT" in output and "Traceback" not in output
    state = torch.load(run / "coc_mnist" / "last.pt", weights_only=False)
    assert 1 <= state["epoch"] < 200
    res = json.loads((run / "coc_mnist" / "results.json").read_text())
    assert res["status"] == "interrupted"
    assert json.loads((run / "summary.json").read_text())["models"][0]["status"] == "interrupted"


def test_resume_alone_eval_only_and_predict_an_image(script, tmp_path, capsys, load_example,
                                                     same_weights, last_weights):
    _need("mnist_train.npz")
    from PIL import Image

    import pointctx

    full, part = tmp_path / "full", tmp_path / "part"
    assert script.main([*TINY, "--epochs", "2", "--output", str(full)]) == 0
    assert script.main([*TINY, "--epochs", "2", "--output", str(part),
                        "--stop-after-steps", "8"]) == 0
    torch.manual_seed(7)
    assert script.main(["--resume", str(part), "--no-progress", "--threads", "1"]) == 0
    assert same_weights(last_weights(full / "coc_mnist"), last_weights(part / "coc_mnist"))
    capsys.readouterr()
    assert script.main(["--resume", str(part), "--epochs", "5"]) == 2
    assert "--epochs was 2, now 5" in capsys.readouterr().err
    # --eval-only reproduces the run's validation metrics of its best epoch
    res = json.loads((part / "coc_mnist" / "results.json").read_text())
    assert script.main(["--eval-only", "--checkpoint", str(part / "coc_mnist" / "best.pt"),
                        "--no-progress"]) == 0
    ev = json.loads((part / "coc_mnist" / "eval_val.json").read_text())
    assert ev["size"] == 100 and ev["oa"] == pytest.approx(res["best"]["oa"])
    # examples/predict.py on a PNG of a validation digit
    predict = load_example("predict")
    ds = pointctx.datasets.MNIST(indices=[59999])
    png = tmp_path / "digit.png"
    Image.fromarray((ds.image(0)[0].numpy() * 255).round().astype(np.uint8)).save(png)
    assert predict.main([str(part / "coc_mnist"), str(png), "--top", "1"]) == 0
    assert re.search(r"digit\.png: \d [0-9.]+ %", capsys.readouterr().out)
    model = pointctx.load_model(part / "coc_mnist")
    assert model.task == "image classification"
    x = (ds.image(0) - 0.1307) / 0.3081
    probs = predict.predict(model, png)
    with torch.no_grad():
        assert torch.allclose(probs, model.model(x[None]).softmax(-1)[0], atol=1e-5)
        raw = (ds.image(0) * 255).round().to(torch.uint8)  # the loaded model normalises
        assert torch.allclose(probs, model(raw[None]).softmax(-1)[0], atol=1e-5)


def test_resume_guards_for_partial_and_damaged_checkpoints(script, tmp_path, capsys):
    _need("mnist_train.npz")
    run = tmp_path / "run"
    (run / "coc_mnist").mkdir(parents=True)
    (run / "coc_mnist" / ".last.pt.a1b2.pt").write_bytes(b"partial")  # killed mid-write
    assert script.main([*TINY, "--epochs", "1", "--resume", str(run)]) == 2
    assert re.search(r"--resume: the run in .*run was interrupted before its first checkpoint "
                     r"was complete \(coc_mnist/\.last\.pt\.a1b2\.pt is a partial write\)",
                     capsys.readouterr().err)
    assert script.main([*TINY, "--epochs", "1", "--output", str(run),
                        "--stop-after-steps", "1"]) == 0
    assert not list((run / "coc_mnist").glob(".last.pt.*"))
    last = run / "coc_mnist" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    capsys.readouterr()
    assert script.main([*TINY, "--epochs", "1", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([x for x in err.splitlines() if "error:" in x]) == 1
    assert "last.pt is damaged or not a checkpoint (truncated" in err
