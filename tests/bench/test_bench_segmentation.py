"""bench/segmentation.py runs its cases end to end (tiny images, in process)."""

import argparse
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "segmentation.py"


@pytest.fixture(scope="module")
def bench(load_module):
    return load_module(BENCH, "bench_segmentation")


@pytest.mark.parametrize("model", ["coc_micro_seg", "coc_micro_unet_seg"])
@pytest.mark.parametrize("output", ["dense", "points"])
@pytest.mark.parametrize("keep, pool", [("full", 1), ("random25", 1), ("region25", 1),
                                        ("random25", 2), ("random10", 3)])
def test_child_measures_a_case(bench, keep, pool, output, model):
    args = argparse.Namespace(
        case=f'{{"model": "{model}", "input": "image", "keep": "{keep}", '
             f'"output": "{output}", "input_pool": {pool}}}',
        what="time", iters=1, batch=1, threads=1, size=(48, 64))
    row = bench.child(args)
    assert row["outputs"] == (48 * 64 if output == "dense" else row["pixels_in"])
    assert row["pixels_in"] == {"full": 3072, "region25": 24 * 32}.get(keep, row["pixels_in"])
    assert 0 < row["backbone_s"] <= row["backbone_head_s"] + 1.0 and row["images_per_s"] > 0
    # the stem cells cover 4 * pool pixels per axis: at most ceil(48 / 4p) x ceil(64 / 4p)
    assert row["stage_points"][0] <= -(-48 // (4 * pool)) * -(-64 // (4 * pool))


def test_cases_have_input_pool_rows(bench):
    pooled = {(c["model"], c["keep"], c["output"]) for c in bench.CASES
              if c.get("input_pool", 1) > 1}
    assert {("coc_tiny_seg", "random25", "dense"), ("coc_micro_seg", "random10", "points")
            } <= pooled
    assert {c.get("input_pool", 1) for c in bench.CASES if c["keep"] == "random25"} == {1, 2}


def test_table_and_ratios(bench):
    rows = [
        {"model": "m", "input": "image", "keep": k, "output": "dense", "status": "ok",
         "params": 10, "images_per_s": v, "peak_mib": 1.0, "median_batch_s": 1 / v}
        for k, v in (("full", 2.0), ("region25", 5.0))
    ]
    rows.insert(0, {**rows[0], "input_pool": 2, "images_per_s": 8.0})  # not a base
    bench.add_ratios(rows)
    assert [r["vs_full"] for r in rows] == [4.0, 1.0, 2.5]
    text = bench.format_table(rows, 1, 1, (24, 32))
    assert "2.50" in text and "24x32" in text
    assert {c["model"] for c in bench.CASES} >= {"coc_tiny_seg", "unet_cpu_seg"}


def test_round_robin_child(bench):
    variants = bench.round_robin_variants()
    assert ["random25", 2] in variants and ["random10", 3] in variants and ["full", 1] in variants
    args = argparse.Namespace(
        case='{"model": "coc_micro_seg", "output": "points", "variants": '
             '[["full", 1], ["random25", 1], ["random25", 2]]}',
        iters=2, batch=1, threads=1, size=(48, 64))
    run = bench.child_round_robin(args)
    assert [(r["keep"], r["input_pool"]) for r in run["rows"]] == [
        ("full", 1), ("random25", 1), ("random25", 2)]
    assert run["rows"][0]["vs_full"] == 1.0 and all(len(r["times_s"]) == 2 for r in run["rows"])
    assert run["rows"][0]["pixels_in"] == 3072 > run["rows"][1]["pixels_in"]


def test_round_robin_rejects_other_models(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--round-robin", "--cases", "unet_cpu_seg"])
    assert "--round-robin runs the point models only" in capsys.readouterr().err
