"""pointctx.transforms: pixel-set masks (counts, positions, seeding) and DataLoader use."""

import functools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import pointctx
from pointctx import PointBatch
from pointctx.transforms import (
    BlockMask,
    DiscMask,
    IntersectMasks,
    PixelSet,
    PolygonMask,
    RandomKeep,
    ValidDepth,
    pixel_collate,
    polygon_mask,
)


def _img(c=3, h=20, w=30, seed=0):
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- counts / shapes
@pytest.mark.parametrize("ratio,h,w", [(0.25, 20, 30), (0.5, 28, 28), (1.0, 5, 7), (0.001, 8, 8)])
def test_random_keep_exact_count(ratio, h, w):
    t = RandomKeep(ratio, seed=3)
    m = t(_img(h=h, w=w), index=0)
    assert m.dtype == torch.bool and m.shape == (h, w)
    assert int(m.sum()) == max(1, round(ratio * h * w)) == t.num_kept(h, w)
    assert int(RandomKeep(count=17, seed=0)(_img(), index=5).sum()) == 17


def test_random_keep_is_uniform():
    # over many draws every pixel is kept about ratio of the time
    t = RandomKeep(0.3, seed=1)
    img = _img(h=6, w=6)
    freq = torch.stack([t(img, index=i) for i in range(2000)]).float().mean(0)
    assert freq.sub(round(0.3 * 36) / 36).abs().max() < 0.05


@pytest.mark.parametrize(
    "fraction,h,w", [(0.5, 32, 32), (0.3, 28, 28), (0.75, 17, 40), (0.0, 8, 8)]
)
def test_block_mask_covers_exact_fraction(fraction, h, w):
    for keep in ("outside", "inside"):
        t = BlockMask(fraction, keep=keep, seed=0)
        for i in range(5):
            m = t(_img(h=h, w=w), index=i)
            covered = int((~m).sum()) if keep == "outside" else int(m.sum())
            assert covered == round(fraction * h * w) == t.num_covered(h, w)


def test_block_mask_is_blocky():
    # rectangles, not scattered pixels: covered pixels almost always have a covered neighbour
    # and the covered area has few horizontal run starts compared with random pixels
    m = ~BlockMask(0.4, seed=2)(_img(h=32, w=32), index=0)
    pad = torch.nn.functional.pad(m.float()[None, None], (1, 1, 1, 1))[0, 0]
    nb = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]
    assert (nb[m] >= 2).float().mean() > 0.9
    runs = int((m[:, 1:] & ~m[:, :-1]).sum() + m[:, 0].sum())
    rand = ~RandomKeep(0.6, seed=2)(_img(h=32, w=32), index=0)
    runs_rand = int((rand[:, 1:] & ~rand[:, :-1]).sum() + rand[:, 0].sum())
    assert runs * 4 < runs_rand


def test_disc_count_and_positions():
    h, w = 21, 31
    t = DiscMask(radius=0.5, center=(10.0, 12.0))  # radius 0.5 * 21 / 2 = 5.25 px
    m = t(_img(h=h, w=w))
    rows, cols = np.mgrid[0:h, 0:w]
    expect = (rows - 10) ** 2 + (cols - 12) ** 2 <= 5.25**2
    assert m.numpy().tolist() == expect.tolist()
    s = PixelSet(t)(_img(h=h, w=w))
    # positions in the from_images convention: back to pixel units and check the disc
    col = (s["pos"][:, 0] + 0.5) * (w - 1)
    row = (s["pos"][:, 1] + 0.5) * (h - 1)
    assert ((row - 10) ** 2 + (col - 12) ** 2 <= 5.25**2 + 1e-4).all()
    assert len(s["pos"]) == int(expect.sum())
    out = DiscMask(radius=0.5, center=(10.0, 12.0), keep="outside")(_img(h=h, w=w))
    assert torch.equal(out, ~m)


def test_random_disc_within_bounds():
    t = DiscMask(radius=(0.2, 0.4), seed=0)
    for i in range(20):
        cr, cc, r = t.draw(40, 60, torch.Generator().manual_seed(i))
        assert 0 <= cr <= 39 and 0 <= cc <= 59 and 0.2 * 20 <= r <= 0.4 * 20


def test_polygon_rasteriser_square_and_matplotlib():
    verts = torch.tensor([[2.5, 1.5], [2.5, 4.5], [6.5, 4.5], [6.5, 1.5]])  # (row, col)
    m = polygon_mask(verts, 9, 7)
    expect = torch.zeros(9, 7, dtype=torch.bool)
    expect[3:7, 2:5] = True
    assert torch.equal(m, expect)
    path_mod = pytest.importorskip("matplotlib.path")
    t = PolygonMask(num_vertices=(3, 12), seed=4)
    rows, cols = np.mgrid[0:30, 0:40]
    pts = np.stack([cols.ravel(), rows.ravel()], 1).astype(float)
    for i in range(10):
        v = t.draw(30, 40, torch.Generator().manual_seed(i))
        ours = polygon_mask(v, 30, 40).numpy().ravel()
        ref = path_mod.Path(v.numpy()[:, ::-1]).contains_points(pts)
        assert (ours != ref).sum() <= 2  # boundary pixels may differ


def test_polygon_vertices_and_counts():
    t = PolygonMask(num_vertices=(5, 5), radius=(0.5, 0.8), center=(15.0, 20.0), seed=0)
    v = t.draw(30, 40, torch.Generator().manual_seed(1))
    assert v.shape == (5, 2)
    d = (v - torch.tensor([15.0, 20.0], dtype=v.dtype)).norm(dim=1)
    assert ((d >= 0.5 * 15 - 1e-9) & (d <= 0.8 * 15 + 1e-9)).all()
    m = t(_img(h=30, w=40), index=0)
    # a star-shaped polygon around the centre contains the centre and a fair area
    assert m[15, 20] and 0.1 * 30 * 40 < m.sum() < 30 * 40
    assert torch.equal(PolygonMask(5, (0.5, 0.8), 0.8, (15.0, 20.0), "outside", seed=0)(
        _img(h=30, w=40), index=0), ~m)


def test_valid_depth_and_intersection():
    img = _img(c=4, h=6, w=8)
    depth = torch.tensor([0.0, 1.0, 2.5, float("nan"), 4.0, -1.0, float("inf"), 0.5]).repeat(6, 1)
    img[3] = depth
    m = ValidDepth()(img)
    assert m[0].tolist() == [False, True, True, False, True, False, False, True]
    m2 = ValidDepth(depth_trunc=2.5)(img)
    assert m2[0].tolist() == [False, True, True, False, False, False, False, True]
    img[3] *= 1000  # millimetres
    assert torch.equal(ValidDepth(depth_scale=1000.0, depth_trunc=2.5)(img), m2)
    both = IntersectMasks(ValidDepth(depth_scale=1000.0), RandomKeep(0.5, seed=0))
    b = both(img, index=3)
    assert torch.equal(b, m & RandomKeep(0.5, seed=0)(img, index=3))


# --------------------------------------------------------------------------- seeding
def test_seeding_rules():
    img = _img()
    t = BlockMask(0.5, seed=7)
    assert torch.equal(t(img, index=11), BlockMask(0.5, seed=7)(img, index=11))
    assert not torch.equal(t(img, index=11), t(img, index=12))
    assert not torch.equal(t(img, index=11), BlockMask(0.5, seed=8)(img, index=11))
    t.set_epoch(1)
    assert not torch.equal(t(img, index=11), BlockMask(0.5, seed=7)(img, index=11))
    # seed without index: a reproducible stream
    a, b = RandomKeep(0.5, seed=1), RandomKeep(0.5, seed=1)
    sa = [a(img) for _ in range(3)]
    assert all(torch.equal(x, b(img)) for x in sa) and not torch.equal(sa[0], sa[1])
    # generator
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(DiscMask(generator=g1)(img), DiscMask(generator=g2)(img))
    # global RNG
    torch.manual_seed(0)
    x = PolygonMask()(img)
    torch.manual_seed(0)
    assert torch.equal(x, PolygonMask()(img))


# --------------------------------------------------------------------------- samples
def test_pixel_set_matches_from_images():
    img = _img(c=3, h=9, w=13)
    ps = PixelSet(RandomKeep(0.4, seed=0), fill=-1.0)
    s = ps(img, index=2)
    m = s["mask"]
    ref = PointBatch.from_images(img[None], m[None])
    assert torch.equal(s["pos"], ref.pos) and torch.equal(s["x"], ref.x)
    assert torch.equal(s["pixel"], ref.pixel)
    assert torch.equal(s["image"][:, m], img[:, m]) and (s["image"][:, ~m] == -1).all()
    # one pixel by hand: (row 4, col 6) of 9 x 13 -> (6/12 - 0.5, 4/8 - 0.5) = (0, 0)
    full = PixelSet()(img)
    k = 4 * 13 + 6
    assert full["pos"][k].tolist() == [0.0, 0.0] and full["x"][k].tolist() == img[:, 4, 6].tolist()
    assert full["pos"][0].tolist() == [-0.5, -0.5] and full["pos"][-1].tolist() == [0.5, 0.5]
    assert "image" not in PixelSet(image=False)(img)


class _Images(Dataset):
    def __init__(self, n, transform):
        self.images = torch.rand(n, 1, 12, 10, generator=torch.Generator().manual_seed(0))
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {**self.transform(self.images[i], index=i), "y": i % 3}


def test_dataloader_pixel_collate_coc_and_cnn_agree():
    ds = _Images(6, PixelSet(BlockMask(0.5, seed=0)))
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=pixel_collate)))
    pts = batch["points"]
    assert pts.num_sets == 4 and pts.image_size == (12, 10)
    assert pts.sizes.tolist() == [60] * 4  # half of 120 pixels each
    assert batch["image"].shape == (4, 1, 12, 10) and batch["mask"].shape == (4, 12, 10)
    assert batch["y"].tolist() == [0, 1, 2, 0]
    # the set view and the CNN view hold the same data
    assert torch.equal(pts.mask(), batch["mask"])
    assert torch.equal(pts.to_images(), batch["image"])
    ref = PointBatch.from_images(batch["image"], batch["mask"])
    assert torch.equal(ref.pos, pts.pos) and torch.equal(ref.x, pts.x)
    # plain pointctx.collate with pixel as a per-point key works too
    plain = functools.partial(pointctx.collate, point_keys=("pixel",))
    b2 = next(iter(DataLoader(ds, batch_size=4, collate_fn=plain)))
    assert torch.equal(b2["pixel"], pts.pixel) and torch.equal(b2["points"].pos, pts.pos)


def test_dataloader_workers_same_masks():
    ds = _Images(6, PixelSet(PolygonMask(seed=3)))
    serial = next(iter(DataLoader(ds, batch_size=6, collate_fn=pixel_collate)))
    par = next(iter(DataLoader(ds, batch_size=6, collate_fn=pixel_collate, num_workers=2)))
    assert torch.equal(serial["mask"], par["mask"])
    assert torch.equal(serial["points"].pos, par["points"].pos)


# --------------------------------------------------------------------------- errors
def test_errors():
    with pytest.raises(ValueError, match="ratio` must lie in"):
        RandomKeep(0.0)
    with pytest.raises(ValueError, match="exactly one of"):
        RandomKeep(0.5, count=3)
    with pytest.raises(ValueError, match="not both"):
        RandomKeep(0.5, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="fraction` must lie in"):
        BlockMask(1.0)
    with pytest.raises(ValueError, match="keep` must be one of"):
        DiscMask(keep="middle")
    with pytest.raises(ValueError, match="num_vertices` must be >= 3"):
        PolygonMask(num_vertices=2)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        RandomKeep(0.5)(torch.rand(4, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        RandomKeep(0.5)(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="index` must be an int"):
        RandomKeep(0.5, seed=0)(_img(), index=-1)
    with pytest.raises(ValueError, match="bool \\[H, W\\]"):
        PixelSet(lambda im, index=None: torch.ones(3, 3))(_img())
    with pytest.raises(ValueError, match="floating point"):
        PixelSet()(torch.zeros(1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out of range"):
        ValidDepth(depth_channel=5)(_img())
    with pytest.raises(ValueError, match="share the image size"):
        pixel_collate([PixelSet()(_img(h=4, w=4)), PixelSet()(_img(h=5, w=4))])
