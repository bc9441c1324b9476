"""The per-stage features contract (pointctx.models._base.SetClassifier) for every backbone."""

import pytest
import torch

from pointctx import PointBatch, create_model
from pointctx.models._stages import StageBatch, link_from_slots, link_through, link_union

IMAGE_BACKBONES = ["coc_tiny", "coc_mnist", "cluenet_micro"]


def _images(b=2, c=3, h=40, w=56, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def check_contract(model, stages, prev_batch, b):
    """The contract's invariants; returns nothing, asserts everything."""
    assert len(stages) == len(model.embed_dims)
    prev_n = prev_batch.numel()
    for i, s in enumerate(stages):
        assert isinstance(s, StageBatch) and isinstance(s, PointBatch)
        assert s.num_sets == b and s.x.shape == (s.num_points, model.embed_dims[i])
        assert s.pos.shape[0] == s.num_points and bool((s.batch[1:] >= s.batch[:-1]).all())
        link = s.link
        assert link.dtype == torch.long and link.shape[0] == 2
        key = link[0] * max(prev_n, 1) + link[1]
        assert bool((key[1:] > key[:-1]).all())  # sorted, no duplicates
        assert torch.equal(torch.unique(link[0]), torch.arange(s.num_points))  # every point
        assert bool((link[1] >= 0).all()) and bool((link[1] < prev_n).all())
        assert torch.equal(s.batch[link[0]], prev_batch[link[1]])  # parents of its own set
        ptr, parent = s.parents()
        assert ptr[-1] == link.shape[1] and torch.equal(parent, link[1])
        prev_n, prev_batch = s.num_points, s.batch


def _pixel_rc(pos, h, w):
    """(row, col) pixel coordinates of image-plane positions."""
    return torch.stack([(pos[:, 1] + 0.5) * (h - 1), (pos[:, 0] + 0.5) * (w - 1)], 1)


@pytest.mark.parametrize("name", IMAGE_BACKBONES)
@pytest.mark.parametrize("pool", [1, 2])
def test_contract_on_masked_images(name, pool):
    c = 1 if name == "coc_mnist" else 3
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_channels=c).eval()
    images = _images(b=3, c=c)
    mask = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(1)) < 0.6
    mask[1] = False  # an empty set in the middle
    pb = PointBatch.from_images(images, mask)
    with torch.no_grad():  # input_pool: stage 0 is still linked to the input pixels
        stages = model.forward_stages(images, mask, input_pool=pool)
        feats = model.forward_features(images, mask, input_pool=pool)
    assert stages[0].stride[0] == pool * model.forward_stages(images[:1])[0].stride[0]
    check_contract(model, stages, pb.batch, 3)
    torch.testing.assert_close(stages[-1].x, feats.x)
    torch.testing.assert_close(stages[-1].pos, feats.pos)
    assert all(s.sizes[1] == 0 for s in stages)
    # lattice strides: every point lies in the pixel box of its cell, and its own cell is among
    # the cells of its parents (a reducer's window holds the anchor's own cell)
    prev_rc = _pixel_rc(pb.pos, 40, 56)
    for s in stages:
        st = torch.tensor(s.stride, dtype=torch.float32)
        rc = _pixel_rc(s.pos, 40, 56)
        cell = torch.floor(rc / st + 1e-4)
        parent_cell = torch.floor(prev_rc[s.link[1]] / st + 1e-4)
        own = (parent_cell == cell[s.link[0]]).all(1)
        assert bool(torch.zeros(s.num_points, dtype=torch.bool).index_put_(
            (s.link[0][own],), torch.ones(int(own.sum()), dtype=torch.bool)).all())
        prev_rc = rc


def test_coc_stem_links_every_point_to_its_cell_pixels():
    torch.manual_seed(0)
    model = create_model("coc_tiny", num_classes=4).eval()
    images = _images(b=1, h=32, w=48)
    with torch.no_grad():
        s0 = model.forward_stages(images)[0]
    assert s0.stride == (4, 4) and s0.num_points == 8 * 12
    ptr, parent = s0.parents()
    assert bool((ptr[1:] - ptr[:-1] == 16).all())  # a full 4x4 cell each
    row, col = parent // 48, parent % 48
    point = s0.link[0]
    assert torch.equal(row // 4 * 12 + col // 4, point)  # the pixels of its own cell


def test_cluenet_links_hold_the_window_and_the_cluster_members():
    torch.manual_seed(0)
    model = create_model("cluenet_micro", num_classes=4).eval()
    images = _images(b=1, h=64, w=64)
    with torch.no_grad():
        stages = model.forward_stages(images)
    for prev, s in zip(stages[:-1], stages[1:]):
        # every point of the previous stage joined a cluster: it is somebody's parent
        assert torch.equal(torch.unique(s.link[1]), torch.arange(prev.num_points))
    # 16x16 -> 8x8 points: the 3x3 window of an interior anchor has 9 parents, clusters add
    counts = torch.bincount(stages[1].link[0], minlength=stages[1].num_points)
    assert int(counts.min()) >= 4 and int(counts.max()) >= 9


@pytest.mark.parametrize("name", ["coc_tiny", "cluenet_micro"])
def test_contract_on_general_point_sets(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_channels=0, pos_dim=3).eval()
    g = torch.Generator().manual_seed(2)
    pb = PointBatch.from_list([torch.rand(n, 3, generator=g) for n in (400, 0, 90)])
    with torch.no_grad():
        stages = model.forward_stages(pb)
        feats = model.forward_features(pb)
    check_contract(model, stages, pb.batch, 3)
    assert all(s.stride is None for s in stages)
    torch.testing.assert_close(stages[-1].x, feats.x)


def test_link_helpers_and_stage_batch_to():
    index = torch.tensor([[2, -1, 0, 2], [-1, -1, 1, -1]])
    link = link_from_slots(index)
    assert link.tolist() == [[0, 0, 1], [0, 2, 1]]
    both = link_union(link, torch.tensor([[1, 0], [3, 2]]))
    assert both.tolist() == [[0, 0, 1, 1], [0, 2, 1, 3]]
    # through pooled sites: site 0 = inputs {1, 4}, site 1 = {0}, site 2 = {2, 3}
    site = torch.tensor([1, 0, 2, 2, 0])
    assert link_through(link, site).tolist() == [[0, 0, 0, 0, 1], [1, 2, 3, 4, 0]]
    assert link_through(link, None) is link
    s = StageBatch(torch.rand(2, 2), torch.rand(2, 3), torch.tensor([0, 1]), 2, link, (4, 4),
                   (9, 5))
    moved = s.to(dtype=torch.float64)
    assert isinstance(moved, StageBatch) and moved.pos.dtype == torch.float64
    assert torch.equal(moved.link, link) and moved.stride == (4, 4)
    assert moved.cells == s.cells == ((1.0, 0.5), (-0.625, -0.5625))  # pitch 1/4 x 1/8
    assert "links=3" in repr(s)


@pytest.mark.parametrize("name", ["pointmlp_elite", "pointmlp_coc_elite"])
def test_contract_pointmlp(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4).eval()
    g = torch.Generator().manual_seed(3)
    pb = PointBatch.from_list([torch.rand(n, 3, generator=g) for n in (300, 40, 128)])
    with torch.no_grad():
        stages = model.forward_stages(pb)
        feats = model.forward_features(pb)
    check_contract(model, stages, pb.batch, 3)
    assert len(stages) == 5 and stages[0].num_points == pb.num_points
    assert torch.equal(stages[0].link[0], stages[0].link[1])  # the embedding: itself
    torch.testing.assert_close(stages[-1].x, feats.x)
    torch.testing.assert_close(stages[-1].pos, feats.pos)
    # the anchor is among its parents, at the same position
    for prev, s in zip(stages[:-1], stages[1:]):
        same = (prev.pos[s.link[1]] == s.pos[s.link[0]]).all(1)
        assert torch.equal(torch.unique(s.link[0][same]), torch.arange(s.num_points))
