import math

import pytest
import torch
import torch.nn.functional as F

from pointctx import PointBatch
from pointctx.nn import PointReducer
from pointctx.ops.fps import fps
from pointctx.ops.knn import knn


def _pixels(images, mask=None):
    pb = PointBatch.from_images(images, mask)
    w = images.shape[-1]
    coords = torch.stack([pb.pixel // w, pb.pixel % w], 1)
    return pb, coords


def _reduce(red, pb, coords, size):
    return red(pb.x, pb.pos, pb.batch, pb.num_sets, coords, size)


def _conv(red, images):
    k, c = red.kernel_size, red.in_dim
    weight = red.proj.weight.view(red.out_dim, c, k, k)
    out = F.conv2d(images, weight, red.proj.bias, red.stride, red.padding)
    return out.permute(0, 2, 3, 1).reshape(-1, red.out_dim)


@pytest.mark.parametrize(
    "kernel,stride,padding,h,w",
    [(4, 4, 0, 8, 12), (2, 2, 0, 6, 4), (3, 2, 1, 8, 8), (3, 2, 1, 7, 9), (4, 4, 0, 4, 4)],
)
def test_full_grid_equals_strided_conv(kernel, stride, padding, h, w):
    torch.manual_seed(0)
    images = torch.randn(2, 3, h, w)
    pb, coords = _pixels(images)
    red = PointReducer(3, 5, kernel, stride, padding)
    out = _reduce(red, pb, coords, (h, w))
    ref = _conv(red, images)
    assert out.x.shape == ref.shape
    torch.testing.assert_close(out.x, ref, rtol=1e-5, atol=1e-5)
    oh, ow = out.grid_size
    assert (oh, ow) == (math.ceil(h / stride), math.ceil(w / stride))
    # anchors come out by set, then row-major, with lattice coordinates = stride cells
    rows = torch.arange(oh).repeat_interleave(ow)
    cols = torch.arange(ow).repeat(oh)
    torch.testing.assert_close(out.coords, torch.stack([rows, cols], 1).repeat(2, 1))
    torch.testing.assert_close(out.batch, torch.arange(2).repeat_interleave(oh * ow))


def test_chained_reductions_equal_stacked_convs():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 16, 16)
    pb, coords = _pixels(images)
    stem = PointReducer(3, 8, 4)
    down = PointReducer(8, 6, 3, 2, 1)
    r1 = _reduce(stem, pb, coords, (16, 16))
    r2 = down(r1.x, r1.pos, r1.batch, 2, r1.coords, r1.grid_size)
    mid = _conv(stem, images).view(2, 4, 4, 8).permute(0, 3, 1, 2)
    torch.testing.assert_close(r2.x, _conv(down, mid), rtol=1e-5, atol=1e-5)
    assert r2.grid_size == (2, 2)


def test_partial_border_cells_are_zero_padded():
    # 7x7 with 2x2 cells: the last row/column of cells is partial; the missing half lies outside
    # the image and counts as zero padding (no rescale): a conv on the image padded by one.
    torch.manual_seed(2)
    images = torch.randn(1, 2, 7, 7)
    pb, coords = _pixels(images)
    red = PointReducer(2, 3, 2)
    out = _reduce(red, pb, coords, (7, 7))
    ref = _conv(red, F.pad(images, (0, 1, 0, 1)))
    assert out.grid_size == (4, 4)
    torch.testing.assert_close(out.x, ref, rtol=1e-5, atol=1e-5)


def test_pooled_positions_and_assignment():
    torch.manual_seed(3)
    images = torch.randn(1, 1, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[0, 3, 3] = True
    pb, coords = _pixels(images, mask)
    out = _reduce(PointReducer(1, 2, 2), pb, coords, (4, 4))
    assert out.coords.tolist() == [[0, 0], [1, 1]]  # two non-empty cells
    torch.testing.assert_close(out.pos[0], pb.pos[:2].mean(0))
    torch.testing.assert_close(out.pos[1], pb.pos[2])
    assert out.assignment.tolist() == [0, 0, 1]
    # slot = coords % stride, row-major
    assert out.index.tolist() == [[0, -1, -1, 1], [-1, -1, -1, 2]]


def test_missing_pixels_rescaled_masked_linear():
    torch.manual_seed(4)
    images = torch.randn(2, 3, 8, 8)
    mask = torch.rand(2, 8, 8) < 0.5
    pb, coords = _pixels(images, mask)
    red = PointReducer(3, 4, 3, 2, 1)
    out = _reduce(red, pb, coords, (8, 8))
    weight = red.proj.weight.view(4, 3, 3, 3)
    # naive reference: loop over the non-empty stride cells
    expected, k = [], 0
    for b in range(2):
        for i in range(4):
            for j in range(4):
                if not mask[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2].any():
                    continue
                acc = torch.zeros(4)
                present = inside = 0
                for di in range(3):
                    for dj in range(3):
                        r, c = 2 * i - 1 + di, 2 * j - 1 + dj
                        if not (0 <= r < 8 and 0 <= c < 8):
                            continue
                        inside += 1
                        if mask[b, r, c]:
                            present += 1
                            acc = acc + weight[:, :, di, dj] @ images[b, :, r, c]
                expected.append(acc * inside / present + red.proj.bias)
                assert out.coords[k].tolist() == [i, j] and int(out.batch[k]) == b
                k += 1
    assert out.x.shape[0] == k
    torch.testing.assert_close(out.x, torch.stack(expected), rtol=1e-5, atol=1e-5)


def test_constant_cells_are_mask_invariant():
    # with the rescale and a slot-independent weight (a box filter), a cell's output is its
    # mean pixel times the filter: constant cells give the full-image value whichever of their
    # pixels are missing (without the rescale they would shrink with the present count)
    torch.manual_seed(5)
    cell_vals = torch.randn(1, 3, 3, 3)
    images = cell_vals.repeat_interleave(4, 2).repeat_interleave(4, 3)  # 12x12, 4x4 cells
    red = PointReducer(3, 6, 4)
    with torch.no_grad():
        per_channel = torch.randn(6, 3, 1)
        red.proj.weight.copy_(per_channel.expand(6, 3, 16).reshape(6, 48))
    full = _reduce(red, *_pixels(images), (12, 12))
    mask = torch.rand(1, 12, 12) < 0.3
    mask[0, ::4, ::4] = True  # keep every cell non-empty
    part = _reduce(red, *_pixels(images, mask), (12, 12))
    torch.testing.assert_close(part.x, full.x, rtol=1e-5, atol=1e-5)


def test_lattice_mode_ignores_point_order():
    torch.manual_seed(10)
    images = torch.randn(2, 3, 9, 9)
    mask = torch.rand(2, 9, 9) < 0.6
    pb, coords = _pixels(images, mask)
    red = PointReducer(3, 4, 3, 2, 1)
    ref = _reduce(red, pb, coords, (9, 9))
    perm = torch.cat([lo + torch.randperm(hi - lo)
                      for lo, hi in zip(pb.ptr[:-1].tolist(), pb.ptr[1:].tolist())])
    out = red(pb.x[perm], pb.pos[perm], pb.batch, 2, coords[perm], (9, 9))
    assert torch.equal(out.pos, ref.pos)  # pooled in slot order: bitwise equal
    assert torch.equal(out.coords, ref.coords)
    assert torch.equal(perm[out.index.clamp(min=0)].masked_fill(out.index < 0, -1), ref.index)
    torch.testing.assert_close(out.x, ref.x)


def test_point_mode_fps_knn_nearest_first():
    torch.manual_seed(6)
    pos = torch.randn(50, 3)
    x = torch.randn(50, 4)
    batch = torch.zeros(50, dtype=torch.long)
    red = PointReducer(4, 5, 2)  # 4 slots, ratio 1/4
    out = red(x, pos, batch)
    idx = fps(pos, batch, ratio=0.25)
    assert out.x.shape == (13, 5) and out.coords is None and out.grid_size is None
    torch.testing.assert_close(out.pos, pos[idx])
    nbr = knn(pos, pos[idx], 4).index
    assert torch.equal(out.index, nbr)
    assert torch.equal(out.index[:, 0], idx)  # the anchor itself is its nearest point
    feats = x[nbr].transpose(1, 2).reshape(13, -1)
    torch.testing.assert_close(out.x, red.proj(feats), rtol=1e-5, atol=1e-5)


def test_point_mode_small_set_rescaled():
    torch.manual_seed(7)
    pos = torch.randn(5, 2)
    x = torch.randn(5, 2)
    red = PointReducer(2, 3, 3, 2, 1, ratio=0.2)  # 9 slots, one anchor
    out = red(x, pos, torch.zeros(5, dtype=torch.long))
    assert out.index.shape == (1, 9)
    assert (out.index[0, 5:] == -1).all() and sorted(out.index[0, :5].tolist()) == list(range(5))
    w = red.proj.weight.view(3, 2, 9)
    acc = sum(w[:, :, s] @ x[int(out.index[0, s])] for s in range(5))
    torch.testing.assert_close(out.x[0], acc * 9 / 5 + red.proj.bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lattice", [True, False])
def test_same_alone_as_in_batch(lattice):
    torch.manual_seed(8)
    images = torch.randn(3, 2, 8, 8)
    mask = torch.rand(3, 8, 8) < 0.7
    pb, coords = _pixels(images, mask)
    red = PointReducer(2, 4, 3, 2, 1, norm=True)
    kw = dict(coords=coords, grid_size=(8, 8)) if lattice else {}
    both = red(pb.x, pb.pos, pb.batch, 3, **kw)
    one = pb.select([1])
    kw1 = dict(coords=coords[pb.batch == 1], grid_size=(8, 8)) if lattice else {}
    alone = red(one.x, one.pos, one.batch, 1, **kw1)
    torch.testing.assert_close(both.x[both.batch == 1], alone.x, rtol=1e-5, atol=1e-5)


def test_norm_option_and_gradients():
    torch.manual_seed(9)
    images = torch.randn(2, 3, 8, 8, requires_grad=True)
    pb, coords = _pixels(images)
    red = PointReducer(3, 4, 2, norm=True)
    out = _reduce(red, pb, coords, (8, 8))
    first = out.x[out.batch == 0].detach()
    assert abs(float(first.mean())) < 1e-5
    assert abs(float(first.var(unbiased=False)) - 1) < 1e-3
    (out.x * torch.randn_like(out.x)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert red.proj.weight.grad is not None and red.norm.weight.grad is not None


def test_empty_set_kept_out():
    images = torch.randn(2, 1, 4, 4)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0] = False
    pb, coords = _pixels(images, mask)
    out = _reduce(PointReducer(1, 2, 2), pb, coords, (4, 4))
    assert out.batch.tolist() == [1, 1, 1, 1]
    pt = PointReducer(1, 2, 2)(pb.x, pb.pos, pb.batch, 2)
    assert (pt.batch == 1).all() and pt.x.shape[0] == 4


def test_bad_inputs():
    red = PointReducer(2, 3, 2)
    x, pos = torch.randn(4, 2), torch.randn(4, 2)
    batch = torch.zeros(4, dtype=torch.long)
    coords = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    with pytest.raises(ValueError, match="must be given together"):
        red(x, pos, batch, coords=coords)
    with pytest.raises(ValueError, match=r"`coords` must lie in \[0, grid_size\)"):
        red(x, pos, batch, coords=coords, grid_size=(1, 2))
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 2\]"):
        red(torch.randn(4, 3), pos, batch)
    with pytest.raises(ValueError, match="`coords` must be an integer tensor"):
        red(x, pos, batch, coords=coords.float(), grid_size=(2, 2))
    with pytest.raises(ValueError, match="`grid_size` must be a sequence of 2 ints"):
        red(x, pos, batch, coords=coords, grid_size=2)
    with pytest.raises(ValueError, match="kernel_size - padding"):
        PointReducer(2, 3, kernel_size=2, stride=2, padding=1)
    with pytest.raises(ValueError, match=r"`ratio` must be a number in \(0, 1\]"):
        PointReducer(2, 3, ratio=1.5)


# ----------------------------------------------------------------------------------------------
# Full lattices: cached plan + convolution fast path, identical to the gather path
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel,stride,padding,h,w",
    [(4, 4, 0, 8, 12), (3, 2, 1, 7, 9), (2, 2, 0, 7, 7), (4, 2, 2, 6, 8), (4, 4, 0, 30, 30)],
)
def test_dense_path_equals_gather_path(kernel, stride, padding, h, w, monkeypatch):
    torch.manual_seed(5)
    images = torch.randn(3, 2, h, w, requires_grad=True)
    pb, coords = _pixels(images)
    red = PointReducer(2, 4, kernel, stride, padding)
    fused = []
    monkeypatch.setattr(red, "_fuse", lambda *a: fused.append(1) or PointReducer._fuse(red, *a))
    dense = _reduce(red, pb, coords, (h, w))
    assert not fused  # the full grid took the convolution
    # the same points in another order: the gather path, same anchors in the same order
    perm = torch.randperm(pb.num_points)
    perm = perm[torch.argsort(pb.batch[perm], stable=True)]
    gathered = red(pb.x[perm], pb.pos[perm], pb.batch[perm], 3, coords[perm], (h, w))
    assert fused
    torch.testing.assert_close(dense.x, gathered.x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense.pos, gathered.pos)
    for a, b in [(dense.batch, gathered.batch), (dense.coords, gathered.coords)]:
        assert torch.equal(a, b)
    assert torch.equal(perm[gathered.index.clamp(min=0)] * (gathered.index >= 0)
                       - (gathered.index < 0).long(), dense.index)
    assert torch.equal(gathered.assignment, dense.assignment[perm])
    # gradients agree too
    g1, = torch.autograd.grad(dense.x.square().sum(), images)
    g2, = torch.autograd.grad(gathered.x.square().sum(), images)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_full_lattice_plan_is_cached_and_chains_by_identity():
    from pointctx.nn import reducer as reducer_mod
    from pointctx.ops import lattice_sites

    images = torch.randn(2, 3, 16, 16)
    pb, coords = _pixels(images)
    stem, down = PointReducer(3, 8, 4), PointReducer(8, 6, 3, 2, 1)
    r1 = _reduce(stem, pb, coords, (16, 16))
    site_coords, site_batch = lattice_sites(2, (4, 4))
    assert r1.coords is site_coords and r1.batch is site_batch  # shared cached tensors
    calls = []
    build = PointReducer._build_plan
    reducer_mod._PLANS.clear()
    try:
        PointReducer._build_plan = lambda self, *a: calls.append(1) or build(self, *a)
        for _ in range(3):
            r1 = _reduce(stem, pb, coords, (16, 16))
            down(r1.x, r1.pos, r1.batch, 2, r1.coords, r1.grid_size)
    finally:
        PointReducer._build_plan = build
    assert len(calls) == 2  # once per (shape, reducer), not once per call


def test_masked_image_unaffected_by_cache():
    # a masked batch with as many points as a full one of another batch size is not "full"
    torch.manual_seed(6)
    images = torch.randn(2, 1, 4, 4)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = False
    pb, coords = _pixels(images, mask)
    red = PointReducer(1, 2, 2)
    out = _reduce(red, pb, coords, (4, 4))
    full = _reduce(red, *_pixels(images), (4, 4))
    torch.testing.assert_close(out.x[1:4], full.x[1:4])
    assert not torch.allclose(out.x[0], full.x[0])
