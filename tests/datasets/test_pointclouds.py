from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _cli import SAMPLES, modelnet40_sample
from torch.utils.data import DataLoader

from pointctx.datasets import (
    SCANOBJECTNN_CLASSES,
    ModelNet40,
    ScanObjectNN,
    data_root,
    farthest_point_sample,
    stratified_split,
)
from pointctx.datasets.scanobjectnn import SCANOBJECTNN_VARIANTS
from pointctx.transforms import (
    Compose,
    NormalizeUnitSphere,
    RandomJitter,
    RandomRotation,
    RandomScaleShift,
    ShufflePoints,
    reference_train_transform,
)

P = 2048  # points per cloud in the official files
F32, I64 = np.float32, np.int64


def _clouds(n, p=P, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p, 3)).astype(np.float32)


def write_h5(path, data, label, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=label)
        for k, v in extra.items():
            f.create_dataset(k, data=v)
    return path


def scan_file(root, variant, split):
    folder, suffix = SCANOBJECTNN_VARIANTS[variant]
    prefix = "training" if split == "train" else "test"
    return Path(root) / folder / f"{prefix}_objectdataset{suffix}.h5"


OFFICIAL_NAMES = {
    "OBJ_BG": "main_split/training_objectdataset.h5",
    "OBJ_ONLY": "main_split_nobg/training_objectdataset.h5",
    "PB_T25": "main_split/training_objectdataset_augmented25_norot.h5",
    "PB_T25_R": "main_split/training_objectdataset_augmented25rot.h5",
    "PB_T50_R": "main_split/training_objectdataset_augmentedrot.h5",
    "PB_T50_RS": "main_split/training_objectdataset_augmentedrot_scale75.h5",
}


# ----------------------------------------------------------------------------- ScanObjectNN
@pytest.mark.parametrize("variant", list(OFFICIAL_NAMES))
def test_scanobjectnn_reads_each_official_variant(tmp_path, variant):
    assert scan_file(tmp_path, variant, "train") == tmp_path / OFFICIAL_NAMES[variant]
    data = _clouds(5)
    label = np.array([0, 3, 14, 7, 7], dtype=np.int64)
    write_h5(tmp_path / OFFICIAL_NAMES[variant], data, label)
    test_name = OFFICIAL_NAMES[variant].replace("training_", "test_")
    write_h5(tmp_path / test_name, _clouds(3, seed=1), np.array([1, 2, 3], dtype=np.uint8))

    ds = ScanObjectNN(tmp_path, variant=variant, split="train", num_points=1024)
    assert len(ds) == 5 and ds.num_classes == 15 and ds.classes == list(SCANOBJECTNN_CLASSES)
    pts, y = ds[2]
    assert pts.dtype == torch.float32 and tuple(pts.shape) == (1024, 3) and y == 14
    np.testing.assert_array_equal(pts.numpy(), data[2, :1024])
    np.testing.assert_array_equal(ds.labels, label)
    test = ScanObjectNN(tmp_path, variant=variant, split="test", num_points=None)
    assert len(test) == 3 and tuple(test[0][0].shape) == (P, 3)
    # the files of the other layout folder are not picked up
    other = "OBJ_BG" if variant == "OBJ_ONLY" else "OBJ_ONLY"
    if SCANOBJECTNN_VARIANTS[other][0] != SCANOBJECTNN_VARIANTS[variant][0]:
        with pytest.raises(FileNotFoundError):
            ScanObjectNN(tmp_path, variant=other)


def test_scanobjectnn_accepts_h5_files_parent_and_label_column(tmp_path):
    label = np.array([[4], [9]], dtype=np.uint8)  # some releases store [N, 1]
    write_h5(scan_file(tmp_path / "h5_files", "PB_T50_RS", "train"), _clouds(2), label)
    ds = ScanObjectNN(tmp_path, split="train")
    assert ds.labels.tolist() == [4, 9] and ds[1][1] == 9


def test_scanobjectnn_missing_file_names_paths_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ScanObjectNN(tmp_path, variant="PB_T50_RS", split="test")
    msg = str(info.value)
    assert str(tmp_path / "main_split" / "test_objectdataset_augmentedrot_scale75.h5") in msg
    assert str(tmp_path / "h5_files" / "main_split") in msg
    assert "hkust-vgd.github.io/scanobjectnn" in msg and "registration" in msg


def test_scanobjectnn_corrupt_file(tmp_path):
    path = scan_file(tmp_path, "OBJ_BG", "train")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(ValueError, match=r"training_objectdataset\.h5: cannot be read as an HDF5"):
        ScanObjectNN(tmp_path, variant="OBJ_BG")


def test_scanobjectnn_truncated_file(tmp_path):
    path = write_h5(scan_file(tmp_path, "OBJ_BG", "train"), _clouds(4), np.zeros(4, np.int64))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="training_objectdataset.h5"):
        ScanObjectNN(tmp_path, variant="OBJ_BG")


@pytest.mark.parametrize(
    "data, label, match",
    [
        (np.zeros((3, P, 2), F32), np.zeros(3, I64), r"'data' must be float \[S, P, 3\]"),
        (np.zeros((3, P, 3), np.int32), np.zeros(3, I64), r"'data' must be float"),
        (np.zeros((3, P, 3), F32), np.zeros(4, I64), "'label' has 4 entries but 'data' has 3"),
        (np.zeros((3, P, 3), F32), np.zeros(3, F32), "'label' must be int"),
        (np.zeros((3, P, 3), F32), np.array([0, 15, 1]), r"labels must lie in \[0, 15\)"),
        (np.full((3, P, 3), np.nan, F32), np.zeros(3, I64), "cloud 0 has NaN/Inf"),
    ],
)
def test_scanobjectnn_wrong_content(tmp_path, data, label, match):
    write_h5(scan_file(tmp_path, "PB_T25", "train"), data, label)
    with pytest.raises(ValueError, match=match) as info:
        ScanObjectNN(tmp_path, variant="PB_T25")
    assert "training_objectdataset_augmented25_norot.h5" in str(info.value)


def test_scanobjectnn_missing_dataset_key(tmp_path):
    path = scan_file(tmp_path, "OBJ_BG", "train")
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=_clouds(2))
    with pytest.raises(ValueError, match=r"missing HDF5 dataset\(s\) \['label'\]"):
        ScanObjectNN(tmp_path, variant="OBJ_BG")


def test_scanobjectnn_bad_arguments(tmp_path):
    write_h5(scan_file(tmp_path, "PB_T50_RS", "train"), _clouds(2, p=64), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="`variant` must be one of"):
        ScanObjectNN(tmp_path, variant="PB_T50")
    with pytest.raises(ValueError, match="`split` must be one of"):
        ScanObjectNN(tmp_path, split="val")
    with pytest.raises(ValueError, match="`sampling` must be one of"):
        ScanObjectNN(tmp_path, sampling="grid")
    with pytest.raises(ValueError, match="`num_points` = 128 exceeds the 64 points"):
        ScanObjectNN(tmp_path, num_points=128)
    with pytest.raises(ValueError, match="`num_points` must be >= 1"):
        ScanObjectNN(tmp_path, num_points=0)


@pytest.fixture
def scan_root(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.uniform(-1, 1, (12, 256, 3)).astype(np.float32)
    write_h5(scan_file(tmp_path, "PB_T50_RS", "train"), data, np.arange(12) % 3)
    return tmp_path, data


def test_reference_augmentation_is_seeded_per_epoch_and_item(scan_root):
    root, _ = scan_root
    a = ScanObjectNN(root, num_points=128, transform=reference_train_transform(), seed=5)
    b = ScanObjectNN(root, num_points=128, transform=reference_train_transform(), seed=5)
    # same seed/epoch/item -> same draw, whatever the reading order
    first = [a[i][0] for i in range(len(a))]
    backwards = [b[i][0] for i in reversed(range(len(b)))][::-1]
    for x, y in zip(first, backwards):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    a.set_epoch(1)
    assert not torch.equal(a[0][0], first[0])
    c = ScanObjectNN(root, num_points=128, transform=reference_train_transform(), seed=6)
    assert not torch.equal(c[0][0], first[0])
    a.set_epoch(0)
    torch.testing.assert_close(a[0][0], first[0], rtol=0, atol=0)


def test_reference_augmentation_ranges(scan_root):
    root, data = scan_root
    ds = ScanObjectNN(root, num_points=256, transform=RandomScaleShift(), seed=0)
    for i in range(len(ds)):
        out = ds[i][0].numpy().astype(np.float64)
        src = data[i].astype(np.float64)
        scale = out.std(0) / src.std(0)
        shift = out.mean(0) - scale * src.mean(0)
        assert np.all((scale > 2 / 3 - 1e-4) & (scale < 1.5 + 1e-4)), scale
        assert np.all(np.abs(shift) < 0.2 + 1e-4), shift
        np.testing.assert_allclose(out, src * scale + shift, atol=1e-5)
    # shuffling keeps the points, permuted
    sh = ScanObjectNN(root, num_points=256, transform=ShufflePoints(), seed=0)
    out = sh[0][0].numpy()
    assert not np.array_equal(out, data[0])
    np.testing.assert_array_equal(np.sort(out, 0), np.sort(data[0], 0))


def test_sampling_modes(scan_root):
    root, data = scan_root
    first = ScanObjectNN(root, num_points=64, sampling="first")
    np.testing.assert_array_equal(first[3][0].numpy(), data[3, :64])
    rnd = ScanObjectNN(root, num_points=64, sampling="random", seed=1)
    x0 = rnd[3][0].numpy()
    rows = [np.flatnonzero((data[3] == r).all(1))[0] for r in x0]
    assert len(set(rows)) == 64  # distinct stored points
    rnd.set_epoch(1)
    assert not np.array_equal(rnd[3][0].numpy(), x0)
    fps = ScanObjectNN(root, num_points=64, sampling="fps")
    idx = farthest_point_sample(data[3], 64)
    np.testing.assert_array_equal(fps[3][0].numpy(), data[3][idx])

    def spread(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return d[np.triu_indices(len(x), 1)].min()

    assert spread(fps[3][0].numpy()) > spread(first[3][0].numpy())


def _naive_fps(x, k, start=0):
    picked = [start]
    d = np.full(len(x), np.inf)
    for _ in range(k - 1):
        d = np.minimum(d, ((x - x[picked[-1]]) ** 2).sum(1))
        picked.append(int(np.argmax(d)))
    return np.array(picked)


def test_farthest_point_sample_matches_naive_and_batches():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 200, 6)).astype(np.float32)
    out = farthest_point_sample(x, 50)
    assert out.shape == (4, 50) and out.dtype == np.int64
    for b in range(4):
        np.testing.assert_array_equal(out[b], _naive_fps(x[b, :, :3], 50))
        np.testing.assert_array_equal(farthest_point_sample(x[b], 50), out[b])
    t = farthest_point_sample(torch.from_numpy(x[0]), 10, start=7)
    assert isinstance(t, torch.Tensor) and int(t[0]) == 7
    np.testing.assert_array_equal(t.numpy(), _naive_fps(x[0, :, :3], 10, start=7))
    assert len(set(out[0].tolist())) == 50
    with pytest.raises(ValueError, match=r"`num_samples` must lie in \[1, P = 200\]"):
        farthest_point_sample(x, 201)
    with pytest.raises(ValueError, match="C >= 3"):
        farthest_point_sample(np.zeros((10, 2)), 3)
    with pytest.raises(ValueError, match="`start` must lie"):
        farthest_point_sample(x, 3, start=200)


# ----------------------------------------------------------------------------- transforms
def test_transforms_geometry():
    rng = np.random.default_rng(1)
    xyz = rng.standard_normal((100, 3)).astype(np.float32)
    normals = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    pts = np.concatenate([xyz, normals], 1)
    gen = np.random.default_rng(0)
    rot = RandomRotation("z")(pts, gen)
    np.testing.assert_allclose(np.linalg.norm(rot[:, :3], axis=1), np.linalg.norm(xyz, axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(rot[:, 2], xyz[:, 2], rtol=1e-6)  # z axis is fixed
    np.testing.assert_allclose(rot[:, 3:], rot[:, :3] / np.linalg.norm(rot[:, :3], axis=1,
                               keepdims=True), atol=1e-5)  # normals turn with the points
    assert not np.allclose(rot[:, :2], xyz[:, :2])
    unit = NormalizeUnitSphere()(xyz * 5 + 3)
    np.testing.assert_allclose(unit.mean(0), 0, atol=1e-5)
    assert np.linalg.norm(unit, axis=1).max() == pytest.approx(1.0, rel=1e-5)
    jit = RandomJitter(sigma=1.0, clip=0.05)(xyz, gen)
    assert np.abs(jit - xyz).max() <= 0.05 + 1e-6 and np.abs(jit - xyz).max() > 0.04
    scaled = RandomScaleShift(scale=(2, 2), shift=(1, 1))(pts, gen)
    np.testing.assert_allclose(scaled[:, :3], xyz * 2 + 1, rtol=1e-6)
    np.testing.assert_array_equal(scaled[:, 3:], normals)  # normals untouched by scaling
    # inputs are never modified
    np.testing.assert_array_equal(pts[:, :3], xyz)


def test_compose_and_transform_errors():
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    tf = Compose([RandomScaleShift((1, 1), (0, 0)), lambda p: p * 2])
    out = tf(xyz, np.random.default_rng(0))
    np.testing.assert_array_equal(out, xyz * 2)
    with pytest.raises(ValueError, match="`scale` must satisfy 0 < low <= high"):
        RandomScaleShift(scale=(0, 1))
    with pytest.raises(ValueError, match="`shift` must satisfy low <= high"):
        RandomScaleShift(shift=(0.2, -0.2))
    with pytest.raises(ValueError, match=r"`points` must have shape \[n, C\] with C >= 3"):
        ShufflePoints()(np.zeros((5, 2)))
    with pytest.raises(TypeError, match=r"`transforms\[1\]` must be callable"):
        Compose([ShufflePoints(), 3])
    with pytest.raises(ValueError, match="`axis` must be one of"):
        RandomRotation("w")


# ----------------------------------------------------------------------------- splits
def test_stratified_split():
    labels = np.repeat(np.arange(4), [10, 20, 1, 5])
    s = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(s.train, s.val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([s.train, s.val])), np.arange(36))
    assert np.bincount(labels[s.val], minlength=4).tolist() == [2, 4, 0, 1]
    again = stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(again.val, s.val)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=1).val, s.val)
    with pytest.raises(ValueError, match=r"`val_fraction` must lie in \(0, 1\)"):
        stratified_split(labels, 1.0)
    with pytest.raises(ValueError, match="1-D integer"):
        stratified_split(labels.astype(float), 0.5)


def test_dataset_split_views(scan_root):
    root, data = scan_root
    ds = ScanObjectNN(root, num_points=32, transform=reference_train_transform())
    parts = ds.split(0.25, seed=0)
    assert len(parts.train) + len(parts.val) == len(ds)
    assert parts.train.transform is ds.transform and parts.val.transform is None
    val_rows = stratified_split(ds.labels, 0.25, 0).val
    np.testing.assert_array_equal(parts.val[0][0].numpy(), data[val_rows[0], :32])
    sub = parts.train.subset([1, 0])
    np.testing.assert_array_equal(sub.labels, parts.train.labels[[1, 0]])
    assert sub.names is None  # the h5 files carry no shape ids
    with pytest.raises(IndexError):
        parts.val[len(parts.val)]


def test_loader_batches_do_not_depend_on_workers(scan_root):
    root, _ = scan_root
    ds = ScanObjectNN(root, num_points=32, transform=reference_train_transform(), seed=2)
    ds.set_epoch(3)
    serial = [b for b in DataLoader(ds, batch_size=4)]
    parallel = [b for b in DataLoader(ds, batch_size=4, num_workers=2)]
    assert tuple(serial[0][0].shape) == (4, 32, 3) and serial[0][1].dtype == torch.int64
    for (xa, ya), (xb, yb) in zip(serial, parallel):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ----------------------------------------------------------------------------- ModelNet40
def _real_npz():
    try:
        path = data_root() / "modelnet40_train_1024.npz"
    except FileNotFoundError:
        path = None
    if path is None or not path.is_file():
        pytest.skip("shared modelnet40_train_1024.npz is absent")
    return path


def test_modelnet40_real_npz():
    path = _real_npz()
    ds = ModelNet40(path.parent, split="train", num_points=512)
    assert len(ds) == 9843 and ds.num_classes == 40 and ds.layout == "npz"
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "xbox"
    pts, y = ds[0]
    assert pts.dtype == torch.float32 and tuple(pts.shape) == (512, 3) and y == 0
    assert float(pts.norm(dim=1).max()) <= 1.01
    parts = ds.split(0.2, seed=0)
    counts = np.bincount(ds.labels, minlength=40)
    val_counts = np.bincount(parts.val.labels, minlength=40)
    np.testing.assert_array_equal(val_counts, np.maximum(np.round(0.2 * counts), 1))
    assert len(parts.train) == 9843 - val_counts.sum()
    with pytest.raises(FileNotFoundError, match="holds only the official train split"):
        ModelNet40(path.parent, split="test")


def test_modelnet40_sample_is_real_and_balanced():
    tr, te = modelnet40_sample("train"), modelnet40_sample("test")
    assert (len(tr), len(te)) == (400, 100) and tr.num_classes == 10
    assert np.bincount(tr.labels).tolist() == [40] * 10
    assert np.bincount(te.labels).tolist() == [10] * 10
    assert not set(tr.names) & set(te.names) and len(tr.names) == 400
    half = tr.subset(np.arange(0, 400, 2))
    assert half.names == tr.names[::2]
    assert all(n.rsplit("_", 1)[0] == tr.classes[y] for n, y in zip(tr.names, tr.labels))
    assert (SAMPLES / "modelnet40_sample.npz").stat().st_size < 4e6
    path = _real_npz()
    with np.load(path) as full:
        names = list(full["names"])
        i = names.index(te.names[7])
        np.testing.assert_array_equal(te[7][0].numpy(), full["points"][i].astype(np.float32))


def test_modelnet40_npz_file_without_split_is_rejected(tmp_path):
    path = tmp_path / "shapes.npz"
    np.savez(path, points=_clouds(2, 16).astype(np.float16), labels=np.array([0, 1]),
             classes=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="cannot tell which split it holds"):
        ModelNet40(path, num_points=8)
    bad = tmp_path / "modelnet40_train_16.npz"
    np.savez(bad, points=_clouds(2, 16), labels=np.array([0, 5]), classes=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        ModelNet40(tmp_path, num_points=8)
    (tmp_path / "modelnet40_train_32.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="modelnet40_train_32.npz: cannot be read as an .npz"):
        ModelNet40(tmp_path, num_points=32)


def _write_ply_hdf5(root, with_normals=False):
    folder = root / "modelnet40_ply_hdf5_2048"
    names = ["airplane", "bathtub", "bed"]
    folder.mkdir(parents=True)
    (folder / "shape_names.txt").write_text("\n".join(names) + "\n")
    parts = {"train0": 4, "train1": 3, "test0": 2}
    out = {}
    for k, (name, n) in enumerate(parts.items()):
        data = _clouds(n, p=64, seed=k)
        label = (np.arange(n) % 3).astype(np.uint8)[:, None]
        extra = {"normal": -data} if with_normals else {}
        write_h5(folder / f"ply_data_{name}.h5", data, label, **extra)
        out[name] = data
    return out


def test_modelnet40_ply_hdf5(tmp_path):
    data = _write_ply_hdf5(tmp_path)
    ds = ModelNet40(tmp_path, split="train", num_points=32)
    assert ds.layout == "ply_hdf5" and len(ds) == 7 and ds.classes == ["airplane", "bathtub", "bed"]
    np.testing.assert_array_equal(ds[4][0].numpy(), data["train1"][0, :32])  # files in order
    assert ds.labels.tolist() == [0, 1, 2, 0, 0, 1, 2]
    te = ModelNet40(tmp_path / "modelnet40_ply_hdf5_2048", split="test", num_points=None)
    assert len(te) == 2 and tuple(te[0][0].shape) == (64, 3)
    with pytest.raises(ValueError, match=r"missing HDF5 dataset\(s\) \['normal'\]"):
        ModelNet40(tmp_path, split="test", use_normals=True)


def test_modelnet40_ply_hdf5_normals(tmp_path):
    data = _write_ply_hdf5(tmp_path, with_normals=True)
    ds = ModelNet40(tmp_path, split="test", num_points=16, use_normals=True)
    x = ds[1][0].numpy()
    assert x.shape == (16, 6)
    np.testing.assert_array_equal(x[:, 3:], -data["test0"][1, :16])


def _write_normal_resampled(root, points=40):
    folder = root / "modelnet40_normal_resampled"
    classes = ["airplane", "night_stand", "xbox"]
    folder.mkdir(parents=True)
    (folder / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    rng = np.random.default_rng(0)
    ids = {"train": ["airplane_0001", "night_stand_0001", "xbox_0002"], "test": ["xbox_0100"]}
    arrays = {}
    for split, names in ids.items():
        (folder / f"modelnet40_{split}.txt").write_text("\n".join(names) + "\n")
        for sid in names:
            cls = sid.rsplit("_", 1)[0]
            (folder / cls).mkdir(exist_ok=True)
            arr = rng.uniform(-1, 1, (points, 6)).astype(np.float32)
            np.savetxt(folder / cls / f"{sid}.txt", arr, delimiter=",", fmt="%.6f")
            arrays[sid] = np.loadtxt(folder / cls / f"{sid}.txt", delimiter=",", dtype=np.float32)
    return folder, arrays


def test_modelnet40_normal_resampled(tmp_path):
    folder, arrays = _write_normal_resampled(tmp_path)
    ds = ModelNet40(tmp_path, split="train", num_points=16)
    assert ds.layout == "normal_resampled" and ds.labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ds[1][0].numpy(), arrays["night_stand_0001"][:16, :3])
    np.testing.assert_array_equal(ds[1][0].numpy(), ds[1][0].numpy())  # cached read
    nrm = ModelNet40(folder, split="test", num_points=8, use_normals=True, sampling="fps")
    x = nrm[0][0].numpy()
    idx = farthest_point_sample(arrays["xbox_0100"], 8)
    np.testing.assert_array_equal(x, arrays["xbox_0100"][idx])
    assert x.shape == (8, 6)


def test_modelnet40_normal_resampled_errors(tmp_path):
    folder, _ = _write_normal_resampled(tmp_path)
    (folder / "xbox" / "xbox_0002.txt").write_text("1,2,3,4,5,6\n1,2,oops,4,5,6\n")
    ds = ModelNet40(tmp_path, split="train", num_points=None, sampling="random")
    with pytest.raises(ValueError, match=r"xbox_0002\.txt: cannot be parsed as 'x,y,z,nx,ny,nz'"):
        ds[2]
    (folder / "xbox" / "xbox_0002.txt").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"xbox_0002\.txt: expected lines of 6"):
        ds[2]
    (folder / "xbox" / "xbox_0002.txt").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 train shape files are missing"):
        ModelNet40(tmp_path, split="train")


def test_modelnet40_nothing_found(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ModelNet40(tmp_path, split="train")
    msg = str(info.value)
    for part in ("modelnet40_train_<P>.npz", "modelnet40_ply_hdf5_2048", "modelnet40_train.txt",
                 "modelnet.cs.princeton.edu"):
        assert part in msg
    with pytest.raises(ValueError, match="`layout` must be one of"):
        ModelNet40(tmp_path, layout="off")


def test_dataset_fps_preprocessing_reports_progress(scan_root, monkeypatch):
    """FPS over a whole dataset takes minutes on real data: it runs under a progress bar."""
    import pointctx.datasets.points as points_module

    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.n = kwargs, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(points_module, "tqdm", Bar)
    root, data = scan_root
    ds = ScanObjectNN(root, num_points=16, sampling="fps")
    assert len(bars) == 1 and bars[0].kwargs["total"] == len(data) == bars[0].n
    assert "FPS to 16 points, ScanObjectNN" in bars[0].kwargs["desc"]
    assert len(ds._fps) == len(data)
