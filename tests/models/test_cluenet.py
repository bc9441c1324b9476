import pytest
import torch

import pointctx
from pointctx import PointBatch, create_model, list_models
from pointctx.models import CLUENet
from pointctx.ops.grid import lattice_plane

CLUENET_MODELS = list_models(module="cluenet")
# official parameter counts at 100 classes (CLUENet paper / official models/CLUENet.py)
OFFICIAL = {"cluenet_micro": 3.02e6, "cluenet_tiny": 5.68e6, "cluenet_small": 15.05e6,
            "cluenet_base": 30.20e6}


def _size(name):
    # the 224-px configs get 64x64 images (2x2 points in the last stage), the CIFAR ones 32x32
    return 32 if name.endswith("_cifar") else 64


def test_registered():
    assert {"cluenet_micro", "cluenet_tiny", "cluenet_small", "cluenet_base",
            "cluenet_micro_cifar", "cluenet_tiny_cifar"} <= set(CLUENET_MODELS)
    assert isinstance(pointctx.create_model("cluenet_micro"), CLUENet)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_parameter_counts_match_official(name, num_params):
    n = num_params(create_model(name, num_classes=100, in_channels=3))
    assert abs(n / OFFICIAL[name] - 1) < 0.02, n
    assert round(n / 1e6, 2) == round(OFFICIAL[name] / 1e6, 2)


def test_cifar_variants_differ_only_in_the_stem(num_params):
    for name, base in (("cluenet_micro_cifar", "cluenet_micro"),
                       ("cluenet_tiny_cifar", "cluenet_tiny")):
        a = create_model(name, num_classes=100)
        b = create_model(base, num_classes=100)
        dim = a.embed_dims[0]
        # 3x3 stem instead of 4x4 on the 5 input channels
        assert num_params(b) - num_params(a) == dim * 5 * (16 - 9)


@pytest.mark.parametrize("name", CLUENET_MODELS)
def test_forward_backward_every_parameter(name, image_model, random_images, bad_grads):
    model = image_model(name)
    hw = _size(name)
    images = random_images(2, 3, hw)
    mask = torch.rand(2, hw, hw, generator=torch.Generator().manual_seed(1)) < 0.8
    out = model(images, mask)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    (out * torch.randn(2, 5)).sum().backward()
    assert bad_grads(model) == []


@pytest.mark.parametrize("name", CLUENET_MODELS)
def test_permutation_invariance_of_pixel_sets(name, random_images, image_model,
                                              shuffle_pixel_sets):
    model = image_model(name).eval()
    images = random_images(2, 3, 32, seed=2)
    mask = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(3)) < 0.7
    pb = PointBatch.from_images(images, mask)
    shuffled = shuffle_pixel_sets(pb, seed=4)
    with torch.no_grad():
        ref = model(images, mask)
        torch.testing.assert_close(model(pb), ref)
        torch.testing.assert_close(model(shuffled), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CLUENET_MODELS)
def test_same_alone_as_in_a_batch(name, random_images, image_model):
    model = image_model(name).eval()
    images = random_images(3, 3, 32, seed=5)
    mask = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(6)) < 0.6
    mask[0] = True
    with torch.no_grad():
        both = model(images, mask)
        for i in range(3):
            alone = model(images[i:i + 1], mask[i:i + 1])
            torch.testing.assert_close(both[i:i + 1], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("keep", [None, 0.5])
@pytest.mark.parametrize("name", CLUENET_MODELS)
def test_full_images_and_half_masked_pixel_sets(name, keep, image_model, random_images):
    model = image_model(name)
    hw = _size(name)
    images = random_images(2, 3, hw, seed=7)
    mask = None
    if keep is not None:
        mask = torch.rand(2, hw, hw, generator=torch.Generator().manual_seed(8)) < keep
    out = model(images, mask)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.stem.proj.weight.grad.abs().sum() > 0
    if mask is not None:  # the masked pixels' values do not matter
        other = images.masked_fill(~mask.unsqueeze(1), 100.0)
        torch.testing.assert_close(model(other, mask), out)


def test_features_and_head(random_images, image_model):
    model = image_model("cluenet_micro").eval()
    images = random_images(2, 3, 64)
    with torch.no_grad():
        feats = model.forward_features(images)
        assert isinstance(feats, PointBatch)
        # 64 -> 16 -> 8 -> 4 -> 2 points per axis
        assert feats.x.shape == (8, 256) and feats.sizes.tolist() == [4, 4]
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, 256)
        torch.testing.assert_close(model.head(pooled), model(images))
    assert model.get_classifier() is model.head
    model.reset_classifier(0)
    assert model(images).shape == (2, 256)
    model.reset_classifier(7)
    assert model(images).shape == (2, 7)


def test_cifar_stem_keeps_32x32_points(image_model, random_images):
    model = image_model("cluenet_micro_cifar").eval()
    seen = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, a, out: seen.append(out.shape[0]))
    with torch.no_grad():
        model(random_images(1, 3, 32))
    assert seen == [32 * 32, 16 * 16, 8 * 8, 4 * 4]
    assert model.stages[0].blocks[0].token_mixer.centers == 4


def test_stem_is_the_official_patch_embedding(random_images, image_model):
    model = image_model("cluenet_micro").eval()
    images = random_images(2, 3, 16)
    seen = {}
    model.stem.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    with torch.no_grad():
        model(images)
        pos = lattice_plane(1, (16, 16)).T.reshape(1, 2, 16, 16).expand(2, 2, 16, 16)
        ref = torch.nn.functional.conv2d(torch.cat([images, pos], 1),
                                         model.stem.proj.weight.view(32, 5, 4, 4),
                                         model.stem.proj.bias, stride=4)
    torch.testing.assert_close(seen["out"].x, ref.permute(0, 2, 3, 1).reshape(-1, 32),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("proposal", ["fps", "grid"])
def test_plain_3d_point_sets(proposal, image_model):
    model = image_model("cluenet_micro", in_channels=3, pos_dim=3, point_proposal=proposal).eval()
    g = torch.Generator().manual_seed(11)
    sizes = [300, 170, 5]
    pos = [torch.randn(n, 3, generator=g) for n in sizes]
    xs = [torch.randn(n, 3, generator=g) for n in sizes]
    pb = PointBatch.from_list(pos, xs)
    with torch.no_grad():
        out = model(pb)
        assert out.shape == (3, 5) and torch.isfinite(out).all()
        feats = model.forward_features(pb)
        n = torch.tensor(sizes)
        for keep in (16, 4, 4, 4):
            n = torch.ceil(n / keep).long()
        assert feats.sizes.tolist() == n.tolist()
        torch.testing.assert_close(model(pb.select([1])), out[1:2], rtol=1e-4, atol=1e-4)
    model.train()
    model(pb).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_share_assignment_option_and_drop_path(image_model):
    shared = image_model("cluenet_micro")
    unshared = image_model("cluenet_micro", share_assignment=False)
    assert shared.stages[0].blocks[1].token_mixer.q is None
    assert unshared.stages[0].blocks[1].token_mixer.q is not None
    model = image_model("cluenet_micro", drop_path_rate=0.1)
    assert model.stages[-1].blocks[-1].drop_path.p == pytest.approx(0.1)
    assert model.stages[0].blocks[0].drop_path.p == 0.0


def test_bad_inputs(image_model):
    model = image_model("cluenet_micro_cifar")
    with pytest.raises(ValueError, match=r"image input must have shape \[B, C, H, W\]"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="in_channels = 3 channels, got 1"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="pos_dim = 2 coordinates, got D = 3"):
        model(PointBatch(torch.randn(5, 3), torch.randn(5, 3)))
    with pytest.raises(ValueError, match="one entry per stage"):
        CLUENet([1, 1], [8, 16], heads=[1, 2, 3])
    with pytest.raises(ValueError, match="`point_proposal` must be one of"):
        CLUENet([1], [8], mlp_ratios=4, point_proposal="kmeans")
    with pytest.raises(ValueError, match="`drop_path_rate` must be in"):
        CLUENet([1], [8], mlp_ratios=4, drop_path_rate=1.0)
