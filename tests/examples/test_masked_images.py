"""examples/masked_images.py: mask helpers, the CNN baseline, and tiny end-to-end runs on MNIST."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pointctx.datasets import data_root
from pointctx.models import create_model

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "masked_images.py"


@pytest.fixture(scope="module")
def study(load_example):
    return load_example("masked_images")


def _need_mnist():
    try:
        path = data_root() / "mnist_train.npz"
    except FileNotFoundError:
        pytest.skip("shared data folder not available")
    if not path.is_file():
        pytest.skip(f"{path} not available")


def test_conditions_and_masks(study):
    conds = study.condition_names([1.0, 0.5, 0.25])
    assert conds == ["keep1", "keep0.5", "keep0.25", "polygon", "blocks", "hole"]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 28, 28, generator=g)
    rows = np.arange(100, 106)
    half = study.condition_masks("keep0.5", images, rows, seed=3)
    assert half.shape == (6, 28, 28) and half.dtype == torch.bool
    assert (half.sum((1, 2)) == 392).all()
    assert torch.equal(half, study.condition_masks("keep0.5", images, rows, seed=3))
    assert not torch.equal(half, study.condition_masks("keep0.5", images, rows, seed=4))
    blocks = study.condition_masks("blocks", images, rows, seed=3)
    assert (blocks.sum((1, 2)) == 392).all()  # rectangles cover exactly half
    assert study.condition_masks("keep1", images, rows, seed=3).all()
    a = study.mixed_masks(conds, images, rows, seed=1, epoch=0)
    assert torch.equal(a, study.mixed_masks(conds, images, rows, seed=1, epoch=0))
    assert not torch.equal(a, study.mixed_masks(conds, images, rows, seed=1, epoch=1))
    with pytest.raises(ValueError, match="unknown masking condition"):
        study.make_transform("nope", 0)


def test_cnn_baseline_matches_the_coc_size(study):
    coc = create_model("coc_mnist")
    target = study.num_params(coc)
    cnn = study.matched_cnn(1, 10, target)
    assert abs(study.num_params(cnn) - target) / target < 0.1
    for c, w in ((1, 5), (3, 26)):
        assert study.cnn_params(c, 10, w) == study.num_params(study.SmallCNN(c, 10, w))
    picks = study.gallery_indices(torch.tensor([0, 0, 1, 1, 2, 2, 2]), 3, seed=0)
    assert sorted(torch.tensor([0, 0, 1, 1, 2, 2, 2])[picks].tolist()) == [0, 1, 2]
    assert len(set(study.gallery_indices(torch.tensor([0, 0, 0]), 2, seed=0).tolist())) == 2
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    x = torch.randn(2, 1, 28, 28)
    mask = torch.zeros(2, 28, 28, dtype=torch.bool)
    mask[:, :14] = True
    cnn.eval()
    # the CNN sees zero-filled images: the dropped pixels' values do not matter
    y1 = study.run_model("cnn", cnn, x, mask)
    y2 = study.run_model("cnn", cnn, torch.where(mask[:, None], x, torch.randn_like(x)), mask)
    torch.testing.assert_close(y1, y2)


def test_nonempty_cell_fraction(study):
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 0, 0] = True  # one pixel: 1 of the 4 cells of image 0
    masks[1, 4:, :] = True  # bottom half: 2 of 4 cells of image 1
    assert study.nonempty_cell_fraction(masks, 4) == pytest.approx(3 / 8)
    assert study.nonempty_cell_fraction(torch.ones(1, 6, 6, dtype=torch.bool), 4) == 1.0


def test_bad_arguments(study):
    for argv in (["--keep-ratios", "1,0"], ["--keep-ratios", "a"], ["--train-masks", "some"],
                 ["--models", "vit"], ["--epochs", "0"]):
        with pytest.raises(SystemExit):
            study.parse_args(argv)
    args = study.parse_args(["--quick", "--keep-ratios", "0.5,1,0.5"])
    assert args.keep_ratios == [1.0, 0.5] and args.train_size == 4000 and args.batch_size == 64


def test_tiny_run_writes_table_plot_and_gallery(study, tmp_path):
    _need_mnist()
    before = torch.get_num_threads()
    try:
        rc = study.main([
            "--out", str(tmp_path), "--train-size", "60", "--test-size", "40", "--epochs", "1",
            "--batch-size", "30", "--eval-batch-size", "40", "--keep-ratios", "1,0.25",
            "--train-masks", "mixed", "--throughput-batch", "8", "--throughput-repeats", "1",
            "--gallery-images", "1", "--threads", "1", "--no-progress", "--seed", "2",
        ])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["models"]) == {"coc-mixed", "cnn-mixed"}
    conds = ["keep1", "keep0.25", "polygon", "blocks", "hole"]
    for info in res["models"].values():
        assert list(info["accuracy"]) == conds
        assert all(0.0 <= a <= 1.0 for a in info["accuracy"].values())
    assert res["conditions"]["keep1"]["mean_kept_fraction"] == 1.0
    assert abs(res["conditions"]["keep0.25"]["mean_kept_fraction"] - 0.25) < 0.01
    assert set(res["throughput"]) == {"coc", "cnn"}
    for info in res["conditions"].values():
        assert 0.0 < info["mean_nonempty_4x4_cells"] <= 1.0
    assert all(v > 0 for t in res["throughput"].values() for v in t.values())
    assert abs(res["params"]["cnn"] - res["params"]["coc"]) / res["params"]["coc"] < 0.1
    for name in ("accuracy.png", "gallery.png"):
        with PIL.open(tmp_path / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_quick_study(study, tmp_path):
    """The documented --quick run end to end (a few minutes on one CPU)."""
    _need_mnist()
    before = torch.get_num_threads()
    try:
        rc = study.main(["--quick", "--out", str(tmp_path), "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["models"]) == {"coc-full", "coc-mixed", "cnn-full", "cnn-mixed"}
    # well above chance (0.1) on full images after the quick training
    assert all(info["accuracy"]["keep1"] > 0.5 for info in res["models"].values())
