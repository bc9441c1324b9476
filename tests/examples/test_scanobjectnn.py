"""End-to-end tests of examples/scanobjectnn.py on the bundled real sample (CPU, tiny settings)."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import pointctx
from pointctx.datasets import data_root

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "scanobjectnn.py"


@pytest.fixture(scope="module")
def script(load_example):
    return load_example("scanobjectnn")


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_model_is_registered(tiny_point_run):
    assert tiny_point_run.model in pointctx.list_models()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--num-points", "0"], r"argument --num-points: must be a positive integer \(>= 1\)"),
        (["--data-root", "/no/such/dir"], "argument --data-root: directory '/no/such/dir'"),
        (["--model", "no_such_model"], "argument --model: unknown model 'no_such_model'"),
        (["--model-kwargs", "[1]"], "argument --model-kwargs: must be a JSON object"),
        (["--train-fraction", "0"], r"argument --train-fraction: must be a ratio in \(0, 1\]"),
        (["--sample", "--dataset", "scanobjectnn"], "--sample runs the bundled sample"),
        (["--batch-size", "x"], "argument --batch-size: expected an integer, got 'x'"),
    ],
)
def test_bad_arguments_are_usage_errors(script, capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        script.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert re.search(match, err), err


def test_recipe_defaults_and_model_kwargs_merge(script, tiny_point_run):
    args = script.parse_args(["--sample"])
    assert (args.model, args.num_points, args.epochs, args.threads) == (
        tiny_point_run.model, 128, 12, 1)
    assert args.model_kwargs == {"k_neighbors": 16}
    args = script.parse_args(["--sample", "--model-kwargs", '{"embed_dim": 16}'])
    assert args.model_kwargs == {"k_neighbors": 16, "embed_dim": 16}
    args = script.parse_args(["--sample", "--model", "pointmlp_elite"])
    assert args.model_kwargs == {}  # the recipe's kwargs belong to the recipe's model
    args = script.parse_args([])
    assert (args.dataset, args.model, args.epochs, args.lr, args.batch_size) == (
        "scanobjectnn", "pointmlp_coc", 250, 0.01, 32)
    assert (args.weight_decay, args.label_smoothing, args.min_lr_ratio) == (1e-4, 0.2, 0.01)
    assert script.parse_args(["--model", "pointmlp"]).epochs == 200


def test_sample_run_reports_metrics(script, tmp_path, capsys, tiny_point_run):
    out = tmp_path / "run"
    assert script.main([*tiny_point_run.argv, "--epochs", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test OA" in printed and "mAcc" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "finished" and res["epochs_done"] == 2
    assert res["config"]["model"] == tiny_point_run.model
    assert res["seed"] == 1 and res["world_size"] == 1
    assert {"python", "torch", "pointctx", "numpy"} <= set(res["versions"])
    assert res["dataset"]["train_size"] == 80 and res["dataset"]["eval_size"] == 100
    for which in ("last", "best"):
        r = res[which]
        assert 0 <= r["oa"] <= 1 and 0 <= r["macc"] <= 1 and r["total"] == 100
        assert len(r["per_class"]) == 10
        assert sum(v["support"] for v in r["per_class"].values()) == 100
        # OA is the support-weighted mean of the per-class accuracies
        acc = sum(v["acc"] * v["support"] for v in r["per_class"].values()) / 100
        assert acc == pytest.approx(r["oa"])
    assert res["timing"]["train_samples_per_s"] > 0 and len(res["history"]) == 2
    log = (out / "log.txt").read_text()
    assert "epoch 2/2" in log and "best epoch" in log and "airplane" in log
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_and_resumed_run_is_exact(script, tmp_path, same_weights, last_weights,
                                              tiny_point_run):
    full, part = tmp_path / "full", tmp_path / "part"
    assert script.main([*tiny_point_run.argv, "--epochs", "2", "--output", str(full)]) == 0
    # 80 shapes / batch 16 = 5 steps per epoch: stop in the middle of epoch 2
    assert script.main([*tiny_point_run.argv, "--epochs", "2", "--output", str(part),
                        "--stop-after-steps", "7"]) == 0
    state = torch.load(part / "last.pt", weights_only=False)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)
    assert json.loads((part / "results.json").read_text())["status"] == "interrupted"
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state it starts with
    assert script.main([*tiny_point_run.argv, "--epochs", "2", "--output", str(part),
                        "--resume"]) == 0
    assert same_weights(last_weights(full), last_weights(part))
    a = json.loads((full / "results.json").read_text())
    b = json.loads((part / "results.json").read_text())
    assert a["last"] == b["last"] and a["best"] == b["best"]


def test_output_and_resume_guards(script, tmp_path, capsys, tiny_point_run):
    out = tmp_path / "run"
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--output", str(out),
                        "--stop-after-steps", "1"]) == 0
    capsys.readouterr()
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--output", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--output", str(out), "--resume",
                        "--lr", "0.5"]) == 2
    assert "--lr was 0.1, now 0.5" in capsys.readouterr().err
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--resume",
                        str(tmp_path / "none")]) == 2
    assert "last.pt does not exist" in capsys.readouterr().err


def test_ctrl_c_saves_and_resume_matches_uninterrupted(script, tmp_path, same_weights,
                                                       last_weights, tiny_point_run):
    args = [*tiny_point_run.argv, "--epochs", "4"]
    ref = tmp_path / "ref"
    assert script.main([*args, "--output", str(ref)]) == 0
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "--output", str(run)], env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run / "last.pt").exists():  # epoch 1 done
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint after epoch 1"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "interrupted (SIGINT)" in output or "stopped (SIGINT)" in output, output
    assert "Traceback" not in output
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["epoch"] < 4
    assert script.main([*args, "--output", str(run), "--resume"]) == 0
    assert same_weights(last_weights(ref), last_weights(run))


def test_torchrun_two_processes_cpu(tmp_path, tiny_point_run):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), *tiny_point_run.argv, "--epochs", "1", "--output", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["status"] == "finished"
    # every test shape is evaluated exactly once across the two processes
    assert res["last"]["total"] == 100
    assert sum(v["support"] for v in res["last"]["per_class"].values()) == 100
    # 80 training shapes, global batch 16 = 8 per process: 5 steps, 80 samples
    assert res["history"][0]["train_samples"] == 80 and res["global_step"] == 5
    assert (proc.stdout + proc.stderr).count("test OA") == 1  # only rank 0 reports


def test_modelnet40_shared_npz_holds_out_validation(script, tiny_point_run):
    try:
        root = data_root()
    except FileNotFoundError:
        pytest.skip("shared data folder is absent")
    if not (root / "modelnet40_train_1024.npz").is_file():
        pytest.skip("shared modelnet40_train_1024.npz is absent")
    args = script.parse_args(["--dataset", "modelnet40", "--data-root", str(root),
                              "--num-points", "32", "--model", tiny_point_run.model])
    assert (args.lr, args.weight_decay, args.epochs, args.grad_clip) == (0.1, 2e-4, 300, 1.0)
    train, val, name, classes, desc = script.build_datasets(args, logging.getLogger("t"))
    assert name == "val" and len(classes) == 40 and "held out" in desc
    assert len(train) + len(val) == 9843 and abs(len(val) - 0.2 * 9843) < 40
    assert not set(train.names) & set(val.names) and len(set(val.names)) == len(val)
    assert val.transform is None and train.transform is not None


def _write_scanobjectnn(root):
    rng = np.random.default_rng(0)
    for split, n in (("training", 30), ("test", 15)):
        path = root / "main_split" / f"{split}_objectdataset_augmentedrot_scale75.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        label = np.arange(n) % 15
        data = rng.normal(size=(n, 2048, 3)).astype(np.float32) * 0.2 + label[:, None, None] / 15
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=data)
            f.create_dataset("label", data=label.astype(np.int64))


def test_scanobjectnn_and_modelnet40_entry_points(script, tmp_path, load_example, tiny_point_run):
    _write_scanobjectnn(tmp_path / "h5")
    common = ["--model", tiny_point_run.model, "--model-kwargs",
              json.dumps(tiny_point_run.model_kwargs), "--num-points", "64",
              "--batch-size", "10", "--epochs", "1", "--device", "cpu", "--no-progress",
              "--threads", "1"]
    out = tmp_path / "scan"
    assert script.main(["--data-root", str(tmp_path / "h5"), *common, "--output", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"]["name"] == "scanobjectnn" and len(res["last"]["per_class"]) == 15
    assert res["last"]["total"] == 15 and res["config"]["variant"] == "PB_T50_RS"
    # missing files: a clear error, exit status 1
    assert script.main(["--data-root", str(tmp_path), *common, "--variant", "OBJ_ONLY",
                        "--output", str(tmp_path / "x")]) == 1
    assert "main_split_nobg" in (tmp_path / "x" / "log.txt").read_text()
    # the ModelNet40 wrapper on the ply_hdf5 layout (which has a test split)
    folder = tmp_path / "mn" / "modelnet40_ply_hdf5_2048"
    folder.mkdir(parents=True)
    (folder / "shape_names.txt").write_text("\n".join(f"c{i}" for i in range(40)))
    rng = np.random.default_rng(1)
    for name, n in (("train0", 20), ("test0", 8)):
        with h5py.File(folder / f"ply_data_{name}.h5", "w") as f:
            f.create_dataset("data", data=rng.normal(size=(n, 2048, 3)).astype(np.float32))
            f.create_dataset("label", data=(np.arange(n) % 40).astype(np.uint8)[:, None])
    wrapper = load_example("modelnet40")
    out = tmp_path / "mn_run"
    assert wrapper.main(["--data-root", str(tmp_path / "mn"), *common, "--output", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["eval_split"] == "test" and res["last"]["total"] == 8
    assert res["config"]["weight_decay"] == 2e-4  # ModelNet40 recipe


def test_resume_dir_alone_continues_with_the_stored_configuration(script, tmp_path, capsys,
                                                                  same_weights, last_weights,
                                                                  tiny_point_run):
    full, part = tmp_path / "full", tmp_path / "part"
    assert script.main([*tiny_point_run.argv, "--epochs", "2", "--output", str(full)]) == 0
    assert script.main([*tiny_point_run.argv, "--epochs", "2", "--output", str(part),
                        "--stop-after-steps", "3"]) == 0
    assert "continue with --resume" in (part / "log.txt").read_text()
    torch.manual_seed(5)
    # no --sample, --epochs, --model...: everything comes from part/last.pt
    assert script.main(["--resume", str(part), "--no-progress"]) == 0
    assert same_weights(last_weights(full), last_weights(part))
    res = json.loads((part / "results.json").read_text())
    assert res["epochs_done"] == 2 and res["config"]["model_kwargs"] == tiny_point_run.model_kwargs
    capsys.readouterr()
    # flags that change the experiment still refuse, with the same message as before
    assert script.main(["--resume", str(part), "--epochs", "12"]) == 2
    assert "--resume: the run in" in capsys.readouterr().err
    assert script.main(["--resume", str(part), "--epochs", "12"]) == 2
    assert "--epochs was 2, now 12" in capsys.readouterr().err


def test_resume_of_a_run_killed_before_its_first_checkpoint(script, tmp_path, capsys,
                                                            tiny_point_run):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.pt.x7f3k2.pt").write_bytes(b"\x80\x02partial")  # kill -9 during the write
    assert script.main([*tiny_point_run.argv, "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"--resume: the run in .*run was interrupted before its first checkpoint "
                     r"was complete \(\.last\.pt\.x7f3k2\.pt is a partial write\); start it "
                     r"again without --resume", err), err
    # starting again removes the stale file
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--output", str(run)]) == 0
    assert not list(run.glob(".last.pt.*")) and (run / "last.pt").is_file()


def test_damaged_checkpoint_is_a_one_line_error(script, tmp_path, capsys, tiny_point_run):
    run = tmp_path / "run"
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--output", str(run),
                        "--stop-after-steps", "1"]) == 0
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])  # truncated
    capsys.readouterr()
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "error:" in x]
    assert len(line) == 1 and "Traceback" not in err
    assert re.search(r"last\.pt is damaged or not a checkpoint \(truncated", line[0])


def test_point_cloud_cli_refuses_image_models(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--model", "coc_mnist"])
    err = capsys.readouterr().err
    assert ("argument --model: coc_mnist is an image classification model, not a point "
            "classification model; choose one of pointmlp, pointmlp_coc, pointmlp_coc_elite, "
            "pointmlp_elite") in err, err


def test_eval_only_and_load_model(script, tmp_path, capsys, tiny_point_run):
    run = tmp_path / "run"
    assert script.main([*tiny_point_run.argv, "--epochs", "1", "--output", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    capsys.readouterr()
    assert script.main(["--eval-only", "--checkpoint", str(run / "best.pt"), "--no-progress",
                        "--device", "cpu"]) == 0
    assert "test OA" in capsys.readouterr().out
    ev = json.loads((run / "eval_test.json").read_text())
    assert ev["split"] == "test" and ev["size"] == 100
    assert ev["oa"] == pytest.approx(res["best"]["oa"]) and ev["per_class"] == \
        res["best"]["per_class"]
    model = pointctx.load_model(run)
    assert not model.training and model.class_names == res["dataset"]["classes"]
    with pytest.raises(SystemExit):
        script.parse_args(["--eval-only"])
    assert "give --eval-only and --checkpoint PATH together" in capsys.readouterr().err
    assert script.main(["--eval-only", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "argument --checkpoint: `path`: " in capsys.readouterr().err
