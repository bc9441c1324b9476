"""bench/linear.py: shape recording and one small end-to-end run."""

import json
from pathlib import Path

import pytest
import torch

from pointctx.ops import onednn_linear_available

BENCH = Path(__file__).resolve().parents[2] / "bench" / "linear.py"

pytestmark = pytest.mark.skipif(not onednn_linear_available(),
                                reason="this PyTorch build has no oneDNN")


@pytest.fixture(scope="module")
def bench(load_module):
    return load_module(BENCH, "bench_linear")


def test_records_every_product_of_a_forward_pass(bench):
    model, inp, _ = bench.build("pointmlp_elite", 2)
    shapes = bench.record_shapes(model, inp)
    # the first layer embeds 2 x 1,024 points of 3 coordinates; the head's last layer has
    # 15 classes and a bias
    assert shapes[(2048, 3, 32, False)] == 1
    assert any(k[0] == 2 and k[2] == 15 and k[3] for k in shapes)
    assert sum(shapes.values()) == 32


def test_small_run_writes_the_table_and_json(bench, tmp_path, capsys):
    out = tmp_path / "linear.json"
    threads = torch.get_num_threads()
    try:
        bench.main(["--models", "pointmlp_elite", "--batch", "2", "--repeats", "1",
                    "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    entry = res["models"]["pointmlp_elite"]
    assert entry["batch"] == 2 and len(entry["shapes"]) > 10
    assert set(entry["products_ms"]) == {"aten", "onednn"}
    assert set(entry["steps_ms"]) == {"infer", "train"}
    assert all(v > 0 for v in entry["steps_ms"]["train"].values())
    assert res["conditions"]["threads"] == 1 and "auto_prefers_onednn" in res["conditions"]
    text = capsys.readouterr().out
    assert "all products, weighted by calls" in text and "train step" in text
