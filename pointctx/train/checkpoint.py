"""Atomic checkpoint and result files, and the random-number state that makes resuming exact."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_output, load_torch_file

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "save_checkpoint",
           "load_checkpoint", "capture_rng_state", "restore_rng_state", "stale_temp_files",
           "remove_stale_temp_files", "plain"]


def _atomic_write(path: Path, write) -> Path:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return atomic_output(path, _write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    return _atomic_write(Path(path), lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically (numpy/torch scalars and arrays, paths are converted)."""
    text = json.dumps(obj, indent=indent, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def plain(obj: Any) -> Any:
    """``obj`` with only tensors, numbers, strings, ``None``, lists, tuples and dicts inside."""
    if obj is None or type(obj) in (bool, int, float) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (Path, torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if type(obj) in (list, tuple) else [
            plain(v) for v in obj]
    if isinstance(obj, (int, float)):  # bool / int / float subclasses
        return float(obj) if isinstance(obj, float) else int(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint: use tensors, numbers, "
                    "strings and lists / dicts of them")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save`` a state dict atomically; returns the path."""
    return _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``."""
    state = load_torch_file(path, map_location)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state


STALE_PATTERNS = (".last.pt.*.pt", ".best.pt.*.pt", ".results.json.*.json")


def stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files that an interrupted atomic write (``kill -9``) left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for pat in STALE_PATTERNS for p in folder.glob(pat) if p.is_file())


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete :func:`stale_temp_files` of ``folder``; returns what was removed."""
    removed = []
    for p in stale_temp_files(folder):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def capture_rng_state() -> dict:
    """The state of Python's, NumPy's (global) and torch's (CPU and every CUDA device) RNGs."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": str(name),
                  "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Restore states captured by :func:`capture_rng_state` (CUDA ones when a GPU exists)."""
    random.setstate(state["python"])
    npst = state["numpy"]
    if isinstance(npst, dict):
        keys = np.asarray(npst["keys"].cpu().numpy(), dtype=np.uint32)
        npst = (npst["bit_generator"], keys, npst["pos"], npst["has_gauss"],
                npst["cached_gaussian"])
    np.random.set_state(npst)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
