import json

import numpy as np
import pytest
import torch

from pointctx.datasets import (
    SHAPENETPART_CATEGORIES,
    SHAPENETPART_PARTS,
    ShapeNetPart,
    category_part_mask,
    data_root,
)
from pointctx.datasets.shapenetpart import PART_OFFSETS, SHAPENETPART_SYNSETS


def _sample_root():
    root = data_root(must_exist=False) / "shapenetpart_sample"
    if not (root / "train_test_split").is_dir():
        pytest.skip("shared shapenetpart_sample/ is absent")
    return root


def test_standard_numbering():
    assert len(SHAPENETPART_CATEGORIES) == 16 and sum(map(len, SHAPENETPART_PARTS)) == 50
    assert SHAPENETPART_PARTS[0] == (0, 1, 2, 3)  # Airplane
    assert SHAPENETPART_PARTS[4] == (12, 13, 14, 15)  # Chair
    assert SHAPENETPART_PARTS[10] == (30, 31, 32, 33, 34, 35)  # Motorbike
    assert SHAPENETPART_PARTS[15] == (47, 48, 49)  # Table
    mask = category_part_mask()
    assert mask.shape == (16, 50) and int(mask.sum()) == 50 and bool((mask.sum(0) == 1).all())


def test_reads_the_real_sample_in_the_older_layout():
    root = _sample_root()
    ds = ShapeNetPart(root, split="train", num_points=None)
    assert ds.layout == "v0" and not ds.has_normals and len(ds) == 16
    assert sorted(ds.categories.tolist()) == list(range(16))
    for i in range(len(ds)):
        s = ds[i]
        syn = SHAPENETPART_SYNSETS[s.category]
        stem = ds.files[i][1].stem
        pts = np.loadtxt(root / syn / "points" / f"{stem}.pts", dtype=np.float32)
        local = np.loadtxt(root / syn / "points_label" / f"{stem}.seg", dtype=np.int64)
        np.testing.assert_array_equal(s.points.numpy(), pts)
        np.testing.assert_array_equal(s.parts.numpy(), PART_OFFSETS[s.category] + local - 1)
        assert set(s.parts.tolist()) <= set(SHAPENETPART_PARTS[s.category])
        assert s.normals is None and s.points.dtype == torch.float32
    with pytest.raises(ValueError, match="has no normals"):
        ShapeNetPart(root, use_normals=True)
    with pytest.raises(FileNotFoundError, match="shuffled_test_file_list.json is missing"):
        ShapeNetPart(root, split="test")


def test_official_resampling_is_seeded_per_epoch():
    ds = ShapeNetPart(_sample_root(), num_points=2048, seed=3)
    a, b = ds[5], ds[5]
    assert a.points.shape == (2048, 3) and a.parts.shape == (2048,)
    torch.testing.assert_close(a.points, b.points)
    ds.set_epoch(1)
    assert not torch.equal(ds[5].points, a.points)
    first = ShapeNetPart(_sample_root(), num_points=3000, sampling="first")[0]
    n = len(ShapeNetPart(_sample_root(), num_points=None)[0].points)
    torch.testing.assert_close(first.points[n:], first.points[: 3000 - n])


def _write_normal_layout(root, shapes):
    """shapes: list of (split, category id, shape id, points [n, 3], normals, global parts)."""
    (root / "train_test_split").mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text(
        "".join(f"{c}\t{s}\n" for c, s in zip(SHAPENETPART_CATEGORIES, SHAPENETPART_SYNSETS)))
    lists = {"train": [], "val": [], "test": []}
    for split, cat, sid, pts, nrm, parts in shapes:
        syn = SHAPENETPART_SYNSETS[cat]
        (root / syn).mkdir(exist_ok=True)
        rows = np.concatenate([pts, nrm, parts[:, None].astype(np.float64)], 1)
        np.savetxt(root / syn / f"{sid}.txt", rows, fmt="%.6f")
        lists[split].append(f"shape_data/{syn}/{sid}")
    for split, entries in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps(entries))


def test_reads_files_written_in_the_normal_layout(tmp_path):
    rng = np.random.default_rng(0)
    shapes = []
    for i, (split, cat) in enumerate([("train", 0), ("train", 4), ("val", 4), ("test", 15),
                                      ("test", 10)]):
        n = 30 + i
        pts = rng.standard_normal((n, 3)).round(4)
        nrm = rng.standard_normal((n, 3))
        nrm = (nrm / np.linalg.norm(nrm, axis=1, keepdims=True)).round(4)
        parts = rng.choice(SHAPENETPART_PARTS[cat], n)
        shapes.append((split, cat, f"shape{i:02d}", pts, nrm, parts))
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    _write_normal_layout(root, shapes)
    # the parent folder works too
    tv = ShapeNetPart(tmp_path, split="trainval", num_points=None)
    assert tv.layout == "normal" and tv.has_normals and len(tv) == 3
    test = ShapeNetPart(root, split="test", num_points=None)
    assert [c for c, _ in test.files] == [10, 15]  # sorted by category
    s = test[1]
    _, cat, _, pts, nrm, parts = shapes[3]
    assert s.category == cat == 15
    np.testing.assert_allclose(s.points.numpy(), pts, atol=1e-6)
    np.testing.assert_allclose(s.normals.numpy(), nrm, atol=1e-6)
    np.testing.assert_array_equal(s.parts.numpy(), parts)
    assert ShapeNetPart(root, split="test", use_normals=False)[0].normals is None
    assert len(ShapeNetPart(root, split="train", categories=["chair"])) == 1
    # a part id of another category is an error naming the file
    bad = root / SHAPENETPART_SYNSETS[0] / "shape00.txt"
    rows = np.loadtxt(bad)
    rows[0, 6] = 47
    np.savetxt(bad, rows)
    with pytest.raises(ValueError, match=r"shape00.txt: part labels \[47\] do not belong"):
        ShapeNetPart(root, split="train")[0]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ShapeNetPart not found"):
        ShapeNetPart(tmp_path)
    with pytest.raises(ValueError, match="`split` must be one of"):
        ShapeNetPart(tmp_path, split="training")
    with pytest.raises(ValueError, match="unknown ShapeNetPart category 'Sofa'"):
        ShapeNetPart(_sample_root(), categories=["Sofa"])
