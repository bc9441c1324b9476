"""The set U-Net segmenters (``*_unet_seg``: feature propagation down to the input points).

The calling-convention tests of every ``*_seg`` model (forward / backward with a gradient for
every parameter, permutation equivariance, a set alone as in a batch, the kept pixels of a
masked image as a point set) run on these models too, in test_segmentation.py.
"""

import pytest
import torch

from pointctx import PointBatch, create_model, list_models
from pointctx.models import SetSegmenter
from pointctx.nn.fpn import SemanticFPNHead
from pointctx.nn.set_unet import SetUNetDecoder

K = 5
UNET_MODELS = list_models("*_unet_seg")
CPU_MODELS = ["coc_micro_unet_seg", "cluenet_nano_unet_seg"]


def _model(name, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_classes", K)
    return create_model(name, **kw)


def _images(b=2, h=40, w=56, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _mask(b=2, h=40, w=56, keep=0.6, seed=1):
    return torch.rand(b, h, w, generator=torch.Generator().manual_seed(seed)) < keep


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_registered_with_coc_and_cluenet_backbones():
    assert set(UNET_MODELS) == {"coc_tiny_unet_seg", "cluenet_micro_unet_seg",
                                "coc_micro_unet_seg", "cluenet_nano_unet_seg",
                                "pointmlp_elite_unet_seg"}
    for name in UNET_MODELS:
        model = create_model(name)
        assert isinstance(model, SetSegmenter) and isinstance(model.head, SetUNetDecoder)
        assert model.num_classes == (13 if name.startswith("pointmlp") else 11)


def test_cpu_size_within_1_1x_of_the_cpu_unet():
    budget = 1.1 * _count(create_model("unet_cpu_seg"))
    assert _count(create_model("coc_micro_unet_seg")) <= budget
    assert _count(create_model("cluenet_nano_unet_seg")) <= budget
    assert _count(create_model("coc_micro_unet_seg", heads=(1, 2, 2, 2))) < _count(
        create_model("coc_micro_unet_seg"))  # a backbone argument, not a head one


@pytest.mark.parametrize("name, params", [("coc_micro_seg", 331_139),
                                          ("cluenet_nano_seg", 372_080)])
def test_the_semantic_fpn_models_are_unchanged(name, params):
    model = create_model(name)
    assert isinstance(model.head, SemanticFPNHead) and _count(model) == params
    keys = set(model.state_dict())
    assert {k.split(".")[0] for k in keys} == {"backbone", "head"}
    assert "head.laterals.0.weight" in keys and "head.classifier.weight" in keys


def test_the_decoder_steps_through_every_stage_to_the_input_points():
    model = _model("coc_micro_unet_seg")
    head = model.head
    assert len(head.steps) == 4
    # coarse -> fine: stage 3 onto stage 2 (skip 64), ..., stage 0 onto the input points (skip
    # the input features: RGB + the 2 image-plane coordinates)
    assert [s.skip_channels for s in head.steps] == [64, 32, 16, 5]
    assert [s.in_channels for s in head.steps] == [128, 96, 96, 64]
    assert head.classifier.in_features == 32


@pytest.mark.parametrize("name", CPU_MODELS)
def test_masked_pixels_come_from_the_kept_ones_and_kept_pixels_are_their_subset(name):
    model = _model(name).eval()
    images, mask = _images(seed=9), _mask(keep=0.3, seed=10)
    changed = images.clone()
    changed[~mask.unsqueeze(1).expand_as(images)] = 100.0  # values the model must not see
    with torch.no_grad():
        dense = model(images, mask)
        torch.testing.assert_close(model(changed, mask), dense)
        kept = model(PointBatch.from_images(images, mask))
    torch.testing.assert_close(kept, dense.permute(0, 2, 3, 1)[mask])


def test_missing_pixels_under_autocast_and_with_a_polygon_hole():
    model = _model("coc_micro_unet_seg")
    images, mask = _images(seed=16), torch.zeros(2, 40, 56, dtype=torch.bool)
    mask[:, 12:22, 20:34] = True  # one block kept: most stage-0 cells are empty
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, mask)
    assert out.dtype == torch.bfloat16 and out.shape == (2, K, 40, 56)
    out.float().square().mean().backward()
    fill = model.head.fill
    assert fill.prior.grad.abs().sum() > 0 and bool((fill.gate.grad != 0).all())


def test_input_pool_keeps_the_output_at_every_pixel():
    model = _model("coc_micro_unet_seg").eval()
    images, mask = _images(seed=14), _mask(keep=0.25, seed=15)
    with torch.no_grad():
        pooled = model(images, mask, input_pool=2)
        kept = model(PointBatch.from_images(images, mask), input_pool=2)
    assert pooled.shape == (2, K, 40, 56) and bool(torch.isfinite(pooled).all())
    torch.testing.assert_close(kept, pooled.permute(0, 2, 3, 1)[mask])


def test_bad_head_and_widths_are_rejected():
    with pytest.raises(ValueError, match="unknown head 'conv'.*fpn.*unet"):
        create_model("coc_micro_seg", head="conv")
    with pytest.raises(ValueError, match="`channels` must give one width per stage"):
        SetUNetDecoder([16, 32, 64], K, input_channels=5, channels=(8, 8))
    decoder = SetUNetDecoder([16, 32], K, input_channels=5, channels=8)
    with pytest.raises(ValueError, match="`x` must be given iff input_channels"):
        decoder([], None, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))


LOCAL = {"head_local_blocks": 2, "head_stage_blocks": 1}


def test_local_blocks_keep_the_contract():
    model = _model("coc_micro_unet_seg", **LOCAL).eval()
    assert [len(b.convs) for b in model.head.blocks] == [1, 1, 1, 2]
    images, mask = _images(seed=16), _mask(seed=17)
    pb = PointBatch.from_images(images, mask)
    perm = torch.cat([torch.randperm(n, generator=torch.Generator().manual_seed(18)) + lo
                      for lo, n in zip(pb.ptr[:-1].tolist(), pb.sizes.tolist())])
    shuffled = PointBatch(pb.pos[perm], pb.x[perm], batch=pb.batch, pixel=pb.pixel[perm],
                          image_size=pb.image_size)
    changed = images.clone()
    changed[~mask.unsqueeze(1).expand_as(images)] = 100.0
    with torch.no_grad():
        dense = model(images, mask)
        torch.testing.assert_close(model(changed, mask), dense)
        torch.testing.assert_close(model(pb), dense.permute(0, 2, 3, 1)[mask])
        torch.testing.assert_close(model(shuffled), model(pb)[perm])
        torch.testing.assert_close(model(images[1:], mask[1:])[0], dense[1], rtol=1e-5,
                                   atol=1e-5)
    model.train()
    out = model(images, mask)
    (out * torch.randn_like(out)).sum().backward()
    assert [n for n, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum()] == []
    with pytest.raises(TypeError, match="`head_local_blocks` is not an option of head .fpn."):
        create_model("coc_micro_seg", **LOCAL)


def test_pointmlp_backbone_on_point_clouds():
    model = _model("pointmlp_elite_unet_seg", num_classes=K).eval()
    assert _count(model) <= _count(create_model("pointmlp_elite_seg", num_classes=K))
    g = torch.Generator().manual_seed(19)
    pb = PointBatch.from_list([torch.rand(n, 3, generator=g) for n in (200, 150)])
    with torch.no_grad():
        out = model(pb)
        alone = model(PointBatch.from_list([pb.pos[200:]]))
    assert out.shape == (350, K) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(alone, out[200:], rtol=1e-4, atol=1e-4)
