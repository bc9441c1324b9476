import functools
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import pointctx
from pointctx import PointBatch, collate

SIZES = [5, 0, 3, 7, 2, 4, 1]


class TupleSets(Dataset):
    """Ragged sets as (pos ndarray, x tensor, int label)."""

    def __init__(self, sizes=SIZES):
        rng = np.random.default_rng(0)
        self.pos = [rng.standard_normal((n, 3)).astype(np.float32) for n in sizes]
        self.x = [torch.from_numpy(rng.standard_normal((n, 2)).astype(np.float32)) for n in sizes]

    def __len__(self):
        return len(self.pos)

    def __getitem__(self, i):
        return self.pos[i], self.x[i], i % 3


class DictSets(TupleSets):
    def __getitem__(self, i):
        n = self.pos[i].shape[0]
        return {
            "pos": torch.from_numpy(self.pos[i]),
            "y": torch.tensor(i),
            "scale": float(i) / 2,
            "seg": torch.arange(n) + 100 * i,
        }


def test_collate_is_exported():
    assert pointctx.collate is collate


def test_tuple_samples_with_numpy_pos_and_labels():
    ds = TupleSets()
    points, y = collate([ds[i] for i in (0, 1, 2)])
    assert isinstance(points, PointBatch)
    assert points.sizes.tolist() == [5, 0, 3]
    assert torch.equal(points.pos, torch.from_numpy(np.concatenate(ds.pos[:3])))
    assert torch.equal(points.x, torch.cat(ds.x[:3]))
    assert y.dtype == torch.long and y.tolist() == [0, 1, 2]


def test_tuple_samples_without_y_or_x():
    pos = [torch.randn(2, 2), torch.randn(3, 2)]
    points, y = collate([(p, None) for p in pos])
    assert y is None and points.x is None and points.ptr.tolist() == [0, 2, 5]
    points, y = collate(pos)  # bare tensors are (pos,)
    assert y is None and points.num_points == 5
    points, y = collate([(p, None, torch.tensor([1.0, 2.0])) for p in pos])
    assert points.x is None and y.shape == (2, 2)


def test_dict_samples_point_keys_and_scalars():
    ds = DictSets()
    collate_fn = functools.partial(collate, point_keys=("seg",))
    out = collate_fn([ds[i] for i in (3, 1, 4)])
    assert set(out) == {"points", "y", "scale", "seg"}
    points = out["points"]
    assert points.sizes.tolist() == [7, 0, 2] and points.x is None
    assert out["y"].tolist() == [3, 1, 4]
    assert out["scale"].tolist() == [1.5, 0.5, 2.0]
    assert out["seg"].tolist() == list(range(300, 307)) + [400, 401]
    assert out["seg"].shape[0] == points.num_points


@pytest.mark.parametrize("num_workers", [0, 2])
def test_real_dataloader_tuple_and_dict(num_workers):
    loader = DataLoader(TupleSets(), batch_size=3, collate_fn=collate, num_workers=num_workers)
    batches = list(loader)
    assert [len(points) for points, _ in batches] == [3, 3, 1]
    total = PointBatch.cat([points for points, _ in batches])
    ref = PointBatch.from_list(TupleSets().pos, TupleSets().x)
    assert torch.equal(total.pos, ref.pos) and torch.equal(total.x, ref.x)
    assert torch.equal(total.ptr, ref.ptr)
    assert torch.cat([y for _, y in batches]).tolist() == [i % 3 for i in range(len(SIZES))]

    loader = DataLoader(DictSets(), batch_size=4, num_workers=num_workers,
                        collate_fn=functools.partial(collate, point_keys=("seg",)))
    outs = list(loader)
    assert [o["points"].sizes.tolist() for o in outs] == [SIZES[:4], SIZES[4:]]
    assert torch.cat([o["y"] for o in outs]).tolist() == list(range(len(SIZES)))
    for o in outs:
        assert o["seg"].shape[0] == o["points"].num_points


def test_collate_errors():
    p = torch.randn(2, 3)
    with pytest.raises(ValueError, match="`samples` must hold at least one sample"):
        collate([])
    with pytest.raises(ValueError, match=r"`x` must be given for all samples or none: "
                       r"samples\[0\] has x=True, samples\[1\] has x=False"):
        collate([(p, torch.randn(2, 1)), (p, None)])
    with pytest.raises(ValueError, match=r"`y` must be given for all samples or none, got 1 of 2"):
        collate([(p, None, 1), (p, None)])
    with pytest.raises(ValueError, match=r"`samples\[0\]` must be \(pos,\), \(pos, x\) or "
                       r"\(pos, x, y\), got 4 items"):
        collate([(p, None, 1, 2)])
    with pytest.raises(TypeError, match=r"`samples\[1\]` must be a tuple"):
        collate([(p,), {"pos": p}])
    with pytest.raises(ValueError, match=r"`samples\[1\]` must have a 'pos' key"):
        collate([{"pos": p}, {"x": p}])
    with pytest.raises(ValueError, match=r"`samples\[1\]` must have the same keys"):
        collate([{"pos": p}, {"pos": p, "y": 1}])
    with pytest.raises(ValueError, match=r"`samples\[1\]\['seg'\]` is a per-point field and "
                       r"must have 2 rows \(one per point\), got shape \(3,\)"):
        collate([{"pos": p, "seg": torch.zeros(2)}, {"pos": p, "seg": torch.zeros(3)}],
                point_keys=("seg",))
    with pytest.raises(ValueError, match=r"`point_keys` entry 'lbl' is not a sample key"):
        collate([{"pos": p}], point_keys=("lbl",))
    with pytest.raises(ValueError, match=r"`pos_list\[1\]` must have D = 3"):
        collate([p, torch.randn(2, 2)])
    bad = p.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="`pos` has NaN or Inf"):
        collate([bad])
    assert collate([bad], allow_nonfinite=True)[0].num_points == 2


def test_dict_samples_with_numpy_x_and_readonly_arrays():
    rng = np.random.default_rng(1)
    samples = []
    for n in (2, 0, 3):
        pos = rng.standard_normal((n, 2))
        pos.flags.writeable = False  # e.g. memory-mapped data
        samples.append({"pos": pos, "x": rng.standard_normal((n, 4)), "y": n})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = collate(samples)
    points = out["points"]
    assert set(out) == {"points", "y"}
    assert points.pos.dtype == torch.float64  # numpy dtype is kept
    assert points.num_channels == 4 and points.sizes.tolist() == [2, 0, 3]
    assert torch.equal(points.x, torch.from_numpy(np.concatenate([s["x"] for s in samples])))
    assert out["y"].tolist() == [2, 0, 3]
