import math

import pytest
import torch
from ops_data import SIZES, make_ragged

from pointctx.ops import (
    GridCluster,
    GridPool,
    _backend,
    grid_cluster,
    grid_cluster_naive,
    grid_pool,
    scatter_mean,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
B = len(SIZES)


def _same(a, b):
    return all(torch.equal(u, v) for u, v in zip(a, b))


ORIGINS = {
    "per-set-min": lambda d: None,
    "global-float": lambda d: 0.5,
    "global-seq": lambda d: [0.1] * d,
    "per-set": lambda d: torch.linspace(-0.5, 0.5, B * d).view(B, d),
}


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize("origin", list(ORIGINS))
@pytest.mark.parametrize("size", [0.2, "vector", 0.004])  # 0.004: sparse cells -> unique path
def test_native_matches_naive(dim, duplicates, origin, size):
    pos, batch, b = make_ragged(dim=dim, seed=dim, duplicates=duplicates)
    size = torch.linspace(0.15, 0.3, dim) if size == "vector" else size
    org = ORIGINS[origin](dim)
    fast = grid_cluster(pos, batch, size=size, origin=org, batch_size=b, backend="native")
    ref = grid_cluster_naive(pos, batch, size=size, origin=org, batch_size=b)
    assert isinstance(fast, GridCluster)
    assert _same(fast, ref)
    assert fast.cluster.dtype == fast.batch.dtype == fast.coords.dtype == torch.long


def test_order_and_consistency():
    pos, batch, b = make_ragged(seed=5)
    gc = grid_cluster(pos, batch, size=0.25, batch_size=b, backend="native")
    k = gc.batch.numel()
    assert torch.equal(gc.cluster.unique(), torch.arange(k))  # consecutive ids
    assert torch.equal(gc.batch[gc.cluster], batch)
    # every point lies in its cell: origin + coords * size <= p < origin + (coords + 1) * size
    org = torch.stack([pos[batch == s].min(0).values if (batch == s).any() else torch.zeros(3)
                       for s in range(b)])
    lo = org[batch] + gc.coords[gc.cluster] * 0.25
    assert bool(((pos >= lo - 1e-6) & (pos < lo + 0.25 + 1e-6)).all())
    # cells sorted by set, then lexicographically with the last coordinate most significant
    keys = [(int(gc.batch[i]),) + tuple(reversed(gc.coords[i].tolist())) for i in range(k)]
    assert keys == sorted(keys) and len(set(keys)) == k


def test_boundary_points_go_to_the_upper_cell():
    pos = torch.tensor([[0.0], [0.5], [1.0], [0.49]])
    gc = grid_cluster(pos, size=0.5, origin=0.0, backend="native")
    assert gc.coords.flatten().tolist() == [0, 1, 2]
    assert gc.cluster.tolist() == [0, 1, 2, 0]
    gc = grid_cluster(pos - 1.0, size=0.5, origin=0.0, backend="native")  # negative cells: floor
    assert gc.coords.flatten().tolist() == [-2, -1, 0]


def test_raster_order_on_pixels():
    h, w = 4, 6
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([xx, yy], -1).reshape(-1, 2).float()  # (x, y), row-major pixels
    gc = grid_cluster(pos, size=2.0, backend="native")
    expected = ((yy // 2) * (w // 2) + (xx // 2)).reshape(-1)
    assert torch.equal(gc.cluster, expected)
    assert gc.coords.tolist() == [[x, y] for y in range(2) for x in range(3)]


def test_per_set_origin_makes_sets_independent():
    pos, batch, b = make_ragged(seed=6)
    full = grid_cluster(pos, batch, size=0.3, batch_size=b, backend="native")
    keep = batch == 3
    alone = grid_cluster(pos[keep] + 0.0, size=0.3, backend="native")
    cells = full.batch == 3
    assert torch.equal(full.coords[cells], alone.coords)
    assert torch.equal(full.cluster[keep] - int(cells.nonzero()[0]), alone.cluster)


def test_grid_pool_means():
    pos, batch, b = make_ragged(seed=7)
    x = torch.randn(pos.shape[0], 5, generator=torch.Generator().manual_seed(0))
    out = grid_pool(pos, batch, size=0.3, x=x, batch_size=b, backend="native")
    gc = grid_cluster(pos, batch, size=0.3, batch_size=b, backend="native")
    assert isinstance(out, GridPool)
    assert torch.equal(out.cluster, gc.cluster) and torch.equal(out.batch, gc.batch)
    for c in range(gc.batch.numel()):
        members = gc.cluster == c
        assert torch.allclose(out.pos[c], pos[members].mean(0))
        assert torch.allclose(out.x[c], x[members].mean(0))
    assert torch.equal(out.pos, scatter_mean(pos, gc.cluster, gc.batch.numel()))
    assert grid_pool(pos, batch, size=0.3, batch_size=b).x is None


def test_empty_inputs_and_batch_none():
    out = grid_cluster(torch.zeros(0, 2), size=1.0, backend="native")
    assert out.cluster.shape == (0,) and out.batch.shape == (0,) and out.coords.shape == (0, 2)
    pool = grid_pool(torch.zeros(0, 3), size=1.0, x=torch.zeros(0, 4))
    assert pool.pos.shape == (0, 3) and pool.x.shape == (0, 4)
    pos, _, _ = make_ragged(sizes=[40], seed=8)
    assert _same(grid_cluster(pos, size=0.5, backend="native"),
                 grid_cluster(pos, torch.zeros(40, dtype=torch.long), size=0.5, backend="native"))


def test_huge_coordinate_range_uses_row_unique():
    # extents multiply past int64: the native path falls back to a row-wise unique
    pos = torch.tensor([[0.0, 0.0, 0.0], [1e6, 1e6, 1e6], [0.5e-6, 0.0, 0.0], [1e6, 0.0, 1e6]],
                       dtype=torch.float64)
    gc = grid_cluster(pos, size=1e-6, origin=0.0, backend="native")
    assert _same(gc, grid_cluster_naive(pos, size=1e-6, origin=0.0))
    assert gc.cluster.tolist() == [0, 2, 0, 1]


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({}, ValueError, "`size` .* is required"),
        ({"size": 0.0}, ValueError, "`size` must be > 0"),
        ({"size": [0.1, -0.1, 0.1]}, ValueError, "`size` must be > 0"),
        ({"size": [0.1, 0.1]}, ValueError, r"`size` must be a scalar or have shape \[D\] = \[3\]"),
        ({"size": float("nan")}, ValueError, "`size` must be finite"),
        ({"size": True}, TypeError, "`size` must be a number"),
        ({"size": 0.1, "origin": torch.zeros(2, 3)}, ValueError,
         r"per-set `origin` must have shape \[B, D\] = \[7, 3\]"),
        ({"size": 0.1, "origin": [0.0, 1.0]}, ValueError, r"`origin` must be a scalar or have"),
        ({"size": 0.1, "origin": torch.full((7, 3), float("inf"))}, ValueError,
         "`origin` must be finite"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    pos, batch, b = make_ragged(seed=0)
    with pytest.raises(err, match=match):
        grid_cluster(pos, batch, batch_size=b, backend="native", **kwargs)


def test_bad_tensors():
    pos, batch, b = make_ragged(seed=0)
    with pytest.raises(ValueError, match=r"`pos` must have shape \[N, D\]"):
        grid_cluster(pos[:, 0], size=0.1)
    with pytest.raises(ValueError, match="`batch` must be sorted"):
        grid_cluster(pos, batch.flip(0), size=0.1)
    with pytest.raises(ValueError, match="`batch` must have one entry per point"):
        grid_cluster(pos, batch[1:], size=0.1)
    with pytest.raises(ValueError, match="`x` must have one row per point"):
        grid_pool(pos, batch, size=0.1, x=torch.zeros(3, 2))


def test_cluster_backend_missing_raises(monkeypatch):
    monkeypatch.setattr(_backend, "_cluster_module", lambda: None)
    pos, batch, b = make_ragged(seed=0)
    with pytest.raises(ImportError, match="torch-cluster is not installed"):
        grid_cluster(pos, batch, size=0.1, backend="cluster")


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("origin", list(ORIGINS))
def test_cluster_matches_native(dim, origin):
    pytest.importorskip("torch_cluster")
    pos, batch, b = make_ragged(dim=dim, seed=40 + dim, duplicates=True)
    org = ORIGINS[origin](dim)
    for size in (0.2, torch.linspace(0.15, 0.3, dim), 0.004):
        native = grid_cluster(pos, batch, size=size, origin=org, batch_size=b, backend="native")
        cluster = grid_cluster(pos, batch, size=size, origin=org, batch_size=b,
                               backend="cluster")
        assert _same(native, cluster)


def test_cluster_matches_native_on_pixels():
    pytest.importorskip("torch_cluster")
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    pos = torch.stack([xx, yy], -1).reshape(-1, 2).float().repeat(3, 1) / 15
    batch = torch.arange(3).repeat_interleave(256)
    for size in (1 / 15, 0.25, 1.0):
        assert _same(grid_cluster(pos, batch, size=size, backend="native"),
                     grid_cluster(pos, batch, size=size, backend="cluster"))


@CUDA
def test_cuda_matches_cpu():
    pos, batch, b = make_ragged(seed=9)
    cpu = grid_cluster(pos, batch, size=0.2, batch_size=b, backend="native")
    gpu = grid_cluster(pos.cuda(), batch.cuda(), size=0.2, batch_size=b, backend="native")
    assert _same(cpu, [t.cpu() for t in gpu])


# ----------------------------------------------------------------------------------------------
# The shared grid helpers (one axis order: axis 0 fastest)
# ----------------------------------------------------------------------------------------------


def test_linear_index_axis_order_is_axis0_fastest():
    from pointctx.ops import linear_index, unravel_index

    sizes = (3, 4, 5)
    coords = torch.cartesian_prod(*[torch.arange(s) for s in sizes])  # last axis fastest
    lin = linear_index(coords, sizes)
    # axis 0 varies fastest, the last axis is the most significant
    want = coords[:, 0] + 3 * (coords[:, 1] + 4 * coords[:, 2])
    assert torch.equal(lin, want)
    assert torch.equal(linear_index(torch.tensor([[1, 0, 0]]), sizes), torch.tensor([1]))
    assert torch.equal(linear_index(torch.tensor([[0, 0, 1]]), sizes), torch.tensor([12]))
    assert torch.equal(unravel_index(lin, sizes), coords)
    # raster order for (x, y) pixel positions: row by row
    xy = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]])
    assert linear_index(xy, (2, 2)).tolist() == [0, 1, 2, 3]


def test_pixel_index_inverts_pixel_coords_and_plane_cells_tile_the_plane():
    from pointctx.ops.grid import image_plane, lattice_plane, pixel_coords, pixel_index, plane_cells

    size = (5, 7)
    lin = torch.arange(35)
    rc = pixel_coords(lin, size)
    assert torch.equal(rc[:, 0] * 7 + rc[:, 1], lin)
    assert torch.equal(pixel_index(rc, size), lin)
    batch = torch.tensor([0, 2]).repeat_interleave(35)
    assert torch.equal(pixel_index(rc.repeat(2, 1), size, batch), batch * 35 + lin.repeat(2))
    assert pixel_index(torch.tensor([[[1, 2, 3]]]), (4, 5, 6)).tolist() == [[(1 * 5 + 2) * 6 + 3]]
    # every 2 x 3 block of pixel centers lies in its own cell, well inside
    plane = image_plane(rc, size, dtype=torch.float64)
    cell, origin = plane_cells((2, 3), size)
    u = (plane - torch.tensor(origin, dtype=torch.float64)) / torch.tensor(cell).double()
    assert torch.equal(torch.floor(u).long(), torch.div(rc.flip(1), torch.tensor([3, 2]),
                                                        rounding_mode="floor"))
    # cells=True: the pixel cells of image_plane(cells=True) are the 1 x 1 stride cells
    cell, origin = plane_cells((1, 1), size, cells=True)
    u = (image_plane(rc, size, torch.float64, cells=True) + 0.5) / torch.tensor(cell)
    assert torch.equal(torch.floor(u).long(), rc.flip(1))
    # the cached full lattice: every pixel of B images, built once
    planes = lattice_plane(2, size, dtype=torch.float64)
    assert planes is lattice_plane(2, size, dtype=torch.float64)
    assert torch.equal(planes, plane.repeat(2, 1))


def test_grid_cluster_numbering_follows_linear_index():
    from pointctx.ops import linear_index

    pos, batch, b = make_ragged(dim=3, seed=4)
    gc = grid_cluster(pos, batch, size=0.25, batch_size=b, backend="native")
    ext = (gc.coords.amax(0) + 1).tolist()
    key = gc.batch * math.prod(ext) + linear_index(gc.coords, ext)
    assert torch.equal(key, torch.sort(key).values)  # cells come out in linear-index order


def test_set_bounds_per_set_and_empty():
    from pointctx.ops import set_bounds

    pos = torch.tensor([[0.0, 1.0], [2.0, -1.0], [5.0, 5.0]])
    batch = torch.tensor([0, 0, 2])
    box = set_bounds(pos, batch, 3)
    assert box.lo.tolist() == [[0.0, -1.0], [0.0, 0.0], [5.0, 5.0]]
    assert box.hi.tolist() == [[2.0, 1.0], [0.0, 0.0], [5.0, 5.0]]


def test_cell_coords_and_grid_cell_coords():
    from pointctx.ops import cell_coords, grid_box, grid_cell_coords

    pos = torch.tensor([[0.0, 0.0], [0.49, 0.99], [1.0, 1.0], [0.5, 0.25]])
    batch = torch.zeros(4, dtype=torch.long)
    assert cell_coords(pos, torch.zeros(2), torch.tensor([0.5, 0.5])).tolist() == [
        [0, 0], [0, 1], [2, 2], [1, 0]]
    assert cell_coords(pos, torch.zeros(2), torch.tensor([0.5, 0.5]), counts=(2, 2)).tolist() == [
        [0, 0], [0, 1], [1, 1], [1, 0]]
    assert grid_cell_coords(pos, batch, (2, 4)).tolist() == [[0, 0], [0, 3], [1, 3], [1, 1]]
    lo, ext = grid_box(pos, batch, ((-1.0, 0.0), (1.0, 2.0)))
    assert lo.tolist() == [[-1.0, 0.0]] and ext.tolist() == [[2.0, 2.0]]
    with pytest.raises(ValueError, match="bounds"):
        grid_box(pos, batch, "box")


def test_relabel_consecutive_both_paths():
    from pointctx.ops import relabel

    key = torch.tensor([7, 3, 7, 9, 3])
    for space in (10, 2**40):  # occupancy table / unique
        ids, used = relabel(key, space)
        assert ids.tolist() == [1, 0, 1, 2, 0] and used.tolist() == [3, 7, 9]
