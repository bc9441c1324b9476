"""Dense linear layer ``x @ W.T + b`` with a choice of CPU matrix-product library."""

from __future__ import annotations

import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import Tensor

from .._resolver import GlobalChoice

__all__ = ["LINEAR_BACKENDS", "ONEDNN_MIN_MACS", "ONEDNN_MIN_ROWS", "get_linear_backend", "linear",
           "linear_reference", "onednn_linear_available", "set_linear_backend",
           "use_linear_backend"]

LINEAR_BACKENDS = ("auto", "aten", "onednn")
ENV_VAR = "POINTCTX_LINEAR_BACKEND"

# rows * in * out at which "auto" switches to oneDNN. Break-even measured at about 2^20 on the
# project's machine (256 x 64 x 64: 24 us aten, 21 us oneDNN); 2^21 leaves room for the
# autograd.Function's own Python cost in training.
ONEDNN_MIN_MACS = 1 << 21
# rows below which "auto" stays on aten whatever the size: forward + backward with 16-64 rows
# measured 0.59-0.84x with oneDNN (bench/linear.py: the classifier heads), 256 rows 1.31-1.34x.
ONEDNN_MIN_ROWS = 128


def _check_name(name, arg: str = "backend") -> str:
    if not isinstance(name, str) or name not in LINEAR_BACKENDS:
        raise ValueError(f"`{arg}` must be one of {list(LINEAR_BACKENDS)}, got {name!r}")
    return name


def _initial_backend() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    return _check_name(value, ENV_VAR)


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear op (``mkldnn._linear_pointwise``)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        _ = torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return False
    return True


@functools.cache
def _cpu_vendor() -> str:
    """``"intel"``, ``"amd"`` or ``"unknown"`` (from /proc/cpuinfo, else platform.processor())."""
    text = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    text = line
                    break
    except OSError:
        pass
    text = text or platform.processor() or ""
    if "GenuineIntel" in text or "Intel" in text:
        return "intel"
    return "amd" if "AuthenticAMD" in text or "AMD" in text else "unknown"


@functools.cache
def _auto_prefers_onednn() -> bool:
    machine = platform.machine().lower()
    return (onednn_linear_available() and machine in ("x86_64", "amd64") and _cpu_vendor() == "amd")


def _check_settable(name) -> None:
    _check_name(name)
    if name == "onednn" and not onednn_linear_available():
        raise RuntimeError("linear backend 'onednn' needs a PyTorch build with oneDNN (MKLDNN); "
                           "torch.backends.mkldnn.is_available() is False. Use 'aten' or 'auto'.")


_choice = GlobalChoice(_initial_backend(), _check_settable)
_state = _choice.state  # {"value": current name}


def set_linear_backend(name: str) -> None:
    """Set the global linear backend: ``"auto"``, ``"aten"`` or ``"onednn"``."""
    _choice.set(name)


def get_linear_backend() -> str:
    """Return the global linear backend name."""
    return _choice.get()


def use_linear_backend(name: str):
    """Context manager that sets the global linear backend inside a ``with`` block."""
    return _choice.use(name)


def linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The reference: ``x @ weight.T + bias`` (same shapes as :func:`linear`)."""
    y = x @ weight.t()
    return y if bias is None else y + bias


def _lp(a: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """The product ``a @ w.T (+ b)`` on oneDNN, for 2-D float32 CPU tensors (no autograd)."""
    return torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")


def _rows(x: Tensor) -> Tensor:
    """``x`` as a contiguous ``[rows, C]`` matrix (a view when it already is one)."""
    return x.reshape(-1, x.shape[-1]).contiguous()


def _fresh(y: Tensor) -> Tensor:
    """``y`` as a tensor of its own (same storage, no view relation to another tensor)."""
    if y._base is None:
        return y
    return y.new_empty(0).set_(y.untyped_storage(), y.storage_offset(), y.shape, y.stride())


def _weight_grad(x2: Tensor, grad: Tensor) -> Tensor:
    """``grad.T @ x2`` ([C_out, C]) summed over chunks of rows, with oneDNN."""
    narrow = min(x2.shape[1], grad.shape[1])
    step = min(16384, max(2048, (1 << 17) // max(1, narrow)))
    parts = []
    for xs, gs in zip(x2.split(step), grad.split(step)):
        if xs.shape[1] < gs.shape[1]:
            parts.append(_OneDNNLinear.apply(xs.t(), gs.t(), None).t())
        else:
            parts.append(_OneDNNLinear.apply(gs.t(), xs.t(), None))
    gw = parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)
    return gw.contiguous()


class _OneDNNLinear(torch.autograd.Function):
    """``x2 @ w.T + b`` with oneDNN forward and backward."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None):
        # x: [..., C] with C == w.shape[1]. Save the input itself (not its [rows, C] form), so
        # that double backward sees how the weight gradient depends on x; return a fresh
        # [..., C_out] tensor, not a view of an internal one, so in-place ops on it stay cheap.
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _fresh(_lp(_rows(x), w, b).view(*x.shape[:-1], w.shape[0]))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        x2, grad = _rows(x), _rows(grad)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _OneDNNLinear.apply(grad, w.t().contiguous(), None).view(x.shape)
        if ctx.needs_input_grad[1]:
            gw = _weight_grad(x2, grad)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(0)
        return gx, gw, gb


def _use_onednn(backend: str, x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    # first, so that torch.compile traces nothing else of this function, and "auto" where it
    # never picks oneDNN (e.g. Intel CPUs) pays for no further checks
    if backend == "aten" or torch.compiler.is_compiling():
        return False
    if backend == "auto" and not _auto_prefers_onednn():
        return False
    if not onednn_linear_available() or not torch.backends.mkldnn.enabled:
        return False
    if (x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu"
            or weight.device.type != "cpu" or weight.dim() != 2 or x.dim() < 1
            or x.layout != torch.strided or weight.layout != torch.strided):
        return False
    if bias is not None and (bias.dtype != torch.float32 or bias.device.type != "cpu"
                             or bias.dim() != 1):
        return False
    if x.numel() == 0 or weight.numel() == 0:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if backend == "onednn":
        return True
    rows = x.numel() // x.shape[-1]
    return rows >= ONEDNN_MIN_ROWS and rows * weight.shape[0] * weight.shape[1] >= ONEDNN_MIN_MACS


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None,
           backend: str | None = None) -> Tensor:
    """``x @ weight.T + bias`` on the chosen matrix-product library (see the module docstring).

    Args:
        x: input rows.
        weight: ``[out, in]``.
        bias: ``[out]`` or None.
        backend: ``"auto"``, ``"aten"``, ``"onednn"`` or None (the global default).

    Shapes:
        x: [N, C] or [..., C]; weight: [C_out, C]; bias: [C_out]; return: [..., C_out].
    """
    name = _state["value"] if backend is None else _check_name(backend)
    if not _use_onednn(name, x, weight, bias):
        return F.linear(x, weight, bias)
    if x.shape[-1] != weight.shape[1]:
        return F.linear(x, weight, bias)  # let aten raise its usual shape error
    # oneDNN falls to a reference kernel (measured 100x slower) on a weight with other strides
    # than row-major or its transpose, such as a column slice: copy it (weights are small).
    weight = weight.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDNNLinear.apply(x, weight, bias)
    y = _lp(_rows(x), weight, bias)
    return y.view(*x.shape[:-1], weight.shape[0])
