import math

import pytest
import torch
import torch.nn.functional as F

from pointctx.nn.context_cluster import Assignment, ContextCluster
from pointctx.nn.proposal import CenterProposal, Centers, GridProposal

BOX = (-0.5, 0.5)


def image_points(b, h, w, dtype=torch.float32):
    """Pixel centers of b full h x w images, row-major: pos = (x, y) in [-0.5, 0.5]."""
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([j / (w - 1) - 0.5, i / (h - 1) - 0.5], -1).reshape(-1, 2).to(dtype)
    pos = pos.repeat(b, 1)
    batch = torch.arange(b).repeat_interleave(h * w)
    return pos, batch


def dense_reference(layer, img, fold, prop, normalize="sim"):
    """The paper's equations on a dense [B, C, H, W] map (official formulation).

    1x1 convs as einsums, region fold by reshape, AdaptiveAvgPool2d centers, [b, M, n] cosine
    similarity, argmax mask via scatter, aggregate and dispatch with the dense mask.
    """
    heads, hd = layer.heads, layer.head_dim
    bsz, _, h, w = img.shape

    def conv(lin, t):
        return torch.einsum("oc,bchw->bohw", lin.weight, t) + lin.bias.view(1, -1, 1, 1)

    value, feat = conv(layer.v, img), conv(layer.f, img)
    feat = feat.reshape(bsz * heads, hd, h, w)
    value = value.reshape(bsz * heads, hd, h, w)
    f1, f2 = fold
    if f1 > 1 or f2 > 1:
        def fold_in(t):
            t = t.reshape(bsz * heads, hd, f1, h // f1, f2, w // f2)
            return t.permute(0, 2, 4, 1, 3, 5).reshape(-1, hd, h // f1, w // f2)
        feat, value = fold_in(feat), fold_in(value)
    b, c, hh, ww = feat.shape
    pool = torch.nn.AdaptiveAvgPool2d(prop)
    centers = pool(feat).reshape(b, c, -1).permute(0, 2, 1)  # [b, M, c]
    value_centers = pool(value).reshape(b, c, -1).permute(0, 2, 1)
    pts = feat.reshape(b, c, -1).permute(0, 2, 1)  # [b, n, c]
    cos = F.normalize(centers, dim=-1) @ F.normalize(pts, dim=-1).transpose(1, 2)  # [b, M, n]
    sim = torch.sigmoid(layer.beta + layer.alpha * cos)
    _, idx = sim.max(dim=1, keepdim=True)
    mask = torch.zeros_like(sim).scatter_(1, idx, 1.0)
    sim = sim * mask
    vals = value.reshape(b, c, -1).permute(0, 2, 1)  # [b, n, c]
    denom = sim.sum(-1, keepdim=True) if normalize == "sim" else mask.sum(-1, keepdim=True)
    agg = ((vals.unsqueeze(1) * sim.unsqueeze(-1)).sum(2) + value_centers) / (denom + 1.0)
    out = (agg.unsqueeze(2) * sim.unsqueeze(-1)).sum(1)  # [b, n, c]
    out = out.permute(0, 2, 1).reshape(b, c, hh, ww)
    if f1 > 1 or f2 > 1:
        out = out.reshape(bsz * heads, f1, f2, c, hh, ww).permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(bsz * heads, c, h, w)
    out = out.reshape(bsz, heads * hd, h, w)
    out = torch.einsum("oc,bchw->bohw", layer.proj.weight, out) + layer.proj.bias.view(1, -1, 1, 1)
    return out


def make_layer(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("heads", 3)
    kw.setdefault("head_dim", 8)
    layer = ContextCluster(dim=kw.pop("dim", 6), **kw)
    with torch.no_grad():  # non-trivial alpha / beta so that they matter
        layer.alpha.fill_(1.7)
        layer.beta.fill_(-0.3)
    return layer


def grads(layer, x):
    return [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize(
    "regions,normalize",
    [((2, 2), "sim"), ((4, 4), "sim"), ((2, 2), "count"), ((4, 4), "count"), (None, "sim"),
     (None, "count"), ((4, 2), "sim")],
)
def test_matches_dense_reference_forward_and_backward(regions, normalize):
    bsz, h, w, c = 2, 16, 16, 6
    layer = make_layer(regions=regions, centers=(2, 2), bounds=BOX, denominator=normalize,
                       out_dim=5)
    torch.manual_seed(1)
    img = torch.randn(bsz, c, h, w)
    pos, batch = image_points(bsz, h, w)
    x = img.permute(0, 2, 3, 1).reshape(-1, c)

    xa = x.clone().requires_grad_(True)
    out = layer(xa, pos, batch, batch_size=bsz)
    gout = torch.randn_like(out)
    (out * gout).sum().backward()
    ours = grads(layer, xa)
    layer.zero_grad()

    ia = img.clone().requires_grad_(True)
    # the official fold is (rows, cols) = (regions_y, regions_x); our regions are (x, y)
    fold = (1, 1) if regions is None else (regions[1], regions[0])
    ref = dense_reference(layer, ia, fold, (2, 2), normalize)
    ref = ref.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
    (ref * gout).sum().backward()
    theirs = [ia.grad.permute(0, 2, 3, 1).reshape(-1, c)] + [
        p.grad.clone() for p in layer.parameters()
    ]

    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"grad of {name}")


def test_dense_reference_differs_when_normalization_differs():
    # the two normalizations give different outputs, so the reference test above can tell them
    pos, batch = image_points(1, 8, 8)
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    a = make_layer(denominator="sim", regions=(2, 2), bounds=BOX)(x, pos, batch)
    b = make_layer(denominator="count", regions=(2, 2), bounds=BOX)(x, pos, batch)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("layout", ["padded", "ragged"])
def test_set_alone_equals_set_in_batch(layout):
    torch.manual_seed(3)
    sizes = [37, 0, 5, 120, 1]
    pos = torch.rand(sum(sizes), 2)
    x = torch.randn(sum(sizes), 6)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    layer = make_layer(regions=(2, 2), centers=(2, 2), pair_layout=layout)
    out = layer(x, pos, batch, batch_size=len(sizes))
    assert out.shape == (sum(sizes), layer.out_dim)
    start = 0
    for s in sizes:
        if s:
            one = torch.zeros(s, dtype=torch.long)
            alone = layer(x[start:start + s], pos[start:start + s], one)
            torch.testing.assert_close(out[start:start + s], alone, atol=1e-6, rtol=1e-5)
        start += s


@pytest.mark.parametrize("bounds", [None, BOX])
def test_permutation_equivariant(bounds):
    torch.manual_seed(4)
    n = 90
    pos = torch.rand(n, 2) - 0.5
    x = torch.randn(n, 6)
    batch = torch.zeros(n, dtype=torch.long)
    layer = make_layer(regions=(2, 2), centers=(2, 2), bounds=bounds)
    out = layer(x, pos, batch)
    perm = torch.randperm(n)
    out_p = layer(x[perm], pos[perm], batch)
    torch.testing.assert_close(out_p, out[perm], atol=1e-6, rtol=1e-5)


def test_layouts_agree_and_match_naive_loop():
    torch.manual_seed(5)
    sizes = [30, 12, 0, 45]
    n = sum(sizes)
    pos = torch.rand(n, 3)
    x = torch.randn(n, 6)
    batch = torch.arange(4).repeat_interleave(torch.tensor(sizes))
    # per-set box + 3x3x3 cells: many empty cells, so centers per set differ (ragged counts)
    outs = {}
    for layout in ("padded", "ragged"):
        layer = make_layer(centers=3, pair_layout=layout)
        outs[layout], asg = layer(x, pos, batch, return_assignment=True)
    torch.testing.assert_close(outs["padded"], outs["ragged"], atol=1e-6, rtol=1e-5)

    # naive per-point loop of the paper's equations over the same centers
    c = asg.centers
    fx, vx = layer.f(x), layer.v(x)
    m = c.pos.shape[0]
    cf = torch.stack([fx[c.assignment == j].mean(0) for j in range(m)])
    cv = torch.stack([vx[c.assignment == j].mean(0) for j in range(m)])
    hd = layer.head_dim
    mixed = torch.zeros(n, layer.heads * hd)
    for h in range(layer.heads):
        sl = slice(h * hd, (h + 1) * hd)
        choice, weight = [], []
        for i in range(n):
            cand = (c.batch == batch[i]).nonzero().flatten()
            cos = F.cosine_similarity(fx[i, sl].unsqueeze(0), cf[cand, sl], eps=1e-12)
            s = torch.sigmoid(layer.beta + layer.alpha * cos)
            k = int(torch.argmax(s))
            choice.append(int(cand[k]))
            weight.append(s[k])
        choice = torch.tensor(choice)
        weight = torch.stack(weight)
        assert torch.equal(choice, asg.center[:, h])
        for j in range(m):
            mem = choice == j
            g = (cv[j, sl] + (weight[mem].unsqueeze(1) * vx[mem, sl]).sum(0)) / (
                1 + weight[mem].sum()
            )
            mixed[mem, sl] = weight[mem].unsqueeze(1) * g
    ref = layer.proj(mixed)
    torch.testing.assert_close(outs["ragged"], ref, atol=1e-5, rtol=1e-5)


def test_ties_go_to_lowest_center_index():
    # identical features everywhere: all cosines equal, so every point joins the first center
    pos, batch = image_points(1, 8, 8)
    x = torch.ones(64, 6)
    for layout in ("padded", "ragged"):
        layer = make_layer(regions=(2, 2), centers=(2, 2), bounds=BOX, pair_layout=layout)
        _, asg = layer(x, pos, batch, return_assignment=True)
        first = torch.zeros(64, dtype=torch.long)
        # first center of each point's region (4 centers per region, sorted by region)
        first = asg.region * 4
        assert torch.equal(asg.center, first.unsqueeze(1).expand(-1, layer.heads))


def test_return_assignment_consistent():
    torch.manual_seed(6)
    pos, batch = image_points(2, 8, 8)
    x = torch.randn(128, 6)
    layer = make_layer(regions=(2, 2), centers=(2, 2), bounds=BOX)
    out, asg = layer(x, pos, batch, batch_size=2, return_assignment=True)
    assert isinstance(asg, Assignment)
    assert out.shape == (128, 6)
    assert asg.center.shape == (128, layer.heads) and asg.center.dtype == torch.long
    assert asg.similarity.shape == (128, layer.heads)
    assert ((asg.similarity > 0) & (asg.similarity < 1)).all()
    assert asg.region.shape == (128,) and asg.region.dtype == torch.long
    m = asg.centers.pos.shape[0]
    assert m == 2 * 4 * 4
    # each point's chosen center lies in its own set and region
    group = batch * 4 + asg.region
    assert torch.equal(asg.centers.batch[asg.center], group.unsqueeze(1).expand(-1, layer.heads))
    # region of pixel (i, j) of an 8x8 image with 2x2 regions
    i = (torch.arange(64) // 8).repeat(2)
    j = (torch.arange(64) % 8).repeat(2)
    assert torch.equal(asg.region, (j // 4) + 2 * (i // 4))
    _, asg_nr = make_layer()(x, pos, batch, return_assignment=True)
    assert asg_nr.region is None


def test_masked_pixels_keep_fixed_box_cells():
    # with the fixed box, dropping pixels does not move the cell boundaries
    torch.manual_seed(7)
    pos, batch = image_points(1, 16, 16)
    x = torch.randn(256, 6)
    keep = torch.rand(256) < 0.5
    layer = make_layer(regions=(4, 4), centers=(2, 2), bounds=BOX)
    _, full = layer(x, pos, batch, return_assignment=True)
    _, part = layer(x[keep], pos[keep], batch[keep], return_assignment=True)
    key_full = full.centers.batch * 4  # group of each point's cell via its assignment
    cell_full = full.centers.assignment
    cell_part = part.centers.assignment
    # the same pixels share a cell in both runs
    a = cell_full[keep]
    same_full = a.unsqueeze(0) == a.unsqueeze(1)
    same_part = cell_part.unsqueeze(0) == cell_part.unsqueeze(1)
    assert torch.equal(same_full, same_part)
    assert key_full.numel() == 64


@pytest.mark.parametrize("proposal", ["fps", "random"])
def test_sampled_proposals_on_3d_sets(proposal):
    torch.manual_seed(8)
    sizes = [50, 3, 0, 80]
    n = sum(sizes)
    pos = torch.randn(n, 3)
    x = torch.randn(n, 6)
    batch = torch.arange(4).repeat_interleave(torch.tensor(sizes))
    layer = make_layer(proposal=proposal, centers=8, proposal_kwargs={"k": 5})
    out, asg = layer(x, pos, batch, batch_size=4, return_assignment=True)
    assert out.shape == (n, 6) and torch.isfinite(out).all()
    counts = torch.bincount(asg.centers.batch, minlength=4)
    assert counts.tolist() == [8, 3, 0, 8]
    assert torch.equal(asg.centers.batch[asg.center], batch.unsqueeze(1).expand(-1, 3))
    # with regions the centers are proposed per region
    layer_r = make_layer(proposal=proposal, centers=2, regions=(2, 2, 1), proposal_kwargs={"k": 4})
    out_r, asg_r = layer_r(x, pos, batch, batch_size=4, return_assignment=True)
    assert torch.isfinite(out_r).all()
    group = batch * 4 + asg_r.region
    assert torch.equal(asg_r.centers.batch[asg_r.center], group.unsqueeze(1).expand(-1, 3))
    per_group = torch.bincount(asg_r.centers.batch, minlength=16)
    pts_group = torch.bincount(group, minlength=16)
    assert torch.equal(per_group, pts_group.clamp(max=2))
    out_r.sum().backward()
    assert all(p.grad is not None for p in layer_r.parameters())


def test_fps_alone_equals_in_batch():
    torch.manual_seed(9)
    sizes = [40, 25]
    pos = torch.randn(65, 3)
    x = torch.randn(65, 6)
    batch = torch.arange(2).repeat_interleave(torch.tensor(sizes))
    layer = make_layer(proposal="fps", centers=6, proposal_kwargs={"k": 4})
    out = layer(x, pos, batch)
    alone = layer(x[40:], pos[40:], torch.zeros(25, dtype=torch.long))
    torch.testing.assert_close(out[40:], alone, atol=1e-6, rtol=1e-5)


def test_every_parameter_gets_a_gradient_and_gradcheck():
    torch.manual_seed(10)
    pos, batch = image_points(2, 4, 4, dtype=torch.float64)
    layer = make_layer(regions=(2, 2), centers=(1, 2), bounds=BOX, heads=2, head_dim=3,
                       dim=4).double()
    x = torch.randn(32, 4, dtype=torch.float64, requires_grad=True)
    out = layer(x, pos, batch)
    out.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    params = list(layer.parameters())

    def fn(x_, *ps):
        saved = [p.data for p in params]
        for p, q in zip(params, ps):
            p.data = q
        try:
            return torch.func.functional_call(
                layer, dict(zip([n for n, _ in layer.named_parameters()], ps)), (x_, pos, batch)
            )
        finally:
            for p, s in zip(params, saved):
                p.data = s

    inputs = (x.detach().requires_grad_(True),) + tuple(
        p.detach().clone().requires_grad_(True) for p in params
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_autocast_bfloat16_cpu():
    torch.manual_seed(11)
    pos, batch = image_points(2, 16, 16)
    x = torch.randn(512, 6, requires_grad=True)
    layer = make_layer(regions=(2, 2), centers=(2, 2), bounds=BOX)
    ref = layer(x, pos, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, pos, batch)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs()
    # a few points may switch clusters under bf16 rounding; the bulk must agree
    assert err.median() < 2e-2 * ref.abs().median()
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert layer.alpha.grad is not None and torch.isfinite(layer.alpha.grad).all()


def test_empty_inputs_and_sets():
    layer = make_layer(regions=(2, 2))
    out = layer(torch.zeros(0, 6), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 6)
    out, asg = layer(torch.zeros(0, 6), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long),
                     batch_size=3, return_assignment=True)
    assert out.shape == (0, 6) and asg.centers.pos.shape == (0, 2)
    # a single point
    one = layer(torch.randn(1, 6), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    assert one.shape == (1, 6) and torch.isfinite(one).all()


class OneCenter(CenterProposal):
    """User proposal: one center per set at its first point, pooling all points of the set."""

    def forward(self, pos, batch, batch_size=None):
        n = batch.numel()
        first = torch.ones(n, dtype=torch.bool)
        first[1:] = batch[1:] != batch[:-1]
        idx = first.nonzero().flatten()
        # deliberately emit centers in reverse order: the layer must sort them by group
        idx = idx.flip(0)
        center_of_set = torch.empty(int(batch.max()) + 1, dtype=torch.long)
        center_of_set[batch[idx]] = torch.arange(idx.numel())
        assignment = center_of_set[batch]
        return Centers(pos[idx], batch[idx], torch.arange(n), assignment, assignment)


def test_user_proposal_module():
    torch.manual_seed(12)
    sizes = [10, 7]
    pos = torch.randn(17, 2)
    x = torch.randn(17, 6)
    batch = torch.arange(2).repeat_interleave(torch.tensor(sizes))
    layer = make_layer(proposal=OneCenter())
    out, asg = layer(x, pos, batch, return_assignment=True)
    assert asg.centers.batch.tolist() == [0, 1]
    assert torch.equal(asg.center[:, 0], batch)
    # with a single center: out_i = s_i (vc + sum s v) / (1 + sum s), vc = mean v of the set
    vx = layer.v(x)
    fx = layer.f(x)
    hd = layer.head_dim
    mixed = torch.zeros(17, layer.heads * hd)
    for b in range(2):
        rows = batch == b
        for h in range(layer.heads):
            sl = slice(h * hd, (h + 1) * hd)
            cf = fx[rows, sl].mean(0, keepdim=True)
            s = torch.sigmoid(layer.beta + layer.alpha * F.cosine_similarity(fx[rows, sl], cf))
            g = (vx[rows, sl].mean(0) + (s.unsqueeze(1) * vx[rows, sl]).sum(0)) / (1 + s.sum())
            mixed[rows, sl] = s.unsqueeze(1) * g
    torch.testing.assert_close(out, layer.proj(mixed), atol=1e-5, rtol=1e-5)


def test_grid_size_proposal_without_regions():
    torch.manual_seed(13)
    pos = torch.rand(60, 2)
    x = torch.randn(60, 6)
    batch = torch.zeros(60, dtype=torch.long)
    layer = make_layer(proposal=GridProposal(size=0.5, bounds=(0.0, 1.0)))
    out, asg = layer(x, pos, batch, return_assignment=True)
    assert asg.centers.pos.shape[0] == 4 and torch.isfinite(out).all()
    layer_r = make_layer(proposal=GridProposal(size=0.5), regions=(2, 2))
    with pytest.raises(ValueError, match="needs a count-based grid"):
        layer_r(x, pos, batch)


def test_input_validation():
    layer = make_layer(regions=(2, 2))
    pos, batch = image_points(1, 4, 4)
    x = torch.randn(16, 6)
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 6\]"):
        layer(torch.randn(16, 5), pos, batch)
    with pytest.raises(ValueError, match="`x` must be a floating point"):
        layer(torch.ones(16, 6, dtype=torch.long), pos, batch)
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        layer(x.numpy(), pos, batch)
    with pytest.raises(ValueError, match="`pos` must have one row per point"):
        layer(x, pos[:10], batch)
    with pytest.raises(ValueError, match="`pos` must have shape"):
        layer(x, pos.view(-1), batch)
    with pytest.raises(ValueError, match="`batch` must have one entry per point"):
        layer(x, pos, batch[:3])
    with pytest.raises(ValueError, match="`batch` must be sorted"):
        layer(x, pos, batch.flip(0) * 0 + torch.arange(16).flip(0))
    with pytest.raises(ValueError, match="`batch` values must be < batch_size"):
        layer(x, pos, batch + 1, batch_size=1)
    with pytest.raises(ValueError, match="`regions` has 2 entries but the positions have D = 3"):
        layer(x, torch.rand(16, 3), batch)
    with pytest.raises(ValueError, match="`pos` has NaN"):
        layer(x, pos.clone().fill_(math.nan), batch)
    with pytest.raises(ValueError, match="`batch_size` must be >= 0"):
        layer(x, pos, batch, batch_size=-1)


def test_constructor_validation():
    with pytest.raises(ValueError, match="`denominator` must be one of"):
        ContextCluster(4, denominator="mean")
    with pytest.raises(ValueError, match="`pair_layout` must be one of"):
        ContextCluster(4, pair_layout="dense")
    with pytest.raises(ValueError, match="`regions` must be an int >= 1"):
        ContextCluster(4, regions=0)
    with pytest.raises(ValueError, match="`centers` entries must be ints >= 1"):
        ContextCluster(4, centers=(2, 0))
    with pytest.raises(ValueError, match="`bounds` must be None, 'set' or a"):
        ContextCluster(4, bounds="box")
    with pytest.raises(ValueError, match="finite lo < hi"):
        ContextCluster(4, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="choose one of"):
        ContextCluster(4, proposal="kmeans")
    with pytest.raises(ValueError, match="`dim` must be >= 1"):
        ContextCluster(0)
    layer = ContextCluster(8, 12, heads=2, head_dim=5)
    assert layer.f.out_features == 10 and layer.v.out_features == 10
    assert layer.proj.in_features == 10 and layer.proj.out_features == 12
    assert layer.alpha.item() == 1.0 and layer.beta.item() == 0.0


@pytest.mark.parametrize("layout", ["padded", "ragged"])
def test_chunked_equals_unchunked_forward_and_backward(layout):
    torch.manual_seed(14)
    sizes = [40, 0, 23, 61]
    n = sum(sizes)
    pos = torch.rand(n, 2)
    x = torch.randn(n, 6)
    batch = torch.arange(4).repeat_interleave(torch.tensor(sizes))
    results = []
    for chunk in (None, 7, 50):
        layer = make_layer(centers=3, regions=(2, 1), pair_layout=layout, chunk_points=chunk)
        xa = x.clone().requires_grad_(True)
        out, asg = layer(xa, pos, batch, return_assignment=True)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out, asg.center, asg.similarity, grads(layer, xa)))
    for out, center, sim, g in results[1:]:
        torch.testing.assert_close(out, results[0][0], atol=1e-6, rtol=1e-5)
        assert torch.equal(center, results[0][1])
        torch.testing.assert_close(sim, results[0][2])
        for a, b in zip(g, results[0][3]):  # sums over chunks: another summation order
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_validate_false_same_result_and_still_checks_shapes():
    torch.manual_seed(15)
    pos, batch = image_points(2, 8, 8)
    x = torch.randn(128, 6)
    a = make_layer(regions=(2, 2), bounds=BOX)(x, pos, batch)
    layer = make_layer(regions=(2, 2), bounds=BOX, validate=False)
    torch.testing.assert_close(layer(x, pos, batch, batch_size=2), a)
    with pytest.raises(ValueError, match=r"`batch` must have shape \[N\] = \[128\]"):
        layer(x, pos, batch[:5])
    with pytest.raises(ValueError, match="`batch` must be an integer tensor"):
        layer(x, pos, batch.float())


def test_default_centers_in_any_dimension():
    torch.manual_seed(21)
    x = torch.randn(40, 4)
    pos3 = torch.rand(40, 3)
    batch = torch.arange(2).repeat_interleave(20)
    layer = ContextCluster(4, heads=2, head_dim=8)
    out, asg = layer(x, pos3, batch, return_assignment=True)
    assert out.shape == (40, 4) and torch.isfinite(out).all()
    assert asg.centers.pos.shape[0] <= 2 * 8  # 2 per axis in 3-D: at most 8 cells per set
    assert asg.centers.pos.shape[0] > 4
    layer2 = ContextCluster(4, heads=2, head_dim=8, centers=(2, 2))
    with pytest.raises(ValueError, match="`centers` has 2 entries but the positions have D = 3"):
        layer2(x, pos3, batch)
    assert ContextCluster(4, proposal="fps").proposal.num == 4


def test_user_proposal_with_regions_in_the_layer():
    torch.manual_seed(22)
    pos = torch.rand(30, 2)
    x = torch.randn(30, 6)
    batch = torch.arange(2).repeat_interleave(15)
    layer = make_layer(proposal=OneCenter(), regions=(2, 2), bounds=(0.0, 1.0))
    out, asg = layer(x, pos, batch, return_assignment=True)
    assert torch.isfinite(out).all()
    # one center per non-empty region, and every point joins its region's center
    group = batch * 4 + asg.region
    assert asg.centers.batch.tolist() == sorted(set(group.tolist()))
    assert torch.equal(asg.centers.batch[asg.center[:, 0]], group)


def test_chosen_similarity_backward_matches_autograd_reference(monkeypatch):
    import pointctx.nn.context_cluster as ccm

    g = torch.Generator().manual_seed(5)
    n, h, d, m = 7, 2, 3, 4
    f = torch.randn(n, h, d, generator=g, dtype=torch.float64)
    f[2, 1] = 0.0  # a zero feature
    f[3, 0] *= 1e-14  # |f| below the clamp (1e-12): the norm's own gradient is cut
    c = torch.randn(m * h, d, generator=g, dtype=torch.float64)
    c = c / c.norm(dim=-1, keepdim=True)
    idx = torch.randint(0, m * h, (n * h,), generator=g)
    alpha = torch.tensor([1.3], dtype=torch.float64)
    beta = torch.tensor([-0.2], dtype=torch.float64)
    w = torch.randn(n, h, generator=g, dtype=torch.float64)

    def run(fn):
        ins = [t.clone().requires_grad_(True) for t in (f, c, alpha, beta)]
        norm = ins[0].detach().norm(dim=-1)
        out = fn(ins[0], ins[1], idx, 1.0 / norm.clamp_min(1e-12), norm, ins[2], ins[3])
        (out * w).sum().backward()
        return [out] + [t.grad for t in ins]

    for got, want in zip(run(ccm._ChosenSimilarity.apply), run(ccm.chosen_similarity_naive)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)

    # and the whole layer, forward and every gradient, with the reference swapped in
    torch.manual_seed(11)
    pos, batch = image_points(2, 4, 4, dtype=torch.float64)
    layer = make_layer(regions=(2, 2), centers=(1, 2), bounds=BOX, heads=2, head_dim=3,
                       dim=4).double()
    x = torch.randn(32, 4, dtype=torch.float64)

    def layer_grads():
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        out = layer(xi, pos, batch)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        return [out, xi.grad] + [p.grad.clone() for p in layer.parameters()]

    fast = layer_grads()
    monkeypatch.setattr(ccm, "_CHOSEN_SIMILARITY", ccm.chosen_similarity_naive)
    for got, want in zip(fast, layer_grads()):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
