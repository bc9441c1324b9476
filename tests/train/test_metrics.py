import math

import numpy as np
import pytest
import torch

from pointctx.train import ConfusionMatrix, format_class_table, smoothed_cross_entropy


def test_confusion_matrix_metrics():
    cm = ConfusionMatrix(4)
    target = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    cm.update(pred[:5], target[:5])
    logits = torch.nn.functional.one_hot(pred[5:], 4).float()  # logits are accepted too
    cm.update(logits, target[5:])
    expected = np.zeros((4, 4), int)
    for t, p in zip(target.tolist(), pred.tolist()):
        expected[t, p] += 1
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)
    m = cm.compute()
    assert m.oa == pytest.approx(6 / 8)
    assert m.per_class[:3] == pytest.approx([3 / 4, 2 / 3, 1.0])
    assert math.isnan(m.per_class[3]) and m.support == [4, 3, 1, 0] and m.total == 8
    assert m.macc == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)  # absent class 3 is left out
    d = m.as_dict(["a", "b", "c", "d"])
    assert d["per_class"]["b"] == {"acc": pytest.approx(2 / 3), "support": 3}
    table = format_class_table(m, ["a", "b", "c", "d"], "title")
    assert "title" in table and "n/a" in table and "75.00" in table and "OA" in table
    state = cm.state_dict()
    other = ConfusionMatrix(4)
    other.load_state_dict(state)
    assert torch.equal(other.matrix, cm.matrix)
    cm.reset()
    assert int(cm.matrix.sum()) == 0 and math.isnan(cm.compute().oa)


def test_confusion_matrix_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"`target` values must lie in \[0, 3\)"):
        cm.update(torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"must both have shape \[B\]"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="`num_classes` must be an int >= 1"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="saved confusion matrix has shape"):
        cm.load_state_dict({"matrix": torch.zeros(2, 2, dtype=torch.long)})


def test_smoothed_cross_entropy_matches_pointmlp_form():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    target = torch.tensor([0, 4, 2, 2, 1, 3])
    eps = 0.2
    one_hot = torch.nn.functional.one_hot(target, 5).float()
    dist = one_hot * (1 - eps) + (1 - one_hot) * eps / 4
    expected = -(dist * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(smoothed_cross_entropy(logits, target, eps), expected)
    torch.testing.assert_close(
        smoothed_cross_entropy(logits, target, 0.0),
        torch.nn.functional.cross_entropy(logits, target),
    )
    with pytest.raises(ValueError, match=r"`smoothing` must lie in \[0, \(K-1\)/K"):
        smoothed_cross_entropy(logits, target, 0.9)
