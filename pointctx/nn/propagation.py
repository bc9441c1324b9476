"""Feature propagation: carry coarse features to finer positions of the same ragged sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_features, check_pos, check_positive_int, check_tensor
from .._resolver import resolve
from ..ops.interpolate import _check_eps, knn_interpolate
from .layers import Linear
from .norm import SetGroupNorm

__all__ = ["FeaturePropagation", "SharedMlp", "NORMS", "ACTIVATIONS", "make_norm", "apply_norm"]

#: point-wise normalisations by name: ``"batch"`` normalises over all points of the batch
#: (PointNet++, PointMLP), ``"group"`` over each set alone (:class:`SetGroupNorm`; a set's
#: result then never depends on the rest of the batch), ``"none"``.
NORMS = {"batch": nn.BatchNorm1d, "group": SetGroupNorm, "none": None}
#: activations by name.
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "none": nn.Identity}


def _norm_factory(norm):
    if isinstance(norm, str):
        key = norm.lower()
        if key not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(NORMS)}")
        return NORMS[key]
    if norm is None:
        return None
    if isinstance(norm, type) and issubclass(norm, nn.Module):
        return norm
    raise TypeError(f"`norm` must be a name (one of {sorted(NORMS)}), None or an nn.Module class, "
                    f"got {type(norm).__name__}")


def make_norm(norm, channels: int) -> nn.Module:
    """The norm named ``norm`` (see :data:`NORMS`) for ``channels`` channels (Identity: none)."""
    cls = _norm_factory(norm)
    return nn.Identity() if cls is None else cls(channels)


def apply_norm(norm: nn.Module, x: Tensor, batch: Tensor | None = None,
               batch_size: int | None = None) -> Tensor:
    """Apply a norm of :func:`make_norm` to the rows ``x`` (per set for SetGroupNorm).

    Shapes:
        x: [N, C]; batch: [N] (SetGroupNorm only); return: [N, C].
    """
    if isinstance(norm, SetGroupNorm):
        if batch is None:
            raise ValueError("`batch` is required with norm='group' (per-set norm)")
        return norm(x, batch, batch_size)
    if isinstance(norm, nn.Identity) or not x.shape[0]:
        return x  # no statistics from (and no running-stat update on) 0 rows
    return norm(x)


class SharedMlp(nn.Module):
    """Shared point-wise MLP on packed sets (PointNet++'s 1x1 convs): ``Linear -> norm -> act``.

    Args:
        in_channels: input channels C.
        channels: output channels of each layer (at least one layer).
        norm: ``"batch"`` (``nn.BatchNorm1d`` over all points), ``"group"``
            (:class:`~pointctx.nn.norm.SetGroupNorm`, per set), ``"none"``, or a module class
            taking the channel count (called as ``norm(x)``, or ``norm(x, batch, B)`` when it is
            a :class:`SetGroupNorm`).
        act: activation name (``"relu"``, ``"gelu"``, ``"silu"``, ``"none"``) or module class.
        last_act: apply norm and activation after the last layer too (PointNet++ does).

    Shapes:
        x: [N, C]; batch: [N] (needed for ``"group"``); return: [N, channels[-1]].
    """

    def __init__(self, in_channels: int, channels: Sequence[int], norm="batch", act="relu",
                 last_act: bool = True):
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels")
        if isinstance(channels, int):
            channels = [channels]
        channels = [check_positive_int(c, "channels") for c in channels]
        if not channels:
            raise ValueError("`channels` must list at least one layer width, got []")
        norm_cls = _norm_factory(norm)
        self.lins = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        c = in_channels
        for i, out in enumerate(channels):
            post = last_act or i < len(channels) - 1
            use_norm = post and norm_cls is not None
            self.lins.append(Linear(c, out, bias=not use_norm))
            self.norms.append(norm_cls(out) if use_norm else nn.Identity())
            self.acts.append(resolve(act, ACTIVATIONS, "activation", base=nn.Module)
                             if post else nn.Identity())
            c = out
        self.in_channels = in_channels
        self.out_channels = c

    def forward(self, x: Tensor, batch: Tensor | None = None,
                batch_size: int | None = None) -> Tensor:
        """Apply every layer to every row."""
        for lin, norm, act in zip(self.lins, self.norms, self.acts):
            x = act(apply_norm(norm, lin(x), batch, batch_size))
        return x


class FeaturePropagation(nn.Module):
    """Interpolate coarse features onto query positions, concatenate a skip, apply an MLP.

    Args:
        in_channels: channels of the coarse features.
        mlp: output channels of each MLP layer (an int for one; empty: no MLP).
        skip_channels: channels of the skip features of the queries (0: no skip).
        k: coarse neighbours per query (PointNet++ / PointMLP: 3).
        norm: normalisation in the MLP (see :class:`SharedMlp`).
        act: activation in the MLP.
        eps: added to the squared distances (see :func:`~pointctx.ops.knn_interpolate`).
        backend: kNN backend.

    A subclass with ``skip_first = True`` puts the skip before the interpolated features.

    Shapes:
        x: [N, in_channels]; pos: [N, D]; pos_query: [Nq, D]; batch: [N]; batch_query: [Nq];
        skip: [Nq, skip_channels]; return: [Nq, out_channels].
    """

    skip_first = False

    def __init__(self, in_channels: int, mlp=(), skip_channels: int = 0, k: int = 3,
                 norm="batch", act="relu", eps: float = 1e-16, backend: str | None = None):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.skip_channels = check_positive_int(skip_channels, "skip_channels", minimum=0)
        self.k = check_positive_int(k, "k")
        self.eps = _check_eps(eps)
        self.backend = backend
        cat = self.in_channels + self.skip_channels
        mlp = [mlp] if isinstance(mlp, int) else list(mlp)
        self.mlp = SharedMlp(cat, mlp, norm=norm, act=act) if mlp else None
        self.out_channels = self.mlp.out_channels if self.mlp is not None else cat

    def extra_repr(self) -> str:
        """Layer settings for ``repr``."""
        return f"{self.in_channels}, skip_channels={self.skip_channels}, k={self.k}"

    def forward(self, x: Tensor, pos: Tensor, pos_query: Tensor, batch: Tensor | None = None,
                batch_query: Tensor | None = None, skip: Tensor | None = None,
                batch_size: int | None = None, cell_size=None, cell_origin=None) -> Tensor:
        """Propagate ``x`` from ``pos`` to ``pos_query`` (same sets) and apply the MLP.

        Args:
            x: coarse features.
            pos: coarse positions.
            pos_query: query positions.
            batch: sorted set id of the coarse rows (None: one set).
            batch_query: sorted set id of the query rows (None: one set).
            skip: features of the queries (required iff ``skip_channels > 0``).
            batch_size: number of sets B (saves a host sync).
            cell_size: cells of a lattice of the coarse points for the grid neighbour search
                (see :func:`~pointctx.ops.knn_interpolate`; same result, faster).
            cell_origin: a corner of that lattice.

        Shapes:
            x: [N, in_channels]; pos: [N, D]; pos_query: [Nq, D]; skip: [Nq, skip_channels];
            return: [Nq, out_channels].
        """
        check_tensor(x, "x")
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have shape [N, {self.in_channels}] (in_channels), got "
                             f"{tuple(x.shape)}")
        check_pos(pos_query, "pos_query")
        if self.skip_channels:
            if skip is None:
                raise ValueError(f"`skip` is required: the layer was built with skip_channels = "
                                 f"{self.skip_channels}")
            check_features(skip, pos_query.shape[0], "skip")
            if skip.shape[1] != self.skip_channels:
                raise ValueError(f"`skip` must have skip_channels = {self.skip_channels} "
                                 f"columns, got {skip.shape[1]}")
        elif skip is not None:
            raise ValueError("`skip` was given but the layer was built with skip_channels = 0")
        out = knn_interpolate(x, pos, pos_query, batch, batch_query, self.k,
                              batch_size=batch_size, eps=self.eps, backend=self.backend,
                              cell_size=cell_size, cell_origin=cell_origin)
        if skip is not None:
            pair = (skip.to(out.dtype), out) if self.skip_first else (out, skip.to(out.dtype))
            out = torch.cat(pair, 1)
        if self.mlp is None:
            return out
        if batch_query is None:
            batch_query = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
        return self.mlp(out, batch_query, batch_size)
