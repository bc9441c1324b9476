"""``argparse`` value types that turn bad command-line values into clean usage errors.

Each raises :class:`argparse.ArgumentTypeError`, which ``argparse`` reports as
``error: argument --x: <message>`` with exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

__all__ = [
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "ratio",
    "open_ratio",
    "existing_dir",
    "json_object",
]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def ratio(text: str) -> float:
    """A number in (0, 1]."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a ratio in (0, 1], got {value}")
    return value


def open_ratio(text: str) -> float:
    """A number in (0, 1)."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {value}")
    return value


def existing_dir(text: str) -> Path:
    """A path to an existing directory."""
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"directory {text!r} {what}")
    return path


def json_object(text: str) -> dict:
    """A JSON object, e.g. ``'{"embed_dim": 32}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"invalid JSON ({err.msg} at char {err.pos}): {text!r}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__}"
        )
    return value
