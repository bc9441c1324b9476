import argparse

import pytest

from pointctx.train import cli


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
