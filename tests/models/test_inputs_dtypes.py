"""Every model family casts float16, float64 and uint8 inputs at its entry (models/_inputs.py).

Floating inputs are cast to the model's dtype; uint8 images are scaled to [0, 1]; uint8 padded
points are cast as they are.
"""

import pytest
import torch

from pointctx import PointBatch, create_model

SMALL = dict(embed_dim=8, res_expansion=0.5, dim_expansion=[2, 2], pre_blocks=[1, 1],
             pos_blocks=[1, 1], k_neighbors=4)
IMAGE_MODELS = [  # (name, kwargs, channels, size): classifiers, segmenters, the U-Net
    ("coc_mnist", dict(num_classes=3, in_channels=1), 1, 28),
    ("cluenet_micro_cifar", dict(num_classes=3), 3, 32),
    ("coc_micro_seg", dict(num_classes=3), 3, 32),
    ("cluenet_nano_seg", dict(num_classes=3), 3, 32),
    ("unet_cpu_seg", dict(num_classes=3), 3, 32),
]
POINT_MODELS = [
    ("pointmlp_elite", dict(num_classes=3, **SMALL), {}),
    ("pointmlp_coc_elite", dict(num_classes=3, **SMALL), {}),
    ("pointmlp_elite_seg", dict(num_classes=3), {}),
    ("pointmlp_partseg", dict(num_classes=50, in_channels=0), {"category": torch.tensor([0, 3])}),
]
DTYPES = [torch.float16, torch.float64, torch.uint8]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, kwargs, c, size", IMAGE_MODELS, ids=[m[0] for m in IMAGE_MODELS])
def test_image_models_cast_images(name, kwargs, c, size, dtype):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    images = torch.rand(2, c, size, size)
    if dtype == torch.uint8:
        raw = (images * 255).round().to(torch.uint8)
        ref = raw.float() / 255
    else:
        raw = images.to(dtype)
        ref = raw.float()
    with torch.no_grad():
        out = model(raw)
        torch.testing.assert_close(out, model(ref))
        assert out.dtype == torch.float32
        if name.endswith("_seg"):  # pixel-set input of another dtype
            pb = PointBatch.from_images(ref.double())
            torch.testing.assert_close(model(pb), model(PointBatch.from_images(ref)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, kwargs, extra", POINT_MODELS, ids=[m[0] for m in POINT_MODELS])
def test_point_models_cast_padded_points(name, kwargs, extra, dtype):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    points = (torch.rand(2, 48, 3) * 10).to(dtype)
    lengths = torch.tensor([48, 40])
    with torch.no_grad():
        out = model(points, lengths=lengths, **extra)
        torch.testing.assert_close(out, model(points.float(), lengths=lengths, **extra))
    assert out.dtype == torch.float32


def test_images_of_another_kind_are_refused():
    model = create_model("unet_cpu_seg", num_classes=3).eval()
    with pytest.raises(ValueError, match=r"`images` must be a tensor \[B, C, H, W\], got "
                       r"torch.float32 \[3, 32, 32\]"):
        model(torch.rand(3, 32, 32))
