"""Where the real data lives: an explicit ``root`` or the folder named by ``$POINTCTX_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "POINTCTX_DATA"


def data_root(root=None, must_exist: bool = True) -> Path:
    """Return the data folder: ``root`` when given, else ``$POINTCTX_DATA``.

    Args:
        root: an explicit folder (str or path), or None to read ``$POINTCTX_DATA``.
        must_exist: also raise when the folder does not exist.
    """
    how = f"pass root=... or set the environment variable {ENV_VAR}"
    if root is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise FileNotFoundError(f"no data folder given: {how} (the folder holding "
                                    "mnist_train.npz, modelnet40_train_1024.npz, rgbd/, ...)")
        root = env
    root = Path(root).expanduser()
    if must_exist and not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist: {how} to an existing folder")
    return root

