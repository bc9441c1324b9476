"""bench/profile_step.py: operator categories and one small profiled step end to end."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "profile_step.py"


@pytest.fixture(scope="module")
def bench(load_module):
    return load_module(BENCH, "bench_profile_step")


def test_categories(bench):
    assert bench.category("aten::addmm") == "matrix products"
    assert bench.category("aten::native_batch_norm_backward").startswith("BatchNorm")
    assert bench.category("aten::threshold_backward") == "activations (fwd + bwd)"
    assert bench.category("aten::add_") == "element-wise arithmetic"
    assert bench.category("aten::index_select") == "gathers / scatters"
    assert bench.category("torch_cluster::knn") == "kNN / FPS kernels"
    assert bench.category("aten::empty") == "other"


def test_profiles_a_small_training_step(bench, tmp_path, monkeypatch, capsys):
    out = tmp_path / "p.json"
    monkeypatch.setattr(sys, "argv", ["profile_step.py", "--model", "pointmlp_elite",
                                      "--batch", "2", "--warmup", "1", "--out", str(out)])
    bench.main()
    res = json.loads(out.read_text())
    shares = [c["share"] for c in res["categories"].values()]
    assert abs(sum(shares) - 1) < 1e-6 and res["categories"]["matrix products"]["ms"] > 0
    assert res["mode"] == "train" and res["conditions"]["batch"] == 2
    assert "matrix products" in capsys.readouterr().out
