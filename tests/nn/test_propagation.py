import pytest
import torch
from torch import nn

from pointctx.nn import FeaturePropagation, SetGroupNorm, SharedMlp
from pointctx.ops import knn_interpolate_naive

# coarse points and queries per set: set 1 has queries but no coarse point, set 3 no queries,
# set 4 (the last) is empty on both sides
COARSE = [4, 0, 1, 7, 0]
FINE = [9, 3, 2, 0, 0]


def _ragged(sizes, dim, seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), dim, generator=g, dtype=torch.float64)
    return pos, torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def make_case(c=6, skip=3, dim=3, seed=0):
    pos, batch = _ragged(COARSE, dim, seed)
    q, bq = _ragged(FINE, dim, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(pos.shape[0], c, generator=g, dtype=torch.float64)
    s = torch.randn(q.shape[0], skip, generator=g, dtype=torch.float64) if skip else None
    return x, pos, q, batch, bq, s, len(COARSE)


def naive_forward(layer, x, pos, q, batch, bq, skip, b):
    """Reference: naive interpolation, concat, then each MLP layer set by set."""
    h = knn_interpolate_naive(x, pos, q, batch, bq, k=layer.k, batch_size=b, eps=layer.eps)
    if skip is not None:
        h = torch.cat([h, skip], 1)
    if layer.mlp is None:
        return h
    for lin, norm, act in zip(layer.mlp.lins, layer.mlp.norms, layer.mlp.acts):
        h = lin(h)
        if isinstance(norm, SetGroupNorm):
            rows = []
            for s in range(b):
                hs = h[bq == s]
                if hs.shape[0]:
                    mean, var = hs.mean(), hs.var(unbiased=False)
                    rows.append((hs - mean) / torch.sqrt(var + norm.eps) * norm.weight
                                + norm.bias)
            h = torch.cat(rows) if rows else h
        elif isinstance(norm, nn.BatchNorm1d):  # eval mode: running statistics
            h = (h - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
            h = h * norm.weight + norm.bias
        h = act(h)
    return h


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("skip", [0, 3])
def test_matches_naive_reference(norm, skip):
    torch.manual_seed(0)
    x, pos, q, batch, bq, s, b = make_case(skip=skip)
    layer = FeaturePropagation(6, (16, 8), skip_channels=skip, norm=norm).double().eval()
    for m in layer.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    out = layer(x, pos, q, batch, bq, skip=s, batch_size=b)
    assert out.shape == (q.shape[0], 8) and layer.out_channels == 8
    torch.testing.assert_close(out, naive_forward(layer, x, pos, q, batch, bq, s, b))


def test_without_mlp_is_interpolation_and_concat():
    x, pos, q, batch, bq, s, b = make_case()
    layer = FeaturePropagation(6, (), skip_channels=3)
    out = layer(x, pos, q, batch, bq, skip=s, batch_size=b)
    assert layer.mlp is None and layer.out_channels == 9
    torch.testing.assert_close(
        out, torch.cat([knn_interpolate_naive(x, pos, q, batch, bq, batch_size=b), s], 1))


def test_empty_sets_see_only_their_skip():
    x, pos, q, batch, bq, s, b = make_case()
    layer = FeaturePropagation(6, 5, skip_channels=3, norm="none").double()
    out = layer(x, pos, q, batch, bq, skip=s, batch_size=b)
    no_coarse = bq == 1
    expect = layer.mlp(torch.cat([torch.zeros(int(no_coarse.sum()), 6, dtype=x.dtype),
                                  s[no_coarse]], 1))
    torch.testing.assert_close(out[no_coarse], expect)
    # a batch without any query, and one without any coarse point
    assert layer(x, pos, q[:0], batch, bq[:0], skip=s[:0], batch_size=b).shape == (0, 5)
    none = layer(x[:0], pos[:0], q, batch[:0], bq, skip=s, batch_size=b)
    assert none.shape == (q.shape[0], 5) and bool(torch.isfinite(none).all())


def test_train_mode_batch_norm_skips_empty_input_and_keeps_running_stats():
    layer = FeaturePropagation(4, 8).train()
    before = layer.mlp.norms[0].running_mean.clone()
    out = layer(torch.rand(3, 4), torch.rand(3, 2), torch.rand(0, 2))
    assert out.shape == (0, 8)
    assert torch.equal(layer.mlp.norms[0].running_mean, before)


def test_group_norm_sets_are_independent_of_the_batch():
    torch.manual_seed(1)
    x, pos, q, batch, bq, s, b = make_case()
    layer = FeaturePropagation(6, (8, 8), skip_channels=3, norm="group").double().train()
    out = layer(x, pos, q, batch, bq, skip=s, batch_size=b)
    alone = layer(x[batch == 0], pos[batch == 0], q[bq == 0], skip=s[bq == 0])
    torch.testing.assert_close(out[bq == 0], alone)


def test_every_parameter_gets_a_gradient():
    x, pos, q, batch, bq, s, b = make_case()
    layer = FeaturePropagation(6, (8, 4), skip_channels=3).double()
    xr, sr = x.clone().requires_grad_(True), s.clone().requires_grad_(True)
    layer(xr, pos, q, batch, bq, skip=sr, batch_size=b).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert xr.grad.abs().sum() > 0 and sr.grad.abs().sum() > 0


def test_shared_mlp_options():
    mlp = SharedMlp(4, [8, 3], norm="batch", act="gelu", last_act=False)
    assert mlp.lins[0].bias is None and mlp.lins[1].bias is not None
    assert isinstance(mlp.acts[0], nn.GELU) and isinstance(mlp.acts[1], nn.Identity)
    with pytest.raises(ValueError, match="`batch` is required with norm='group'"):
        SharedMlp(4, 8, norm="group")(torch.rand(3, 4))


def test_errors_name_the_argument():
    x, pos, q, batch, bq, s, b = make_case()
    with pytest.raises(ValueError, match="unknown norm 'layer'; choose one of"):
        FeaturePropagation(6, 8, norm="layer")
    with pytest.raises(ValueError, match="unknown activation 'tanh'; choose one of"):
        FeaturePropagation(6, 8, act="tanh")
    with pytest.raises(ValueError, match="`channels` must list at least one layer"):
        SharedMlp(6, [])
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        FeaturePropagation(6, 8, eps=0)
    layer = FeaturePropagation(6, 8, skip_channels=3)
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 6\]"):
        layer(x[:, :5], pos, q, batch, bq, skip=s)
    with pytest.raises(ValueError, match="`skip` is required"):
        layer(x, pos, q, batch, bq)
    with pytest.raises(ValueError, match="`skip` must have skip_channels = 3 columns, got 2"):
        layer(x, pos, q, batch, bq, skip=s[:, :2])
    with pytest.raises(ValueError, match="`skip` must have one row per point"):
        layer(x, pos, q, batch, bq, skip=s[:2])
    with pytest.raises(ValueError, match="`skip` was given but the layer"):
        FeaturePropagation(6, 8)(x, pos, q, batch, bq, skip=s)


def test_semantic_fpn_head_checks_its_arguments():
    from pointctx import PointBatch
    from pointctx.nn import SemanticFPNHead

    with pytest.raises(ValueError, match="`in_channels` must list at least one stage"):
        SemanticFPNHead([], 3)
    with pytest.raises(ValueError, match="`drop` must be a number in"):
        SemanticFPNHead([4], 3, drop=1.0)
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        SemanticFPNHead([4], 3, eps=0.0)
    head = SemanticFPNHead([4, 8], 3, channels=8)
    a = PointBatch(torch.rand(6, 2), torch.rand(6, 4), batch=torch.tensor([0, 0, 0, 1, 1, 1]))
    b = PointBatch(torch.rand(2, 2), torch.rand(2, 8), batch=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="`stages` must hold 2 stages"):
        head([a])
    with pytest.raises(ValueError, match="every stage must hold the same B = 2 sets"):
        head([a, PointBatch(torch.rand(2, 2), torch.rand(2, 8), batch_size=1)])
    assert head([a, b]).shape == (6, 3)
