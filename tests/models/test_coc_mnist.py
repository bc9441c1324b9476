"""Real-data check: a micro CoC learns MNIST from full images and from 50%-kept pixel sets.

A short run (a few thousand images, two epochs) on the real MNIST training file; the validation
split is carved from the same file after a seeded shuffle (the file is sorted by class). The
accuracies are written to ``coc_mnist_accuracy.json`` in the test's tmp dir and recorded with
``record_property`` (visible in JUnit XML, and printed with ``-s`` / ``-rP``).
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointctx import create_model
from pointctx.datasets import data_root

TRAIN, VAL, EPOCHS, BATCH, KEEP = 4000, 1000, 2, 50, 0.5
MEAN, STD = 0.1307, 0.3081


def _load():
    try:
        path = data_root() / "mnist_train.npz"
    except FileNotFoundError as err:
        pytest.skip(f"no data folder: {err}")
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    order = np.random.default_rng(0).permutation(len(labels))  # the file is sorted by class
    tr, va = order[:TRAIN], order[TRAIN:TRAIN + VAL]

    def prep(idx):
        x = torch.from_numpy(images[idx]).float().div_(255).sub_(MEAN).div_(STD)
        return x.unsqueeze(1), torch.from_numpy(labels[idx].astype(np.int64))

    return prep(tr), prep(va)


def _masks(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 28, 28, generator=g) < KEEP


def _train_and_eval(train, val, pixel_subsets: bool) -> float:
    torch.manual_seed(0)
    model = create_model("coc_mnist", num_classes=10, in_channels=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    (xt, yt), (xv, yv) = train, val
    steps = EPOCHS * (len(yt) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps,
                                                pct_start=0.15)
    g = torch.Generator().manual_seed(1)
    model.train()
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(len(yt) // BATCH):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            # a fresh random pixel subset for every image and step
            mask = _masks(BATCH, seed=1000 * epoch + i) if pixel_subsets else None
            loss = F.cross_entropy(model(xt[idx], mask), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for lo in range(0, len(yv), 250):
            mask = _masks(min(250, len(yv) - lo), seed=10 ** 6 + lo) if pixel_subsets else None
            correct += int((model(xv[lo:lo + 250], mask).argmax(1) == yv[lo:lo + 250]).sum())
    return correct / len(yv)


def test_coc_mnist_learns_full_images_and_pixel_subsets(tmp_path, record_property):
    train, val = _load()
    acc = {
        "full_images": _train_and_eval(train, val, pixel_subsets=False),
        f"pixel_subsets_keep{KEEP}": _train_and_eval(train, val, pixel_subsets=True),
    }
    info = dict(acc, train_images=TRAIN, val_images=VAL, epochs=EPOCHS, model="coc_mnist")
    (tmp_path / "coc_mnist_accuracy.json").write_text(json.dumps(info, indent=2))
    for key, value in acc.items():
        record_property(f"val_accuracy_{key}", value)
    print(f"coc_mnist validation accuracy: {acc}")
    # chance is 10%
    assert acc["full_images"] > 0.5, acc
    assert acc[f"pixel_subsets_keep{KEEP}"] > 0.5, acc
