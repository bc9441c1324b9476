import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pointctx.train import (
    ConfusionMatrix,
    Trainer,
    init_distributed,
    load_checkpoint,
    make_loader,
    smoothed_cross_entropy,
)

K = 3


class TinyNet(nn.Module):
    """Per-point MLP + max pool + dropout head: consumes RNG (dropout) and has BN buffers."""

    def __init__(self):
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(16, K))

    def forward(self, pos):
        b, n, _ = pos.shape
        h = self.point(pos.reshape(b * n, 3)).reshape(b, n, -1).amax(1)
        return self.head(h)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    pos = torch.randn(n, 24, 3, generator=g) * 0.3 + y[:, None, None].float()
    return TensorDataset(pos, y)


def _trainer(out, epochs=3, **kw):
    torch.manual_seed(0)
    info = init_distributed("cpu")
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    train = make_loader(_data(40, 1), batch_size=8, train=True, dist_info=info, seed=0)
    test = make_loader(_data(15, 2), batch_size=4, train=False, dist_info=info)
    return Trainer(
        model, opt, train, test, num_classes=K, class_names=["a", "b", "c"], epochs=epochs,
        output_dir=out, dist_info=info, scheduler=sched, progress=False,
        loss_fn=lambda lg, t: smoothed_cross_entropy(lg, t, 0.2), **kw,
    )


def _strip(history):
    return [{k: v for k, v in h.items() if not k.endswith("_s") and "per_s" not in k}
            for h in history]


def test_fit_writes_results_and_exact_metrics(tmp_path):
    tr = _trainer(tmp_path, run_info={"config": {"x": 1}})
    res = tr.fit()
    assert res["status"] == "finished" and res["epochs_done"] == 3 and res["global_step"] == 15
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["config"] == {"x": 1} and on_disk["last"]["epoch"] == 3
    assert set(on_disk["last"]["per_class"]) == {"a", "b", "c"}
    assert len(on_disk["history"]) == 3 and on_disk["timing"]["train_samples_per_s"] > 0
    best_epoch = max(range(3), key=lambda e: (res["history"][e]["test"]["oa"], -e)) + 1
    assert res["best"]["epoch"] == best_epoch
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best_epoch
    # the reported last-epoch metrics are those of the final weights on the whole test set
    cm = ConfusionMatrix(K)
    tr.model.eval()
    with torch.no_grad():
        for pos, y in DataLoader(_data(15, 2), batch_size=15):
            cm.update(tr.model(pos), y)
    assert cm.compute().oa == pytest.approx(res["last"]["oa"])
    assert cm.compute().macc == pytest.approx(res["last"]["macc"])


@pytest.mark.parametrize("stop", [{"stop_after_steps": 7}, {"stop_after_epoch": 1}])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, stop):
    full = _trainer(tmp_path / "full")
    ref = full.fit()
    part = _trainer(tmp_path / "part", **stop)
    res = part.fit()
    assert res["status"] == "interrupted"
    state = load_checkpoint(tmp_path / "part" / "last.pt")
    if "stop_after_steps" in stop:
        assert (state["epoch"], state["step_in_epoch"]) == (1, 2)  # mid epoch 2
    torch.manual_seed(123)  # a fresh process would start from other RNG states
    resumed = _trainer(tmp_path / "part")
    resumed.load()
    res2 = resumed.fit()
    assert res2["status"] == "finished" and res2["global_step"] == ref["global_step"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(res2["history"]) == _strip(ref["history"])
    assert res2["timing"]["sessions"] == 2


def test_trainer_requires_resumable_sampler(tmp_path):
    info = init_distributed("cpu")
    model = TinyNet()
    loader = DataLoader(_data(8, 0), batch_size=4)
    with pytest.raises(TypeError, match="ResumableBatchSampler"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, loader,
                num_classes=K, class_names="abc", epochs=1, output_dir=tmp_path, dist_info=info)


def test_checkpoints_load_with_weights_only(tmp_path):
    tr = _trainer(tmp_path, epochs=1, run_info={"config": {"x": 1}})
    tr.fit()
    for name in ("last.pt", "best.pt"):
        state = torch.load(tmp_path / name, weights_only=True)  # torch's safe loader
        assert set(tr.model.state_dict()) == set(state["model"])
    assert tr.load()["run_info"] == {"config": {"x": 1}}
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])  # truncated: resume says so
    with pytest.raises(ValueError, match=r"last\.pt is damaged or not a checkpoint") as err:
        tr.load()
    assert "weights_only=False" not in str(err.value)


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path):
    (tmp_path / ".last.pt.k1lled.pt").write_bytes(b"partial")
    _trainer(tmp_path, epochs=1).fit()
    assert not list(tmp_path.glob(".last.pt.*"))


class _Poison(nn.Module):
    """Backward turns the gradient of its input into NaN from a given call on."""

    def __init__(self, after):
        super().__init__()
        self.calls, self.after = 0, after

    def forward(self, h):
        self.calls += 1
        if self.calls <= self.after:
            return h
        return _NanGrad.apply(h)


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_nonfinite_gradient_norm_stops_before_the_step(tmp_path):
    tr = _trainer(tmp_path, epochs=2)
    tr.model.point.append(_Poison(after=2))
    with pytest.raises(FloatingPointError, match=r"training stopped: the gradient norm is nan "
                       r"at epoch 1, step 3 \(loss [0-9.]+\); the weights were not updated"):
        tr.fit()
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_nonfinite_loss_stops(tmp_path):
    tr = _trainer(tmp_path, epochs=1)
    tr.loss_fn = lambda lg, t: lg.sum() * float("inf")
    with pytest.raises(FloatingPointError, match=r"training stopped: the loss is -?inf at "
                       r"epoch 1, step 1, before any update"):
        tr.fit()


class TinySegNet(nn.Module):
    """1x1 convolution per pixel: [B, 2, H, W] -> [B, K, H, W]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(2, 8, 1), nn.ReLU(), nn.Conv2d(8, K, 1))

    def forward(self, x):
        return self.conv(x)


def _seg_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K + 1, (n, 6, 5), generator=g)  # K = void
    x = torch.stack([y.float() + 0.3 * torch.randn(n, 6, 5, generator=g),
                     torch.randn(n, 6, 5, generator=g)], 1)
    return TensorDataset(x, y)


def test_trainer_segmentation_mode_reports_miou(tmp_path):
    from functools import partial

    from pointctx.train import SegmentationConfusion

    torch.manual_seed(0)
    info = init_distributed("cpu")
    model = TinySegNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train = make_loader(_seg_data(16, 1), batch_size=4, train=True, dist_info=info, seed=0)
    test = make_loader(_seg_data(6, 2), batch_size=4, train=False, dist_info=info)
    conf = partial(SegmentationConfusion, ignore_index=K)
    tr = Trainer(model, opt, train, test, num_classes=K, class_names=["a", "b", "c"], epochs=2,
                 output_dir=tmp_path, dist_info=info, progress=False, confusion=conf,
                 best_metric="miou",
                 loss_fn=lambda lg, t: nn.functional.cross_entropy(lg, t, ignore_index=K))
    res = tr.fit()
    assert res["status"] == "finished"
    last = json.loads((tmp_path / "results.json").read_text())["last"]
    assert set(last["per_class"]["a"]) == {"iou", "acc", "support"}
    cm = conf(K)
    model.eval()
    with torch.no_grad():
        for x, y in DataLoader(_seg_data(6, 2), batch_size=6):
            cm.update(model(x), y)
    m = cm.compute()
    assert m.miou == pytest.approx(last["miou"]) and m.oa == pytest.approx(last["oa"])
    assert m.total == last["total"] == int((_seg_data(6, 2).tensors[1] != K).sum())
    assert res["history"][-1]["test"]["samples"] == 6
    best = max(range(2), key=lambda e: (res["history"][e]["test"]["miou"], -e)) + 1
    assert res["best"]["epoch"] == best and "miou" in res["best"]
    with pytest.raises(ValueError, match=r"`best_metric` must be one of \['oa', 'macc'\]"):
        Trainer(model, opt, train, test, num_classes=K, class_names="abc", epochs=1,
                output_dir=tmp_path, dist_info=info, best_metric="miou")
