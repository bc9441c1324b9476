"""The U-Net CNN baseline for segmentation (zero-fill + mask channel)."""

import pytest
import torch

import pointctx
from pointctx import PointBatch
from pointctx.models import UNet

NAMES = ["unet_cpu_seg", "unet_seg", "unet_small_seg"]


def test_registered():
    assert set(NAMES) <= set(pointctx.list_models("unet*"))


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_every_parameter(name):
    torch.manual_seed(0)
    model = pointctx.create_model(name, num_classes=11)
    x, mask = torch.randn(2, 3, 20, 27), torch.rand(2, 20, 27) < 0.6  # odd sizes: padded
    out = model(x, mask=mask)
    assert out.shape == (2, 11, 20, 27) and torch.isfinite(out).all()
    out.square().mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


def test_missing_pixels_are_zero_filled_and_flagged():
    torch.manual_seed(0)
    model = UNet(num_classes=4, width=4, depth=3).eval()
    x, mask = torch.randn(1, 3, 16, 16), torch.rand(1, 16, 16) < 0.5
    other = torch.where(mask[:, None], x, torch.randn_like(x))  # changes missing pixels only
    torch.testing.assert_close(model(x, mask), model(other, mask))
    zero = torch.where(mask[:, None], x, torch.zeros_like(x))
    # a missing pixel differs from an observed pixel of value 0: the mask channel
    assert not torch.allclose(model(zero, mask), model(zero))
    plain = UNet(num_classes=4, width=4, depth=3, mask_channel=False).eval()
    assert plain.down[0][0].in_channels == 3


def test_point_batch_and_query_match_dense():
    torch.manual_seed(0)
    model = UNet(num_classes=5, width=4, depth=2).eval()
    x, mask = torch.randn(2, 3, 9, 11), torch.rand(2, 9, 11) < 0.5
    dense = model(x, mask=mask).reshape(2, 5, -1)
    pb = PointBatch.from_images(x, mask)
    torch.testing.assert_close(model(pb), dense[pb.batch, :, pb.pixel])
    everything = PointBatch.from_images(x)
    torch.testing.assert_close(model(pb, query=everything),
                               dense[everything.batch, :, everything.pixel])


def test_bad_inputs():
    model = UNet(num_classes=3, width=4, depth=2)
    with pytest.raises(ValueError, match=r"`images` must be a tensor \[B, C, H, W\]"):
        model(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="must have C = 3 channels, got 1"):
        model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"`mask` must be a bool tensor \[B, H, W\]"):
        model(torch.zeros(1, 3, 8, 8), mask=torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="must be a pixel set"):
        model(PointBatch.from_list([torch.randn(5, 2)], [torch.randn(5, 3)]))
    with pytest.raises(ValueError, match="`query` needs a PointBatch input"):
        model(torch.zeros(1, 3, 8, 8), query=PointBatch.from_images(torch.zeros(1, 3, 8, 8)))
    with pytest.raises(ValueError, match="`width` must be an int >= 1"):
        UNet(width=0)
