#!/usr/bin/env python
"""ModelNet40 classification: ``scanobjectnn.py --dataset modelnet40`` with PointMLP's recipe.

Every option of ``examples/scanobjectnn.py`` applies. With the shared data folder, which holds the
official train split only (``modelnet40_train_1024.npz``), a stratified ``--val-fraction`` of each
class (default 20 %) is held out and evaluated; with the ``modelnet40_ply_hdf5_2048`` or
``modelnet40_normal_resampled`` folders the official test split is used::

    python examples/modelnet40.py --data-root ../shared/data
    python examples/modelnet40.py --data-root /data/modelnet40_ply_hdf5_2048 --epochs 300
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scanobjectnn  # noqa: E402


def main(argv=None) -> int:
    """Run ``scanobjectnn.main`` with ``--dataset modelnet40`` prepended."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return scanobjectnn.main(["--dataset", "modelnet40", *argv])


if __name__ == "__main__":
    sys.exit(main())
