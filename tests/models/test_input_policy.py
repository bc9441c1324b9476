"""The input policy shared by every model (pointctx.models._inputs.check_model_points) and the
finite-feature check of the layers: non-finite features, empty sets, dtypes, one-set batches."""

import pytest
import torch

import pointctx
from pointctx import PointBatch, create_model
from pointctx.nn import ContextCluster, GlobalFeatureClustering

SMALL = dict(embed_dim=8, res_expansion=0.5, dim_expansion=[2, 2], pre_blocks=[1, 1],
             pos_blocks=[1, 1], k_neighbors=4)


def _clouds(sizes=(20, 30, 25), c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return PointBatch.from_list([torch.randn(n, 3, generator=g) for n in sizes],
                                [torch.randn(n, c, generator=g) for n in sizes])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_point_model_rejects_nonfinite_features_naming_set_and_point(bad):
    model = create_model("pointmlp_coc_elite", num_classes=5, in_channels=2, **SMALL).eval()
    pb = _clouds()
    pb.x[20 + 7, 1] = bad  # set 1, point 7
    with pytest.raises(ValueError, match=rf"`x` has a non-finite value \({bad}\) at set 1, point "
                       r"7 \(row 27 of `x`\), channel 1: models and layers reject NaN"):
        model(pb)
    model.train()  # and no step ever sees it
    with pytest.raises(ValueError, match="set 1, point 7"):
        model(pb)


@pytest.mark.parametrize("name, ch, size", [("coc_mnist", 1, 28), ("cluenet_micro_cifar", 3, 32)])
def test_image_models_reject_a_nan_pixel(name, ch, size):
    model = create_model(name, num_classes=4, in_channels=ch).eval()
    images = torch.rand(2, ch, size, size)
    images[1, ch - 1, 5, 9] = float("nan")
    with pytest.raises(ValueError, match=rf"`images` has a non-finite value \(nan\) at image 1, "
                       rf"pixel \(row 5, col 9\), channel {ch - 1}"):
        model(images)
    mask = torch.ones(2, size, size, dtype=torch.bool)
    mask[1, 5, 9] = False  # a masked-out NaN pixel is not part of the set: fine
    assert torch.isfinite(model(images, mask)).all()


def test_layers_reject_nonfinite_features():
    pb = _clouds(c=8)
    x = pb.x.clone()
    x[45, 3] = float("-inf")  # set 1 holds rows 20..49
    cc = ContextCluster(8, heads=2, head_dim=4, proposal="fps", centers=3)
    with pytest.raises(ValueError, match=r"at set 1, point 25 \(row 45 of `x`\), channel 3"):
        cc(x, pb.pos, pb.batch)
    gfc = GlobalFeatureClustering(8, heads=2, head_dim=4, centers=3, proposal="fps")
    with pytest.raises(ValueError, match=r"`x` has a non-finite value \(-inf\) at set 1, point 25"):
        gfc(x, pb.pos, pb.batch)
    assert cc(pb.x, pb.pos, pb.batch).shape == (75, 8)  # finite: unchanged behaviour


def test_point_models_reject_empty_sets():
    model = create_model("pointmlp_elite", num_classes=5, **SMALL).eval()
    pos = torch.randn(30, 3)
    pb = PointBatch(pos, batch=torch.zeros(30, dtype=torch.long), batch_size=2)
    with pytest.raises(ValueError, match=r"every set needs at least one point; got B = 2 sets "
                       r"with empty sets \[1\]"):
        model(pb)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_float_dtypes_are_cast_to_the_model_dtype(dtype):
    torch.manual_seed(0)
    point = create_model("pointmlp_coc_elite", num_classes=5, **SMALL).eval()
    clouds = torch.randn(2, 40, 3).to(dtype)
    ref = point(clouds.float())
    out = point(clouds)
    assert out.dtype == torch.float32 and torch.allclose(out, ref)
    image = create_model("coc_mnist", num_classes=4, in_channels=1).eval()
    images = torch.rand(2, 1, 28, 28).to(dtype)
    torch.testing.assert_close(image(images), image(images.float()))
    # a PointBatch built in float16 has float16 pixel positions: close, not equal
    torch.testing.assert_close(image(PointBatch.from_images(images)), image(images.float()),
                               atol=1e-3, rtol=1e-2)


def test_one_set_batch_in_train_mode_is_a_clear_error():
    model = create_model("pointmlp_elite", num_classes=5, **SMALL).train()
    with pytest.raises(ValueError, match=r"a batch of 1 set in train mode: the classifier's "
                       r"BatchNorm needs at least 2 sets per batch"):
        model(torch.randn(1, 1, 3))
    model.eval()
    assert model(torch.randn(1, 1, 3)).shape == (1, 5)  # inference on one point is fine


def test_nan_features_used_to_poison_training():
    """The failure of the issue: one NaN feature, a finite loss, NaN weights after the step."""
    model = create_model("pointmlp_elite", num_classes=5, in_channels=2, **SMALL).train()
    pb = _clouds()
    pb.x[3, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model(pb)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert pointctx.list_models()  # the registry is untouched


def test_point_reducer_rejects_nonfinite_features():
    from pointctx.nn import PointReducer

    pb = _clouds(c=4)
    x = pb.x.clone()
    x[52, 2] = float("nan")  # set 2 starts at row 50
    red = PointReducer(4, 8, kernel_size=4, stride=2, validate=True)
    with pytest.raises(ValueError, match=r"`x` has a non-finite value \(nan\) at set 2, point 2 "
                       r"\(row 52 of `x`\), channel 2"):
        red(x, pb.pos, pb.batch)


def test_pool_pixels_against_a_per_site_loop():
    from pointctx.models._inputs import pack_input, pool_pixels
    from pointctx.ops import lattice_sites

    g = torch.Generator().manual_seed(3)
    images = torch.randn(3, 2, 7, 10, generator=g)
    mask = torch.rand(3, 7, 10, generator=g) < 0.3
    mask[1] = False  # an empty set
    packed = pack_input(images, mask, append_pos=True, allow_empty=True)
    assert pool_pixels(packed, 1) is packed
    pooled = pool_pixels(packed, 3)
    assert pooled.grid_size == (3, 4) and pooled.input_pool == 3 and pooled.batch_size == 3
    rows = []  # the reference: per set, per site in raster order, the mean of its pixels
    for b in range(3):
        for r in range(3):
            for c in range(4):
                sel = (packed.batch == b) & (packed.coords[:, 0] // 3 == r) & (
                    packed.coords[:, 1] // 3 == c)
                if sel.any():
                    rows.append((b, r, c, packed.x[sel].mean(0), packed.plane[sel].mean(0)))
                    assert bool((pooled.site[sel] == len(rows) - 1).all())
    assert pooled.batch.tolist() == [t[0] for t in rows]
    assert pooled.coords.tolist() == [[t[1], t[2]] for t in rows]
    torch.testing.assert_close(pooled.x, torch.stack([t[3] for t in rows]))
    torch.testing.assert_close(pooled.plane, torch.stack([t[4] for t in rows]))
    torch.testing.assert_close(pooled.pos, pooled.plane)
    # a full image stays a full lattice (the reducers' dense path recognises it)
    full = pool_pixels(pack_input(images), 2)
    coords, batch = lattice_sites(3, (4, 5))
    assert torch.equal(full.coords, coords) and torch.equal(full.batch, batch)
    # general point sets have no lattice: unchanged
    cloud = pack_input(_clouds())
    assert pool_pixels(cloud, 2) is cloud
    with pytest.raises(ValueError, match="`input_pool` must be >= 1, got 0"):
        pool_pixels(packed, 0)


@pytest.mark.parametrize("name", ["coc_micro_unet_seg", "cluenet_nano_seg", "coc_tiny",
                                  "pointmlp_elite_unet_seg", "pointmlp_elite_seg"])
def test_inputs_are_checked_once_per_forward(name, monkeypatch):
    from pointctx.models import _inputs, pointmlp

    calls = []
    for mod in (_inputs, pointmlp):
        real = mod.check_model_points
        monkeypatch.setattr(mod, "check_model_points",
                            lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    g = torch.Generator().manual_seed(1)
    if name.startswith("pointmlp"):
        args = (torch.rand(2, 40, 3, generator=g),)
    else:
        args = (torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 32, 32, generator=g) < 0.7)
    with torch.no_grad():
        model(*args)
    assert len(calls) == 1


def test_pixel_sets_bring_their_own_image_plane():
    from pointctx.models._inputs import pack_input
    from pointctx.ops.grid import image_plane

    images = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(3)) < 0.6
    pb = PointBatch.from_images(images, mask)
    assert pack_input(pb, dtype=torch.float32).plane is pb.pos  # no second image-plane pass
    # another dtype: the plane of the model's dtype, not a cast of the batch's positions
    plane = pack_input(pb.to(dtype=torch.float64), dtype=torch.float32).plane
    assert plane.dtype == torch.float32
    assert torch.equal(plane, image_plane(torch.stack([pb.pixel // 7, pb.pixel % 7], 1), (5, 7),
                                          torch.float32))
    assert torch.equal(plane, pb.pos)
