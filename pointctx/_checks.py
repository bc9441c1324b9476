"""Input validation shared by the whole package."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["check_device", "check_bounds", "check_counts", "per_axis", "check_tensor", "check_pos",
           "check_features", "check_finite_features", "check_batch", "check_positive_int", "is_int",
           "is_number", "check_int", "check_number", "check_choice", "check_callable",
           "check_channels", "check_range", "check_point_inputs", "optional_import"]


def optional_import(module: str, purpose: str, install: str):
    """Import an optional module, or raise an ``ImportError`` naming ``purpose`` and ``install``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs {module.split('.')[0]}: pip install {install}") from err


def all_finite(t: Tensor) -> bool:
    """Whether every value of ``t`` is finite, in one reduction pass for the common case."""
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_tensor(value, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor; return it."""
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_device(t: Tensor, device, name: str, like: str) -> Tensor:
    """Raise ``ValueError`` unless ``t`` is on ``device`` (the device of ``like``)."""
    if t.device != device:
        raise ValueError(f"`{name}` must be on device {device} (like `{like}`), got {t.device}")
    return t


def check_pos(pos, name: str = "pos", allow_nonfinite: bool = False) -> Tensor:
    """Check positions [N, D], floating, finite (``allow_nonfinite`` skips that device sync)."""
    check_tensor(pos, name)
    if pos.dim() != 2:
        raise ValueError(f"`{name}` must have shape [N, D] (2 dims), got {pos.dim()} dims with "
                         f"shape {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise ValueError(f"`{name}` must be a floating point tensor, got dtype {pos.dtype}")
    if pos.shape[1] < 1:
        raise ValueError(f"`{name}` must have at least 1 coordinate (D >= 1), got D = 0")
    if not allow_nonfinite and not all_finite(pos):
        bad = (~torch.isfinite(pos)).any(dim=1).nonzero()[0].item()
        raise ValueError(f"`{name}` has NaN or Inf values (first at row {bad}); pass "
                         "allow_nonfinite=True to keep them")
    return pos


def check_features(x, num_points: int, name: str = "x") -> Tensor | None:
    """Check optional point features of shape [N, C] matching ``num_points`` rows."""
    if x is None:
        return None
    check_tensor(x, name)
    if x.dim() != 2:
        raise ValueError(f"`{name}` must have shape [N, C] (2 dims), got shape {tuple(x.shape)}")
    if x.shape[0] != num_points:
        raise ValueError(
            f"`{name}` must have one row per point: expected {num_points} rows, got {x.shape[0]}")
    return x


def check_batch(batch, num_points: int, batch_size: int | None = None,
                name: str = "batch") -> Tensor:
    """Check a sorted integer set-index vector [num_points] with values in [0, batch_size)."""
    check_tensor(batch, name)
    if batch.dim() != 1:
        raise ValueError(f"`{name}` must have shape [N], got shape {tuple(batch.shape)}")
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer tensor, got dtype {batch.dtype}")
    if batch.numel() != num_points:
        raise ValueError(
            f"`{name}` must have one entry per point: expected {num_points}, got {batch.numel()}")
    if batch.numel():
        if bool((batch[1:] < batch[:-1]).any()):
            i = int((batch[1:] < batch[:-1]).nonzero()[0].item())
            raise ValueError(
                f"`{name}` must be sorted ascending (points grouped by set), but "
                f"{name}[{i}] = {int(batch[i])} > {name}[{i + 1}] = {int(batch[i + 1])}")
        lo = int(batch[0])
        if lo < 0:
            raise ValueError(f"`{name}` values must be >= 0, got {lo}")
        if batch_size is not None:
            hi = int(batch[-1])
            if hi >= batch_size:
                raise ValueError(f"`{name}` values must be < batch_size = {batch_size}, got {hi}")
    return batch


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``int(value)`` or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    if not is_int(value):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def check_range(value, name: str, lo: float | None = None, hi: float | None = None
                ) -> tuple[float, float]:
    """A number ``v`` (``(v, v)``) or a pair ``lo < low <= high <= hi`` (None: no bound)."""
    if is_number(value):
        pair = (float(value), float(value))
    else:
        try:
            low, high = value
            if isinstance(low, bool) or isinstance(high, bool):
                raise TypeError
            pair = (float(low), float(high))
        except (TypeError, ValueError):
            raise ValueError(f"`{name}` must be a number or a (low, high) pair of numbers, "
                             f"got {value!r}") from None
    ok = pair[0] <= pair[1] and (lo is None or lo < pair[0]) and (hi is None or pair[1] <= hi)
    if not ok:
        need = ("" if lo is None else f"{lo:g} < ") + "low <= high" + (
            "" if hi is None else f" <= {hi:g}")
        raise ValueError(f"`{name}` must satisfy {need}, got {pair}")
    return pair


def _bounds(minimum, maximum, min_open: bool = False, max_open: bool = False) -> str:
    if minimum is not None and maximum is not None:
        return (f"in {'(' if min_open else '['}{minimum:g}, {maximum:g}{')' if max_open else ']'}")
    if minimum is not None:
        return f"{'>' if min_open else '>='} {minimum:g}"
    return f"{'<' if max_open else '<='} {maximum:g}" if maximum is not None else ""


def is_int(value) -> bool:
    """Whether ``value`` is an int (a Python or numpy integer; not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """Whether ``value`` is a real number (a Python or numpy int or float; not a bool)."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool))


def _need(name: str, what: str, bounds: str, optional: bool) -> str:
    what = f"None or {what}" if optional else what
    return f"`{name}` must be {what}" + (f" {bounds}" if bounds else "")


def _out_of_range(name: str, need: str, bounds: str, must: str | None, value) -> ValueError:
    text = need if must is None else f"`{name}` must " + must.format(bounds=bounds)
    return ValueError(f"{text}, got {value!r}")


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None, *,
              type_error: type[Exception] = TypeError, optional: bool = False,
              must: str | None = None) -> int | None:
    """Return ``int(value)`` for an int (numpy ints too; not bool) in ``[minimum, maximum]``.

    The arguments are those of :func:`check_number` (closed bounds only).
    """
    if optional and value is None:
        return None
    bounds = _bounds(minimum, maximum)
    need = _need(name, "an int", bounds, optional)
    if not is_int(value):
        raise type_error(f"{need}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _out_of_range(name, need, bounds, must, value)
    return value


def check_number(value, name: str, minimum: float | None = None, maximum: float | None = None,
                 *, min_open: bool = False, max_open: bool = False,
                 type_error: type[Exception] = TypeError, optional: bool = False,
                 must: str | None = None) -> float | None:
    """Return ``float(value)`` for a finite real number (not bool) within the bounds.

    Args:
        value: the value to check.
        name: argument name used in error messages.
        minimum: lower bound (None: none).
        maximum: upper bound (None: none).
        min_open: exclude ``minimum`` itself.
        max_open: exclude ``maximum`` itself.
        type_error: exception class for a non-number.
        optional: also accept None.
        must: message wording after "`name` must ", ``{bounds}`` standing for the bounds.
    """
    if optional and value is None:
        return None
    bounds = _bounds(minimum, maximum, min_open, max_open)
    need = _need(name, "a number", bounds, optional)
    if not is_number(value):
        raise type_error(f"{need}, got {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if minimum is not None:
        ok = ok and (v > minimum if min_open else v >= minimum)
    if maximum is not None:
        ok = ok and (v < maximum if max_open else v <= maximum)
    if not ok:
        raise _out_of_range(name, need, bounds, must, value)
    return v


def check_choice(value, name: str, choices) -> str:
    """Raise a ``ValueError`` listing ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}")
    return value


def check_callable(value, name: str, optional: bool = False):
    """Raise ``TypeError`` unless ``value`` is callable (or None with ``optional``); return it."""
    if not (callable(value) or (optional and value is None)):
        what = "callable or None" if optional else "callable"
        raise TypeError(f"`{name}` must be {what}, got {type(value).__name__}")
    return value


def check_channels(x, dim: int, name: str = "x") -> Tensor:
    """Check point features: a floating point tensor of shape [N, dim]; return it."""
    check_tensor(x, name)
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"`{name}` must have shape [N, {dim}] (dim = {dim}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"`{name}` must be a floating point tensor, got dtype {x.dtype}")
    return x


def check_point_inputs(x, pos, batch, batch_size, dim: int, validate: bool = True):
    """Check a layer's ``x [N, dim]``, ``pos [N, D]``, ``batch [N]``; returns ``batch_size``."""
    check_channels(x, dim)
    n = x.shape[0]
    check_pos(pos, "pos", allow_nonfinite=not validate)
    if pos.shape[0] != n:
        raise ValueError(
            f"`pos` must have one row per point of `x`: expected {n} rows, got {pos.shape[0]}")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size", minimum=0)
    if validate:
        check_batch(batch, n, batch_size, "batch")
    else:
        check_tensor(batch, "batch")
        if batch.dim() != 1 or batch.numel() != n:
            raise ValueError(f"`batch` must have shape [N] = [{n}], got shape {tuple(batch.shape)}")
        if batch.is_floating_point() or batch.dtype == torch.bool:
            raise ValueError(f"`batch` must be an integer tensor, got dtype {batch.dtype}")
    for name, t in (("pos", pos), ("batch", batch)):
        if t.device != x.device:
            raise ValueError(
                f"`{name}` must be on the same device as `x` ({x.device}), got {t.device}")
    if validate:
        check_finite_features(x, batch)
    return batch_size


def check_finite_features(x: Tensor, batch: Tensor | None = None, name: str = "x",
                          pixel: Tensor | None = None,
                          image_size: tuple[int, int] | None = None) -> Tensor:
    """Raise a ``ValueError`` naming the set (and pixel) of the first NaN / Inf in ``x [N, C]``."""
    if all_finite(x):
        return x
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1))
    row = int(bad.any(1).nonzero()[0, 0])
    col = int(bad[row].nonzero()[0, 0])
    value = float(x.reshape(x.shape[0], -1)[row, col])
    s = 0 if batch is None else int(batch[row])
    if pixel is not None and image_size is not None:
        from .ops.grid import pixel_coords  # ops.grid imports this module
        r, c = pixel_coords(pixel[row:row + 1], image_size)[0].tolist()
        where = f"image {s}, pixel (row {r}, col {c}), channel {col}"
    else:
        first = 0 if batch is None else int(torch.searchsorted(batch.contiguous(),
                                                                batch[row:row + 1]))
        where = f"set {s}, point {row - first} (row {row} of `{name}`), channel {col}"
    raise ValueError(f"`{name}` has a non-finite value ({value}) at {where}: models and layers "
                     "reject NaN / Inf features, which would spread to the other points and, in "
                     "training, to the weights; clean the input or drop the point")


def per_axis(value, dim: int, name: str) -> tuple:
    """Broadcast an int/float or check a sequence to ``dim`` entries."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        vals = tuple(value)
        if len(vals) != dim:
            raise ValueError(
                f"`{name}` has {len(vals)} entries but the positions have D = {dim} coordinates")
    else:
        vals = (value,) * dim
    return vals


def check_counts(value, name: str) -> int | tuple[int, ...]:
    """Check an int >= 1 or a non-empty sequence of ints >= 1; return it as int or tuple."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        vals = tuple(value)
        if not vals:
            raise ValueError(f"`{name}` must not be empty")
        if not all(is_int(v) and v >= 1 for v in vals):
            raise ValueError(f"`{name}` entries must be ints >= 1, got {value!r}")
        return tuple(int(v) for v in vals)
    if not (is_int(value) and value >= 1):
        raise ValueError(f"`{name}` must be an int >= 1 or a sequence of them, got {value!r}")
    return int(value)


def check_bounds(bounds, name: str = "bounds"):
    """Check None / ``"set"`` (per-set box, returned as ``"set"``) or a ``(lo, hi)`` pair."""
    if bounds is None or (isinstance(bounds, str) and bounds == "set"):
        return "set"
    if isinstance(bounds, str) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError(f"`{name}` must be None, 'set' or a (lo, hi) pair, got {bounds!r}")
    lo, hi = bounds
    los = tuple(lo) if isinstance(lo, Sequence) else (lo,)
    his = tuple(hi) if isinstance(hi, Sequence) else (hi,)
    if len(los) != len(his) and len(los) != 1 and len(his) != 1:
        raise ValueError(f"`{name}` lo and hi must have the same length, got {bounds!r}")
    try:
        los_f = [float(v) for v in los]
        his_f = [float(v) for v in his]
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` lo and hi must be numbers, got {bounds!r}") from None
    n = max(len(los_f), len(his_f))
    los_f = los_f * n if len(los_f) == 1 else los_f
    his_f = his_f * n if len(his_f) == 1 else his_f
    for a, b in zip(los_f, his_f):
        if not (math.isfinite(a) and math.isfinite(b)) or not a < b:
            raise ValueError(f"`{name}` must have finite lo < hi on every axis, got {bounds!r}")
    lo_out = tuple(los_f) if isinstance(lo, Sequence) else los_f[0]
    hi_out = tuple(his_f) if isinstance(hi, Sequence) else his_f[0]
    return (lo_out, hi_out)
