"""Opt-in ``torch.compile`` for pointctx models: :func:`pointctx.compile`."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["compile"]


def compile(model: nn.Module, *, dynamic: bool | None = None, backend: str = "inductor",
            mode: str | None = None, cache_size_limit: int | None = 64, **kwargs) -> nn.Module:
    """Compile a pointctx model (CoC, CLUENet, PointMLP, ...) with ``torch.compile``.

    Args:
        model: the module to compile (unchanged; the wrapper shares its parameters).
        dynamic: ``None``: automatic dynamic shapes (one recompile at the first new size);
            ``True``: all symbolic (fails on PointMLP's backward in torch 2.13); ``False``: static.
        backend: ``torch.compile`` backend (``"aot_eager"`` checks the capture, no codegen).
        mode: ``torch.compile`` mode (e.g. ``"max-autotune"``), None for the default.
        cache_size_limit: raise dynamo's per-function recompile limit to this (None leaves it).
        **kwargs: passed to ``torch.compile``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not hasattr(torch, "compile"):
        raise RuntimeError(f"torch.compile needs torch >= 2.0, got {torch.__version__}")
    if cache_size_limit is not None:
        from torch import _dynamo  # here, not at import: it takes about a second to load

        cfg = _dynamo.config
        cfg.cache_size_limit = max(cfg.cache_size_limit, int(cache_size_limit))
        if hasattr(cfg, "accumulated_cache_size_limit"):
            cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit,
                                                   4 * int(cache_size_limit))
    return torch.compile(model, dynamic=dynamic, backend=backend, mode=mode, **kwargs)
