import numpy as np
import pytest
import torch
from _cli import modelnet40_sample

from pointctx.datasets import ShapeScenes


def _npz(tmp_path, per_class=6, classes=("chair", "lamp", "car"), p=64):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(classes)), per_class)
    pts = rng.uniform(-1, 1, (len(labels), p, 3)).astype(np.float16)
    path = tmp_path / "mn.npz"
    np.savez(path, points=pts, labels=labels, classes=np.array(classes))
    return path, pts, labels


def test_deterministic_for_a_seed_and_independent_of_access_order(tmp_path):
    path, _, _ = _npz(tmp_path)
    a = ShapeScenes(path, seed=3, num_scenes=5)
    b = ShapeScenes(path, seed=3, num_scenes=5)
    s4 = b.scene(4)
    for i in (4, 0, 2):
        sa, sb = a.scene(i), b.scene(i)
        np.testing.assert_array_equal(sa.points, sb.points)
        np.testing.assert_array_equal(sa.labels, sb.labels)
    np.testing.assert_array_equal(a.scene(4).points, s4.points)
    c = ShapeScenes(path, seed=4, num_scenes=5)
    assert not np.array_equal(c.scene(4).points, s4.points)


def test_scene_composition(tmp_path):
    path, pts, labels = _npz(tmp_path)
    ds = ShapeScenes(path, num_scenes=20, objects=(4, 8), floor_points=100, split="all")
    assert ds.classes == ["chair", "lamp", "car", "floor"] and ds.num_classes == 4
    for i in range(20):
        s = ds.scene(i)
        n = len(s.shapes)
        assert 4 <= n <= 8
        assert len(s.points) == 64 * n + 100
        floor = s.labels == 3
        assert floor.sum() == 100 and np.all(s.points[floor, 2] == 0)
        assert np.all(s.instances[floor] == -1)
        assert s.points[:, 2].min() == 0 and np.abs(s.points[:, :2].mean(0)).max() < 10
        for k in range(n):
            obj = s.points[s.instances == k]
            assert np.all(s.labels[s.instances == k] == labels[s.shapes[k]])
            assert obj[:, 2].min() == pytest.approx(0, abs=1e-6)  # rests on the floor
            # a turned, scaled copy of its shape: pairwise distances scale uniformly
            src = pts[s.shapes[k]].astype(np.float32)
            d_obj = np.linalg.norm(obj[0] - obj[1:], axis=1)
            d_src = np.linalg.norm(src[0] - src[1:], axis=1)
            ratio = d_obj / d_src
            assert 0.75 - 1e-4 <= ratio.mean() <= 1.25 + 1e-4
            np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-3)
        # footprint discs do not overlap
        cent = [s.points[s.instances == k][:, :2] for k in range(n)]
        for a in range(n):
            for b in range(a + 1, n):
                ca, cb = cent[a].mean(0), cent[b].mean(0)
                ra = np.linalg.norm(cent[a] - ca, axis=1).max()
                rb = np.linalg.norm(cent[b] - cb, axis=1).max()
                assert np.linalg.norm(ca - cb) >= ra + rb - 1e-4


def test_train_and_val_scenes_never_share_shapes(tmp_path):
    path, _, labels = _npz(tmp_path, per_class=10)
    tr = ShapeScenes(path, split="train", val_fraction=0.3, num_scenes=30)
    va = ShapeScenes(path, split="val", val_fraction=0.3, num_scenes=30, seed=1)
    assert not set(tr.shape_rows) & set(va.shape_rows)
    assert len(tr.shape_rows) + len(va.shape_rows) == len(labels)
    used_tr = np.concatenate([tr.scene(i).shapes for i in range(30)])
    used_va = np.concatenate([va.scene(i).shapes for i in range(30)])
    assert set(used_tr) <= set(tr.shape_rows) and set(used_va) <= set(va.shape_rows)


def test_classes_subset_num_points_and_items(tmp_path):
    path, _, labels = _npz(tmp_path)
    ds = ShapeScenes(path, classes=["car", "chair"], num_points=300, floor=False,
                     avoid_overlap=False, yaw=False, num_scenes=4)
    assert ds.classes == ["car", "chair"]
    pos, lab = ds[1]
    assert pos.shape == (300, 3) and pos.dtype == torch.float32 and lab.dtype == torch.int64
    assert set(lab.tolist()) <= {0, 1}
    used = np.concatenate([ds.scene(i).shapes for i in range(4)])
    assert set(labels[used]) <= {0, 2}  # source ids of car and chair


def test_modelnet40_dataset_source():
    try:
        src = modelnet40_sample("test", num_points=128)
    except FileNotFoundError:
        pytest.skip("bundled sample absent")
    ds = ShapeScenes(src, split="all", num_scenes=3, num_points=512)
    pos, lab = ds[0]
    assert pos.shape == (512, 3) and ds.num_classes == 11


def test_errors(tmp_path):
    path, _, _ = _npz(tmp_path)
    with pytest.raises(ValueError, match="unknown class 'sofa'"):
        ShapeScenes(path, classes=["sofa"])
    with pytest.raises(ValueError, match="`objects` must satisfy"):
        ShapeScenes(path, objects=(5, 2))
    with pytest.raises(ValueError, match="`split` must be one of"):
        ShapeScenes(path, split="test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ShapeScenes(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="`source` must be"):
        ShapeScenes(42)
    with pytest.raises(IndexError, match="out of range"):
        ShapeScenes(path, num_scenes=2).scene(2)
