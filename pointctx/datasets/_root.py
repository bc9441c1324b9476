"""Where the real data lives: ``$POINTCTX_DATA`` or ``<repo>/../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "POINTCTX_DATA"
_REPO = Path(__file__).resolve().parents[2]
BUNDLED = _REPO / "datasets"


def data_root(must_exist: bool = True) -> Path:
    """Return the data folder: ``$POINTCTX_DATA`` if set, else ``<repo>/../shared/data``.

    Args:
        must_exist: raise ``FileNotFoundError`` (naming the variable) when the folder is missing.
    """
    env = os.environ.get(ENV_VAR)
    root = Path(env).expanduser() if env else _REPO.parent / "shared" / "data"
    if must_exist and not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; set the environment variable {ENV_VAR} to the "
            "folder holding mnist_train.npz, modelnet40_train_1024.npz, rgbd/, ..."
        )
    return root


def bundled_root() -> Path:
    """Return the repository's ``datasets/`` folder holding the small bundled samples."""
    return BUNDLED
