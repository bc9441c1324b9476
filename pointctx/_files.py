"""Atomic file output (checkpoints, JSON results, figures) and checkpoint reading."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["atomic_output", "load_torch_file"]


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_output(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and then move the temporary file onto ``path`` atomically.

    Args:
        path: the final file; its folder is created if needed.
        write: writes the complete content to the temporary path it is given (a sibling of
            ``path`` with the same suffix, so format-by-extension writers work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_torch_file(path: str | os.PathLike, map_location="cpu", weights_only: bool = True):
    """``torch.load(path)`` with one-line errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # torch raises several types for damaged files
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise ValueError(f"{path} is not a weights-only checkpoint: it pickles a "
                             f"{found.group(1)} object, not only tensors, numbers and "
                             "strings") from None
        first = (text.strip().splitlines() or [""])[0].split(". ")[0][:160]
        detail = "" if "weights_only" in first or not first else f": {first}"
        raise ValueError(f"{path} is damaged or not a checkpoint (truncated, or not written by "
                         f"torch.save); torch.load failed with {type(err).__name__}"
                         f"{detail}") from None
