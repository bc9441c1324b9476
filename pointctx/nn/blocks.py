"""The pre-norm residual block of set networks, and its Context Cluster configuration.

:class:`MixerBlock` is the one block skeleton (as MetaFormer's): ::

    x = x + drop_path(layer_scale_1(token_mixer(norm1(x), ...)))
    x = x + drop_path(layer_scale_2(mlp(norm2(x), ...)))

with stochastic depth dropping whole sets. Blocks configure it with their norm, token mixer and
MLP: :class:`ContextClusterBlock` (the official CoC block: per-set ``GroupNorm(1, C)``
(:class:`~pointctx.nn.norm.SetGroupNorm`), a :class:`~pointctx.nn.context_cluster.ContextCluster`
mixer and a point-wise :class:`~pointctx.nn.layers.Mlp`) and the CLUENet
:class:`~pointctx.nn.cluenet.GFCBlock` (per-point ``LayerNorm``, Global Feature Clustering and the
depthwise MLP).
"""

from __future__ import annotations

from torch import Tensor, nn

from .._checks import check_positive_int
from .context_cluster import ContextCluster
from .layers import DropPath, LayerScale, Mlp
from .norm import SetGroupNorm

__all__ = ["MixerBlock", "ContextClusterBlock"]


def mlp_hidden(dim: int, mlp_ratio) -> int:
    """The MLP hidden width ``int(dim * mlp_ratio)``, checked (a number > 0 giving >= 1)."""
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not (
            mlp_ratio > 0):
        raise ValueError(f"`mlp_ratio` must be a number > 0, got {mlp_ratio!r}")
    hidden = int(dim * mlp_ratio)
    if hidden < 1:
        raise ValueError(f"`mlp_ratio` = {mlp_ratio} gives no hidden channel for dim = {dim}")
    return hidden


class MixerBlock(nn.Module):
    """Pre-norm residual block: norm, token mixer, layer scale, residual; then the same with an MLP.

    Args:
        dim: channels C (input and output).
        token_mixer: the mixer module, called as ``token_mixer(norm1(x), *mixer_args,
            **mixer_kwargs)``; it returns ``[N, C]`` or a tuple ``([N, C], extra)`` (e.g. an
            assignment), whose ``extra`` :meth:`residual` passes back.
        mlp: the channel MLP, called as ``mlp(norm2(x), *mlp_args)``.
        set_norm: per-set ``GroupNorm(1, C)`` (:class:`~pointctx.nn.norm.SetGroupNorm`, True)
            or per-point ``nn.LayerNorm(C)`` (False).
        norm_eps: ``eps`` of both norms.
        drop_path: stochastic depth probability (whole sets dropped, training only).
        layer_scale_init: initial LayerScale value; None disables LayerScale.

    Attributes:
        norm1, token_mixer, norm2, mlp, layer_scale_1, layer_scale_2 (:class:`~pointctx.nn.
        layers.LayerScale` or ``nn.Identity``), drop_path (:class:`~pointctx.nn.layers.DropPath`).

    Shapes:
        x: [N, C]; batch: [N] sorted set id per point; return: [N, C].
    """

    def __init__(self, dim: int, token_mixer: nn.Module, mlp: nn.Module, set_norm: bool,
                 norm_eps: float = 1e-5, drop_path: float = 0.0,
                 layer_scale_init: float | None = None):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.set_norm = bool(set_norm)
        norm = SetGroupNorm if self.set_norm else nn.LayerNorm
        self.norm1 = norm(dim, eps=norm_eps)
        self.token_mixer = token_mixer
        self.norm2 = norm(dim, eps=norm_eps)
        self.mlp = mlp
        if layer_scale_init is None:
            self.layer_scale_1 = nn.Identity()
            self.layer_scale_2 = nn.Identity()
        else:
            self.layer_scale_1 = LayerScale(dim, layer_scale_init)
            self.layer_scale_2 = LayerScale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path)

    def _norm(self, norm: nn.Module, x: Tensor, batch: Tensor, batch_size: int | None) -> Tensor:
        return norm(x, batch, batch_size) if self.set_norm else norm(x)

    def residual(self, x: Tensor, batch: Tensor, batch_size: int | None = None,
                 mixer_args: tuple = (), mixer_kwargs: dict | None = None,
                 mlp_args: tuple = ()) -> tuple[Tensor, object]:
        """Run the two residual branches.

        Returns:
            ``(x, extra)``: the block output and what the mixer returned beside its output
            (None when it returned a tensor).

        Shapes:
            x: [N, C]; batch: [N]; return: ([N, C], extra).
        """
        mixed = self.token_mixer(self._norm(self.norm1, x, batch, batch_size), *mixer_args,
                                 **(mixer_kwargs or {}))
        extra = None
        if isinstance(mixed, tuple):
            mixed, extra = mixed
        x = x + self.drop_path(self.layer_scale_1(mixed), batch, batch_size)
        y = self.mlp(self._norm(self.norm2, x, batch, batch_size), *mlp_args)
        x = x + self.drop_path(self.layer_scale_2(y), batch, batch_size)
        return x, extra


class ContextClusterBlock(MixerBlock):
    """Pre-norm residual Context Cluster block on packed point sets (the official CoC block).

    A :class:`MixerBlock` with per-set ``GroupNorm(1, C)``, a
    :class:`~pointctx.nn.context_cluster.ContextCluster` token mixer and a point-wise
    :class:`~pointctx.nn.layers.Mlp`.

    Args:
        dim: channels C (input and output).
        mlp_ratio: hidden width of the MLP as a multiple of ``dim`` (``int(dim * mlp_ratio)``).
        heads: Context Cluster heads.
        head_dim: channels per head.
        centers: centers per region (grid cells per axis for the grid proposal); see
            :class:`~pointctx.nn.context_cluster.ContextCluster`.
        regions: region partition per axis, or None (a point competes for all centers of its
            set).
        proposal: center proposal of the Context Cluster layer (default ``"grid"``).
        normalize: aggregation denominator, ``"sim"`` or ``"count"``.
        bounds: grid and region box: None (each set's bounding box) or ``(lo, hi)``; use
            ``(-0.5, 0.5)`` for image pixel positions.
        drop: dropout in the MLP.
        drop_path: stochastic depth probability (whole sets dropped, training only).
        layer_scale_init: initial LayerScale value (official 1e-5); None disables LayerScale.
        act_layer: MLP activation class.
        norm_eps: ``eps`` of both norms.
        cluster_kwargs: extra keyword arguments for the
            :class:`~pointctx.nn.context_cluster.ContextCluster` layer.

    Attributes:
        norm1, norm2: :class:`~pointctx.nn.norm.SetGroupNorm`.
        token_mixer: the :class:`~pointctx.nn.context_cluster.ContextCluster`.
        mlp: :class:`~pointctx.nn.layers.Mlp`.
        layer_scale_1, layer_scale_2: :class:`~pointctx.nn.layers.LayerScale` or ``nn.Identity``.
        drop_path: :class:`~pointctx.nn.layers.DropPath`.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N] sorted set id per point; return: [N, C] (and the
        :class:`~pointctx.nn.context_cluster.Assignment` with ``return_assignment=True``).
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        heads: int = 4,
        head_dim: int = 24,
        centers=2,
        regions=None,
        proposal="grid",
        normalize: str = "sim",
        bounds=None,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = 1e-5,
        act_layer=nn.GELU,
        norm_eps: float = 1e-5,
        cluster_kwargs: dict | None = None,
    ):
        dim = check_positive_int(dim, "dim")
        hidden = mlp_hidden(dim, mlp_ratio)
        mixer = ContextCluster(
            dim, dim, heads=heads, head_dim=head_dim, proposal=proposal, centers=centers,
            regions=regions, normalize=normalize, bounds=bounds, **(cluster_kwargs or {}),
        )
        mlp = Mlp(dim, hidden, act_layer=act_layer, drop=drop)
        super().__init__(dim, mixer, mlp, set_norm=True, norm_eps=norm_eps, drop_path=drop_path,
                         layer_scale_init=layer_scale_init)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor,
        batch_size: int | None = None,
        return_assignment: bool = False,
        *,
        spacing=None,
    ):
        """Run the two residual branches.

        Args:
            x: point features.
            pos: point positions (for the Context Cluster centers and regions).
            batch: sorted set id per point.
            batch_size: number of sets B, if known (saves host syncs).
            return_assignment: also return the Context Cluster assignment.
            spacing: lattice pitch of pixel-like points for the proposal (see
                :class:`~pointctx.nn.context_cluster.ContextCluster`).

        Shapes:
            x: [N, C]; pos: [N, D]; batch: [N]; return: [N, C].
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"`x` must have shape [N, {self.dim}] (dim = {self.dim}), got {tuple(x.shape)}"
            )
        x, assignment = self.residual(x, batch, batch_size, (pos, batch, batch_size),
                                      {"return_assignment": return_assignment,
                                       "spacing": spacing})
        return (x, assignment) if return_assignment else x
