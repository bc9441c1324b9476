"""Clustering maps: tracing assignments back to the input points, colours, PNG and PLY files."""

import numpy as np
import pytest
import torch
from torch import nn

from pointctx import PointBatch
from pointctx.io import read_ply
from pointctx.models import create_model
from pointctx.models.coc import lattice_centers
from pointctx.nn import ContextCluster
from pointctx.ops import knn
from pointctx.viz import (
    INPUT_MISSING_COLOR,
    MISSING_COLOR,
    colorize_labels,
    input_images,
    label_colors,
    label_images,
    local_labels,
    point_labels,
    save_cluster_grid,
    save_cluster_ply,
    save_cluster_scatter,
    trace_clusters,
)

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster, and far faster on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist_case():
    torch.manual_seed(0)
    model = create_model("coc_mnist")
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, 28, 28, generator=g)
    mask = torch.rand(3, 28, 28, generator=g) < 0.6
    mask[2] = True  # one full image
    return model, images, mask


def _manual_stage_clusters(model, images, mask):
    """Per stage: cluster index per input pixel, computed by hand through the model's parts."""
    packed = model.pack(images, mask)
    b = packed.batch_size
    feats = torch.cat([packed.x, packed.pos], 1)
    pos, batch, coords, grid = packed.plane, packed.batch, packed.coords, packed.grid_size
    to_level = torch.arange(feats.shape[0])
    out = []
    with torch.no_grad():
        for reducer, blocks in zip(model.reducers, model.stages):
            red = reducer(feats, pos, batch, b, coords, grid)
            to_level = red.assignment[to_level]
            feats, pos, batch, coords, grid = (red.x, red.pos, red.batch, red.coords,
                                               red.grid_size)
            # the model clusters pixel sets at their lattice cell centers with adaptive windows
            cpos, spacing = pos, None
            if model.windows == "adaptive":
                cpos, spacing = lattice_centers(coords, grid, pos.dtype)
            for block in blocks:
                _, a = block.token_mixer(block.norm1(feats, batch, b), cpos, batch, b,
                                         return_assignment=True, spacing=spacing)
                out.append(a.center[to_level])
                feats = block(feats, cpos, batch, b, spacing=spacing)
    return out


def test_trace_matches_manual_path_and_leaves_model_unchanged(mnist_case):
    model, images, mask = mnist_case
    model.train()
    with torch.no_grad():
        ref = model.eval()(images, mask)
    model.train()
    tr = trace_clusters(model, images, mask)
    assert model.training  # mode restored
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(tr.output, ref, rtol=0, atol=0)
    manual = _manual_stage_clusters(model.eval(), images, mask)
    assert len(tr.layers) == len(manual) == 3
    for s, (layer, want) in enumerate(zip(tr.layers, manual)):
        assert layer.stage == s and layer.level == s + 1 and layer.index == 0
        assert layer.name == f"stages.{s}.0.token_mixer"
        assert layer.cluster.shape == (int(mask.sum()), layer.heads)
        assert torch.equal(layer.cluster, want)
    assert tr.num_stages == 3
    assert tr.image_size == (28, 28)
    want_pixel = PointBatch.from_images(images, mask).pixel
    assert torch.equal(tr.pixel, want_pixel)
    assert [lay.name for lay in tr.stage_layers()] == [lay.name for lay in tr.layers]


def test_trace_point_mode_follows_nearest_anchor():
    torch.manual_seed(0)
    model = create_model("coc_mnist", in_channels=0, pos_dim=3).eval()
    g = torch.Generator().manual_seed(2)
    pts = PointBatch.from_list([torch.randn(300, 3, generator=g), torch.randn(200, 3,
                                                                               generator=g)])
    tr = trace_clusters(model, pts)
    assert tr.pixel is None and tr.image_size is None
    # stage 1 by hand: stem reducer in point mode, then the nearest anchor of each point
    with torch.no_grad():
        feats = pts.pos.clone()
        red = model.reducers[0](feats, pts.pos, pts.batch, 2)
        near = knn(red.pos, pts.pos, 1, batch_x=red.batch, batch_y=pts.batch).index[:, 0]
        from pointctx.models.coc import box_normalize

        cpos = box_normalize(red.pos, red.batch, 2)
        block = model.stages[0][0]
        _, a = block.token_mixer(block.norm1(red.x, red.batch, 2), cpos, red.batch, 2,
                                 return_assignment=True)
    assert torch.equal(tr.layers[0].cluster, a.center[near])
    # a cluster never spans two sets
    lab = tr.layers[0].cluster[:, 0]
    for c in lab.unique():
        assert tr.batch[lab == c].unique().numel() == 1


class _AsksForAssignment(nn.Module):
    def __init__(self):
        super().__init__()
        self.cc = ContextCluster(4, heads=2, head_dim=4, centers=2)

    def forward(self, pb):
        out, a = self.cc(pb.x, pb.pos, pb.batch, None, True)  # positional return_assignment
        assert a.center.shape == (pb.num_points, 2)
        return out


def test_caller_that_asks_for_the_assignment_still_gets_it():
    torch.manual_seed(0)
    pb = PointBatch.from_list([torch.rand(20, 2), torch.rand(10, 2)],
                              [torch.randn(20, 4), torch.randn(10, 4)])
    model = _AsksForAssignment()
    tr = trace_clusters(model, pb)
    assert tr.layers[0].name == "cc" and tr.layers[0].level == 0
    _, want = model.cc(pb.x, pb.pos, pb.batch, return_assignment=True)
    assert torch.equal(tr.layers[0].cluster, want.center)


class _Halves(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = ContextCluster(4, heads=1, head_dim=4)
        self.b = ContextCluster(4, heads=1, head_dim=4)

    def forward(self, pb):
        y = self.a(pb.x, pb.pos, pb.batch)
        keep = torch.arange(0, pb.num_points, 2)
        return self.b(y[keep], pb.pos[keep], pb.batch[keep])


def test_trace_errors():
    with pytest.raises(ValueError, match="no ContextCluster module"):
        trace_clusters(nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        trace_clusters(lambda x: x, torch.zeros(1))
    pb = PointBatch.from_list([torch.rand(10, 2)], [torch.randn(10, 4)])
    with pytest.raises(ValueError, match="without a PointReducer"):
        trace_clusters(_Halves(), pb)


def test_trace_layer_lookup(mnist_case):
    model, images, mask = mnist_case
    tr = trace_clusters(model, images, mask)
    assert tr.layer("stages.1.0.token_mixer") is tr.layers[1]
    assert tr.layer(-1) is tr.layers[2]
    with pytest.raises(KeyError, match="no traced layer named"):
        tr.layer("nope")
    with pytest.raises(IndexError, match="out of range"):
        tr.layer(7)


def test_local_labels_per_set():
    cluster = torch.tensor([7, 3, 7, -1, 12, 5, 12, 5, 9])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2])
    lab = local_labels(cluster, batch)
    assert lab.tolist() == [1, 0, 1, -1, 1, 0, 1, 0, 0]
    assert local_labels(torch.full((3,), -1), torch.zeros(3, dtype=torch.long)).tolist() == [
        -1, -1, -1]
    with pytest.raises(ValueError, match="shape"):
        local_labels(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_label_colors_are_distinct_and_not_reserved():
    for n in (0, 1, 7, 300, 5000):
        c = label_colors(n)
        assert c.shape == (n, 3) and c.dtype == np.uint8
        rows = {tuple(r) for r in c.tolist()}
        assert len(rows) == n
        assert MISSING_COLOR not in rows and INPUT_MISSING_COLOR not in rows
    np.testing.assert_array_equal(label_colors(10), label_colors(20)[:10])
    with pytest.raises(ValueError, match="`n` must be an int"):
        label_colors(-1)
    rgb = colorize_labels(torch.tensor([[0, -1], [2, 0]]))
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == MISSING_COLOR and (rgb[0, 0] == rgb[1, 1]).all()
    with pytest.raises(ValueError, match="integers"):
        colorize_labels(np.zeros(3))


def _assert_colors_match_clusters(rgb, cluster_ids):
    """rgb [P, 3], ids [P]: same colour iff same id (ids >= 0 only)."""
    pairs = {(tuple(c), int(i)) for c, i in zip(rgb.tolist(), cluster_ids.tolist())}
    colours = {p[0] for p in pairs}
    ids = {p[1] for p in pairs}
    assert len(pairs) == len(colours) == len(ids)


def test_label_images_and_colours_follow_the_assignment(mnist_case):
    model, images, mask = mnist_case
    tr = trace_clusters(model, images, mask)
    for layer in tr.layers:
        for head in range(layer.heads):
            maps = label_images(tr, layer, head)
            assert maps.shape == (3, 28, 28)
            assert torch.equal(maps >= 0, mask)  # every kept pixel has a cluster
            rgb = colorize_labels(maps)
            for b in range(3):
                sel = mask[b].numpy()
                # global cluster id of each kept pixel of image b, in pixel order
                ids = layer.cluster[tr.batch == b, head].numpy()
                _assert_colors_match_clusters(rgb[b][sel], ids)
                assert (rgb[b][~sel] == MISSING_COLOR).all()


def test_save_cluster_grid_writes_pngs(tmp_path, mnist_case):
    model, images, mask = mnist_case
    tr = trace_clusters(model, images, mask)
    p = save_cluster_grid(tmp_path / "sub" / "grid.png", tr, images, heads="all",
                          row_labels=["a", "b", "c"], title="t")
    with PIL.open(p) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    p2 = save_cluster_grid(tmp_path / "heads.png", tr, images, heads="all", rows="heads",
                           sets=[2])
    assert p2.stat().st_size > 1000
    assert not [f for f in tmp_path.rglob("*.tmp*")]  # no temporary files left
    disp = input_images(tr, images)
    assert disp.shape == (3, 28, 28, 3)
    assert (disp[~mask.numpy()] == INPUT_MISSING_COLOR).all()
    with pytest.raises(ValueError, match="one entry per row"):
        save_cluster_grid(tmp_path / "x.png", tr, row_labels=["a"])
    with pytest.raises(ValueError, match="`rows`"):
        save_cluster_grid(tmp_path / "x.png", tr, rows="cols")
    with pytest.raises(ValueError, match="`head` must be in"):
        point_labels(tr, 0, head=5)
    with pytest.raises(ValueError, match="B = 3"):
        input_images(tr, images[:2])


def test_point_cloud_scatter_and_ply(tmp_path):
    torch.manual_seed(0)
    model = create_model("coc_mnist", in_channels=3, pos_dim=3)
    g = torch.Generator().manual_seed(3)
    pos = [torch.randn(400, 3, generator=g), torch.randn(250, 3, generator=g)]
    rgb = [torch.rand(400, 3, generator=g), torch.rand(250, 3, generator=g)]
    pb = PointBatch.from_list(pos, rgb)
    tr = trace_clusters(model, pb)
    with pytest.raises(ValueError, match="no pixel grid"):
        save_cluster_grid(tmp_path / "g.png", tr)
    png = save_cluster_scatter(tmp_path / "scatter.png", tr, colors=pb.x, set_index=1)
    with PIL.open(png) as im:
        assert im.format == "PNG"
    ply = save_cluster_ply(tmp_path / "c.ply", tr, layer=0, head=1, set_index=1)
    data = read_ply(ply)
    lab = point_labels(tr, 0, 1)[pb.batch == 1]
    torch.testing.assert_close(data.pos, pos[1])
    assert torch.equal(data.fields["cluster"].long(), lab)
    assert torch.equal(data.fields["stage2_head1"].long(), point_labels(tr, 1, 1)[pb.batch == 1])
    want_rgb = torch.from_numpy(colorize_labels(lab))
    assert torch.equal(data.rgb.to(torch.uint8) if data.rgb.dtype == torch.uint8
                       else (data.rgb * 255).round().to(torch.uint8), want_rgb)
    with pytest.raises(ValueError, match="set_index"):
        save_cluster_ply(tmp_path / "d.ply", tr, set_index=2)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        save_cluster_ply(tmp_path / "d.ply", tr, pos=torch.zeros(5, 3))


def test_image_trace_with_pointbatch_and_xyz_positions(tmp_path):
    """RGB-D style input: pixel info plus 3-D positions; grid map and PLY of the xyz."""
    torch.manual_seed(0)
    model = create_model("coc_mnist", in_channels=3, pos_dim=3)
    g = torch.Generator().manual_seed(4)
    h, w = 12, 16
    keep = torch.rand(h * w, generator=g) < 0.8
    pixel = keep.nonzero().view(-1)
    xyz = torch.randn(pixel.numel(), 3, generator=g)
    pb = PointBatch(xyz, torch.rand(pixel.numel(), 3, generator=g), pixel=pixel,
                    image_size=(h, w))
    tr = trace_clusters(model, pb)
    assert torch.equal(tr.pixel, pixel) and tr.image_size == (h, w)
    maps = label_images(tr, -1, 0)
    assert torch.equal((maps[0] >= 0).view(-1), keep)
    save_cluster_grid(tmp_path / "rgbd.png", tr, images=torch.rand(1, 3, h, w), heads="all",
                      rows="heads")
    ply = save_cluster_ply(tmp_path / "rgbd.ply", tr, pos=xyz)
    assert read_ply(ply).pos.shape == (pixel.numel(), 3)

