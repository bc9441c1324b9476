import pytest
import torch

from pointctx.nn.proposal import (
    CenterProposal,
    Centers,
    FPSProposal,
    GridProposal,
    RandomProposal,
    grid_cell_coords,
    list_proposals,
    pool_centers,
    register_proposal,
    resolve_proposal,
)


def two_sets():
    pos = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.2, 0.1],  # set 0, box [0,1]^2
         [5.0, 5.0], [5.0, 6.0], [7.0, 5.5]]  # set 1, box [5,7] x [5,6]
    )
    batch = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    return pos, batch


def test_grid_partition_by_hand_per_set_box():
    pos, batch = two_sets()
    c = GridProposal(cells=(2, 2))(pos, batch)
    # cells numbered with axis 0 fastest: (0,0)=0, (1,0)=1, (0,1)=2, (1,1)=3.
    # set 0: 4 cells used; set 1: (0,0), (0,1) [upper face clamps], (1,1) -> cell (1,0) empty
    assert c.assignment.tolist() == [0, 1, 2, 3, 0, 4, 5, 6]
    assert c.batch.tolist() == [0, 0, 0, 0, 1, 1, 1]
    expected = torch.tensor(
        [[0.1, 0.05], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0], [5.0, 6.0], [7.0, 5.5]]
    )
    torch.testing.assert_close(c.pos, expected)
    assert torch.equal(c.member_point, torch.arange(8))
    assert torch.equal(c.member_center, c.assignment)


def test_grid_fixed_box_and_outside_points():
    pos, batch = two_sets()
    c = GridProposal(cells=2, bounds=(0.0, 2.0))(pos, batch)
    # box [0,2]^2 with 2 cells of edge 1: set 0 -> (0,0),(0,0)->... x=1 is cell 1
    # set 1 lies outside the box: every point clamps into cell (1,1)
    assert c.assignment.tolist() == [0, 1, 2, 3, 0, 4, 4, 4]
    assert c.batch.tolist() == [0, 0, 0, 0, 1]
    torch.testing.assert_close(c.pos[4], torch.tensor([17.0 / 3, 5.5]))


def test_grid_per_axis_bounds_and_cells():
    pos = torch.tensor([[0.0, 10.0], [0.9, 19.0], [1.0, 10.0], [0.5, 14.9]])
    batch = torch.zeros(4, dtype=torch.long)
    c = GridProposal(cells=(1, 2), bounds=((0.0, 10.0), (1.0, 20.0)))(pos, batch)
    assert c.assignment.tolist() == [0, 1, 0, 0]


def test_grid_regions_group_fine_cells():
    # 1-D: box [0, 4), 2 regions x 2 cells -> fine cells of edge 1
    pos = torch.tensor([[0.5], [1.5], [2.5], [3.5], [0.7], [3.9]])
    batch = torch.tensor([0, 0, 0, 0, 1, 1])
    c = GridProposal(cells=2, bounds=(0.0, 4.0))(pos, batch, regions=(2,))
    assert c.assignment.tolist() == [0, 1, 2, 3, 4, 5]
    # group = set * 2 + region
    assert c.batch.tolist() == [0, 0, 1, 1, 2, 3]
    with pytest.raises(ValueError, match="`regions` has 2 entries but the positions have D = 1"):
        GridProposal(cells=2)(pos, batch, regions=(2, 2))


def test_grid_size_mode():
    pos = torch.tensor([[0.0], [0.4], [1.1], [2.5], [10.0], [10.2]])
    batch = torch.tensor([0, 0, 0, 0, 1, 1])
    c = GridProposal(size=1.0)(pos, batch)
    assert c.assignment.tolist() == [0, 0, 1, 2, 3, 3]
    assert c.batch.tolist() == [0, 0, 0, 1]
    c = GridProposal(size=1.0, bounds=(0.0, 3.0))(pos, batch)
    # fixed box: 3 cells, set 1 clamps into the last one
    assert c.assignment.tolist() == [0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError, match="needs a count-based grid"):
        GridProposal(size=1.0)(pos, batch, regions=(2,))


def test_grid_degenerate_extent_and_large_key_space():
    # all points equal: one cell
    pos = torch.ones(5, 3)
    c = GridProposal(cells=4)(pos, torch.zeros(5, dtype=torch.long))
    assert c.assignment.tolist() == [0] * 5
    # key space far above 4N uses torch.unique; same result as the dense path
    torch.manual_seed(0)
    pos = torch.rand(50, 3)
    batch = torch.zeros(50, dtype=torch.long)
    big = GridProposal(cells=200)(pos, batch)
    coords = grid_cell_coords(pos, batch, (200, 200, 200))
    lin = coords[:, 0] + 200 * coords[:, 1] + 40000 * coords[:, 2]
    _, inv = torch.unique(lin, return_inverse=True)
    assert torch.equal(big.assignment, inv)


def test_grid_empty_sets_and_no_points():
    pos, batch = two_sets()
    batch = torch.where(batch == 1, torch.tensor(2), batch)  # set 1 empty, B = 4
    c = GridProposal(cells=2)(pos, batch, batch_size=4)
    assert c.batch.tolist() == [0, 0, 0, 0, 2, 2, 2]
    e = GridProposal(cells=2)(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), batch_size=2)
    assert e.pos.shape == (0, 2) and e.assignment.shape == (0,) and e.batch.shape == (0,)


def test_grid_is_per_set_independent_of_batch_order():
    torch.manual_seed(1)
    pos = torch.randn(30, 2)
    batch = torch.tensor([0] * 12 + [1] * 18)
    c = GridProposal(cells=3)(pos, batch)
    alone = GridProposal(cells=3)(pos[12:], torch.zeros(18, dtype=torch.long))
    m0 = int((c.batch == 0).sum())
    assert torch.equal(c.assignment[12:] - m0, alone.assignment)
    torch.testing.assert_close(c.pos[m0:], alone.pos)


def test_pool_mean_and_empty_center():
    feat = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    centers = Centers(
        pos=torch.zeros(3, 2),
        batch=torch.zeros(3, dtype=torch.long),
        member_point=torch.tensor([0, 1, 1, 2]),
        member_center=torch.tensor([0, 0, 2, 2]),
        assignment=None,
    )
    out = CenterProposal().pool(feat, centers)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0], [0.0, 0.0], [4.0, 5.0]]))
    part = Centers(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.arange(3),
                   torch.tensor([1, 1, 0]), torch.tensor([1, 1, 0]))
    torch.testing.assert_close(pool_centers(feat, part), torch.tensor([[5.0, 6.0], [2.0, 3.0]]))


def _check_knn_membership(centers, pos, batch, k):
    m = centers.pos.shape[0]
    for j in range(m):
        b = centers.batch[j]
        rows = (batch == b).nonzero().flatten()
        mine = centers.member_point[centers.member_center == j]
        assert len(mine) == min(k, len(rows))
        assert (batch[mine] == b).all()
        d = (pos[rows] - centers.pos[j]).square().sum(1)
        kth = d.sort().values[len(mine) - 1]
        dm = (pos[mine] - centers.pos[j]).square().sum(1)
        assert (dm <= kth + 1e-6).all()


@pytest.mark.parametrize("cls", [FPSProposal, RandomProposal])
def test_sampled_proposals_membership_via_knn(cls):
    torch.manual_seed(2)
    sizes = [40, 3, 0, 25]
    pos = torch.randn(sum(sizes), 3)
    batch = torch.arange(4).repeat_interleave(torch.tensor(sizes))
    prop = cls(num=6, k=5)
    c = prop(pos, batch, batch_size=4)
    assert c.assignment is None
    assert torch.bincount(c.batch, minlength=4).tolist() == [6, 3, 0, 6]
    assert (c.batch[1:] >= c.batch[:-1]).all()
    # centers sit on points of their own set
    d = (c.pos.unsqueeze(1) - pos.unsqueeze(0)).square().sum(-1)  # exact, unlike cdist's mm
    nearest = d.argmin(1)
    assert torch.equal(d.min(1).values, torch.zeros(len(c.pos)))
    assert torch.equal(batch[nearest], c.batch)
    _check_knn_membership(c, pos, batch, 5)
    feat = torch.randn(len(pos), 4)
    pooled = prop.pool(feat, c)
    for j in range(len(c.pos)):
        torch.testing.assert_close(pooled[j], feat[c.member_point[c.member_center == j]].mean(0))


def test_fps_spreads_centers():
    # two tight clusters far apart: two FPS centers land one in each
    pos = torch.cat([torch.randn(20, 2) * 0.01, torch.randn(20, 2) * 0.01 + 10.0])
    c = FPSProposal(num=2, k=3)(pos, torch.zeros(40, dtype=torch.long))
    assert sorted((c.pos[:, 0] > 5).tolist()) == [False, True]


def test_sampled_proposal_ratio_and_validation():
    torch.manual_seed(3)
    pos = torch.randn(20, 2)
    c = FPSProposal(ratio=0.25, k=2)(pos, torch.zeros(20, dtype=torch.long))
    assert c.pos.shape == (5, 2)
    with pytest.raises(ValueError, match="exactly one of `num`"):
        FPSProposal()
    with pytest.raises(ValueError, match="exactly one of `num`"):
        RandomProposal(num=2, ratio=0.5)
    with pytest.raises(ValueError, match="`k` must be an int >= 1"):
        FPSProposal(num=2, k=0)
    with pytest.raises(ValueError, match=r"`ratio` must be a number in \(0, 1\]"):
        RandomProposal(ratio=1.5)


def test_grid_constructor_validation():
    with pytest.raises(ValueError, match="not both"):
        GridProposal(cells=2, size=0.5)
    with pytest.raises(ValueError, match="`cells` must be an int >= 1"):
        GridProposal(cells=0)
    with pytest.raises(ValueError, match="`size` must be a positive number"):
        GridProposal(size=-1.0)
    with pytest.raises(ValueError, match="`bounds` must be None, 'set' or a"):
        GridProposal(bounds=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="finite lo < hi"):
        GridProposal(bounds=(0.0, 0.0))
    with pytest.raises(ValueError, match="`cells` has 3 entries but the positions have D = 2"):
        GridProposal(cells=(2, 2, 2))(torch.rand(4, 2), torch.zeros(4, dtype=torch.long))


def test_resolve_and_register():
    assert isinstance(resolve_proposal("grid", cells=3), GridProposal)
    assert isinstance(resolve_proposal("FPS", num=4), FPSProposal)
    inst = GridProposal()
    assert resolve_proposal(inst) is inst
    with pytest.raises(ValueError, match="choose one of"):
        resolve_proposal("kmeans")
    with pytest.raises(TypeError, match="must be a name"):
        resolve_proposal(3)
    with pytest.raises(TypeError, match="must be a CenterProposal"):
        resolve_proposal(lambda: torch.nn.Identity())

    class Whole(CenterProposal):
        """One center per set, at the set mean, pooling the whole set."""

        def forward(self, pos, batch, batch_size=None):
            b = int(batch.max()) + 1 if batch_size is None else batch_size
            cnt = torch.bincount(batch, minlength=b).clamp(min=1).unsqueeze(1)
            mean = torch.zeros(b, pos.shape[1]).index_add(0, batch, pos) / cnt
            return Centers(mean, torch.arange(b), torch.arange(len(batch)), batch, batch)

    register_proposal("whole_set", Whole)
    try:
        assert "whole_set" in list_proposals()
        prop = resolve_proposal("Whole-Set")
        assert isinstance(prop, Whole)
        c = prop(torch.tensor([[0.0], [2.0], [5.0]]), torch.tensor([0, 0, 1]))
        assert c.pos.flatten().tolist() == [1.0, 5.0]
        with pytest.raises(ValueError, match="already registered"):
            register_proposal("wholeset", Whole)
        register_proposal("wholeset", Whole, overwrite=True)
        assert "whole_set" not in list_proposals() and "wholeset" in list_proposals()
    finally:
        from pointctx.nn import proposal as mod

        mod._PROPOSALS.pop("wholeset", None)
        mod._PROPOSALS.pop("whole_set", None)
    with pytest.raises(TypeError, match="`cls` must be"):
        register_proposal("x", 3)


# ----------------------------------------------------------------------------------------------
# adaptive (AdaptiveAvgPool) windows, regions in the base contract, build_proposal
# ----------------------------------------------------------------------------------------------


def pixel_set(h, w, mask=None):
    """Plane positions (x = col, y = row in [-0.5, 0.5]) of the kept pixels, row-major."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    keep = torch.ones(h, w, dtype=torch.bool) if mask is None else mask
    r, c = rows[keep], cols[keep]
    pos = torch.stack([(c + 0.5) / w - 0.5, (r + 0.5) / h - 0.5], 1)
    return pos, keep


def region_pool_reference(img, keep, regions, cells):
    """Official proposal: split into regions, AdaptiveAvgPool2d(cells) per region (masked)."""
    c, h, w = img.shape
    rh, rw = h // regions, w // regions
    out = []
    for i in range(regions):
        for j in range(regions):
            sl = (slice(None), slice(i * rh, (i + 1) * rh), slice(j * rw, (j + 1) * rw))
            m = keep[sl[1:]].to(img.dtype).unsqueeze(0)
            num = torch.nn.functional.adaptive_avg_pool2d(img[sl] * m, cells)
            den = torch.nn.functional.adaptive_avg_pool2d(m, cells)
            ok = den[0] > 0
            out.append((num / den.clamp_min(1e-30))[:, ok].T)  # row-major windows, col fastest
    return torch.cat(out, 0)


@pytest.mark.parametrize("h, w, regions, cells", [(14, 14, 2, 2), (10, 10, 2, 3), (14, 10, 2, 2),
                                                  (7, 7, 1, 2), (8, 8, 2, 2)])
def test_adaptive_windows_equal_adaptive_avg_pool(h, w, regions, cells):
    torch.manual_seed(0)
    img = torch.randn(5, h, w, dtype=torch.float64)
    pos, keep = pixel_set(h, w)
    batch = torch.zeros(pos.shape[0], dtype=torch.long)
    prop = GridProposal(cells=cells, bounds=(-0.5, 0.5), windows="adaptive")
    out = prop.propose(pos, batch, 1, regions=regions, spacing=(1 / w, 1 / h))
    feat = img.permute(1, 2, 0)[keep]
    pooled = pool_centers(feat, out.centers)
    torch.testing.assert_close(pooled, region_pool_reference(img, keep, regions, cells))
    # the per-set box, widened by half a pitch, is the same box on a full image
    own_box = GridProposal(cells=cells, windows="adaptive").propose(
        pos * 3 + 1, batch, 1, regions=regions, spacing=(3 / w, 3 / h))
    torch.testing.assert_close(pool_centers(feat, own_box.centers), pooled)
    c = out.centers  # the first N pairs are every point with its first window
    n = pos.shape[0]
    assert torch.equal(c.member_point[:n], torch.arange(n))
    assert torch.equal(c.member_center[:n], c.assignment)
    assert out.centers.batch.tolist() == sorted(out.centers.batch.tolist())
    # every point's group holds its region's centers, and the point is a member of one of them
    member_group = out.centers.batch[out.centers.member_center]
    assert torch.equal(member_group, out.group[out.centers.member_point])
    if h % (regions * cells) == 0 and w % (regions * cells) == 0:  # even split: a partition
        part = GridProposal(cells=cells, bounds=(-0.5, 0.5)).propose(pos, batch, 1,
                                                                     regions=regions)
        torch.testing.assert_close(pooled, pool_centers(feat, part.centers))
    else:
        assert out.centers.member_point.numel() > pos.shape[0]


def test_adaptive_windows_on_masked_image_pool_only_existing_pixels():
    torch.manual_seed(1)
    h = w = 14
    img = torch.randn(3, h, w, dtype=torch.float64)
    keep = torch.rand(h, w) > 0.4
    keep[:7, :7] = False  # one region without any pixel
    keep[7:, 7:] = False
    keep[7, 7] = True  # a region with one pixel: one center
    pos, keep = pixel_set(h, w, keep)
    batch = torch.zeros(pos.shape[0], dtype=torch.long)
    prop = GridProposal(cells=2, bounds=(-0.5, 0.5), windows="adaptive")
    out = prop.propose(pos, batch, 1, regions=2, spacing=(1 / w, 1 / h))
    feat = img.permute(1, 2, 0)[keep]
    pooled = pool_centers(feat, out.centers)
    torch.testing.assert_close(pooled, region_pool_reference(img, keep, 2, 2))
    assert (out.centers.batch == 3).sum() == 1 and (out.centers.batch == 0).sum() == 0


def test_adaptive_windows_without_spacing_is_the_partition():
    pos, keep = pixel_set(7, 7)
    batch = torch.zeros(49, dtype=torch.long)
    a = GridProposal(cells=2, bounds=(-0.5, 0.5), windows="adaptive")(pos, batch)
    b = GridProposal(cells=2, bounds=(-0.5, 0.5))(pos, batch)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="windows"):
        GridProposal(windows="overlap")
    with pytest.raises(ValueError, match="needs a count-based grid"):
        GridProposal(size=0.5, windows="adaptive")
    prop = GridProposal(cells=2, bounds=(-0.5, 0.5), windows="adaptive")
    with pytest.raises(ValueError, match="`spacing` must be > 0"):
        prop(pos, batch, spacing=(0.0, 0.1))
    with pytest.raises(ValueError, match="`spacing` has 3 entries"):
        prop(pos, batch, spacing=(0.1, 0.1, 0.1))
    # per-point spacing tensor equals the per-axis numbers
    c1 = prop(pos, batch, spacing=(1 / 7, 1 / 7))
    c2 = prop(pos, batch, spacing=torch.full((49, 2), 1 / 7))
    assert torch.equal(c1.member_center, c2.member_center)


class FirstPoint(CenterProposal):
    """User proposal: one center per group at its first point, pooling the whole group; it emits
    the centers in reverse group order (the base class must sort them)."""

    def forward(self, pos, batch, batch_size=None):
        n = batch.numel()
        first = torch.ones(n, dtype=torch.bool)
        first[1:] = batch[1:] != batch[:-1]
        idx = first.nonzero().flatten().flip(0)
        center_of = torch.full((int(batch_size),), -1, dtype=torch.long)
        center_of[batch[idx]] = torch.arange(idx.numel())
        assignment = center_of[batch]
        return Centers(pos[idx], batch[idx], torch.arange(n), assignment, assignment)


def test_user_proposal_gets_regions_from_the_base_class():
    pos = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.2, 0.2], [0.8, 0.9], [0.3, 0.3], [0.7, 0.6]])
    batch = torch.tensor([0, 0, 0, 0, 1, 1])
    out = FirstPoint().propose(pos, batch, 2, regions=(2, 2), bounds=(0.0, 1.0))
    # regions (x fastest): set 0 -> 0, 1, 0, 3; set 1 -> 0, 3
    assert out.region.tolist() == [0, 1, 0, 3, 0, 3]
    assert out.group.tolist() == [0, 1, 0, 3, 4, 7]
    assert out.num_groups == 8
    c = out.centers
    assert c.batch.tolist() == [0, 1, 3, 4, 7]  # sorted by group
    assert c.pos.tolist() == [pos[i].tolist() for i in (0, 1, 3, 4, 5)]
    # membership follows the points back to the caller's order
    assert torch.equal(c.batch[c.assignment], out.group)
    assert torch.equal(c.batch[c.member_center], out.group[c.member_point])
    # without regions: per set
    whole = FirstPoint().propose(pos, batch, 2)
    assert whole.region is None and whole.centers.batch.tolist() == [0, 1]


def test_mean_pooling_is_declared_by_attribute():
    class Max(CenterProposal):
        def pool(self, feat, centers):
            return feat.new_zeros(centers.pos.shape[0], feat.shape[1])

    class DeclaredMean(Max):
        mean_pooling = True

        def pool(self, feat, centers):
            return pool_centers(feat, centers)

    assert CenterProposal.mean_pooling and GridProposal.mean_pooling and FPSProposal.mean_pooling
    assert not Max.mean_pooling
    assert DeclaredMean.mean_pooling


def test_build_proposal():
    from pointctx.nn.proposal import build_proposal

    g = build_proposal("grid", None, (-0.5, 0.5))
    assert isinstance(g, GridProposal) and g.cells == 2 and g.bounds == (-0.5, 0.5)
    assert build_proposal("Grid", (3, 2)).cells == (3, 2)
    assert build_proposal(GridProposal, 4, proposal_kwargs={"windows": "adaptive"}).windows == \
        "adaptive"
    f = build_proposal("fps", (2, 3), proposal_kwargs={"k": 5})
    assert isinstance(f, FPSProposal) and f.num == 6 and f.k == 5
    assert build_proposal(RandomProposal, None).num == 4
    inst = GridProposal(cells=3)
    assert build_proposal(inst, 7) is inst
    register_proposal("first_point_test", FirstPoint)
    try:
        assert isinstance(build_proposal("first_point_test", (2, 2)), FirstPoint)
    finally:
        from pointctx.nn import proposal as mod

        mod._PROPOSALS.pop("first_point_test")
    with pytest.raises(ValueError, match="choose one of"):
        build_proposal("kmeans")
    with pytest.raises(ValueError, match="`centers`"):
        build_proposal("grid", 0)
