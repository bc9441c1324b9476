import math

import numpy as np
import pytest
import torch

from pointctx.datasets import SHAPENETPART_PARTS
from pointctx.train import PartIoU


def _naive_shape_iou(pred, target, parts, mode):
    """Loops, as PointNet's / PointMLP's evaluation scripts do."""
    if mode == "present":
        parts = sorted(set(target.tolist()))
    ious = []
    for p in parts:
        inter = int(((pred == p) & (target == p)).sum())
        union = int(((pred == p) | (target == p)).sum())
        ious.append(1.0 if union == 0 else inter / union)
    return float(np.mean(ious))


def _random_batch(seed, b=12, restrict_pred=False):
    g = torch.Generator().manual_seed(seed)
    cats = torch.randint(0, 16, (b,), generator=g)
    sizes = torch.randint(1, 60, (b,), generator=g).tolist()
    targets, preds, logits = [], [], []
    for c, n in zip(cats.tolist(), sizes):
        parts = torch.tensor(SHAPENETPART_PARTS[c])
        # often leave a part out of the truth, so "absent from both" happens
        use = parts[: max(1, len(parts) - int(torch.randint(0, 2, (1,), generator=g)))]
        targets.append(use[torch.randint(0, len(use), (n,), generator=g)])
        lg = torch.randn(n, 50, generator=g)
        logits.append(lg)
        preds.append(lg.argmax(1) if not restrict_pred else
                     parts[lg[:, parts].argmax(1)])
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    return cats, torch.cat(targets), torch.cat(preds), torch.cat(logits), batch, sizes


@pytest.mark.parametrize("mode", ["category", "present"])
def test_matches_naive_loops(mode):
    metric = PartIoU(mode=mode)
    all_ious = {c: [] for c in range(16)}
    correct = total = 0
    for seed in range(3):
        cats, target, pred, _, batch, sizes = _random_batch(seed)
        got = metric.update(pred, target, cats, batch)
        start = 0
        for i, (c, n) in enumerate(zip(cats.tolist(), sizes)):
            t, p = target[start:start + n], pred[start:start + n]
            ref = _naive_shape_iou(p, t, SHAPENETPART_PARTS[c], mode)
            assert float(got[i]) == pytest.approx(ref)
            all_ious[c].append(ref)
            start += n
        correct += int((pred == target).sum())
        total += target.numel()
    m = metric.compute()
    flat = [v for vs in all_ious.values() for v in vs]
    assert m.instance_miou == pytest.approx(np.mean(flat))
    per = [np.mean(v) if v else math.nan for v in all_ious.values()]
    assert m.class_miou == pytest.approx(np.nanmean(per))
    for a, b in zip(m.per_category, per):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
    assert m.shapes == [len(v) for v in all_ious.values()]
    assert m.accuracy == pytest.approx(correct / total)


def test_logits_are_restricted_to_the_category_parts():
    cats, target, _, logits, batch, _ = _random_batch(5)
    a, b = PartIoU(), PartIoU()
    restricted = torch.cat([SHAPENETPART_PARTS_T[c][logits[batch == i][:, SHAPENETPART_PARTS_T[c]]
                                                   .argmax(1)]
                            for i, c in enumerate(cats.tolist())])
    torch.testing.assert_close(a.update(logits, target, cats, batch),
                               b.update(restricted, target, cats, batch))
    unrestricted = PartIoU(restrict=False).shape_ious(logits, target, cats, batch)
    assert not torch.allclose(unrestricted, a.shape_ious(logits, target, cats, batch))


SHAPENETPART_PARTS_T = [torch.tensor(p) for p in SHAPENETPART_PARTS]


def test_absent_parts_count_as_one_and_perfect_is_one():
    m = PartIoU()
    # an airplane (parts 0-3) whose truth and prediction only use parts 0 and 1
    target = torch.tensor([0, 0, 1, 1])
    assert float(m.shape_ious(target, target, torch.tensor([0]))[0]) == 1.0
    pred = torch.tensor([0, 1, 1, 1])  # part 0: 1/2, part 1: 2/3, parts 2, 3: absent -> 1
    assert float(m.shape_ious(pred, target, torch.tensor([0]))[0]) == pytest.approx(
        (0.5 + 2 / 3 + 1 + 1) / 4)
    # PointMLP's training-log variant: parts present in the truth only
    assert float(PartIoU(mode="present").shape_ious(pred, target, torch.tensor([0]))[0]) == (
        pytest.approx((0.5 + 2 / 3) / 2))


def test_state_dict_roundtrip_and_reset():
    cats, target, pred, _, batch, _ = _random_batch(1)
    m = PartIoU()
    m.update(pred, target, cats, batch)
    other = PartIoU()
    other.load_state_dict(m.state_dict())
    np.testing.assert_equal(tuple(other.compute()), tuple(m.compute()))
    m.reset()
    assert math.isnan(m.compute().instance_miou)


def test_errors():
    m = PartIoU()
    with pytest.raises(ValueError, match="`batch` is required for 2 shapes"):
        m.update(torch.tensor([0]), torch.tensor([0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`category` values must lie in \[0, 16\)"):
        m.update(torch.tensor([0]), torch.tensor([0]), torch.tensor([16]))
    with pytest.raises(ValueError, match=r"`target` values must lie in \[0, 50\)"):
        m.update(torch.tensor([0]), torch.tensor([50]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"logits `pred` must have shape \[N, 50\]"):
        m.update(torch.zeros(1, 10), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="`mode` must be"):
        PartIoU(mode="x")


def test_trainer_accumulator_combines_point_and_part_metrics():
    from pointctx.train import PartSegConfusion, SegmentationConfusion

    acc = PartSegConfusion(50)
    ref_parts, ref_points = PartIoU(), SegmentationConfusion(50)
    for seed in range(2):
        cats, target, _, logits, batch, _ = _random_batch(seed, b=5)
        acc.update(logits, torch.stack([target, cats[batch], batch], 1))
        ref_parts.update(logits, target, cats, batch)
        ref_points.update(logits, target)
    m, p, s = acc.compute(), ref_parts.compute(), ref_points.compute()
    assert m.instance_miou == p.instance_miou and m.class_miou == p.class_miou
    assert m.oa == s.oa and m.miou == s.miou and m.total == s.total
    d = m.as_dict()
    assert set(d["per_category"]) >= {"Airplane", "Table"} and "per_part" in d
    other = PartSegConfusion(50)
    other.load_state_dict(acc.state_dict())
    np.testing.assert_equal(tuple(other.compute()), tuple(m))
    with pytest.raises(ValueError, match=r"`target` must be \[N, 3\]"):
        acc.update(logits, target)
