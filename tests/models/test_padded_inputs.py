"""Every model takes padded points [B, Nmax, D] with lengths= (and features=) like a PointBatch."""

import pytest
import torch

from pointctx import PointBatch, create_model

CLASSIFIERS = ["coc_mnist", "cluenet_micro_cifar", "pointmlp_elite"]
SEGMENTERS = ["coc_micro_seg", "cluenet_nano_seg", "coc_micro_unet_seg", "pointmlp_elite_seg"]


def _padded(seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(3, 160, 3, generator=g)
    feats = torch.rand(3, 160, 4, generator=g)
    pos[1, 90:] = 7.0  # padding rows hold garbage: they must not matter
    feats[2, 40:] = float("nan")
    return pos, feats, torch.tensor([160, 90, 40])


def _model(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=5, in_channels=4, pos_dim=3).eval()


@pytest.mark.parametrize("name", CLASSIFIERS + SEGMENTERS)
def test_padded_equals_point_batch(name):
    pos, feats, lengths = _padded()
    model = _model(name)
    with torch.no_grad():
        out = model(pos, lengths=lengths, features=feats)
        ref = model(PointBatch.from_padded(pos, feats, lengths=lengths))
    if name in CLASSIFIERS:
        assert out.shape == (3, 5)
        torch.testing.assert_close(out, ref)
        return
    assert out.shape == (3, 160, 5)  # segmenters: the layout of the input, zeros past lengths
    valid = torch.arange(160) < lengths[:, None]
    torch.testing.assert_close(out[valid], ref)
    assert not out[~valid].any()


def test_padded_lengths_with_point_batch_refused():
    pos, feats, lengths = _padded()
    pb = PointBatch.from_padded(pos, feats, lengths=lengths)
    with pytest.raises(ValueError, match="`lengths` and `features` are only for padded"):
        _model("coc_mnist")(pb, lengths=lengths)


def test_segmenter_padded_refuses_mask_and_query():
    pos, feats, lengths = _padded()
    with pytest.raises(ValueError, match="`mask` and `query` are not for padded points"):
        _model("coc_micro_seg")(pos, lengths=lengths, features=feats,
                                query=PointBatch.from_padded(pos, feats, lengths=lengths))
