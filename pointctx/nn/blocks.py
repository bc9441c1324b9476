"""``ContextClusterBlock``: the pre-norm residual block of Context Cluster networks, on ragged sets.

::

    x = x + drop_path(layer_scale_1(cluster(norm1(x), pos)))
    x = x + drop_path(layer_scale_2(mlp(norm2(x))))

as the official block (Ma et al., ICLR 2023), with ``norm`` the per-set ``GroupNorm(1, C)``
(:class:`~pointctx.nn.norm.SetGroupNorm`), the token mixer a
:class:`~pointctx.nn.context_cluster.ContextCluster`, and stochastic depth dropping whole sets.
"""

from __future__ import annotations

from torch import Tensor, nn

from .._checks import check_positive_int
from .context_cluster import ContextCluster
from .layers import DropPath, LayerScale, Mlp
from .norm import SetGroupNorm

__all__ = ["ContextClusterBlock"]


class ContextClusterBlock(nn.Module):
    """Pre-norm residual Context Cluster block on packed point sets.

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
        super().__init__()
        dim = check_positive_int(dim, "dim")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not (
                mlp_ratio > 0):
            raise ValueError(f"`mlp_ratio` must be a number > 0, got {mlp_ratio!r}")
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"`mlp_ratio` = {mlp_ratio} gives no hidden channel for dim = {dim}")
        self.dim = dim
        self.norm1 = SetGroupNorm(dim, eps=norm_eps)
        self.token_mixer = ContextCluster(
            dim, dim, heads=heads, head_dim=head_dim, proposal=proposal, centers=centers,
            regions=regions, normalize=normalize, bounds=bounds, **(cluster_kwargs or {}),
        )
        self.norm2 = SetGroupNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden, act_layer=act_layer, drop=drop)
        if layer_scale_init is None:
            self.layer_scale_1 = nn.Identity()
            self.layer_scale_2 = nn.Identity()
        else:
            self.layer_scale_1 = LayerScale(dim, layer_scale_init)
            self.layer_scale_2 = LayerScale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path)

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
        mixed = self.token_mixer(self.norm1(x, batch, batch_size), pos, batch, batch_size,
                                 return_assignment=return_assignment, spacing=spacing)
        assignment = None
        if return_assignment:
            mixed, assignment = mixed
        x = x + self.drop_path(self.layer_scale_1(mixed), batch, batch_size)
        x = x + self.drop_path(self.layer_scale_2(self.mlp(self.norm2(x, batch, batch_size))),
                               batch, batch_size)
        return (x, assignment) if return_assignment else x
