import pytest
import torch

from pointctx.nn.grouping import (
    GeometricAffine,
    GroupContextCluster,
    Groups,
    fps_start_points,
    gather_groups,
    sample_and_group,
)
from pointctx.ops import fps, knn
from pointctx.ops.segment import ptr_to_batch


def _sets(sizes, d=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(sum(sizes), d, generator=g, dtype=dtype)
    ptr = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    return pos, ptr_to_batch(ptr, pos.shape[0]), ptr


def test_sample_and_group_matches_ops_and_fills_small_sets():
    sizes = [30, 10, 1, 7]
    pos, batch, _ = _sets(sizes)
    g = sample_and_group(pos, batch, k=8, ratio=0.5, batch_size=4)
    assert isinstance(g, Groups)
    anchor = fps(pos, batch, ratio=0.5, batch_size=4)
    assert torch.equal(g.anchor, anchor)
    assert torch.equal(g.batch, batch[anchor])
    ref = knn(pos, pos[anchor], 8, batch, batch[anchor], batch_size=4).index
    assert torch.equal(g.mask, ref >= 0)
    # valid slots are the kNN result, filled slots repeat slot 0 (the anchor itself here)
    assert torch.equal(g.index[g.mask], ref[ref >= 0])
    filled = g.index.masked_select(~g.mask)
    assert torch.equal(filled, g.index[:, :1].expand_as(g.index).masked_select(~g.mask))
    assert torch.equal(g.index[:, 0], anchor)
    # sets with >= 8 points have no filled slot; the 1-point set has 7
    assert bool(g.mask[g.batch == 0].all())
    assert int((~g.mask[g.batch == 2]).sum()) == 7
    # every neighbour belongs to the anchor's set
    assert torch.equal(batch[g.index], g.batch[:, None].expand_as(g.index))


def test_no_mask_when_all_sets_are_large_enough():
    pos, batch, _ = _sets([40, 33])
    g = sample_and_group(pos, batch, k=8, batch_size=2)
    assert g.mask is None
    assert g.anchor.numel() == 20 + 17  # ceil(n / 2) per set


def test_canonical_start_is_order_independent():
    sizes = [25, 17]
    pos, batch, ptr = _sets(sizes, seed=1)
    g0 = sample_and_group(pos, batch, k=5, batch_size=2, fps_start="canonical")
    gen = torch.Generator().manual_seed(3)
    perm = torch.cat([ptr[i] + torch.randperm(s, generator=gen) for i, s in enumerate(sizes)])
    g1 = sample_and_group(pos[perm], batch, k=5, batch_size=2, fps_start="canonical")
    # the same anchors in the same pick order, and the same neighbour sets
    assert torch.equal(pos[g0.anchor], pos[perm][g1.anchor])
    assert torch.equal(pos[g0.index], pos[perm][g1.index])
    # the start is the point farthest from the centroid
    start = fps_start_points(pos, batch, 2)
    assert torch.equal(g0.anchor[[0, 13]], start)
    # "first" starts at each set's first point, so it changes with the order
    f0 = sample_and_group(pos, batch, k=5, batch_size=2)
    assert torch.equal(f0.anchor[[0, 13]], ptr[:-1])


def test_random_start_follows_generator():
    pos, batch, _ = _sets([50, 20], seed=2)
    a = sample_and_group(pos, batch, 4, batch_size=2, fps_start="random",
                         generator=torch.Generator().manual_seed(5))
    b = sample_and_group(pos, batch, 4, batch_size=2, fps_start="random",
                         generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.anchor, b.anchor)


def test_sample_and_group_errors():
    pos, batch, _ = _sets([10])
    with pytest.raises(ValueError, match="fps_start"):
        sample_and_group(pos, batch, 4, fps_start="centroid")
    with pytest.raises(ValueError, match="k"):
        sample_and_group(pos, batch, 0)
    with pytest.raises(ValueError, match="ratio"):
        sample_and_group(pos, batch, 4, ratio=1.5)


def test_gather_groups():
    pos, batch, _ = _sets([12, 9])
    g = sample_and_group(pos, batch, 4, batch_size=2)
    x = torch.randn(pos.shape[0], 6)
    grouped, anchor = gather_groups(x, g)
    assert grouped.shape == (g.anchor.numel(), 4, 6)
    assert torch.equal(grouped, x[g.index])
    assert torch.equal(anchor, x[g.anchor])


def _std_ref(diff, mask, gbatch, b):
    """Unbiased std of each set's valid entries, by a per-set loop."""
    out = []
    for s in range(b):
        rows = gbatch == s
        d = diff[rows]
        vals = d[mask[rows]] if mask is not None else d.reshape(-1, d.shape[-1])
        out.append(vals.reshape(-1).std())
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["anchor", "center"])
def test_geometric_affine_matches_per_sample_std_dense(mode):
    torch.manual_seed(0)
    b, s, k, c = 3, 5, 4, 6
    grouped = torch.randn(b, s, k, c, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1],
                                                                        dtype=torch.float64
                                                                        ).view(3, 1, 1, 1)
    anchor = grouped[:, :, 0]
    aff = GeometricAffine(c, mode).double()
    with torch.no_grad():
        aff.alpha.uniform_(0.5, 2)
        aff.beta.uniform_(-1, 1)
    gb = torch.arange(b).repeat_interleave(s)
    out = aff(grouped.reshape(b * s, k, c), anchor.reshape(b * s, c), None, gb, b)
    # the official formula on the padded batch (torch.std over each sample's block)
    mean = anchor.unsqueeze(2) if mode == "anchor" else grouped.mean(2, keepdim=True)
    std = (grouped - mean).reshape(b, -1).std(-1).view(b, 1, 1, 1)
    ref = aff.alpha * (grouped - mean) / (std + 1e-5) + aff.beta
    torch.testing.assert_close(out, ref.reshape(b * s, k, c))


@pytest.mark.parametrize("mode", ["anchor", "center"])
def test_geometric_affine_ignores_masked_slots(mode):
    torch.manual_seed(1)
    m, k, c = 6, 5, 3
    gb = torch.tensor([0, 0, 0, 1, 1, 2])
    mask = torch.ones(m, k, dtype=torch.bool)
    mask[3:, 2:] = False
    grouped = torch.randn(m, k, c, dtype=torch.float64)
    anchor = torch.randn(m, c, dtype=torch.float64)
    aff = GeometricAffine(c, mode).double()
    out = aff(grouped, anchor, mask, gb, 3)
    # garbage in the masked slots changes nothing on the valid slots
    g2 = grouped.clone()
    g2[~mask] = 1e3
    out2 = aff(g2, anchor, mask, gb, 3)
    torch.testing.assert_close(out[mask], out2[mask])
    if mode == "anchor":
        ref_mean = anchor.unsqueeze(1)
    else:
        w = mask.unsqueeze(-1).double()
        ref_mean = ((grouped * w).sum(1) / w.sum(1)).unsqueeze(1)
    diff = grouped - ref_mean
    std = _std_ref(diff, mask, gb, 3)
    ref = diff / (std[gb].view(m, 1, 1) + 1e-5)
    torch.testing.assert_close(out[mask], ref[mask])


def test_geometric_affine_is_per_sample():
    torch.manual_seed(2)
    gb = torch.tensor([0, 0, 1, 1])
    grouped = torch.randn(4, 3, 2)
    anchor = torch.randn(4, 2)
    aff = GeometricAffine(2)
    out = aff(grouped, anchor, None, gb, 2)
    g2, a2 = grouped.clone(), anchor.clone()
    g2[2:] *= 100.0
    a2[2:] *= 100.0
    out2 = aff(g2, a2, None, gb, 2)
    torch.testing.assert_close(out[:2], out2[:2])
    # the scaled sample is normalised to the same values
    torch.testing.assert_close(out[2:], out2[2:], rtol=1e-4, atol=1e-4)


def test_geometric_affine_zero_variance_has_finite_gradient():
    grouped = torch.ones(2, 4, 3, requires_grad=True)
    anchor = torch.ones(2, 3, requires_grad=True)
    aff = GeometricAffine(3)
    out = aff(grouped, anchor, None, torch.tensor([0, 1]), 2)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(grouped.grad).all() and torch.isfinite(anchor.grad).all()
    assert torch.isfinite(aff.alpha.grad).all()


def test_geometric_affine_errors():
    with pytest.raises(ValueError, match="mode"):
        GeometricAffine(3, mode="mean")
    aff = GeometricAffine(3)
    with pytest.raises(ValueError, match="grouped"):
        aff(torch.zeros(2, 4, 5), torch.zeros(2, 5), None, torch.tensor([0, 0]), 1)


def _coc_ref(layer, x):
    """One group at a time, heads by hand (the official formula)."""
    outs = []
    h, d = layer.heads, layer.head_dim
    for grp in x:
        f = layer.fc1(grp).view(-1, h, d)
        v = layer.fc_v(grp).view(-1, h, d)
        res = []
        for j in range(h):
            fj, vj = f[:, j], v[:, j]
            c, vc = fj.mean(0), vj.mean(0)
            cos = torch.nn.functional.cosine_similarity(fj, c.expand_as(fj), dim=-1, eps=1e-12)
            s = torch.sigmoid(layer.beta + layer.alpha * cos)
            agg = ((s[:, None] * vj).sum(0) + vc) / (s.sum() + 1)
            res.append(s[:, None] * agg)
        outs.append(grp + layer.fc2(torch.cat(res, -1)))
    return torch.stack(outs)


@pytest.mark.parametrize("heads", [1, 2])
def test_group_context_cluster_matches_reference(heads):
    torch.manual_seed(3)
    layer = GroupContextCluster(8, heads=heads, head_dim=5).double()
    with torch.no_grad():
        layer.alpha.fill_(1.7)
        layer.beta.fill_(-0.3)
    x = torch.randn(4, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _coc_ref(layer, x))


def test_group_context_cluster_default_head_dim():
    assert GroupContextCluster(64).head_dim == 32
    assert GroupContextCluster(256).head_dim == 64


def test_group_context_cluster_mask_equals_truncated_groups():
    torch.manual_seed(4)
    layer = GroupContextCluster(6, head_dim=4).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    valid = [5, 2, 1]
    mask = torch.arange(5) < torch.tensor(valid)[:, None]
    x = torch.where(mask.unsqueeze(-1), x, x[:, :1])  # filled slots copy slot 0
    out = layer(x, mask)
    for i, n in enumerate(valid):
        alone = layer(x[i:i + 1, :n])
        torch.testing.assert_close(out[i, :n], alone[0])
        torch.testing.assert_close(out[i, n:], alone[0, :1].expand(5 - n, -1))


def test_group_context_cluster_gradients_and_errors():
    layer = GroupContextCluster(4, head_dim=3)
    x = torch.randn(2, 3, 4, requires_grad=True)
    layer(x).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    with pytest.raises(ValueError, match=r"\[M, k, 4\]"):
        layer(torch.zeros(2, 4))


@pytest.mark.parametrize("mode,masked,big", [("anchor", False, False), ("anchor", True, False),
                                             ("center", False, False), ("center", True, False),
                                             ("anchor", True, True)])
def test_geometric_affine_backward_matches_the_autograd_reference(mode, masked, big):
    from pointctx.nn.grouping import geometric_affine_naive

    g = torch.Generator().manual_seed(3)
    m, k, c = 7, 5, 3
    gb = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # set 2: one group; set 3: zero variance
    if big:  # 1,100 groups of 32 x 64 values: the CPU path runs in 1,024-group chunks
        m, k, c = 1100, 32, 64
        gb = torch.cat([torch.zeros(600, dtype=torch.long), torch.ones(498, dtype=torch.long),
                        torch.tensor([2, 3])])
    grouped = torch.randn(m, k, c, generator=g, dtype=torch.float64)
    anchor = torch.randn(m, c, generator=g, dtype=torch.float64)
    grouped[6] = 0.5
    anchor[6] = 0.5
    mask = None
    if masked:
        mask = torch.rand(m, k, generator=g) > 0.3
        mask[:, 0] = True
        mask[5, 1:] = False  # one valid entry per channel: count - 1 = 2
    aff = GeometricAffine(c, mode).double()
    with torch.no_grad():
        aff.alpha.uniform_(0.5, 2, generator=g)
        aff.beta.uniform_(-1, 1, generator=g)
    w = torch.randn(m, k, c, generator=g, dtype=torch.float64)

    def run(fast):
        gr = grouped.clone().requires_grad_(True)
        an = anchor.clone().requires_grad_(True)
        aff.zero_grad()
        if fast:
            out = aff(gr, an, mask, gb, 4)
        else:
            ref = an if mode == "anchor" else None
            if ref is None:
                wt = torch.ones(m, k, 1, dtype=torch.float64) if mask is None else \
                    mask.unsqueeze(-1).double()
                ref = (gr * wt).sum(1) / wt.sum(1).clamp(min=1)
            out = geometric_affine_naive(gr, ref, aff.alpha, aff.beta, mask, gb, 4, aff.eps)
        (out * w).sum().backward()
        return out, gr.grad, an.grad, aff.alpha.grad.clone(), aff.beta.grad.clone()

    for got, want in zip(run(True), run(False)):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_geometric_affine_gradcheck():
    g = torch.Generator().manual_seed(4)
    grouped = torch.randn(4, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    anchor = torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    aff = GeometricAffine(2).double()
    gb = torch.tensor([0, 0, 1, 1])
    from pointctx.nn.grouping import _GeometricAffine

    def fn(gr, an, al, be):  # a non-linear readout, so that every gradient term matters
        return torch.nn.functional.gelu(_GeometricAffine.apply(gr, an, al, be, mask, gb, 2, 1e-5))

    assert torch.autograd.gradcheck(fn, (grouped, anchor, aff.alpha, aff.beta))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_geometric_affine_cuda_matches_cpu():
    g = torch.Generator().manual_seed(6)
    grouped = torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
    anchor = torch.randn(6, 3, generator=g, dtype=torch.float64)
    gb = torch.tensor([0, 0, 1, 1, 1, 2])
    aff = GeometricAffine(3).double()
    res = []
    for dev in ("cpu", "cuda"):
        aff = aff.to(dev)
        aff.zero_grad()
        gr = grouped.to(dev).requires_grad_(True)
        out = aff(gr, anchor.to(dev), None, gb.to(dev), 3)
        out.square().sum().backward()
        res.append([t.cpu() for t in (out, gr.grad, aff.alpha.grad, aff.beta.grad)])
    for a, b in zip(*res):
        torch.testing.assert_close(a, b)
