"""Build ``datasets/modelnet40_sample.npz``, the small real ModelNet40 sample behind ``make demo``.

The sample is drawn from ``modelnet40_train_1024.npz`` in the shared data folder (``$POINTCTX_DATA``
or ``<repo>/../shared/data``): 10 classes, 50 shapes each (seeded choice), split per class into 40
train and 10 test shapes, 1024 float16 points per shape exactly as stored in the source file.

Run from the repository root::

    .venv/bin/python datasets/make_sample.py            # writes datasets/modelnet40_sample.npz
    .venv/bin/python datasets/make_sample.py --check    # rebuilds in memory, compares to the file

Keys of the output (``np.load``): ``points`` float16 [S, 1024, 3], ``labels`` int64 [S] (0..9, into
``classes``), ``names`` [S] (ModelNet shape ids such as ``chair_0042``), ``classes`` [10],
``split`` [S] (``"train"`` or ``"test"``), ``source`` (provenance text). Shapes are sorted by split,
then class, then name.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

CLASSES = (
    "airplane", "bed", "bottle", "car", "chair", "guitar", "lamp", "monitor", "sofa", "toilet",
)
PER_CLASS_TRAIN = 40
PER_CLASS_TEST = 10
SEED = 20230501
SOURCE_FILE = "modelnet40_train_1024.npz"
OUT = Path(__file__).resolve().parent / "modelnet40_sample.npz"


def source_path() -> Path:
    """The shared ModelNet40 file, from ``$POINTCTX_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("POINTCTX_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root / SOURCE_FILE


def build(src: Path) -> dict[str, np.ndarray]:
    """Select the sample from the source file; deterministic for a given source and seed."""
    with np.load(src) as f:
        points, labels = f["points"], f["labels"]
        names, classes = f["names"], [str(c) for c in f["classes"]]
    rng = np.random.default_rng(SEED)
    rows = {"train": [], "test": []}
    new_labels = {"train": [], "test": []}
    for new_id, cname in enumerate(CLASSES):
        members = np.flatnonzero(labels == classes.index(cname))
        pick = rng.choice(members, PER_CLASS_TRAIN + PER_CLASS_TEST, replace=False)
        pick_train = np.sort(pick[:PER_CLASS_TRAIN])
        pick_test = np.sort(pick[PER_CLASS_TRAIN:])
        rows["train"] += pick_train.tolist()
        rows["test"] += pick_test.tolist()
        new_labels["train"] += [new_id] * len(pick_train)
        new_labels["test"] += [new_id] * len(pick_test)
    order = rows["train"] + rows["test"]
    return {
        "points": points[order].astype(np.float16),
        "labels": np.asarray(new_labels["train"] + new_labels["test"], dtype=np.int64),
        "names": names[order],
        "classes": np.asarray(CLASSES),
        "split": np.asarray(["train"] * len(rows["train"]) + ["test"] * len(rows["test"])),
        "source": np.asarray(
            f"ModelNet40 (Wu et al. 2015), official train split, 1024 points per shape, via "
            f"{SOURCE_FILE}; {len(CLASSES)} classes x ({PER_CLASS_TRAIN} train + "
            f"{PER_CLASS_TEST} test) shapes chosen with numpy seed {SEED} by "
            "datasets/make_sample.py"
        ),
    }


def main(argv=None) -> int:
    """Write (or with ``--check`` verify) the sample file; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the existing file")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT})")
    args = parser.parse_args(argv)
    src = source_path()
    if not src.is_file():
        parser.error(f"source file {src} not found; set POINTCTX_DATA to the shared data folder")
    arrays = build(src)
    if args.check:
        with np.load(args.out) as f:
            same = set(f.files) == set(arrays) and all(
                np.array_equal(f[k], arrays[k]) for k in arrays
            )
        print(f"{args.out}: {'identical to a fresh build' if same else 'DIFFERS from a rebuild'}")
        return 0 if same else 1
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, args.out)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.2f} MB, {len(arrays['labels'])} shapes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
