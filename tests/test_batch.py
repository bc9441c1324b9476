import math

import numpy as np
import pytest
import torch

import pointctx
from pointctx import PointBatch
from pointctx.batch import Padded


def _sets(seed=0, sizes=(3, 0, 5, 1), d=3, c=4):
    g = torch.Generator().manual_seed(seed)
    pos = [torch.randn(n, d, generator=g) for n in sizes]
    x = [torch.randn(n, c, generator=g) for n in sizes]
    return pos, x


def _assert_same(a: PointBatch, b: PointBatch):
    assert torch.equal(a.pos, b.pos)
    assert (a.x is None) == (b.x is None)
    if a.x is not None:
        assert torch.equal(a.x, b.x)
    assert torch.equal(a.batch, b.batch)
    assert torch.equal(a.ptr, b.ptr)


# ---------------------------------------------------------------- constructor
def test_exported_from_package():
    assert pointctx.PointBatch is PointBatch
    assert "PointBatch" in pointctx.__all__ and "collate" in pointctx.__all__


def test_constructor_builds_ptr_from_batch_and_counts_trailing_empty_sets():
    pos = torch.randn(5, 2)
    batch = torch.tensor([0, 0, 2, 2, 2], dtype=torch.int32)
    pb = PointBatch(pos, batch=batch, batch_size=4)
    assert pb.batch.dtype == torch.long
    assert pb.ptr.tolist() == [0, 2, 2, 5, 5]
    assert pb.sizes.tolist() == [2, 0, 3, 0]
    assert pb.num_sets == len(pb) == 4
    assert pb.num_points == 5 and pb.dim == 2 and pb.num_channels == 0
    # without batch_size the last non-empty set ends the batch
    assert PointBatch(pos, batch=batch).num_sets == 3


def test_constructor_builds_batch_from_ptr():
    pos = torch.randn(4, 1)
    x = torch.randn(4, 7)
    pb = PointBatch(pos, x, ptr=torch.tensor([0, 0, 3, 4]))
    assert pb.batch.tolist() == [1, 1, 1, 2]
    assert pb.num_sets == 3 and pb.dim == 1 and pb.num_channels == 7


def test_constructor_with_neither_index_is_one_set():
    pb = PointBatch(torch.randn(6, 3))
    assert pb.num_sets == 1 and pb.ptr.tolist() == [0, 6] and pb.batch.tolist() == [0] * 6
    empty = PointBatch(torch.zeros(0, 3), batch_size=2)
    assert empty.ptr.tolist() == [0, 0, 0] and empty.num_points == 0


def test_constructor_accepts_consistent_batch_and_ptr():
    batch, ptr = torch.tensor([0, 2, 2]), torch.tensor([0, 1, 1, 3])
    pb = PointBatch(torch.randn(3, 2), batch=batch, ptr=ptr)
    assert pb.num_sets == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch=torch.tensor([0, 1, 0, 1])), r"`batch` must be sorted.*batch\[1\] = 1 > "),
        (dict(batch=torch.tensor([0, 0, 1, 3]), batch_size=3), r"`batch` values must be < "
         r"batch_size = 3, got 3"),
        (dict(batch=torch.tensor([-1, 0, 0, 0])), r"`batch` values must be >= 0, got -1"),
        (dict(batch=torch.tensor([0, 0, 0])), r"`batch` must have one entry per point: "
         r"expected 4, got 3"),
        (dict(x=torch.randn(3, 2)), r"`x` must have one row per point: expected 4 rows, got 3"),
        (dict(x=torch.zeros(4, 2, dtype=torch.long)), r"`x` must be a floating point"),
        (dict(ptr=torch.tensor([1, 2, 4])), r"`ptr` must start at 0, got ptr\[0\] = 1"),
        (dict(ptr=torch.tensor([0, 3, 2, 4])), r"`ptr` must be non-decreasing, but ptr\[1\] = 3"),
        (dict(ptr=torch.tensor([0, 2, 5])), r"`ptr` must end at the number of points N = 4, "
         r"got ptr\[-1\] = 5"),
        (dict(ptr=torch.tensor([0, 2, 4]), batch_size=3), r"`ptr` must have batch_size \+ 1 = 4"),
        (dict(ptr=torch.tensor([0.0, 4.0])), r"`ptr` must be an integer tensor"),
        (dict(batch=torch.tensor([0, 0, 1, 1]), ptr=torch.tensor([0, 1, 4])),
         r"`ptr` is inconsistent with `batch`: `batch` implies ptr\[1\] = 2, got ptr\[1\] = 1"),
        (dict(batch=torch.tensor([0, 0, 1, 2]), ptr=torch.tensor([0, 2, 4])),
         r"`batch` values must be < B = 2 \(from `ptr`\), got 2"),
        (dict(batch_size=0), r"`batch_size` = 0 but `pos` has 4 points"),
    ],
)
def test_constructor_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PointBatch(torch.randn(4, 2), **kwargs)


def test_constructor_rejects_bad_positions():
    with pytest.raises(ValueError, match=r"`pos` must be a floating point tensor, got dtype "
                       r"torch.int64"):
        PointBatch(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`pos` must have shape \[N, D\]"):
        PointBatch(torch.zeros(3))
    bad = torch.randn(4, 2)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"`pos` has NaN or Inf values \(first at row 2\)"):
        PointBatch(bad)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        PointBatch(bad)
    pb = PointBatch(bad, allow_nonfinite=True)
    assert math.isinf(pb.pos[2, 1].item())
    with pytest.raises(TypeError, match=r"`pos` must be a torch.Tensor, got list"):
        PointBatch([[0.0, 1.0]])


def test_validate_false_skips_checks():
    # Unsorted batch passes through untouched when the caller opts out of validation.
    pb = PointBatch(torch.randn(3, 2), batch=torch.tensor([1, 0, 1]), validate=False)
    assert pb.batch.tolist() == [1, 0, 1]


# ---------------------------------------------------------------- lists
@pytest.mark.parametrize("with_x", [True, False])
@pytest.mark.parametrize("d", [1, 2, 3, 6])
def test_from_list_to_list_round_trip(with_x, d):
    pos, x = _sets(seed=d, d=d)
    pb = PointBatch.from_list(pos, x if with_x else None)
    assert pb.num_sets == 4 and pb.sizes.tolist() == [3, 0, 5, 1] and pb.dim == d
    assert pb.batch.tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 3]
    out = pb.to_list()
    assert len(out) == 4
    for b in range(4):
        if with_x:
            p, v = out[b]
            assert torch.equal(v, x[b])
        else:
            p = out[b]
            assert isinstance(p, torch.Tensor)
        assert torch.equal(p, pos[b])
    again = PointBatch.from_list(*zip(*out)) if with_x else PointBatch.from_list(out)
    _assert_same(again, pb)


def test_from_list_accepts_numpy_and_all_empty_sets():
    pb = PointBatch.from_list([np.zeros((2, 3), np.float32), np.ones((1, 3), np.float32)])
    assert pb.pos.dtype == torch.float32 and pb.ptr.tolist() == [0, 2, 3]
    empty = PointBatch.from_list([torch.zeros(0, 2), torch.zeros(0, 2)])
    assert empty.num_sets == 2 and empty.num_points == 0
    assert [t.shape for t in empty.to_list()] == [(0, 2), (0, 2)]


def test_from_list_errors():
    with pytest.raises(ValueError, match="`pos_list` must hold at least one set"):
        PointBatch.from_list([])
    with pytest.raises(ValueError, match=r"`pos_list\[1\]` must have D = 3 columns .* got 2"):
        PointBatch.from_list([torch.zeros(2, 3), torch.zeros(2, 2)])
    with pytest.raises(ValueError, match=r"`x_list` must have one entry per set: expected 2, "
                       r"got 1"):
        PointBatch.from_list([torch.zeros(2, 3), torch.zeros(2, 3)], [torch.zeros(2, 1)])
    with pytest.raises(ValueError, match=r"`x_list\[1\]` must have shape \[4, C\]"):
        PointBatch.from_list([torch.zeros(2, 3), torch.zeros(4, 3)],
                             [torch.zeros(2, 1), torch.zeros(3, 1)])
    with pytest.raises(ValueError, match=r"`x_list\[1\]` must have C = 1 columns"):
        PointBatch.from_list([torch.zeros(2, 3), torch.zeros(4, 3)],
                             [torch.zeros(2, 1), torch.zeros(4, 2)])
    with pytest.raises(TypeError, match="`pos_list` must be a list"):
        PointBatch.from_list(torch.zeros(2, 3))


# ---------------------------------------------------------------- padded
def test_to_padded_layout_and_round_trip():
    pos, x = _sets(seed=1)
    pb = PointBatch.from_list(pos, x)
    padded = pb.to_padded(fill=-7.0)
    assert isinstance(padded, Padded)
    assert padded.pos.shape == (4, 5, 3) and padded.x.shape == (4, 5, 4)
    assert padded.lengths.tolist() == [3, 0, 5, 1] and padded.lengths.dtype == torch.long
    for b, n in enumerate([3, 0, 5, 1]):
        assert torch.equal(padded.pos[b, :n], pos[b])
        assert torch.equal(padded.x[b, :n], x[b])
        assert (padded.pos[b, n:] == -7.0).all() and (padded.x[b, n:] == -7.0).all()
    assert torch.equal(padded.mask, torch.arange(5) < padded.lengths[:, None])
    back = PointBatch.from_padded(padded.pos, padded.x, lengths=padded.lengths)
    _assert_same(back, pb)
    # positional unpacking of the NamedTuple works too
    _assert_same(PointBatch.from_padded(*padded), pb)


def test_to_padded_without_x_and_max_points():
    pb = PointBatch.from_list([torch.ones(2, 2), torch.ones(1, 2)])
    padded = pb.to_padded(max_points=4)
    assert padded.x is None and padded.pos.shape == (2, 4, 2)
    with pytest.raises(ValueError, match=r"`max_points` must be >= the largest set size 2, "
                       r"got 1"):
        pb.to_padded(max_points=1)


def test_from_padded_arbitrary_mask_matches_reference():
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(3, 6, 2, generator=g)
    x = torch.randn(3, 6, 5, generator=g)
    mask = torch.rand(3, 6, generator=g) > 0.5
    mask[1] = False  # an empty set
    pos[~mask] = float("nan")  # padding content must be ignored
    pb = PointBatch.from_padded(pos, x, mask=mask)
    ref = PointBatch.from_list([pos[b][mask[b]] for b in range(3)],
                               [x[b][mask[b]] for b in range(3)])
    _assert_same(pb, ref)
    assert pb.num_sets == 3 and pb.sizes.tolist() == mask.sum(1).tolist()
    # padded again: compacted to a prefix layout
    again = pb.to_padded()
    assert torch.equal(again.lengths, mask.sum(1))
    _assert_same(PointBatch.from_padded(*again), pb)


def test_from_padded_without_lengths_uses_all_rows():
    pos = torch.randn(2, 3, 4)
    pb = PointBatch.from_padded(pos)
    assert pb.ptr.tolist() == [0, 3, 6] and torch.equal(pb.pos, pos.reshape(6, 4))


def test_from_padded_errors():
    pos = torch.randn(2, 3, 2)
    with pytest.raises(ValueError, match=r"`lengths` values must lie in \[0, Nmax = 3\], got "
                       r"range \[1, 4\]"):
        PointBatch.from_padded(pos, lengths=torch.tensor([4, 1]))
    with pytest.raises(ValueError, match=r"`lengths` must have one entry per set: expected B = "
                       r"2, got 3"):
        PointBatch.from_padded(pos, lengths=torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match=r"`mask` must have shape \[B, Nmax\] = \[2, 3\], got "
                       r"\[2, 4\]"):
        PointBatch.from_padded(pos, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`mask` must be a bool tensor"):
        PointBatch.from_padded(pos, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"`x` must have shape \[2, 3, C\]"):
        PointBatch.from_padded(pos, torch.randn(2, 2, 5))
    with pytest.raises(ValueError, match=r"`pos` must have shape \[B, Nmax, D\] \(3 dims\)"):
        PointBatch.from_padded(torch.randn(3, 2))
    with pytest.raises(ValueError, match="either `lengths` or `mask`, not both"):
        PointBatch.from_padded(pos, lengths=torch.tensor([1, 1]),
                               mask=torch.ones(2, 3, dtype=torch.bool))
    bad = pos.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="`pos` has NaN or Inf"):
        PointBatch.from_padded(bad, lengths=torch.tensor([2, 2]))
    # inf sits in a padding row here -> fine
    PointBatch.from_padded(bad.flip(1), lengths=torch.tensor([2, 2]))


# ---------------------------------------------------------------- images
def test_from_images_coordinates_features_and_order():
    g = torch.Generator().manual_seed(4)
    b, c, h, w = 2, 3, 4, 5
    images = torch.randn(b, c, h, w, generator=g)
    pb = PointBatch.from_images(images)
    assert pb.num_sets == b and pb.num_points == b * h * w and pb.dim == 2
    assert pb.num_channels == c and pb.image_size == (h, w)
    assert pb.ptr.tolist() == [0, h * w, 2 * h * w]
    k = 0
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                assert pb.pixel[k].item() == i * w + j
                assert pb.pos[k].tolist() == pytest.approx([j / (w - 1) - 0.5, i / (h - 1) - 0.5])
                assert torch.equal(pb.x[k], images[bi, :, i, j])
                k += 1
    assert torch.equal(pb.to_images(), images)
    assert pb.mask().all() and pb.mask().shape == (b, h, w)


def test_from_images_single_row_or_column_axis_is_zero():
    pb = PointBatch.from_images(torch.randn(1, 1, 1, 4))
    assert torch.equal(pb.pos[:, 1], torch.zeros(4))
    assert pb.pos[:, 0].tolist() == pytest.approx([-0.5, -1 / 6, 1 / 6, 0.5])
    pb = PointBatch.from_images(torch.randn(1, 2, 3, 1))
    assert torch.equal(pb.pos[:, 0], torch.zeros(3))
    assert pb.pos[:, 1].tolist() == pytest.approx([-0.5, 0.0, 0.5])


def test_from_images_mask_drops_pixels_and_to_images_restores():
    g = torch.Generator().manual_seed(5)
    images = torch.randn(3, 2, 4, 4, generator=g)
    mask = torch.rand(3, 4, 4, generator=g) > 0.4
    mask[2] = False  # an image with no kept pixel is an empty set
    pb = PointBatch.from_images(images, mask)
    assert pb.num_sets == 3 and pb.sizes.tolist() == mask.flatten(1).sum(1).tolist()
    ref = PointBatch.from_images(images)
    keep = mask.flatten()
    assert torch.equal(pb.pos, ref.pos[keep]) and torch.equal(pb.x, ref.x[keep])
    assert torch.equal(pb.pixel, ref.pixel[keep])
    out = pb.to_images(fill=-1.0)
    m4 = mask[:, None].expand_as(images)
    assert torch.equal(out[m4], images[m4]) and (out[~m4] == -1.0).all()
    assert torch.equal(pb.mask(), mask)
    # a dense head's per-point outputs of another width map back too
    head = torch.arange(pb.num_points * 5, dtype=torch.float32).reshape(-1, 5)
    dense = pb.to_images(x=head)
    assert dense.shape == (3, 5, 4, 4)
    assert torch.equal(dense.permute(0, 2, 3, 1)[mask], head)


def test_image_batch_survives_select_cat_clone_to():
    images = torch.randn(3, 1, 2, 3)
    pb = PointBatch.from_images(images)
    assert torch.equal(pb.select([2, 0]).to_images(), images[[2, 0]])
    assert torch.equal(PointBatch.cat([pb, pb.select([1])]).to_images(),
                       torch.cat([images, images[1:2]]))
    assert torch.equal(pb.clone().to_images(), images)
    assert torch.equal(pb.to(dtype=torch.float64).to_images(), images.double())
    # mixed image sizes cannot be scattered back -> pixel info dropped
    other = PointBatch.from_images(torch.randn(1, 1, 3, 3))
    mixed = PointBatch.cat([pb, other])
    assert mixed.pixel is None and mixed.image_size is None


def test_image_errors():
    with pytest.raises(ValueError, match=r"`images` must have shape \[B, C, H, W\] \(4 dims\), "
                       r"got 3 dims"):
        PointBatch.from_images(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match=r"`mask` must have shape \[B, H, W\] = \[2, 4, 4\] "
                       r"\(like `images`\), got \[2, 4, 3\]"):
        PointBatch.from_images(torch.randn(2, 3, 4, 4), torch.ones(2, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`mask` must be a bool tensor"):
        PointBatch.from_images(torch.randn(2, 3, 4, 4), torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match=r"`images` must be a floating point tensor, got dtype "
                       r"torch.uint8"):
        PointBatch.from_images(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    plain = PointBatch.from_list([torch.randn(3, 2)], [torch.randn(3, 1)])
    with pytest.raises(ValueError, match=r"`to_images` needs pixel positions, but this "
                       r"PointBatch was not built by PointBatch.from_images"):
        plain.to_images()
    with pytest.raises(ValueError, match=r"`mask` needs pixel positions"):
        plain.mask()
    img = PointBatch.from_images(torch.randn(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"`x` must have one row per point: expected 4 rows, "
                       r"got 3"):
        img.to_images(x=torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"`pixel` values must lie in \[0, H\*W = 4\)"):
        PointBatch(torch.randn(2, 2), pixel=torch.tensor([0, 4]), image_size=(2, 2))
    with pytest.raises(ValueError, match=r"`pixel` and `image_size` must be given together"):
        PointBatch(torch.randn(2, 2), pixel=torch.tensor([0, 1]))


# ---------------------------------------------------------------- set ops
def test_select_order_repeats_negative_and_bool():
    pos, x = _sets(seed=6)
    pb = PointBatch.from_list(pos, x)
    sel = pb.select([3, 1, 0, 3])
    ref = PointBatch.from_list([pos[i] for i in [3, 1, 0, 3]], [x[i] for i in [3, 1, 0, 3]])
    _assert_same(sel, ref)
    _assert_same(pb.select(torch.tensor([-1, 0])), pb.select([3, 0]))
    _assert_same(pb.select(torch.tensor([True, False, True, False])), pb.select([0, 2]))
    none = pb.select([])
    assert none.num_sets == 0 and none.num_points == 0 and none.ptr.tolist() == [0]
    with pytest.raises(ValueError, match=r"`set_indices` values must lie in \[-4, 4\) for B = 4 "
                       r"sets, got range \[0, 4\]"):
        pb.select([0, 4])
    with pytest.raises(ValueError, match=r"bool `set_indices` must have shape \[B\] = \[4\]"):
        pb.select(torch.tensor([True, False]))


def test_cat_set_wise():
    pos, x = _sets(seed=7)
    a = PointBatch.from_list(pos[:2], x[:2])
    b = PointBatch.from_list(pos[2:], x[2:])
    _assert_same(PointBatch.cat([a, b]), PointBatch.from_list(pos, x))
    _assert_same(PointBatch.cat([a]), a)
    with pytest.raises(ValueError, match="`batches` must hold at least one PointBatch"):
        PointBatch.cat([])
    with pytest.raises(ValueError, match=r"`batches\[1\]` must have D = 3 like batches\[0\], "
                       r"got 2"):
        PointBatch.cat([a, PointBatch(torch.randn(2, 2), torch.randn(2, 4))])
    with pytest.raises(ValueError, match=r"`batches\[1\]` must have x with C = 4"):
        PointBatch.cat([a, PointBatch(torch.randn(2, 3))])


def test_to_clone_len_repr():
    pos, x = _sets(seed=8)
    pb = PointBatch.from_list(pos, x)
    d = pb.to(dtype=torch.float64)
    assert d.pos.dtype == d.x.dtype == torch.float64 and d.batch.dtype == torch.long
    assert torch.allclose(d.pos.float(), pb.pos)
    same = pb.to("cpu")
    assert same.pos is pb.pos  # no copy when nothing changes
    with pytest.raises(ValueError, match="`dtype` must be a floating point dtype"):
        pb.to(dtype=torch.int32)
    c = pb.clone()
    c.pos.add_(1.0)
    c.ptr[1] = 99
    assert not torch.equal(c.pos, pb.pos) and pb.ptr[1].item() == 3
    assert len(pb) == 4 and pb.num_points == 9
    assert repr(pb) == (
        "PointBatch(num_sets=4, num_points=9, dim=3, num_channels=4, dtype=float32, device=cpu)"
    )


# ---------------------------------------------------------------- PyG
def test_pyg_round_trip():
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Batch, Data

    pos, x = _sets(seed=9)
    pyg = Batch.from_data_list([Data(pos=p, x=v) for p, v in zip(pos, x)])
    pb = PointBatch.from_pyg(pyg)
    _assert_same(pb, PointBatch.from_list(pos, x))
    assert pb.num_sets == 4  # the empty graph counts
    back = pb.to_pyg()
    assert isinstance(back, Batch) and back.num_graphs == 4
    assert torch.equal(back.ptr, pyg.ptr) and torch.equal(back.batch, pyg.batch)
    assert torch.equal(back.pos, pyg.pos) and torch.equal(back.x, pyg.x)
    for d, p in zip(back.to_data_list(), pos):
        assert torch.equal(d.pos, p)
    # a single Data is one set; x is optional
    single = PointBatch.from_pyg(Data(pos=pos[0]))
    assert single.num_sets == 1 and single.x is None and single.num_points == 3
    assert single.to_pyg().x is None
    with pytest.raises(ValueError, match=r"`data.pos` must be a \[N, D\] tensor, got None"):
        PointBatch.from_pyg(Data(x=x[0]))
    # trailing empty graph is kept via num_graphs
    tail = Batch.from_data_list([Data(pos=pos[0]), Data(pos=torch.zeros(0, 3))])
    assert PointBatch.from_pyg(tail).ptr.tolist() == [0, 3, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_round_trip_and_pin_memory():
    pos, x = _sets(seed=10)
    pb = PointBatch.from_list(pos, x)
    gpu = pb.pin_memory().to("cuda", non_blocking=True)
    assert gpu.pos.is_cuda and gpu.ptr.is_cuda and gpu.batch.is_cuda
    _assert_same(PointBatch.from_padded(*gpu.to_padded()).to("cpu"), pb)
    _assert_same(gpu.select([2, 0]).to("cpu"), pb.select([2, 0]))
    images = torch.randn(2, 3, 4, 4, device="cuda")
    assert torch.equal(PointBatch.from_images(images).to_images(), images)


def test_pyg_missing_gives_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch_geometric", None)
    monkeypatch.setitem(sys.modules, "torch_geometric.data", None)
    pb = PointBatch(torch.randn(2, 2))
    with pytest.raises(ImportError, match="pip install torch-geometric"):
        pb.to_pyg()
    with pytest.raises(ImportError, match="pip install torch-geometric"):
        PointBatch.from_pyg(object())
