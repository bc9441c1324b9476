import pytest
import torch

from pointctx import PointBatch, create_model, list_models
from pointctx.models import SetSegmenter

SEG_MODELS = list_models("*_seg", module="segmentation")  # image models
K = 5


def _model(name, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_classes", K)
    return create_model(name, **kw)


def _images(b=2, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g)


def _mask(b=2, h=40, w=56, keep=0.6, seed=1):
    return torch.rand(b, h, w, generator=torch.Generator().manual_seed(seed)) < keep


def _shuffled(pb, seed):
    """``(pb with the points of every set permuted, the permutation)``."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.cat([lo + torch.randperm(hi - lo, generator=g)
                      for lo, hi in zip(pb.ptr[:-1].tolist(), pb.ptr[1:].tolist())])
    return PointBatch(pb.pos[perm], pb.x[perm], batch=pb.batch, pixel=pb.pixel[perm],
                      image_size=pb.image_size), perm


def _params_without_gradient(model):
    """Parameters whose gradient is missing, non-finite or all zero."""
    return [n for n, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum()]


def test_registered_with_the_required_names():
    assert {"coc_tiny_seg", "coc_small_seg", "cluenet_micro_seg", "coc_micro_seg",
            "cluenet_nano_seg"} <= set(SEG_MODELS)
    model = create_model("coc_tiny_seg")
    assert isinstance(model, SetSegmenter) and model.num_classes == 11


@pytest.mark.parametrize("name", SEG_MODELS)
def test_forward_backward_every_parameter(name):
    model = _model(name)
    images, mask = _images(), _mask()
    out = model(images, mask)
    assert out.shape == (2, K, 40, 56)
    assert bool(torch.isfinite(out).all())
    (out * torch.randn_like(out)).sum().backward()
    assert _params_without_gradient(model) == []


@pytest.mark.parametrize("name", SEG_MODELS)
def test_input_pixels_agree_as_points_and_in_the_dense_output(name):
    model = _model(name).eval()
    images, mask = _images(seed=2), _mask(seed=3)
    pb = PointBatch.from_images(images, mask)
    with torch.no_grad():
        dense = model(images, mask)  # [B, K, H, W], every pixel
        points = model(pb)  # [N, K], the kept pixels
        everywhere = model(pb, query=PointBatch.from_images(images))
    assert points.shape == (pb.num_points, K)
    torch.testing.assert_close(points, dense.permute(0, 2, 3, 1)[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(everywhere, dense.permute(0, 2, 3, 1).reshape(-1, K),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SEG_MODELS)
def test_permutation_equivariance_of_pixel_sets(name):
    model = _model(name).eval()
    images, mask = _images(seed=4), _mask(seed=5)
    pb = PointBatch.from_images(images, mask)
    shuffled, perm = _shuffled(pb, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(shuffled), model(pb)[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SEG_MODELS)
def test_a_set_alone_equals_the_set_in_a_batch(name):
    model = _model(name).eval()
    images, mask = _images(b=3, seed=7), _mask(b=3, seed=8)
    with torch.no_grad():
        batch = model(images, mask)
        alone = model(images[1:2], mask[1:2])
    torch.testing.assert_close(alone[0], batch[1], rtol=1e-5, atol=1e-5)


def test_masked_pixels_are_predicted_from_the_kept_ones():
    model = _model("coc_micro_seg").eval()
    images, mask = _images(seed=9), _mask(keep=0.3, seed=10)
    changed = images.clone()
    changed[~mask.unsqueeze(1).expand_as(images)] = 100.0  # values the model must not see
    with torch.no_grad():
        torch.testing.assert_close(model(changed, mask), model(images, mask))
        full = model(images)
    assert not torch.allclose(full, model(images, mask))


@pytest.mark.parametrize("name, pool", [("coc_micro_seg", 1), ("coc_micro_seg", 2),
                                        ("cluenet_nano_seg", 2), ("coc_micro_unet_seg", 1),
                                        ("cluenet_nano_unet_seg", 1)])
def test_empty_and_tiny_sets(name, pool):
    model = _model(name, input_pool=pool).eval()
    images = _images(b=3, seed=11)
    mask = _mask(b=3, seed=12)
    mask[1] = False  # an image without any kept pixel
    mask[2] = False
    mask[2, 5, 7] = True  # one kept pixel
    with torch.no_grad():
        out = model(images, mask)
        alone = model(images[:1], mask[:1])
        other = model(_images(b=3, seed=13), mask)
    assert out.shape == (3, K, 40, 56) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out[0], alone[0], rtol=1e-5, atol=1e-5)
    fill = getattr(model.head, "fill", None)
    if fill is not None and fill.prior is not None:  # a learned layout prior
        torch.testing.assert_close(other[1], out[1])  # no point: the prior, whatever the image
        return
    assert bool((out[1] == 0).all())  # no point: logits 0 everywhere
    assert bool((out[2] == out[2, :, 5:6, 7:8]).all())  # one point: the same everywhere


@pytest.mark.parametrize("name", ["coc_micro_seg", "coc_micro_unet_seg"])
def test_general_point_sets_and_queries(name):
    model = _model(name, in_channels=0, pos_dim=3).eval()
    g = torch.Generator().manual_seed(13)
    pb = PointBatch.from_list([torch.rand(n, 3, generator=g) for n in (300, 120)])
    q = PointBatch.from_list([torch.rand(n, 3, generator=g) for n in (7, 11)])
    with torch.no_grad():
        own = model(pb)
        at_q = model(pb, query=q)
        at_own = model(pb, query=pb)
    assert own.shape == (420, K) and at_q.shape == (18, K)
    torch.testing.assert_close(own, at_own)


def test_errors_name_the_argument():
    model = _model("coc_micro_seg").eval()
    images = _images()
    pb = PointBatch.from_images(images)
    with pytest.raises(ValueError, match="`query` is only for PointBatch inputs"):
        model(images, query=pb)
    with pytest.raises(ValueError, match="`query` must hold the input's B = 2 sets, got 1"):
        model(pb, query=PointBatch.from_images(images[:1]))
    with pytest.raises(ValueError, match="`query` must be a pixel set"):
        model(pb, query=PointBatch(torch.rand(5, 2), batch=torch.tensor([0, 0, 1, 1, 1])))
    with pytest.raises(ValueError, match=r"image_size \(20, 56\)"):
        model(pb, query=PointBatch.from_images(images[:, :, :20]))
    with pytest.raises(TypeError, match="`inputs` must be an image tensor"):
        model([1, 2])
    with pytest.raises(TypeError, match="must provide forward_stages"):
        SetSegmenter(torch.nn.Linear(2, 2), 3)


# ----------------------------------------------------------------------------------------------
# input_pool: the kept pixels of every f x f block averaged into one point before the backbone
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["coc_micro_seg", "cluenet_nano_seg"])
def test_input_pool_1_is_the_default_model_bit_for_bit(name):
    images, mask = _images(seed=20), _mask(keep=0.25, seed=21)
    pb = PointBatch.from_images(images, mask)
    default = _model(name).eval()
    pooled_1 = _model(name, input_pool=1).eval()
    assert default.input_pool == 1
    with torch.no_grad():
        ref = default(images, mask)
        assert torch.equal(pooled_1(images, mask), ref)
        assert torch.equal(default(images, mask, input_pool=1), ref)
        assert torch.equal(default(pb, input_pool=1), default(pb))


@pytest.mark.parametrize("name", SEG_MODELS)
def test_input_pool_2_in_every_calling_convention(name):
    model = _model(name, input_pool=2).eval()
    images, mask = _images(seed=22), _mask(keep=0.25, seed=23)
    pb = PointBatch.from_images(images, mask)
    with torch.no_grad():
        dense = model(images, mask)  # [B, K, H, W]
        points = model(pb)  # [N, K]
        everywhere = model(pb, query=PointBatch.from_images(images))  # [B*H*W, K]
        full = model(images)
    assert dense.shape == (2, K, 40, 56) and full.shape == (2, K, 40, 56)
    assert points.shape == (pb.num_points, K) and everywhere.shape == (2 * 40 * 56, K)
    torch.testing.assert_close(points, dense.permute(0, 2, 3, 1)[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(everywhere, dense.permute(0, 2, 3, 1).reshape(-1, K),
                               rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the option changes the model's input, so its output
        assert not torch.allclose(dense, model(images, mask, input_pool=1))


def test_input_pool_shrinks_the_stages_on_random_pixels():
    model = _model("coc_micro_seg").eval()
    h, w = 96, 128
    images, mask = _images(h=h, w=w, seed=24), _mask(h=h, w=w, keep=0.25, seed=25)
    with torch.no_grad():
        plain = model.backbone.forward_stages(images, mask)
        pooled = model.backbone.forward_stages(images, mask, input_pool=2)

    def occupied(cell):  # non-empty cell x cell pixel blocks of the mask, all images
        return int(torch.nn.functional.max_pool2d(mask[:, None].float(), cell).sum())

    # 25 % random pixels leave nearly every 4x4 stem cell occupied: as many points as the
    # full image; with input_pool=2 the stem cells are 8x8 pixels, a quarter of them
    assert plain[0].num_points == occupied(4) >= 0.97 * 2 * (h // 4) * (w // 4)
    assert pooled[0].num_points == occupied(8) == 2 * (h // 8) * (w // 8)
    assert [s.stride for s in pooled] == [(8, 8), (16, 16), (32, 32), (64, 64)]
    # every later stage too: the pooled model's stage i has the points of the plain stage i + 1
    assert [s.num_points for s in pooled[:-1]] == [s.num_points for s in plain[1:]]


@pytest.mark.parametrize("name", SEG_MODELS)
def test_input_pool_forward_backward_every_parameter(name):
    model = _model(name, input_pool=2)  # twice the size: the stages of a 40 x 56 image
    out = model(_images(h=80, w=112, seed=26), _mask(h=80, w=112, keep=0.25, seed=27))
    assert out.shape == (2, K, 80, 112) and bool(torch.isfinite(out).all())
    (out * torch.randn_like(out)).sum().backward()
    assert _params_without_gradient(model) == []


@pytest.mark.parametrize("name", ["coc_micro_seg", "cluenet_nano_seg"])
def test_input_pool_alone_equals_in_a_batch_and_permutation(name):
    model = _model(name, input_pool=3).eval()
    images, mask = _images(b=3, seed=28), _mask(b=3, keep=0.2, seed=29)
    pb = PointBatch.from_images(images, mask)
    shuffled, perm = _shuffled(pb, 30)
    with torch.no_grad():
        batch = model(images, mask)
        alone = model(images[1:2], mask[1:2])
        torch.testing.assert_close(model(shuffled), model(pb)[perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone[0], batch[1], rtol=1e-5, atol=1e-5)


def test_input_pool_leaves_general_point_sets_alone():
    model = _model("coc_micro_seg", in_channels=0, pos_dim=3, input_pool=2).eval()
    g = torch.Generator().manual_seed(31)
    pb = PointBatch.from_list([torch.rand(n, 3, generator=g) for n in (300, 120)])
    with torch.no_grad():
        assert torch.equal(model(pb), model(pb, input_pool=1))


def test_input_pool_for_keep():
    from pointctx.models import input_pool_for_keep

    assert [input_pool_for_keep(k) for k in (1, 0.5, 0.26, 0.25, 0.2, 0.1, 0.05)] == [
        1, 1, 1, 2, 2, 3, 4]
    for bad in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"`keep` must be a number in \(0, 1\]"):
            input_pool_for_keep(bad)


def test_input_pool_bad_values_are_rejected():
    with pytest.raises(ValueError, match="`input_pool` must be >= 1, got 0"):
        _model("coc_micro_seg", input_pool=0)
    with pytest.raises(TypeError, match="`input_pool` must be an int, got float"):
        _model("coc_micro_seg", input_pool=2.0)
    model = _model("coc_micro_seg").eval()
    images = _images()
    with pytest.raises(ValueError, match="`input_pool` must be >= 1, got -1"):
        model(images, input_pool=-1)
    model.input_pool = 0
    with pytest.raises(ValueError, match="`input_pool` must be >= 1, got 0"):
        model(images)

    class NoPool(torch.nn.Module):  # a backbone whose forward_stages cannot pool
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.embed_dims, self.in_channels = inner.embed_dims, inner.in_channels
            self.pos_dim = inner.pos_dim

        def forward_stages(self, inputs, mask=None):
            return self.inner.forward_stages(inputs, mask)

    backbone = NoPool(create_model("coc_tiny", num_classes=0, layers=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match="`input_pool` must be 1 for a NoPool backbone"):
        SetSegmenter(backbone, 3, input_pool=2)
    seg = SetSegmenter(backbone, 3).eval()
    with torch.no_grad():
        assert seg(images).shape == (2, 3, 40, 56)
    with pytest.raises(ValueError, match="`input_pool` must be 1 for a NoPool backbone"):
        seg(images, input_pool=2)
