"""The GPU check script's plumbing, on CPU (``bench/gpu_check.sh --dry-run``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _run(*args, env_extra=None, timeout=900):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=timeout)


def _check_report(out: Path, steps):
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert report["versions"]["torch"] == torch.__version__
    assert report["versions"]["pointctx"] not in (None, "")
    assert [s["step"] for s in report["steps"]] == steps
    for s in report["steps"]:
        assert s["exit"] == 0, (s, Path(s["log"]).read_text()[-2000:])
        assert s["seconds"] >= 0 and Path(s["log"]).is_file()
    assert report["all_passed"] is True
    return report


def test_dry_run_writes_one_report(tmp_path):
    res = _run("--dry-run", "--steps", "tests,pointmlp", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    report = _check_report(tmp_path, ["tests", "pointmlp"])
    rows = report["results"]["pointmlp"]["results"]
    assert [r["model"] for r in rows] == ["pointmlp_elite"] and rows[0]["infer_s"] > 0


@pytest.mark.slow
def test_dry_run_all_steps(tmp_path):
    res = _run("--dry-run", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    report = _check_report(tmp_path, ["tests", "train", "ops", "pointmlp", "coc"])
    assert {"ops", "pointmlp", "models", "train"} <= set(report["results"])


def test_failing_step_is_recorded(tmp_path):
    # a python whose pytest cannot find the tests: the step fails, the report says so
    res = _run("--dry-run", "--steps", "tests", "--out", str(tmp_path),
               env_extra={"PYTEST_ADDOPTS": "--definitely-not-an-option"})
    assert res.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["all_passed"] is False and report["steps"][0]["exit"] != 0


def test_bad_arguments_and_missing_cuda(tmp_path):
    res = _run("--bogus")
    assert res.returncode == 2 and "unknown argument '--bogus'" in res.stderr
    if not torch.cuda.is_available():
        res = _run("--out", str(tmp_path))
        assert res.returncode == 2 and "cuda.is_available() is False" in res.stderr
