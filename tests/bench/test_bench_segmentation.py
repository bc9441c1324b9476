"""bench/segmentation.py runs its cases end to end (tiny images, in process)."""

import argparse
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "segmentation.py"


@pytest.fixture(scope="module")
def bench(load_module):
    return load_module(BENCH, "bench_segmentation")


@pytest.mark.parametrize("output", ["dense", "points"])
@pytest.mark.parametrize("keep", ["full", "random25", "region25"])
def test_child_measures_a_case(bench, keep, output):
    args = argparse.Namespace(
        case=f'{{"model": "coc_micro_seg", "input": "image", "keep": "{keep}", '
             f'"output": "{output}"}}',
        what="time", iters=1, batch=1, threads=1, size=(24, 32))
    row = bench.child(args)
    assert row["outputs"] == (24 * 32 if output == "dense" else row["pixels_in"])
    assert row["pixels_in"] == {"full": 768, "region25": 12 * 16}.get(keep, row["pixels_in"])
    assert 0 < row["backbone_s"] <= row["backbone_fpn_s"] + 1.0 and row["images_per_s"] > 0


def test_table_and_ratios(bench):
    rows = [
        {"model": "m", "input": "image", "keep": k, "output": "dense", "status": "ok",
         "params": 10, "images_per_s": v, "peak_mib": 1.0, "median_batch_s": 1 / v}
        for k, v in (("full", 2.0), ("region25", 5.0))
    ]
    bench.add_ratios(rows)
    assert [r["vs_full"] for r in rows] == [1.0, 2.5]
    text = bench.format_table(rows, 1, 1, (24, 32))
    assert "2.50" in text and "24x32" in text
    assert {c["model"] for c in bench.CASES} >= {"coc_tiny_seg", "unet_cpu_seg"}
