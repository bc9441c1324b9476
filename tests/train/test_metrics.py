import math

import numpy as np
import pytest
import torch

from pointctx.train import (
    ConfusionMatrix,
    SegmentationConfusion,
    format_class_table,
    smoothed_cross_entropy,
)


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


# ------------------------------------------------------------------ segmentation
def _naive_seg(pred, target, k, ignore):
    """mIoU etc. by explicit per-class pixel counting (no confusion matrix)."""
    p, t = pred.reshape(-1).tolist(), target.reshape(-1).tolist()
    pairs = [(a, b) for a, b in zip(p, t) if b != ignore]
    iou, acc = [], []
    for c in range(k):
        inter = sum(1 for a, b in pairs if a == c and b == c)
        union = sum(1 for a, b in pairs if a == c or b == c)
        sup = sum(1 for _, b in pairs if b == c)
        iou.append(inter / union if union else float("nan"))
        acc.append(inter / sup if sup else float("nan"))
    correct = sum(1 for a, b in pairs if a == b)
    return dict(
        iou=iou, acc=acc, miou=float(np.nanmean(iou)), oa=correct / len(pairs),
        macc=float(np.nanmean(acc)), total=len(pairs),
    )


def test_segmentation_metrics_match_naive_counting():
    g = torch.Generator().manual_seed(0)
    k, void = 5, 5
    target = torch.randint(0, k + 1, (3, 7, 9), generator=g)
    target[target == 4] = 3  # class 4 never present ...
    logits = torch.randn(3, k, 7, 9, generator=g)
    pred = logits.argmax(1)
    cm = SegmentationConfusion(k, ignore_index=void)
    cm.update(logits[:2], target[:2])  # logits [B, K, H, W]
    cm.update(pred[2], target[2])  # labels [H, W]
    m = cm.compute()
    ref = _naive_seg(pred, target, k, void)
    np.testing.assert_allclose(m.iou, ref["iou"])
    np.testing.assert_allclose(m.per_class, ref["acc"])
    assert m.miou == pytest.approx(ref["miou"]) and m.oa == pytest.approx(ref["oa"])
    assert m.macc == pytest.approx(ref["macc"]) and m.total == ref["total"]
    assert m.total == int((target != void).sum())
    d = m.as_dict(list("abcde"))
    assert set(d) == {"miou", "oa", "macc", "total", "per_class"}
    assert d["per_class"]["a"]["iou"] == pytest.approx(ref["iou"][0])
    table = format_class_table(m, list("abcde"), "seg")
    assert "mIoU" in table and "IoU %" in table and f"{100 * m.miou:.2f}" in table


def test_segmentation_metrics_absent_class_and_errors():
    cm = SegmentationConfusion(3, ignore_index=255)
    cm.update(torch.tensor([0, 0, 2, 1]), torch.tensor([0, 255, 0, 1]))
    m = cm.compute()
    # class 2: predicted once, never present -> IoU 0 (counted); accuracy undefined (left out)
    assert m.iou == pytest.approx([0.5, 1.0, 0.0]) and m.miou == pytest.approx(0.5)
    assert m.per_class[:2] == pytest.approx([0.5, 1.0]) and math.isnan(m.per_class[2])
    assert m.macc == pytest.approx(0.75) and m.oa == pytest.approx(2 / 3) and m.total == 3
    cm2 = SegmentationConfusion(3)
    cm2.update(torch.tensor([0]), torch.tensor([0]))
    assert math.isnan(cm2.compute().iou[1])  # neither present nor predicted -> nan, left out
    assert cm2.compute().miou == 1.0
    with pytest.raises(ValueError, match=r"`target` values must lie in \[0, 3\)"):
        cm2.update(torch.tensor([0]), torch.tensor([255]))
    with pytest.raises(ValueError, match="`ignore_index` must not be a class id"):
        SegmentationConfusion(3, ignore_index=1)
    with pytest.raises(ValueError, match="must have K = 3 channels"):
        cm.update(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"matching `target` \[B, \*S\]"):
        cm.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be integers"):
        cm.update(torch.zeros(4), torch.zeros(4))


def _ddp_worker(rank, world, init_file, pred, target, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        cm = SegmentationConfusion(4, ignore_index=9)
        cm.update(pred[rank::world], target[rank::world])  # uneven shards (5 images, 2 ranks)
        cm.all_reduce()
        if rank == 0:
            torch.save(cm.matrix, out)
    finally:
        dist.destroy_process_group()


def test_segmentation_confusion_all_reduce_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (5, 6, 8), generator=g)
    target[target == 4] = 9
    pred = torch.randint(0, 4, (5, 6, 8), generator=g)
    out = tmp_path / "m.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), pred, target, str(out)), nprocs=2)
    whole = SegmentationConfusion(4, ignore_index=9)
    whole.update(pred, target)
    assert torch.equal(torch.load(out), whole.matrix)
