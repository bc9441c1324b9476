import pytest
import torch
from torch import nn

from pointctx import PointBatch
from pointctx.nn import SetGroupNorm


def _images(b=3, c=5, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g) * 3 + 1


def test_equals_groupnorm_on_full_grids():
    img = _images()
    pb = PointBatch.from_images(img)
    ref = nn.GroupNorm(1, 5)
    ours = SetGroupNorm(5)
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 2.0, 5))
        ref.bias.copy_(torch.linspace(-1.0, 1.0, 5))
        ours.weight.copy_(ref.weight)
        ours.bias.copy_(ref.bias)
    out = ours(pb.x, pb.batch, pb.num_sets)
    expected = ref(img)
    torch.testing.assert_close(pb.to_images(x=out), expected, rtol=1e-5, atol=1e-5)


def test_gradients_match_groupnorm():
    img = _images(b=2, c=3, h=4, w=4).double().requires_grad_(True)
    pb = PointBatch.from_images(img)
    ref = nn.GroupNorm(1, 3).double()
    ours = SetGroupNorm(3).double()
    w = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    (ref(img) * w).sum().backward()
    g_ref = img.grad.clone()
    img.grad = None
    pb = PointBatch.from_images(img)
    out = pb.to_images(x=ours(pb.x, pb.batch, 2))
    (out * w).sum().backward()
    torch.testing.assert_close(img.grad, g_ref)
    torch.testing.assert_close(ours.weight.grad, torch.autograd.grad(
        (ref(img.detach()) * w).sum(), ref.weight)[0])


def test_per_set_statistics_independent_of_batch():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(7, 4, generator=g)
    b = torch.randn(12, 4, generator=g) * 10 + 5
    norm = SetGroupNorm(4)
    alone = norm(a, torch.zeros(7, dtype=torch.long))
    both = norm(torch.cat([a, b]), torch.cat([torch.zeros(7), torch.ones(12)]).long(), 2)
    torch.testing.assert_close(both[:7], alone)
    # each set is normalised to zero mean / unit variance over points and channels
    second = both[7:].detach()
    assert abs(float(second.mean())) < 1e-5
    assert abs(float(second.var(unbiased=False)) - 1.0) < 1e-3


def test_empty_set_and_no_affine():
    norm = SetGroupNorm(3, affine=False)
    assert norm.weight is None
    x = torch.randn(5, 3)
    batch = torch.tensor([0, 0, 2, 2, 2])
    out = norm(x, batch, batch_size=4)  # sets 1 and 3 are empty
    torch.testing.assert_close(out[:2], nn.functional.layer_norm(x[:2].reshape(1, -1), (6,))
                               .reshape(2, 3), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def test_bf16_autocast_keeps_dtype():
    x = torch.randn(10, 4, dtype=torch.bfloat16)
    out = SetGroupNorm(4)(x, torch.zeros(10, dtype=torch.long))
    assert out.dtype == torch.bfloat16
    ref = SetGroupNorm(4)(x.float(), torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_bad_inputs():
    norm = SetGroupNorm(4)
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 4\]"):
        norm(torch.randn(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="`batch` must have shape"):
        norm(torch.randn(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="`eps` must be a number"):
        SetGroupNorm(4, eps=-1.0)
    with pytest.raises(ValueError, match="`num_channels` must be >= 1"):
        SetGroupNorm(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_equal_sets_path_matches_segment_path(dtype, affine, monkeypatch):
    from pointctx.nn import norm as norm_mod

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4 * 9, 6, generator=g, dtype=dtype) * 2 + 1).requires_grad_(True)
    batch = torch.arange(4).repeat_interleave(9)
    layer = SetGroupNorm(6, affine=affine).to(dtype)
    if affine:
        with torch.no_grad():
            layer.weight.copy_(torch.linspace(0.5, 2.0, 6))
            layer.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    assert norm_mod._equal_sets(batch, 4)
    fused = layer(x, batch, 4)
    params = [x] + ([layer.weight, layer.bias] if affine else [])
    g_fused = torch.autograd.grad((fused * fused.detach().cos()).sum(), params)
    monkeypatch.setattr(norm_mod, "_equal_sets", lambda *a: False)
    seg = layer(x, batch, 4)
    g_seg = torch.autograd.grad((seg * seg.detach().cos()).sum(), params)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused, seg, **tol)
    for a, b in zip(g_fused, g_seg):
        torch.testing.assert_close(a, b, **tol)


def test_equal_sets_detection():
    from pointctx.nn.norm import _equal_sets

    assert _equal_sets(torch.tensor([0, 0, 1, 1]), 2)
    assert not _equal_sets(torch.tensor([0, 0, 0, 1]), 2)
    assert not _equal_sets(torch.tensor([0, 0, 1, 1]), 4)  # two empty sets
    assert not _equal_sets(torch.tensor([0, 1, 1, 1]), 2)
    assert not _equal_sets(torch.zeros(0, dtype=torch.long), 0)
