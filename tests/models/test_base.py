"""The shared classifier contract (SetClassifier) across CoC, CLUENet and PointMLP."""

import pytest
import torch

from pointctx import PointBatch, create_model
from pointctx.models._base import SetClassifier
from pointctx.models._helpers import drop_path_rates, per_stage


def _points(sizes=(30, 21), seed=0):
    g = torch.Generator().manual_seed(seed)
    return PointBatch.from_list([torch.randn(n, 3, generator=g) for n in sizes])


def _images(c, hw, seed=0):
    return torch.randn(2, c, hw, hw, generator=torch.Generator().manual_seed(seed))


CASES = {
    "pointmlp_elite": (dict(num_classes=5), lambda: (_points(),)),
    "pointmlp_coc_elite": (dict(num_classes=5), lambda: (_points(),)),
    "coc_mnist": (dict(num_classes=5), lambda: (_images(1, 28),)),
    "cluenet_micro_cifar": (dict(num_classes=5), lambda: (_images(3, 16),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_classifier_contract(name):
    kwargs, inputs = CASES[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    assert isinstance(model, SetClassifier)
    args = inputs()
    with torch.no_grad():
        feats = model.forward_features(*args)
        assert isinstance(feats, PointBatch) and feats.num_sets == 2
        assert feats.x.shape[1] == model.num_features
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        logits = model(*args)
        assert logits.shape == (2, 5)
        torch.testing.assert_close(model.forward_head(feats), logits)
        torch.testing.assert_close(model.get_classifier()(pooled), logits)
    assert model.get_classifier() is getattr(model, model.head_name)

    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(*args), pooled)
    model.reset_classifier(7)
    assert model.num_classes == 7
    with torch.no_grad():
        assert model.eval()(*args).shape == (2, 7)
    with pytest.raises(ValueError, match="`num_classes` must be >= 0, got -1"):
        model.reset_classifier(-1)


def test_pointmlp_keeps_its_official_classifier_and_keys():
    torch.manual_seed(0)
    model = create_model("pointmlp_elite", num_classes=15)
    assert model.head_name == "classifier" and not hasattr(model, "head")
    keys = [k for k in model.state_dict() if not k.startswith(("embedding", "affines", "pre",
                                                                 "post"))]
    assert keys[0] == "classifier.0.weight" and keys[-1] == "classifier.8.bias"
    assert model.classifier[8].out_features == 15
    model.reset_classifier(3)  # the whole official MLP, fresh
    assert model.classifier[0].in_features == model.num_features
    assert model.classifier[8].out_features == 3
    # num_classes=0 at construction: no classifier, the pooled features
    feats_model = create_model("pointmlp_elite", num_classes=0).eval()
    with torch.no_grad():
        assert feats_model(_points()).shape == (2, feats_model.num_features)


def test_drop_path_schedule_and_per_stage():
    rates = drop_path_rates([2, 1, 2], 0.4)
    assert [r for stage in rates for r in stage] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert [len(stage) for stage in rates] == [2, 1, 2]
    assert drop_path_rates([1], 0.5) == [[0.0]]
    with pytest.raises(ValueError, match=r"`drop_path_rate` must be in \[0, 1\), got 1.0"):
        drop_path_rates([1, 1], 1.0)
    assert per_stage(3, 2, "heads") == [3, 3]
    with pytest.raises(ValueError, match=r"`heads` must have one entry per stage \(2\), got 3"):
        per_stage((1, 2, 3), 2, "heads")


# the empty-set check of SetClassifier.forward, on an image model of each family
@pytest.mark.parametrize("name, kwargs, c, hw", [("coc_mnist", {"in_channels": 1}, 1, 28),
                                                 ("cluenet_micro_cifar", {}, 3, 32)])
def test_empty_sets_are_rejected_for_images_and_points(name, kwargs, c, hw, random_images,
                                                       image_model):
    """Images and point sets alike: a set without points has nothing to classify."""
    model = image_model(name, **kwargs).eval()
    mask = torch.ones(3, hw, hw, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"`mask` keeps no pixel of image\(s\) \[1\] \(of B = 3\)"):
        model(random_images(3, c, hw), mask)
    mask[:] = False  # every mask all-False: the same error, not a reshape failure deep inside
    with pytest.raises(ValueError, match=r"keeps no pixel of image\(s\) \[0, 1, 2\]"):
        model(random_images(3, c, hw), mask)
    pb = PointBatch.from_images(random_images(2, c, hw))
    empty = PointBatch(pb.pos, pb.x, batch=pb.batch, batch_size=3, pixel=pb.pixel,
                       image_size=pb.image_size)
    with pytest.raises(ValueError, match=r"every set needs at least one point; got B = 3 sets "
                       r"with empty sets \[2\]"):
        model(empty)
