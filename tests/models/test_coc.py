import math

import pytest
import torch
import torch.nn.functional as F

import pointctx
from pointctx import PointBatch, create_model, list_models, rgbd_to_points
from pointctx.models import ContextClusterNet
from pointctx.models._inputs import pack_input
from pointctx.ops.grid import lattice_plane

COC_MODELS = list_models(module="coc")
# small test inputs: image size per model (the 224-px configs get 64x64 images)
SIZES = {"coc_tiny_cifar": 32, "coc_mnist": 28}


def _size(name):
    return SIZES.get(name, 64)


def test_registered():
    assert {"coc_tiny", "coc_tiny_plain", "coc_small", "coc_medium", "coc_tiny_cifar",
            "coc_mnist"} <= set(COC_MODELS)
    assert isinstance(pointctx.create_model("coc_mnist"), ContextClusterNet)


@pytest.mark.parametrize(
    "name,official", [("coc_tiny", 5.57e6), ("coc_small", 14.66e6), ("coc_medium", 29.29e6),
                      ("coc_tiny_plain", 5.57e6)])
def test_parameter_counts_match_official(name, official, num_params):
    n = num_params(create_model(name, num_classes=1000, in_channels=3))
    assert abs(n / official - 1) < 0.02, n
    # they match to the printed precision (the reducers are the official 3x3 stride-2 ones)
    assert round(n / 1e6, 2) == round(official / 1e6, 2)


@pytest.mark.parametrize("name", COC_MODELS)
def test_forward_backward_every_parameter(name, image_model, random_images, bad_grads):
    model = image_model(name)
    hw = _size(name)
    images = random_images(2, 3, hw)
    mask = torch.rand(2, hw, hw, generator=torch.Generator().manual_seed(1)) < 0.8
    out = model(images, mask)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    (out * torch.randn(2, 5)).sum().backward()
    assert bad_grads(model) == []


@pytest.mark.parametrize("name", COC_MODELS)
def test_permutation_invariance_of_pixel_sets(name, random_images, image_model,
                                              shuffle_pixel_sets):
    model = image_model(name).eval()
    hw = _size(name)
    images = random_images(2, 3, hw, seed=2)
    mask = torch.rand(2, hw, hw, generator=torch.Generator().manual_seed(3)) < 0.7
    pb = PointBatch.from_images(images, mask)
    shuffled = shuffle_pixel_sets(pb, seed=4)
    with torch.no_grad():
        ref = model(images, mask)
        torch.testing.assert_close(model(pb), ref)
        torch.testing.assert_close(model(shuffled), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", COC_MODELS)
def test_same_alone_as_in_a_batch(name, random_images, image_model):
    model = image_model(name).eval()
    hw = _size(name)
    images = random_images(3, 3, hw, seed=5)
    mask = torch.rand(3, hw, hw, generator=torch.Generator().manual_seed(6)) < 0.6
    mask[0] = True
    with torch.no_grad():
        both = model(images, mask)
        for i in range(3):
            alone = model(images[i:i + 1], mask[i:i + 1])
            torch.testing.assert_close(both[i:i + 1], alone, rtol=1e-4, atol=1e-4)


def test_stem_is_conv_on_image_plus_two_position_channels(random_images, image_model):
    model = image_model("coc_tiny").eval()
    images = random_images(2, 3, 16)
    seen = {}
    model.reducers[0].register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    with torch.no_grad():
        model(images)
        pos = lattice_plane(1, (16, 16)).T.reshape(1, 2, 16, 16).expand(2, 2, 16, 16)
        red = model.reducers[0]
        ref = F.conv2d(torch.cat([images, pos], 1), red.proj.weight.view(32, 5, 4, 4),
                       red.proj.bias, stride=4)
    torch.testing.assert_close(seen["out"].x, ref.permute(0, 2, 3, 1).reshape(-1, 32),
                               rtol=1e-5, atol=1e-5)
    assert seen["out"].grid_size == (4, 4)


def test_features_and_head(random_images, image_model):
    model = image_model("coc_tiny").eval()
    images = random_images(2, 3, 64)
    with torch.no_grad():
        feats = model.forward_features(images)
        assert isinstance(feats, PointBatch)
        # 64 -> 16 -> 8 -> 4 -> 2 points per axis
        assert feats.x.shape == (8, 320) and feats.sizes.tolist() == [4, 4]
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, 320)
        torch.testing.assert_close(model.head(pooled), model(images))
    model.reset_classifier(0)
    assert model(images).shape == (2, 320)
    model.reset_classifier(7)
    assert model(images).shape == (2, 7)


def _disc_mask(b, hw):
    yy, xx = torch.meshgrid(torch.arange(hw), torch.arange(hw), indexing="ij")
    c = (hw - 1) / 2
    return ((yy - c) ** 2 + (xx - c) ** 2 <= (0.45 * hw) ** 2).expand(b, hw, hw)


def _block_mask(b, hw):
    mask = torch.ones(b, hw, hw, dtype=torch.bool)
    mask[:, hw // 4: hw // 2, hw // 8: 3 * hw // 4] = False
    mask[1:, :, : hw // 3] = False
    return mask


@pytest.mark.parametrize("kind", ["full", "random_subset", "block_masked", "disc"])
def test_image_input_kinds(kind, image_model, random_images):
    model = image_model("coc_tiny")
    hw = 32
    images = random_images(2, 3, hw, seed=7)
    masks = {
        "full": None,
        "random_subset": torch.rand(2, hw, hw, generator=torch.Generator().manual_seed(8)) < 0.5,
        "block_masked": _block_mask(2, hw),
        "disc": _disc_mask(2, hw),
    }
    out = model(images, masks[kind])
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.reducers[0].proj.weight.grad.abs().sum() > 0
    if masks[kind] is not None:
        # the masked pixels' values do not matter
        other = images.masked_fill(~masks[kind].unsqueeze(1), 100.0)
        torch.testing.assert_close(model(other, masks[kind]), out)


def test_rgbd_four_channel_images(image_model, random_images):
    model = image_model("coc_tiny_cifar", in_channels=4)
    rgbd = random_images(2, 4, 32, seed=9)
    valid = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(10)) < 0.9
    out = model(rgbd, valid)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def _rgbd_pixel_set(seed, h=24, w=32):
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + torch.rand(h, w, generator=g)  # metres
    depth[torch.rand(h, w, generator=g) < 0.2] = 0  # holes: no point
    color = torch.rand(h, w, 3, generator=g)
    return rgbd_to_points(color, depth, (30.0, 30.0, w / 2, h / 2)), (h, w)


def test_rgbd_xyz_pixel_sets(image_model):
    # xyz positions (D = 3) with pixel info: the xyz join the features at the stem, clustering
    # runs on the image plane
    model = image_model("coc_tiny_cifar", pos_dim=3)
    (a, size), (b, _) = _rgbd_pixel_set(0), _rgbd_pixel_set(1)
    pb = PointBatch(torch.cat([a.xyz, b.xyz]), torch.cat([a.rgb, b.rgb]),
                    ptr=torch.tensor([0, len(a.xyz), len(a.xyz) + len(b.xyz)]),
                    pixel=torch.cat([a.pixel, b.pixel]), image_size=size)
    packed = pack_input(pb, in_channels=3, pos_dim=3)
    assert packed.is_pixel_set and packed.plane.shape == (pb.num_points, 2)
    out = model(pb)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    # the stem's position weights (last 3 input channels) see the xyz
    w = model.reducers[0].proj.weight.grad.view(32, 6, 4)
    assert w[:, 3:].abs().sum() > 0


@pytest.mark.parametrize("channels", [0, 3])
def test_plain_3d_point_sets(channels, image_model):
    model = image_model("coc_tiny", in_channels=channels, pos_dim=3).eval()
    g = torch.Generator().manual_seed(11)
    sizes = [300, 170, 5]
    pos = [torch.randn(n, 3, generator=g) for n in sizes]
    xs = [torch.randn(n, channels, generator=g) for n in sizes] if channels else None
    pb = PointBatch.from_list(pos, xs)
    with torch.no_grad():
        out = model(pb)
        assert out.shape == (3, 5) and torch.isfinite(out).all()
        feats = model.forward_features(pb)
        # point mode: FPS ratios 1/16, then 1/4 per stage (ceil per set)
        n = torch.tensor(sizes)
        for keep in (16, 4, 4, 4):
            n = torch.ceil(n / keep).long()
        assert feats.sizes.tolist() == n.tolist()
        # permutation invariance when each set keeps its first point (the FPS start)
        perm = torch.cat([lo + torch.cat([torch.zeros(1, dtype=torch.long),
                                          1 + torch.randperm(hi - lo - 1, generator=g)])
                          for lo, hi in zip(pb.ptr[:-1].tolist(), pb.ptr[1:].tolist())])
        shuffled = PointBatch(pb.pos[perm], None if pb.x is None else pb.x[perm], ptr=pb.ptr)
        torch.testing.assert_close(model(shuffled), out, rtol=1e-4, atol=1e-4)
        # same alone as in a batch
        torch.testing.assert_close(model(pb.select([1])), out[1:2], rtol=1e-4, atol=1e-4)
    model.train()
    model(pb).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_image_configs_handle_28_and_32(image_model, random_images):
    mnist = image_model("coc_mnist", in_channels=1)
    feats = mnist.forward_features(random_images(2, 1, 28))
    assert feats.sizes.tolist() == [4, 4]  # 28 -> 7 -> 4 -> 2 per axis
    assert mnist(random_images(2, 1, 28)).shape == (2, 5)
    cifar = image_model("coc_tiny_cifar")
    assert cifar.forward_features(random_images(2, 3, 32)).sizes.tolist() == [4, 4]  # 16, 8, 4, 2
    # partial cells: a 30x30 image through the 28-px config still works
    assert torch.isfinite(mnist(random_images(1, 1, 30))).all()


def test_drop_path_and_dropout_train_mode(image_model, random_images):
    model = image_model("coc_mnist", in_channels=1, drop_path_rate=0.5, drop_rate=0.2)
    assert model.stages[-1][-1].drop_path.p == pytest.approx(0.5)
    assert model.stages[0][0].drop_path.p == 0.0
    images = random_images(2, 1, 28)
    model.eval()
    with torch.no_grad():
        a, b = model(images), model(images)
    torch.testing.assert_close(a, b)


def test_bad_inputs(image_model):
    model = image_model("coc_mnist", in_channels=1)
    with pytest.raises(ValueError, match=r"image input must have shape \[B, C, H, W\]"):
        model(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match=r"`mask` must have shape \[B, H, W\] = \[2, 28, 28\]"):
        model(torch.randn(2, 1, 28, 28), torch.ones(2, 28, 27, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be a bool tensor"):
        model(torch.randn(2, 1, 28, 28), torch.ones(2, 28, 28))
    with pytest.raises(ValueError, match="in_channels = 1 channels, got 3"):
        model(torch.randn(2, 3, 28, 28))
    pb = PointBatch.from_images(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="`mask` is only for image tensor inputs"):
        model(pb, torch.ones(1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="pos_dim = 2 coordinates, got D = 3"):
        model(PointBatch(torch.randn(5, 3), torch.randn(5, 1)))
    with pytest.raises(ValueError, match="in_channels = 1 feature channels, got 0"):
        model(PointBatch(torch.randn(5, 2)))
    with pytest.raises(TypeError, match="must be an image tensor"):
        model([torch.randn(1, 1, 8, 8)])
    with pytest.raises(ValueError, match="one entry per stage"):
        ContextClusterNet([1, 1], [8, 16], heads=[1, 2, 3])
    assert math.isfinite(float(model(torch.randn(1, 1, 8, 8)).detach().sum()))
