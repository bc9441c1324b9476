"""pointctx.datasets.images: MNIST / CIFAR-10 readers on the real files, subsets, splits."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pointctx.datasets import (
    CIFAR10,
    CIFAR10_MEAN,
    MNIST,
    MNIST_MEAN,
    MNIST_STD,
    data_root,
    stratified_subset,
)
from pointctx.transforms import PixelSet, RandomKeep, pixel_collate


def _need(name):
    path = data_root(must_exist=False) / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def mnist_file():
    return _need("mnist_train.npz")


@pytest.fixture(scope="module")
def cifar_file():
    return _need("cifar10_train_jpeg.npz")


# --------------------------------------------------------------------------- helpers
def test_stratified_subset_balanced_and_nested():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])  # sorted by class, like the files
    sub = stratified_subset(labels, 20, seed=0)
    assert len(sub) == 20 and np.all(np.diff(sub) > 0)
    assert np.bincount(labels[sub], minlength=4).tolist() == [2, 4, 6, 8]
    assert set(stratified_subset(labels, 10, seed=0)) <= set(sub)
    assert not np.array_equal(sub, stratified_subset(labels, 20, seed=1))
    with pytest.raises(ValueError, match="count` must be an int in"):
        stratified_subset(labels, 0)


# --------------------------------------------------------------------------- MNIST
def test_mnist_items(mnist_file):
    ds = MNIST(limit=500)
    assert len(ds) == 500 and ds.num_classes == 10 and ds.classes[3] == "3"
    counts = np.bincount(ds.labels, minlength=10)
    assert counts.min() >= 40 and counts.max() <= 60  # class-balanced, not the first rows
    img, y = ds[0]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.5
    with np.load(mnist_file) as z:
        row = int(ds.rows[0])
        assert torch.equal(img[0], torch.from_numpy(z["images"][row]).float() / 255)
        assert y == int(z["labels"][row])


def test_mnist_indices_normalize_and_split(mnist_file):
    ds = MNIST(indices=[5, 59999, 6000])
    assert ds.rows.tolist() == [5, 59999, 6000] and ds.labels.tolist()[:2] == [0, 9]
    norm = MNIST(indices=[5], normalize=True)
    assert torch.allclose(norm[0][0], (ds[0][0] - MNIST_MEAN[0]) / MNIST_STD[0])
    full = MNIST(limit=2000, normalize=True)
    stats = torch.stack([full[i][0] for i in range(0, 2000, 10)])
    assert abs(stats.mean().item()) < 0.1 and abs(stats.std().item() - 1) < 0.1
    split = MNIST(limit=1000).split(val_fraction=0.2, seed=0)
    assert len(split.train) + len(split.val) == 1000
    assert not set(split.train.rows) & set(split.val.rows)
    assert np.bincount(split.val.labels, minlength=10).min() >= 15  # every class held out


def test_mnist_pixel_sets_seeded_per_row(mnist_file):
    t = PixelSet(RandomKeep(0.25, seed=0))
    ds = MNIST(limit=64, transform=t)
    s = ds[3]
    assert set(s) == {"pos", "x", "pixel", "mask", "image", "y"}
    assert s["pos"].shape == (196, 2) and s["x"].shape == (196, 1)
    # the mask follows the file row, not the view position
    view = ds.subset([3])
    assert torch.equal(view[0]["mask"], s["mask"])
    again = MNIST(indices=[int(ds.rows[3])], transform=PixelSet(RandomKeep(0.25, seed=0)))
    assert torch.equal(again[0]["mask"], s["mask"])
    batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=pixel_collate)))
    assert batch["points"].num_sets == 8 and batch["points"].sizes.tolist() == [196] * 8
    assert torch.equal(batch["points"].to_images(), batch["image"])


def test_mnist_errors(mnist_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        MNIST(path=tmp_path / "nothing.npz")
    with pytest.raises(ValueError, match=r"indices` must lie in \[0, 60000\)"):
        MNIST(indices=[60000])
    with pytest.raises(ValueError, match="limit` must be an int >= 1"):
        MNIST(limit=0)
    with pytest.raises(ValueError, match="normalize` mean must have 1 value, got 2"):
        MNIST(limit=10, normalize=((0.1, 0.2), (0.3, 0.4)))
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        MNIST(path=tmp_path / "bad.npz")


def test_missing_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("POINTCTX_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="POINTCTX_DATA"):
        MNIST()


# --------------------------------------------------------------------------- CIFAR-10
def test_cifar_decode_and_cache(cifar_file):
    lazy = CIFAR10(limit=50)
    cached = CIFAR10(limit=50, cache=True)
    assert lazy.rows.tolist() == cached.rows.tolist()
    assert np.bincount(lazy.labels, minlength=10).tolist() == [5] * 10
    img, y = lazy[7]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert torch.equal(img, cached[7][0]) and y == cached[7][1]
    with np.load(cifar_file) as z:
        row = int(lazy.rows[7])
        data = z["jpeg"][z["offsets"][row] : z["offsets"][row + 1]].tobytes()
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert torch.equal(img, torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 255)
        assert y == int(z["labels"][row]) and lazy.classes[y] == str(z["classes"][y])
    norm = CIFAR10(indices=[int(lazy.rows[7])], normalize=True)
    assert torch.allclose(norm[0][0][0], (img[0] - CIFAR10_MEAN[0]) / 0.2470, atol=1e-6)


def test_cifar_masked_samples(cifar_file):
    from pointctx.transforms import BlockMask

    ds = CIFAR10(limit=20, transform=PixelSet(BlockMask(0.5, seed=1)))
    s = ds[0]
    assert s["x"].shape == (512, 3) and s["image"].shape == (3, 32, 32)
    train, val = ds.split(val_fraction=0.5, seed=0)
    assert len(train) == len(val) == 10
    assert torch.equal(val[0]["mask"], ds[list(ds.rows).index(val.rows[0])]["mask"])


def test_cifar_errors(tmp_path):
    np.savez(tmp_path / "c.npz", jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 4, 9]),
             labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="offsets"):
        CIFAR10(path=tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 4, 10]),
             labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="image 0 does not decode"):
        CIFAR10(path=tmp_path / "d.npz")[0]
