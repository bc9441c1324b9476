import math

import pytest
import torch

import pointctx
from pointctx import PointBatch, create_model, list_models
from pointctx.models.pointmlp import PointMLP

MODELS = ["pointmlp", "pointmlp_elite", "pointmlp_coc", "pointmlp_coc_elite"]
SMALL = ["pointmlp_elite", "pointmlp_coc_elite"]


@pytest.fixture
def make_model(randomize_bn):
    """``make_model(name, seed=0, **kw)``: a seeded model (5 classes) with random BN stats."""
    def make(name, seed=0, **kw):
        torch.manual_seed(seed)
        kw.setdefault("num_classes", 5)
        m = create_model(name, **kw)
        randomize_bn(m)
        return m
    return make


def _clouds(sizes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, generator=g, dtype=dtype) for n in sizes]


def _padded(clouds):
    nmax = max(c.shape[0] for c in clouds)
    pos = torch.zeros(len(clouds), nmax, 3, dtype=clouds[0].dtype)
    for i, c in enumerate(clouds):
        pos[i, : c.shape[0]] = c
    return pos, torch.tensor([c.shape[0] for c in clouds])


def test_registered():
    assert set(MODELS) <= set(list_models("pointmlp*"))
    assert set(list_models(module="pointmlp")) == set(MODELS)
    assert isinstance(pointctx.create_model("pointmlp_elite"), PointMLP)


@pytest.mark.parametrize(
    "name,official",
    [("pointmlp", 13.23e6), ("pointmlp_elite", 0.71e6), ("pointmlp_coc", 15.33e6)],
)
def test_parameter_counts_match_official(name, official, num_params):
    n = num_params(create_model(name, num_classes=15))
    assert abs(n / official - 1) < 0.02, n
    assert round(n / 1e6, 2) == round(official / 1e6, 2)


def test_coc_adds_one_context_cluster_per_pre_block(num_params):
    base = create_model("pointmlp", num_classes=15)
    coc = create_model("pointmlp_coc", num_classes=15)
    extra = 0
    for c in (128, 256, 512, 1024):  # stage widths, two pre-extraction blocks each
        hd = max(c // 4, 32)
        extra += 2 * (2 * (c * hd + hd) + hd * c + c + 2)
    assert num_params(coc) - num_params(base) == extra


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_every_parameter_gets_a_gradient(name, make_model):
    model = make_model(name)
    pos = torch.randn(2, 128, 3, generator=torch.Generator().manual_seed(0))
    out = model(pos)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("name", SMALL)
def test_two_backward_passes_with_retain_graph(name, make_model):
    # the custom backward functions (slot max, geometric affine) keep their inputs intact
    model = make_model(name, drop_rate=0.0).double()
    pos = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = model(pos)
    out[:, 0].sum().backward(retain_graph=True)
    out[:, 1].sum().backward()
    twice = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = model(pos)
    (out[:, 0] + out[:, 1]).sum().backward()
    for a, b in zip(twice, (p.grad for p in model.parameters())):
        # float64 sums over 2 threads differ by ~1e-12 on near-zero gradients
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10 * max(1.0, float(a.abs().max())))


@pytest.mark.parametrize("name", SMALL)
def test_ragged_backward_with_small_sets(name, make_model):
    model = make_model(name)
    pb = PointBatch.from_list(_clouds([128, 40, 9, 1]))
    out = model(pb)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", SMALL)
def test_same_alone_as_in_a_ragged_batch(name, make_model):
    model = make_model(name).eval()
    clouds = _clouds([128, 70, 20, 5], seed=1)
    with torch.no_grad():
        full = model(PointBatch.from_list(clouds))
        # another batch composition: reversed order plus a huge-scale extra set
        other = [clouds[3], clouds[1], clouds[0] * 1.0, torch.randn(64, 3) * 50, clouds[2]]
        mixed = model(PointBatch.from_list(other))
        for i, c in enumerate(clouds):
            alone = model(c.unsqueeze(0))
            torch.testing.assert_close(alone[0], full[i], rtol=1e-4, atol=1e-5)
        for j, i in enumerate([3, 1, 0, None, 2]):
            if i is not None:
                torch.testing.assert_close(mixed[j], full[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_padded_input_equals_point_batch(name, make_model):
    model = make_model(name).eval()
    clouds = _clouds([100, 37, 64], seed=2)
    pos, lengths = _padded(clouds)
    pos[1, 37:] = float("nan")  # padding is never read
    with torch.no_grad():
        a = model(pos, lengths)
        b = model(PointBatch.from_list(clouds))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", SMALL)
def test_permutation_invariance_canonical_start(name, make_model):
    """fps_start="canonical": any reordering of each set's points gives the same logits."""
    model = make_model(name, fps_start="canonical").eval()
    clouds = _clouds([128, 50, 11], seed=3)
    g = torch.Generator().manual_seed(4)
    shuffled = [c[torch.randperm(c.shape[0], generator=g)] for c in clouds]
    with torch.no_grad():
        a = model(PointBatch.from_list(clouds))
        b = model(PointBatch.from_list(shuffled))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_permutation_invariance_first_start_keeps_first_point(name, make_model):
    """fps_start="first" (official): invariant to reorderings that keep each set's first point,
    but a different first point changes the FPS anchors and hence, in general, the logits."""
    model = make_model(name).eval()
    clouds = _clouds([128, 50], seed=5)
    g = torch.Generator().manual_seed(6)
    keep_first = [torch.cat([c[:1], c[1:][torch.randperm(c.shape[0] - 1, generator=g)]])
                  for c in clouds]
    moved_first = [torch.cat([c[1:], c[:1]]) for c in clouds]
    with torch.no_grad():
        a = model(PointBatch.from_list(clouds))
        b = model(PointBatch.from_list(keep_first))
        c = model(PointBatch.from_list(moved_first))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, c, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Dense reference: the official padded-batch algorithm (FPS from index 0, top-k kNN, per-sample
# torch.std) run with the model's own layers; the ragged model must give the same logits.
# --------------------------------------------------------------------------------------------


def _dense_fps(xyz, s):
    b, n, _ = xyz.shape
    idx = torch.zeros(b, s, dtype=torch.long)
    dist = torch.full((b, n), math.inf, dtype=xyz.dtype)
    cur = torch.zeros(b, dtype=torch.long)
    rows = torch.arange(b)
    for i in range(s):
        idx[:, i] = cur
        dist = torch.minimum(dist, ((xyz - xyz[rows, cur][:, None]) ** 2).sum(-1))
        cur = dist.argmax(-1)
    return idx


def _take(t, idx):
    b = torch.arange(t.shape[0]).view(-1, *([1] * (idx.dim() - 1)))
    return t[b, idx]


def _pre_reference(pre, x):
    """The official pre-extraction: transfer, (CoC,) relu(BN(W2 relu(BN(W1 x))) + x), max."""
    x = pre.transfer(x)
    for j, block in enumerate(pre.blocks):
        if pre.coc_mode == "group":
            x = pre.coc[j](x, None)
        shape = x.shape
        h = block.net1(x).reshape(-1, block.net1.linear.out_features)
        x = torch.relu(block.net2.norm(block.net2.linear(h)).view(shape) + x)
    return x.amax(1)


def _dense_reference(model, pos):
    b, n, _ = pos.shape
    x = model.embedding(pos)
    xyz = pos
    for i in range(len(model.pre)):
        s, k = n // 2, model.k_neighbors[i]
        fi = _dense_fps(xyz, s)
        new_xyz, new_x = _take(xyz, fi), _take(x, fi)
        d = ((new_xyz[:, :, None] - xyz[:, None]) ** 2).sum(-1)
        ki = d.topk(k, dim=-1, largest=False).indices
        grouped = _take(x, ki)
        anchor = new_x
        if model.use_xyz:
            grouped = torch.cat([grouped, _take(xyz, ki)], -1)
            anchor = torch.cat([new_x, new_xyz], -1)
        aff = model.affines[i]
        mean = anchor.unsqueeze(2) if aff.mode == "anchor" else grouped.mean(2, keepdim=True)
        std = (grouped - mean).reshape(b, -1).std(-1).view(b, 1, 1, 1)
        h = aff.alpha * (grouped - mean) / (std + 1e-5) + aff.beta
        h = torch.cat([h, new_x.unsqueeze(2).expand(-1, -1, k, -1)], -1)
        x = _pre_reference(model.pre[i], h.reshape(b * s, k, -1)).view(b, s, -1)
        x = model.post[i](x)
        xyz, n = new_xyz, s
    return model.classifier(x.amax(1))


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(
    "name,kw",
    [("pointmlp_elite", {}), ("pointmlp_coc_elite", {}),
     ("pointmlp_elite", {"use_xyz": True, "normalize": "center"})],
)
def test_matches_dense_official_algorithm(name, kw, train, make_model):
    model = make_model(name, k_neighbors=4, drop_rate=0.0, **kw).double()
    model.train(train)
    pos = torch.randn(3, 64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    out = model(pos)
    ref = _dense_reference(model, pos)
    torch.testing.assert_close(out, ref)
    # and the same gradients (fused affine, slot max, residual and ReLU placement)
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(8))
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad((out * w).sum(), params)
    want = torch.autograd.grad((ref * w).sum(), params)
    for (name_, _), a, b_ in zip(model.named_parameters(), got, want):
        torch.testing.assert_close(a, b_, msg=name_)


# --------------------------------------------------------------------------------------------
# Options and inputs
# --------------------------------------------------------------------------------------------


# fps centers: in sets of a handful of rows two centers can pool the very same kNN members, so
# the hard assignment is an exact tie decided by rounding (see the module docs); keep sets larger
@pytest.mark.parametrize("proposal,sizes", [("grid", [96, 30, 6]), ("fps", [128, 96, 80])])
def test_set_context_cluster_mode(proposal, sizes, make_model):
    model = make_model("pointmlp_coc_elite", coc_mode="set", coc_proposal=proposal, coc_centers=2)
    clouds = _clouds(sizes, seed=8)
    out = model(PointBatch.from_list(clouds))
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        full = model(PointBatch.from_list(clouds))
        for i, c in enumerate(clouds):
            torch.testing.assert_close(model(c.unsqueeze(0))[0], full[i], rtol=1e-4, atol=1e-5)
    # it differs from the in-group clustering with the same weights
    group = make_model("pointmlp_coc_elite", coc_mode="group").eval()
    group.load_state_dict(
        {k.replace(".cc.f.", ".fc1.").replace(".cc.v.", ".fc_v.").replace(".cc.proj.", ".fc2.")
         .replace(".cc.alpha", ".alpha").replace(".cc.beta", ".beta"): v
         for k, v in model.state_dict().items()}
    )
    with torch.no_grad():
        assert not torch.allclose(group(PointBatch.from_list(clouds)), full)


def test_input_features_padded_and_point_batch(make_model):
    model = make_model("pointmlp_elite", in_channels=2).eval()
    clouds = _clouds([50, 30], seed=9)
    feats = [torch.randn(c.shape[0], 2) for c in clouds]
    pos, lengths = _padded(clouds)
    fpad = torch.zeros(2, 50, 2)
    fpad[0], fpad[1, :30] = feats[0], feats[1]
    with torch.no_grad():
        a = model(pos, lengths, features=fpad)
        b = model(PointBatch.from_list(clouds, feats))
    torch.testing.assert_close(a, b)
    assert model.embedding.linear.in_features == 5


def test_other_position_dims(make_model):
    model = make_model("pointmlp_elite", pos_dim=2)
    out = model(torch.randn(2, 40, 2))
    assert out.shape == (2, 5)


def test_forward_features_and_head(make_model):
    model = make_model("pointmlp_elite").eval()
    pb = PointBatch.from_list(_clouds([128, 33]))
    with torch.no_grad():
        feats = model.forward_features(pb)
        # 128 -> 64 -> 32 -> 16 -> 8 and 33 -> 17 -> 9 -> 5 -> 3 (ceil(n / 2) per stage)
        assert feats.sizes.tolist() == [8, 3]
        assert feats.x.shape == (11, model.num_features)
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(feats), model(pb))


def test_input_errors(make_model):
    model = make_model("pointmlp_elite")
    with pytest.raises(ValueError, match="at least one point"):
        model(torch.randn(2, 10, 3), torch.tensor([10, 0]))
    with pytest.raises(ValueError, match="pos_dim=3"):
        model(torch.randn(2, 10, 2))
    with pytest.raises(TypeError, match="PointBatch or a padded tensor"):
        model([torch.randn(10, 3)])
    pb = PointBatch.from_list(_clouds([10]), [torch.randn(10, 4)])
    with pytest.raises(ValueError, match="in_channels = 0"):
        model(pb)
    with pytest.raises(ValueError, match="only for padded tensor inputs"):
        model(PointBatch.from_list(_clouds([10])), lengths=torch.tensor([10]))
    with pytest.raises(ValueError, match="coc_mode"):
        create_model("pointmlp_elite", coc_mode="global")
    with pytest.raises(ValueError, match="fps_start"):
        create_model("pointmlp_elite", fps_start="center")
    with pytest.raises(ValueError, match="one entry per stage"):
        create_model("pointmlp_elite", k_neighbors=[24, 24])
    with pytest.raises(ValueError, match="ratio"):
        create_model("pointmlp_elite", ratio=0.0)


def _shape_batch(n_sets, n_points, gen):
    """Clouds of random sizes: label 0 = sphere surface, 1 = cube surface (random rotation)."""
    clouds, labels = [], []
    for i in range(n_sets):
        n = int(torch.randint(n_points // 2, n_points + 1, (1,), generator=gen))
        p = torch.randn(n, 3, generator=gen)
        if i % 2:
            p = p / p.abs().amax(1, keepdim=True)
        else:
            p = p / p.norm(dim=1, keepdim=True)
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen))
        clouds.append(p @ q)
        labels.append(i % 2)
    return PointBatch.from_list(clouds), torch.tensor(labels)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL)
def test_learns_sphere_vs_cube(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        pb, y = _shape_batch(8, 128, gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(pb), y).backward()
        opt.step()
    model.eval()
    pb, y = _shape_batch(32, 128, torch.Generator().manual_seed(2))
    with torch.no_grad():
        acc = (model(pb).argmax(1) == y).float().mean()
    assert acc >= 0.9, acc
