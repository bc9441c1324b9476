import math

import pytest
import torch
import torch.nn.functional as F

import pointctx.nn.depthwise as dw
import pointctx.nn.soft_aggregation as sa
from pointctx import PointBatch
from pointctx.nn import (
    Assignment,
    GFCBlock,
    GFCStage,
    GlobalFeatureClustering,
    ImprovedClusterPool,
    SetDepthwiseConv,
    knn_slots,
    nearest_center,
    soft_aggregate,
)
from pointctx.nn.depthwise import shifted_depthwise
from pointctx.nn.proposal import pool_centers

BOUNDS = (-0.5, 0.5)


def _sets(sizes, dim=8, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn(n, dim, generator=g)
    pos = torch.rand(n, d, generator=g) - 0.5
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, pos, batch


def _gfc(dim=8, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("heads", 2)
    kw.setdefault("head_dim", 4)
    kw.setdefault("centers", 3)
    kw.setdefault("bounds", BOUNDS)
    layer = GlobalFeatureClustering(dim, **kw)
    with torch.no_grad():  # non-trivial scalars so every path matters
        layer.t.fill_(math.log(0.3))
        if layer.assign:
            layer.alpha.fill_(1.7)
            layer.beta.fill_(-0.2)
    return layer


# ----------------------------------------------------------------------------------------------
# soft aggregation and nearest center
# ----------------------------------------------------------------------------------------------


def _ragged_qkv(n_sizes, m_sizes, heads=2, d=4, dv=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, m = sum(n_sizes), sum(m_sizes)
    q = torch.randn(m, heads, d, generator=g) * 2
    k = torch.randn(n, heads, d, generator=g)
    v = torch.randn(n, heads, dv, generator=g)
    batch = torch.repeat_interleave(torch.arange(len(n_sizes)), torch.tensor(n_sizes))
    cb = torch.repeat_interleave(torch.arange(len(m_sizes)), torch.tensor(m_sizes))
    return q, cb, k, v, batch


def _soft_naive(q, cb, k, v, batch, b):
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[2])
    for s in range(b):
        ci, pi = (cb == s).nonzero().view(-1), (batch == s).nonzero().view(-1)
        for m in ci.tolist():
            for h in range(q.shape[1]):
                w = torch.softmax(k[pi, h] @ q[m, h], 0)
                out[m, h] = w @ v[pi, h]
    return out


@pytest.mark.parametrize("small_blocks", [False, True])
def test_soft_aggregate_matches_per_set_loop(monkeypatch, small_blocks):
    if small_blocks:  # one set per padded block
        monkeypatch.setattr(sa, "_BLOCK_ELEMENTS", 1)
    n_sizes, m_sizes = [7, 0, 1, 12, 5], [3, 0, 1, 4, 2]
    q, cb, k, v, batch = _ragged_qkv(n_sizes, m_sizes)
    q.requires_grad_(True)
    v.requires_grad_(True)
    out = soft_aggregate(q, cb, k, v, batch, 5)
    ref = _soft_naive(q.detach(), cb, k, v.detach(), batch, 5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
    assert v.grad[batch == 1].numel() == 0  # the empty set has no rows


def test_nearest_center_matches_loop_and_ties_take_lowest_index():
    g = torch.Generator().manual_seed(1)
    sizes, m_sizes = [6, 4, 0, 3], [3, 0, 0, 2]
    f = torch.randn(13, 2, 5, generator=g)
    c = torch.randn(5, 2, 5, generator=g)
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    cb = torch.repeat_interleave(torch.arange(4), torch.tensor(m_sizes))
    got = nearest_center(f, batch, c, cb, 4, alpha=-1.3, beta=0.5)
    for i in range(13):
        cand = (cb == batch[i]).nonzero().view(-1)
        for h in range(2):
            if len(cand) == 0:
                assert got[i, h] == -1
                continue
            s = -1.3 * F.cosine_similarity(f[i, h].expand(len(cand), 5), c[cand, h], dim=1)
            assert got[i, h] == cand[int(torch.argmax(s))]
    # duplicated centers: the lower index wins
    c2 = torch.cat([c[:1], c[:1]])
    got = nearest_center(f[:6], batch[:6], c2, torch.zeros(2, dtype=torch.long), 1)
    assert (got == 0).all()


# ----------------------------------------------------------------------------------------------
# Global Feature Clustering
# ----------------------------------------------------------------------------------------------


def _gfc_naive(layer, x, pos):
    """One set, dense formulas of the paper (official ``Cluster.forward``)."""
    heads, hd = layer.heads, layer.head_dim
    n = x.shape[0]
    centers = layer.proposal(pos, torch.zeros(n, dtype=torch.long), 1)
    px = pool_centers(x, centers)
    m = px.shape[0]
    K = layer.k(x).view(n, heads, hd).transpose(0, 1)  # [H, N, d]
    V = layer.v(x).view(n, heads, hd).transpose(0, 1)
    kc = layer.k(px).view(m, heads, hd).transpose(0, 1)
    vc = layer.v(px).view(m, heads, hd).transpose(0, 1)
    kn, kcn = F.normalize(K, dim=-1), F.normalize(kc, dim=-1)
    attn = torch.softmax(kcn @ kn.transpose(1, 2) / layer.tau, dim=-1)  # [H, M, N]
    soft = attn @ V  # [H, M, d]
    g = layer.gate(soft.transpose(0, 1), vc.transpose(0, 1)).transpose(0, 1)
    fused = (1 - g) * soft + g * vc
    q = layer.q(fused.transpose(0, 1).reshape(m, heads * hd)).view(m, heads, hd).transpose(0, 1)
    sim = torch.sigmoid(layer.beta + layer.alpha * (kn @ F.normalize(q, dim=-1).transpose(1, 2)))
    best, arg = sim.max(-1)  # [H, N]
    out = best.unsqueeze(-1) * torch.gather(fused, 1, arg.unsqueeze(-1).expand(-1, -1, hd))
    return layer.proj(out.transpose(0, 1).reshape(n, heads * hd))


def test_gfc_matches_dense_reference_per_set():
    layer = _gfc()
    x, pos, batch = _sets([20, 9, 14])
    out = layer(x, pos, batch)
    for s in range(3):
        sel = batch == s
        torch.testing.assert_close(out[sel], _gfc_naive(layer, x[sel], pos[sel]),
                                   rtol=1e-5, atol=1e-5)


def test_gfc_shapes_and_every_parameter_gets_a_gradient():
    layer = _gfc(out_dim=6)
    x, pos, batch = _sets([20, 9, 14])
    out, res = layer(x, pos, batch, return_assignment=True)
    assert out.shape == (43, 6)
    assert isinstance(res, Assignment)
    assert res.center.shape == (43, 2) and res.similarity.shape == (43, 2)
    # every point joins a center of its own set
    assert torch.equal(res.centers.batch[res.center], batch.unsqueeze(1).expand(-1, 2))
    (out * torch.randn_like(out)).sum().backward()
    bad = [n for n, p in layer.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert bad == []


def test_gfc_ragged_equals_each_set_alone():
    layer = _gfc()
    x, pos, batch = _sets([30, 1, 17, 2])
    out = layer(x, pos, batch)
    ptr = [0, 30, 31, 48, 50]
    for s in range(4):
        lo, hi = ptr[s], ptr[s + 1]
        alone = layer(x[lo:hi], pos[lo:hi], torch.zeros(hi - lo, dtype=torch.long))
        torch.testing.assert_close(out[lo:hi], alone, rtol=1e-5, atol=1e-5)


def test_gfc_is_permutation_equivariant():
    layer = _gfc()
    x, pos, batch = _sets([25, 18])
    g = torch.Generator().manual_seed(3)
    perm = torch.cat([torch.randperm(25, generator=g), 25 + torch.randperm(18, generator=g)])
    out = layer(x, pos, batch)
    torch.testing.assert_close(layer(x[perm], pos[perm], batch), out[perm], rtol=1e-5,
                               atol=1e-5)


def test_gfc_fps_proposal_for_non_grid_sets():
    layer = _gfc(proposal="fps", centers=4, proposal_kwargs={"k": 5}, bounds=None)
    x, pos, batch = _sets([20, 3, 11], d=3)
    out, res = layer(x, pos, batch, return_assignment=True)
    assert out.shape == (34, 8) and torch.isfinite(out).all()
    assert res.centers.batch.tolist() == [0] * 4 + [1] * 3 + [2] * 4


def test_temperature_is_clamped_below():
    layer = _gfc(min_tau=1e-3)
    x, pos, batch = _sets([15, 6])
    with torch.no_grad():
        layer.t.fill_(-20.0)
    assert float(layer.tau.detach()) == pytest.approx(1e-3)
    layer(x, pos, batch).sum().backward()
    assert layer.t.grad is not None and float(layer.t.grad) == 0.0  # clamped: no gradient
    layer.zero_grad()
    with torch.no_grad():
        layer.t.fill_(math.log(0.5))
    assert float(layer.tau.detach()) == pytest.approx(0.5)
    layer(x, pos, batch).pow(2).sum().backward()
    assert float(layer.t.grad) != 0.0
    # the default initial temperature is the official 2.13
    assert float(GlobalFeatureClustering(8).tau.detach()) == pytest.approx(2.13)


def test_stage_shares_the_first_assignment():
    torch.manual_seed(0)
    stage = GFCStage(8, 3, heads=2, head_dim=4, centers=3, bounds=BOUNDS, mlp_ratio=2)
    assert stage.blocks[0].token_mixer.q is not None
    assert all(b.token_mixer.q is None and b.token_mixer.alpha is None
               for b in stage.blocks[1:])
    x, pos, batch = _sets([20, 12])
    out, seen = stage(x, pos, batch, return_assignment=True)
    assert out.shape == (32, 8)
    assert seen[1] is seen[0] and seen[2] is seen[0]
    # the shared similarity carries gradient back to the first block's alpha/beta/q
    out.sum().backward()
    mixer = stage.blocks[0].token_mixer
    assert mixer.alpha.grad.abs().sum() > 0 and mixer.q.weight.grad.abs().sum() > 0
    unshared = GFCStage(8, 3, share_assignment=False, heads=2, head_dim=4, centers=3,
                        bounds=BOUNDS, mlp_ratio=2)
    assert all(b.token_mixer.q is not None for b in unshared.blocks)
    _, seen = unshared(x, pos, batch, return_assignment=True)
    assert seen[1] is not seen[0]
    # the parameter saving of sharing: q (H*d)^2 + H*d and alpha, beta per later block
    n_sh = sum(p.numel() for p in stage.parameters())
    n_un = sum(p.numel() for p in unshared.parameters())
    assert n_un - n_sh == 2 * (8 * 8 + 8 + 2)


def test_layer_without_assign_needs_an_assignment():
    first, later = _gfc(), _gfc(assign=False)
    x, pos, batch = _sets([10, 7])
    with pytest.raises(ValueError, match="built with assign=False"):
        later(x, pos, batch)
    _, res = first(x, pos, batch, return_assignment=True)
    out = later(x, pos, batch, assignment=res)
    assert out.shape == (17, 8)


@pytest.mark.parametrize("sizes", [[0, 5], [1], [3, 0, 0, 1], [2, 1, 4]])
def test_empty_and_tiny_sets(sizes):
    torch.manual_seed(0)
    block = GFCBlock(8, mlp_ratio=2, heads=2, head_dim=4, centers=3, bounds=BOUNDS)
    x, pos, batch = _sets(sizes)
    out = block(x, pos, batch, len(sizes))
    assert out.shape == x.shape and torch.isfinite(out).all()
    if x.shape[0]:
        out.sum().backward()
        assert torch.isfinite(block.token_mixer.k.weight.grad).all()
    pool = ImprovedClusterPool(8, 12)
    red = pool(x, pos, batch, len(sizes))
    assert red.x.shape[1] == 12 and torch.isfinite(red.x).all()


def test_no_points_at_all():
    layer = _gfc()
    out = layer(torch.zeros(0, 8), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2)
    assert out.shape == (0, 8)


def test_bad_inputs():
    layer = _gfc()
    x, pos, batch = _sets([5, 4])
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 8\]"):
        layer(x[:, :3], pos, batch)
    with pytest.raises(ValueError, match="`pos` must have one row per point"):
        layer(x, pos[:3], batch)
    with pytest.raises(ValueError, match="`batch` must be sorted ascending"):
        layer(x, pos, batch.flip(0))
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        layer(x.tolist(), pos, batch)
    with pytest.raises(TypeError, match="`proposed` must be a Centers"):
        layer(x, pos, batch, proposed=(1, 2))
    _, res = layer(x, pos, batch, return_assignment=True)
    with pytest.raises(ValueError, match=r"`assignment` must hold \[N, heads\]"):
        layer(x[:4], pos[:4], batch[:4], assignment=res)
    with pytest.raises(ValueError, match="`min_tau` must be a number > 0"):
        GlobalFeatureClustering(8, min_tau=0.0)
    with pytest.raises(ValueError, match="`centers` must be an int >= 1"):
        GlobalFeatureClustering(8, centers=0)
    with pytest.raises(ValueError, match="`kernel_size` must be odd"):
        SetDepthwiseConv(4, kernel_size=2)
    conv = SetDepthwiseConv(8)
    with pytest.raises(ValueError, match="give `coords` and `grid_size`"):
        conv(x, batch)
    with pytest.raises(ValueError, match=r"`neighbors` must have shape \[N, S\]"):
        conv(x, batch, neighbors=torch.zeros(9, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="one rate per block"):
        GFCStage(8, 2, drop_path=[0.1])
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 8\]"):
        ImprovedClusterPool(8, 4)(x[:, :2], pos, batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gfc_half_precision_autocast_cuda():
    layer = _gfc().cuda()
    x, pos, batch = (t.cuda() for t in _sets([40, 25]))
    with torch.autocast("cuda", dtype=torch.float16):
        out = layer(x, pos, batch)
    ref = layer(x, pos, batch)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


def test_gfc_runs_under_cpu_autocast():
    layer = _gfc()
    x, pos, batch = _sets([30, 10])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, res = layer(x, pos, batch, return_assignment=True)
    ref, ref_res = layer(x, pos, batch, return_assignment=True)
    assert torch.isfinite(out.float()).all()
    # bfloat16 keys may flip a few near-tied hard choices; the others agree closely
    same = (res.center == ref_res.center).all(1)
    assert same.float().mean() > 0.85
    torch.testing.assert_close(out.float()[same], ref[same], rtol=0.1, atol=0.1)


# ----------------------------------------------------------------------------------------------
# depthwise convolution
# ----------------------------------------------------------------------------------------------


def test_depthwise_conv_is_conv2d_on_images_and_zero_fill_on_masks():
    torch.manual_seed(0)
    conv = SetDepthwiseConv(6)
    nn_init = torch.nn.init
    nn_init.normal_(conv.bias)
    img = torch.randn(2, 6, 7, 9)
    mask = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(1)) < 0.6
    pb = PointBatch.from_images(img, mask)
    coords = torch.stack([pb.pixel // 9, pb.pixel % 9], 1)
    out = conv(pb.x, pb.batch, 2, coords, (7, 9))
    ref = F.conv2d(img * mask.unsqueeze(1), conv.weight, conv.bias, padding=1, groups=6)
    ref = ref.permute(0, 2, 3, 1)[mask]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_shifted_depthwise_is_the_zero_padded_conv2d(k):
    g = torch.Generator().manual_seed(k)
    f64 = torch.float64
    img = torch.randn(2, 4, 6, 5, generator=g, dtype=f64, requires_grad=True)
    weight = torch.randn(5, 1, k, k, generator=g, dtype=f64, requires_grad=True)
    bias = torch.randn(5, generator=g, dtype=f64, requires_grad=True)
    out = shifted_depthwise(img, weight, bias)
    ref = F.conv2d(img.permute(0, 3, 1, 2), weight, bias, padding=k // 2,
                   groups=5).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref)
    gy = torch.randn(out.shape, generator=g, dtype=f64)
    for a, b in zip(torch.autograd.grad(out, (img, weight, bias), gy),
                    torch.autograd.grad(ref, (img, weight, bias), gy)):
        torch.testing.assert_close(a, b)


def test_shifted_depthwise_bad_shapes():
    img = torch.zeros(1, 4, 4, 3)
    with pytest.raises(ValueError, match=r"`img` must have shape \[B, H, W, C\]"):
        shifted_depthwise(img[0], torch.zeros(3, 1, 3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="odd k, got \\(3, 1, 2, 2\\)"):
        shifted_depthwise(img, torch.zeros(3, 1, 2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[C, 1, k, k\] = \[3, 1, k, k\].*\(4, 1, 3, 3\)"):
        shifted_depthwise(img, torch.zeros(4, 1, 3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"`bias` must have shape \[C\] = \[3\]"):
        shifted_depthwise(img, torch.zeros(3, 1, 3, 3), torch.zeros(4))


def test_depthwise_conv_takes_the_shifted_form_under_compile(monkeypatch):
    # the form torch.compile traces (inductor cannot lower the channels-last conv with symbolic
    # sizes); here it is switched on without compiling, and must give the eager result
    torch.manual_seed(0)
    conv = SetDepthwiseConv(6).double()
    torch.nn.init.normal_(conv.bias)
    img = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    mask = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(1)) < 0.6
    pb = PointBatch.from_images(img, mask)
    coords = torch.stack([pb.pixel // 9, pb.pixel % 9], 1)
    eager = conv(pb.x, pb.batch, 2, coords, (7, 9))
    calls = []

    def shifted(*args):
        calls.append(1)
        return shifted_depthwise(*args)

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(dw, "shifted_depthwise", shifted)
    traced = conv(pb.x, pb.batch, 2, coords, (7, 9))
    assert calls == [1]
    torch.testing.assert_close(traced, eager)


def test_depthwise_conv_on_knn_neighbourhoods():
    torch.manual_seed(0)
    conv = SetDepthwiseConv(4)
    x, pos, batch = _sets([12, 5], dim=4, d=3)
    nbr = knn_slots(pos, batch, 2)
    assert nbr.shape == (17, 9)
    assert torch.equal(nbr[:, 0], torch.arange(17))  # the point itself first
    assert (nbr[12:, 5:] == -1).all()  # the 5-point set has only 5 neighbours
    out = conv(x, batch, 2, neighbors=nbr)
    w = conv.weight.view(4, 9)
    for i in range(17):
        ref = conv.bias.clone()
        for r in range(9):
            j = int(nbr[i, r])
            if j >= 0:
                tap = 4 if r == 0 else (r - 1 if r <= 4 else r)
                ref = ref + w[:, tap] * x[j]
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Improved Cluster Pooling
# ----------------------------------------------------------------------------------------------


def _icp_dense_official(pool, img):
    """The official ClusterPool on a full image batch [B, C, H, W] (H, W even)."""
    b, c, h, w = img.shape
    out_dim = pool.out_dim
    skip = F.conv2d(img, pool.skip.proj.weight.view(out_dim, c, 3, 3), pool.skip.proj.bias,
                    stride=2, padding=1)
    f = F.conv2d(img, pool.f.weight.view(c, c, 1, 1), pool.f.bias)
    centers = F.adaptive_avg_pool2d(f, (h // 2, w // 2)).flatten(2).transpose(1, 2)  # [B,M,C]
    pts = f.flatten(2).transpose(1, 2)  # [B, N, C]
    sim = F.normalize(centers, dim=-1) @ F.normalize(pts, dim=-1).transpose(1, 2)  # [B, M, N]
    arg = sim.argmax(1)  # [B, N]
    mask = F.one_hot(arg, centers.shape[1]).transpose(1, 2).to(pts.dtype)  # [B, M, N]
    agg = (mask @ pts + centers) / (mask.sum(-1, keepdim=True) + 1)
    y = pool.norm2(pool.fc2(pool.act(pool.fc1(pool.norm1(agg)))))
    return skip.flatten(2).transpose(1, 2) + y  # [B, M, out]


@pytest.mark.parametrize("norm_out", [False, True])
def test_icp_on_full_images_matches_the_official_dense_form(norm_out):
    torch.manual_seed(0)
    pool = ImprovedClusterPool(6, 10, norm_out=norm_out)
    img = torch.randn(2, 6, 8, 6)
    pb = PointBatch.from_images(img)
    coords = torch.stack([pb.pixel // 6, pb.pixel % 6], 1)
    red = pool(pb.x, pb.pos, pb.batch, 2, coords, (8, 6))
    assert red.grid_size == (4, 3) and red.x.shape == (24, 10)
    ref = _icp_dense_official(pool, img).reshape(24, 10)
    torch.testing.assert_close(red.x, ref, rtol=1e-5, atol=1e-5)


def test_icp_point_mode_matches_per_set_loop():
    torch.manual_seed(0)
    pool = ImprovedClusterPool(5, 7)
    x, pos, batch = _sets([40, 9, 17], dim=5, d=3)
    red, chosen = pool(x, pos, batch, 3, return_cluster=True)
    from pointctx.ops.knn import knn

    cell = knn(red.pos, pos, 1, batch_x=red.batch, batch_y=batch).index[:, 0]
    f = pool.f(x)
    centers = torch.stack([f[cell == m].mean(0) for m in range(red.x.shape[0])])
    agg = torch.zeros_like(centers)
    for s in range(3):
        ci = (red.batch == s).nonzero().view(-1)
        pi = (batch == s).nonzero().view(-1)
        sim = F.normalize(f[pi], dim=-1) @ F.normalize(centers[ci], dim=-1).T
        arg = ci[sim.argmax(1)]
        assert torch.equal(chosen[pi], arg)
        for m in ci.tolist():
            mem = f[pi][arg == m]
            agg[m] = (centers[m] + mem.sum(0)) / (len(mem) + 1)
    skip = pool.skip(x, pos, batch, 3).x
    ref = skip + pool.fc2(pool.act(pool.fc1(pool.norm1(agg))))
    torch.testing.assert_close(red.x, ref, rtol=1e-5, atol=1e-5)
    # point mode keeps 1/4 of every set (ceil)
    assert torch.bincount(red.batch).tolist() == [10, 3, 5]


def test_icp_masked_pixel_sets_same_alone_as_in_batch_and_gradients():
    torch.manual_seed(0)
    pool = ImprovedClusterPool(4, 6)
    img = torch.randn(3, 4, 8, 8)
    mask = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.5
    pb = PointBatch.from_images(img, mask)
    coords = torch.stack([pb.pixel // 8, pb.pixel % 8], 1)
    red = pool(pb.x, pb.pos, pb.batch, 3, coords, (8, 8))
    for s in range(3):
        one = PointBatch.from_images(img[s:s + 1], mask[s:s + 1])
        c1 = torch.stack([one.pixel // 8, one.pixel % 8], 1)
        alone = pool(one.x, one.pos, one.batch, 1, c1, (8, 8))
        torch.testing.assert_close(red.x[red.batch == s], alone.x, rtol=1e-5, atol=1e-5)
    red.x.sum().backward()
    bad = [n for n, p in pool.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert bad == []
