"""examples/_cli.py: the example scripts' command-line helpers."""

import argparse
import re
from pathlib import Path

import _cli as cli
import pytest
import torch


@pytest.mark.parametrize(
    "fn, text, value",
    [
        (cli.positive_int, "3", 3),
        (cli.nonnegative_int, "0", 0),
        (cli.positive_float, "1e-3", 1e-3),
        (cli.ratio, "1", 1.0),
        (cli.open_ratio, "0.2", 0.2),
        (cli.json_object, '{"a": [1, 2]}', {"a": [1, 2]}),
    ],
)
def test_accepts(fn, text, value):
    assert fn(text) == value


@pytest.mark.parametrize(
    "fn, text, match",
    [
        (cli.positive_int, "0", r"positive integer \(>= 1\), got 0"),
        (cli.positive_int, "1.5", "expected an integer, got '1.5'"),
        (cli.nonnegative_int, "-1", "integer >= 0, got -1"),
        (cli.positive_float, "nan", "expected a finite number"),
        (cli.positive_float, "-2", "must be > 0"),
        (cli.ratio, "0", r"ratio in \(0, 1\], got 0.0"),
        (cli.ratio, "1.5", r"ratio in \(0, 1\]"),
        (cli.open_ratio, "1", r"must lie in \(0, 1\)"),
        (cli.json_object, "[1]", "must be a JSON object"),
        (cli.json_object, "{a: 1}", "invalid JSON"),
    ],
)
def test_rejects(fn, text, match):
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        fn(text)


def test_existing_dir(tmp_path):
    assert cli.existing_dir(str(tmp_path)) == tmp_path
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        cli.existing_dir(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(argparse.ArgumentTypeError, match="is not a directory"):
        cli.existing_dir(str(tmp_path / "f"))


def test_parser_reports_usage_error(capsys):
    p = argparse.ArgumentParser(prog="prog")
    p.add_argument("--n", type=cli.positive_int)
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--n", "-3"])
    assert info.value.code == 2
    assert "argument --n: must be a positive integer (>= 1), got -3" in capsys.readouterr().err


def test_explicit_options_and_continue_config(tmp_path):
    import argparse


    p = argparse.ArgumentParser(prog="x.py")
    p.add_argument("--epochs", type=cli.positive_int, default=10)
    p.add_argument("--data-root", type=cli.existing_dir, default=None)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--resume", nargs="?", const="auto", default=None)
    argv = ["--epo", "3", "--no-flip", "--resume", "r"]
    args = p.parse_args(argv)
    explicit = cli.explicit_options(p, argv)
    assert explicit == {"epochs", "flip", "resume"}
    saved = {"epochs": 5, "data_root": str(tmp_path), "flip": True, "quick": True,
             "resume": None, "gone": 1}
    taken = cli.continue_config(p, args, saved, explicit, keep=("resume",))
    assert sorted(taken) == ["data_root", "quick"]
    assert args.epochs == 3 and args.flip is False and args.quick is True
    assert args.data_root == tmp_path and args.resume == "r"  # strings go through the type
    assert cli.config_mismatch(saved, vars(args), ["epochs", "quick"]) == "--epochs was 5, now 3"
    saved["data_root"] = str(tmp_path / "moved")
    with pytest.raises(ValueError, match=r"the stored --data-root .*moved' is no longer valid"):
        cli.continue_config(p, p.parse_args([]), saved, set())


def test_amp_dtype_and_args_config():
    import argparse
    from pathlib import Path

    import torch


    cpu = torch.device("cpu")
    assert all(cli.amp_dtype(a, cpu) is None for a in ("off", "auto", "bf16", "fp16"))
    cuda = torch.device("cuda")
    assert cli.amp_dtype("off", cuda) is None and cli.amp_dtype("fp16", cuda) is torch.float16
    assert cli.amp_dtype("bf16", cuda) is torch.bfloat16
    ns = argparse.Namespace(a=1, out=Path("x/y"), _explicit={"a"})
    assert cli.args_config(ns) == {"a": 1, "out": "x/y"}


def test_run_command_dispatch_errors_and_interrupt(capsys):
    import argparse
    from pathlib import Path


    def parse(argv):
        p = argparse.ArgumentParser()
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--eval-only", action="store_true")
        p.add_argument("--interrupt", action="store_true")
        return p.parse_args(argv)

    calls = []

    def run(args, dist_info, argv, t_start):
        if args.interrupt:
            raise KeyboardInterrupt
        assert cli.share_run_folder(Path("r"), dist_info) == Path("r")  # no DDP: unchanged
        calls.append(("run", argv, dist_info.world_size))
        return 0

    def evaluate(args, dist_info):
        calls.append(("eval",))
        return 3

    def usage(msg):
        calls.append(("usage", msg))
        return 2

    assert cli.run_command([], parse, run, usage, evaluate) == 0
    assert cli.run_command(["--eval-only"], parse, run, usage, evaluate) == 3
    assert cli.run_command(["--eval-only"], parse, run, usage) == 0  # no evaluator: train
    assert cli.run_command(["--device", "nonsense"], parse, run, usage) == 2
    assert cli.run_command(["--interrupt"], parse, run, usage) == 130
    assert calls[0] == ("run", [], 1) and calls[1] == ("eval",)
    assert calls[3][0] == "usage" and calls[3][1].startswith("argument --device:")
    assert "interrupted outside training" in capsys.readouterr().err


def test_find_resume_dir(tmp_path, monkeypatch):
    from pathlib import Path


    monkeypatch.chdir(tmp_path)
    assert cli.find_resume_dir("some/dir", None, "x") == Path("some/dir")
    assert cli.find_resume_dir("auto", Path("out"), "x") == Path("out")
    with pytest.raises(FileNotFoundError, match=r"no runs/camvid-m-\*/last.pt to continue"):
        cli.find_resume_dir("auto", None, "camvid-m")
    for name in ("camvid-m-1", "camvid-m-2", "camvid-m-3"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    for name in ("camvid-m-1", "camvid-m-2"):  # the newest folder holding a last.pt wins
        (tmp_path / "runs" / name / "last.pt").write_bytes(b"x")
    assert cli.find_resume_dir(None, None, "camvid-m") == Path("runs/camvid-m-2")


def test_load_eval_model_and_eval_output_path(tmp_path):
    from pathlib import Path

    import torch

    from pointctx import create_model

    torch.manual_seed(0)
    model = create_model("coc_mnist", num_classes=3)
    run = tmp_path / "run"
    run.mkdir()
    info = {"model": {"name": "coc_mnist", "create_kwargs": {"num_classes": 3}},
            "inputs": {"kind": "images"}, "config": {"lr": 0.5, "seed": 1}}
    torch.save({"model": model.state_dict(), "run_info": info}, run / "best.pt")
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--output", type=Path, default=None)

    def parse(argv):
        args = parser.parse_args(argv)
        args._explicit = cli.explicit_options(parser, argv)
        return args

    args = parse(["--checkpoint", str(run / "best.pt")])
    got, err = cli.load_eval_model(parser, args, "cpu", "image classification", ("seed",))
    assert err is None and got.run_info["model"]["name"] == "coc_mnist"
    for a, b in zip(got.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert (args.lr, args.seed) == (0.5, 0)  # the run's lr; `keep` keeps this seed
    assert cli.eval_output_path(args, "val") == run / "eval_val.json"
    args.checkpoint = run  # a run folder: the file goes into it
    assert cli.eval_output_path(args, "test") == run / "eval_test.json"
    args.output = tmp_path / "out"
    assert cli.eval_output_path(args, "val") == tmp_path / "out" / "eval_val.json"

    args = parse(["--checkpoint", str(run)])
    got, err = cli.load_eval_model(parser, args, "cpu", "point classification", ())
    assert got is None and err == (
        f"argument --checkpoint: {run}: coc_mnist is an image classification model, not a point "
        "classification model; choose one of pointmlp, pointmlp_coc, pointmlp_coc_elite, "
        "pointmlp_elite")
    args = parse(["--checkpoint", str(tmp_path / "nope.pt")])
    got, err = cli.load_eval_model(parser, args, "cpu", "image classification", ())
    assert got is None and err.startswith("argument --checkpoint: `path`:")
    assert "does not exist" in err


def test_resume_into_output_and_batch_split_error(capsys):
    from pathlib import Path


    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--resume", nargs="?", const=True, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(["--resume", "runs/a"])
    cli.resume_into_output(parser, args)
    assert (args.output, args.resume) == (Path("runs/a"), True)
    args = parser.parse_args(["--resume", "runs/a", "--output", "runs/a"])
    cli.resume_into_output(parser, args)
    assert (args.output, args.resume) == (Path("runs/a"), True)
    args = parser.parse_args([])
    cli.resume_into_output(parser, args)
    assert (args.output, args.resume) == (None, None)
    for argv, msg in ((["--resume", "runs/a", "--output", "runs/b"],
                       "--resume runs/a and --output runs/b name different folders"),
                      (["--resume"], "--resume needs the folder of the runs: --resume DIR")):
        with pytest.raises(SystemExit) as exc:
            cli.resume_into_output(parser, parser.parse_args(argv), "the folder of the runs")
        assert exc.value.code == 2 and msg in capsys.readouterr().err
    assert cli.batch_split_error(8, 2) is None
    assert cli.batch_split_error(9, 2) == ("argument --batch-size: 9 is not divisible by the 2 "
                                         "processes")


RUN_FLAGS = ["--seed", "--device", "--amp", "--threads", "--output", "--resume", "--eval-only",
             "--checkpoint", "--no-progress", "--stop-after-epoch", "--stop-after-steps"]


def _run_parser(**kw):
    parser = argparse.ArgumentParser(prog="x")
    group = cli.add_run_options(parser, **kw)
    return parser, group


def test_add_run_options_flags_defaults_and_help():
    parser, group = _run_parser(run_name="camvid-<model>", eval_split="val")
    assert group.title == "run"
    assert [a.option_strings[0] for a in group._group_actions] == RUN_FLAGS
    args = parser.parse_args([])
    assert vars(args) == {"seed": 0, "device": "auto", "amp": "auto", "threads": None,
                          "output": None, "resume": None, "eval_only": False,
                          "checkpoint": None, "no_progress": False, "stop_after_epoch": None,
                          "stop_after_steps": None}
    args = parser.parse_args(["--seed", "3", "--device", "cpu", "--amp", "bf16", "--threads", "2",
                              "--output", "r", "--eval-only", "--checkpoint", "r/last.pt",
                              "--no-progress", "--stop-after-epoch", "1", "--stop-after-steps",
                              "5"])
    assert (args.seed, args.device, args.amp, args.threads, args.output, args.eval_only,
            args.checkpoint, args.no_progress, args.stop_after_epoch, args.stop_after_steps) == (
        3, "cpu", "bf16", 2, Path("r"), True, Path("r/last.pt"), True, 1, 5)
    assert parser.parse_args(["--resume"]).resume == "auto"  # the script finds the run
    assert parser.parse_args(["--resume", "runs/a"]).resume == "runs/a"
    text = " ".join(parser.format_help().split())
    assert "run folder (default runs/camvid-<model>-<time>)" in text
    assert "or the newest runs/camvid-<model>-* with a checkpoint" in text
    assert "eval_val.json" in text


def test_add_run_options_variants():
    parser, group = _run_parser(run_name="scenes", amp=False, resume_const=True, newest=False,
                                models=True, stop_after_epoch=False, threads_default="1")
    group.add_argument("--smoke", action="store_true")  # script-specific run options join it
    flags = [a.option_strings[0] for a in group._group_actions]
    assert flags == [f for f in RUN_FLAGS if f not in ("--amp", "--eval-only", "--checkpoint",
                                                       "--stop-after-epoch")] + ["--smoke"]
    assert parser.parse_args(["--resume"]).resume is True  # for resume_into_output
    text = " ".join(parser.format_help().split())
    assert "runs/scenes-<time>" in text and "newest" not in text
    assert "finished models are kept" in text and "stop each model" in text
    assert "(default: 1)" in text
    with pytest.raises(ValueError, match="newest=True needs resume_const='auto', got True"):
        _run_parser(run_name="x", resume_const=True)


@pytest.mark.parametrize("argv, match", [
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--amp", "fp8"], "argument --amp: invalid choice: 'fp8'"),
    (["--threads", "0"], r"argument --threads: must be a positive integer \(>= 1\), got 0"),
    (["--stop-after-epoch", "0"], "argument --stop-after-epoch: must be a positive integer"),
    (["--stop-after-steps", "x"], "argument --stop-after-steps: expected an integer, got 'x'"),
])
def test_add_run_options_bad_values_are_usage_errors(argv, match, capsys):
    parser, _ = _run_parser(run_name="x")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)


def test_add_budget_options_and_parse_explicit(capsys):
    parser = argparse.ArgumentParser(prog="x")
    group = parser.add_argument_group("optimisation")
    assert cli.add_budget_options(group, optimizer="AdamW", items="images",
                                  min_lr_ratio=True) is group
    args = cli.parse_explicit(parser, ["--lr", "0.1", "--epochs", "2"])
    assert (args.epochs, args.batch_size, args.eval_batch_size, args.lr, args.min_lr_ratio) == (
        2, None, None, 0.1, None)
    assert args._explicit == {"lr", "epochs"}
    text = " ".join(parser.format_help().split())
    assert "AdamW learning rate" in text and "global batch of images" in text
    for argv, match in ((["--min-lr-ratio", "2"], r"ratio in \(0, 1\]"),
                        (["--batch-size", "0"], "argument --batch-size: must be a positive")):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert re.search(match, capsys.readouterr().err)
    bare = argparse.ArgumentParser()
    cli.add_budget_options(bare, optimizer="SGD", items="clouds")
    assert not hasattr(bare.parse_args([]), "min_lr_ratio")


def test_build_model_and_place_model():
    from pointctx.train import DistInfo

    fixed = {"num_classes": 5, "in_channels": 3}
    model, err = cli.build_model("coc_mnist", {}, fixed)
    assert err is None and model.num_classes == 5
    model, err = cli.build_model("coc_mnist", {"nonsense": 1}, fixed)
    assert model is None
    assert err.startswith('argument --model-kwargs: coc_mnist rejected {"nonsense": 1}: ')
    model, err = cli.build_model("coc_mnist", {"num_classes": 7}, fixed)  # given twice
    assert model is None and "num_classes" in err
    model, err = cli.build_model("coc_mnist", {"num_classes": 7}, fixed, override=True)
    assert err is None and model.num_classes == 7
    info = DistInfo(0, 1, 0, torch.device("cpu"), False)
    assert cli.place_model(model, info) is model  # no DDP: the model itself, on the device
    assert next(model.parameters()).device == torch.device("cpu")
    rank2 = DistInfo(2, 1, 0, torch.device("cpu"), False)
    cli.place_model(model, rank2, seed=3)  # reseeds: 3 * 1000 + rank + 1
    got = torch.rand(4)
    torch.manual_seed(3003)
    assert torch.equal(got, torch.rand(4))


def test_exit_status():
    assert [cli.exit_status(r) for r in ("SIGINT", "SIGTERM", "--stop-after-steps", None)] == [
        130, 143, 0, 0]


def test_choose_run_folder_and_open_run_log(tmp_path, monkeypatch, capsys):
    from pointctx.train import DistInfo, save_checkpoint

    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=0)
    cli.add_run_options(parser, run_name="demo")

    def choose(argv, **kw):
        args = cli.parse_explicit(parser, argv)
        return args, cli.choose_run_folder(parser, args, "demo", ("workers",), ("lr",), **kw)

    args, (out, err) = choose([])  # a new time-stamped folder, not created
    assert err is None and out.parent == Path("runs") and out.name.startswith("demo-")
    assert not out.exists()
    args, (out, err) = choose(["--output", "r1", "--lr", "0.5"])
    assert (out, err) == (Path("r1"), None)
    info = DistInfo(0, 1, 0, torch.device("cpu"), False)
    out, log = cli.open_run_log(out, info, "pointctx.test_cli")
    log.info("config: ...")
    for h in list(log.handlers):  # close log.txt
        log.removeHandler(h)
        h.close()
    text = (out / "log.txt").read_text()
    assert "| processes 1 | run folder r1" in text and "config: ..." in text
    capsys.readouterr()
    save_checkpoint(out / "last.pt", {"run_info": {"config": cli.args_config(args)}})
    _, (got, err) = choose(["--output", "r1"])
    assert got is None and err.startswith("argument --output: r1 already holds a run")
    args, (got, err) = choose(["--resume", "r1", "--workers", "2"])  # stored lr, typed workers
    assert (got, err, args.lr, args.workers) == (Path("r1"), None, 0.5, 2)
    args, (got, err) = choose(["--resume"])  # alone: the newest runs/demo-* (there is none)
    assert got is None and "no runs/demo-*/last.pt" in err
    _, (got, err) = choose(["--resume", "r1", "--lr", "0.2"])
    assert got is None
    assert err == "--resume: the run in r1 used other settings: --lr was 0.5, now 0.2"
    _, (got, err) = choose(["--resume", "r2"])
    assert got is None and err == f"--resume: {Path('r2') / 'last.pt'} does not exist"
    _, (got, err) = choose(["--resume", "r2"], missing=lambda d: f"no run in {d}")
    assert err == "no run in r2"


def test_run_command_check_batch_split(monkeypatch):
    from pointctx.train import DistInfo, distributed

    def parse(argv):
        p = argparse.ArgumentParser()
        p.add_argument("--device", default="cpu")
        p.add_argument("--batch-size", type=int, default=8)
        return p.parse_args(argv)

    calls = []

    def run(*args):
        calls.append("run")
        return 0

    def usage(msg):
        calls.append(msg)
        return 2

    assert cli.run_command(["--batch-size", "9"], parse, run, usage, check_batch_split=True) == 0
    three = DistInfo(0, 3, 0, torch.device("cpu"), False)  # as if launched on 3 processes
    monkeypatch.setattr(distributed, "init_distributed", lambda device: three)
    assert cli.run_command(["--batch-size", "9"], parse, run, usage, check_batch_split=True) == 0
    assert cli.run_command(["--batch-size", "8"], parse, run, usage, check_batch_split=True) == 2
    assert cli.run_command(["--batch-size", "8"], parse, run, usage) == 0  # not asked: no check
    assert calls == ["run", "run",
                     "argument --batch-size: 8 is not divisible by the 3 processes", "run"]


def test_resume_trainer_loads_and_logs(caplog):
    import logging

    class Loaded:  # the part of a Trainer that resume_trainer uses
        last_path, epoch, step_in_epoch = Path("r/last.pt"), 2, 3

        def load(self):
            return {"run_info": {}}

    log = logging.getLogger("pointctx.test_cli.resume")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert cli.resume_trainer(Loaded(), log) == {"run_info": {}}
    assert caplog.messages == [f"resumed from {Path('r/last.pt')}: 2 epochs and 3 steps of "
                               "epoch 3 done"]
