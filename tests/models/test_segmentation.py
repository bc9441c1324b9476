import pytest
import torch

from pointctx import PointBatch, create_model, list_models
from pointctx.models import SetSegmenter

SEG_MODELS = list_models("*_seg", module="segmentation")
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
    bad = [n for n, p in model.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum()]
    assert bad == []


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
    g = torch.Generator().manual_seed(6)
    perm = torch.cat([lo + torch.randperm(hi - lo, generator=g)
                      for lo, hi in zip(pb.ptr[:-1].tolist(), pb.ptr[1:].tolist())])
    shuffled = PointBatch(pb.pos[perm], pb.x[perm], batch=pb.batch, pixel=pb.pixel[perm],
                          image_size=pb.image_size)
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


def test_empty_and_tiny_sets():
    model = _model("coc_micro_seg").eval()
    images = _images(b=3, seed=11)
    mask = _mask(b=3, seed=12)
    mask[1] = False  # an image without any kept pixel
    mask[2] = False
    mask[2, 5, 7] = True  # one kept pixel
    with torch.no_grad():
        out = model(images, mask)
        alone = model(images[:1], mask[:1])
    assert out.shape == (3, K, 40, 56) and bool(torch.isfinite(out).all())
    assert bool((out[1] == 0).all())  # no point: logits 0 everywhere
    assert bool((out[2] == out[2, :, 5:6, 7:8]).all())  # one point: the same everywhere
    torch.testing.assert_close(out[0], alone[0], rtol=1e-5, atol=1e-5)


def test_general_point_sets_and_queries():
    model = _model("coc_micro_seg", in_channels=0, pos_dim=3).eval()
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
