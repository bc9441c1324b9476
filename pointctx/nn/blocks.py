"""The pre-norm residual block of set networks and its Context Cluster and CLUENet forms."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .._checks import check_channels, check_number, check_positive_int
from ..ops.segment import infer_batch_size
from .context_cluster import Assignment, ContextCluster
from .depthwise import DepthwiseMlp, knn_slots
from .gfc import GlobalFeatureClustering
from .layers import DropPath, LayerScale, Mlp
from .norm import SetGroupNorm
from .proposal import Centers

__all__ = ["MixerBlock", "ContextClusterBlock", "GFCBlock", "GFCStage"]


def mlp_hidden(dim: int, mlp_ratio) -> int:
    """The MLP hidden width ``int(dim * mlp_ratio)``, checked (a number > 0 giving >= 1)."""
    check_number(mlp_ratio, "mlp_ratio", 0.0, min_open=True, type_error=ValueError)
    hidden = int(dim * mlp_ratio)
    if hidden < 1:
        raise ValueError(f"`mlp_ratio` = {mlp_ratio} gives no hidden channel for dim = {dim}")
    return hidden


class MixerBlock(nn.Module):
    """Pre-norm residual block: norm, token mixer, layer scale, residual; then the same with an MLP.

    Args:
        dim: channels C (input and output).
        token_mixer: called as ``token_mixer(norm1(x), *mixer_args, **mixer_kwargs)``; returns
            ``[N, C]`` or ``([N, C], extra)``.
        mlp: the channel MLP, called as ``mlp(norm2(x), *mlp_args)``.
        set_norm: per-set ``GroupNorm(1, C)`` (True) or per-point ``LayerNorm`` (False).
        norm_eps: ``eps`` of both norms.
        drop_path: stochastic depth probability (whole sets dropped).
        layer_scale_init: initial LayerScale value; None disables LayerScale.

    Shapes:
        x: [N, C]; batch: [N] sorted set id per point; return: [N, C].
    """

    def __init__(self, dim: int, token_mixer: nn.Module, mlp: nn.Module, set_norm: bool,
                 norm_eps: float = 1e-5, drop_path: float = 0.0,
                 layer_scale_init: float | None = None):
        super().__init__()
        self.dim, self.set_norm = check_positive_int(dim, "dim"), bool(set_norm)
        norm = SetGroupNorm if self.set_norm else nn.LayerNorm
        self.norm1, self.token_mixer = norm(dim, eps=norm_eps), token_mixer
        self.norm2, self.mlp = norm(dim, eps=norm_eps), mlp
        if layer_scale_init is None:
            self.layer_scale_1, self.layer_scale_2 = nn.Identity(), nn.Identity()
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

    Args:
        dim: channels C (input and output).
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        heads, head_dim, centers, regions, proposal, denominator, bounds: of the
            :class:`~pointctx.nn.context_cluster.ContextCluster` mixer.
        drop: dropout in the MLP.
        drop_path: stochastic depth probability (whole sets dropped).
        layer_scale_init: initial LayerScale value (official 1e-5); None disables LayerScale.
        act_layer: MLP activation class.
        norm_eps: ``eps`` of both norms.
        cluster_kwargs: extra keyword arguments of the mixer.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; return: [N, C] (and the assignment with
        ``return_assignment=True``).
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, heads: int = 4, head_dim: int = 24,
                 centers=2, regions=None, proposal="grid", denominator: str = "sim", bounds=None,
                 drop: float = 0.0, drop_path: float = 0.0, layer_scale_init: float | None = 1e-5,
                 act_layer=nn.GELU, norm_eps: float = 1e-5, cluster_kwargs: dict | None = None):
        dim = check_positive_int(dim, "dim")
        hidden = mlp_hidden(dim, mlp_ratio)
        mixer = ContextCluster(dim, dim, heads=heads, head_dim=head_dim, proposal=proposal,
                               centers=centers, regions=regions, denominator=denominator,
                               bounds=bounds, **(cluster_kwargs or {}))
        mlp = Mlp(dim, hidden, act_layer=act_layer, drop=drop)
        super().__init__(dim, mixer, mlp, set_norm=True, norm_eps=norm_eps, drop_path=drop_path,
                         layer_scale_init=layer_scale_init)

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None,
                return_assignment: bool = False, *, spacing=None):
        """Run the two residual branches (arguments as :class:`ContextCluster`)."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"`x` must have shape [N, {self.dim}] (dim = {self.dim}), got {tuple(x.shape)}")
        x, assignment = self.residual(x, batch, batch_size, (pos, batch, batch_size),
                                      {"return_assignment": return_assignment, "spacing": spacing})
        return (x, assignment) if return_assignment else x


class GFCBlock(MixerBlock):
    """Pre-norm residual CLUENet block with the GFC mixer and the depthwise MLP.

    Args:
        dim: channels C.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        heads, head_dim, proposal, centers, bounds, assign, min_tau: see
            :class:`GlobalFeatureClustering`.
        drop, drop_path, layer_scale_init, act_layer, norm_eps: as :class:`ContextClusterBlock`.
        dwconv: depthwise convolution in the MLP (official).
        mixer_kwargs: extra keyword arguments of the mixer.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; return: [N, C]. The MLP convolution uses
        ``coords``/``grid_size`` (pixel sets), ``neighbors`` or the 9 nearest neighbours.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, heads: int = 4, head_dim: int = 24,
                 proposal="grid", centers=7, bounds=None, assign: bool = True,
                 min_tau: float = 1e-4, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init: float | None = None, dwconv: bool = True, act_layer=nn.GELU,
                 norm_eps: float = 1e-5, mixer_kwargs: dict | None = None):
        dim = check_positive_int(dim, "dim")
        hidden = mlp_hidden(dim, mlp_ratio)
        mixer = GlobalFeatureClustering(
            dim, dim, heads=heads, head_dim=head_dim, proposal=proposal, centers=centers,
            bounds=bounds, assign=assign, min_tau=min_tau, **(mixer_kwargs or {}))
        mlp = DepthwiseMlp(dim, hidden, act_layer=act_layer, drop=drop, dwconv=dwconv)
        super().__init__(dim, mixer, mlp, set_norm=False, norm_eps=norm_eps,
                         drop_path=drop_path, layer_scale_init=layer_scale_init)

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None, *,
                proposed: Centers | None = None, assignment: Assignment | None = None,
                coords: Tensor | None = None, grid_size: Sequence[int] | None = None,
                neighbors: Tensor | None = None, return_assignment: bool = False):
        """Run the two residual branches (arguments as :class:`GlobalFeatureClustering`)."""
        check_channels(x, self.dim)
        if (self.mlp.dwconv is not None and coords is None and neighbors is None):
            neighbors = knn_slots(pos, batch, batch_size)
        x, assignment = self.residual(
            x, batch, batch_size, (pos, batch, batch_size),
            {"proposed": proposed, "assignment": assignment, "return_assignment": True},
            (batch, batch_size, coords, grid_size, neighbors))
        return (x, assignment) if return_assignment else x


class GFCStage(nn.Module):
    """A stack of :class:`GFCBlock` sharing centers, neighbourhoods and (optionally) assignments.

    Args:
        dim: channels C.
        depth: number of blocks.
        share_assignment: reuse the first block's assignment in the following blocks.
        drop_path: one rate for all blocks or one per block.
        **block_kwargs: keyword arguments of :class:`GFCBlock`.

    Shapes:
        x: [N, C]; pos: [N, D]; batch: [N]; return: [N, C] (and the blocks' assignments with
        ``return_assignment=True``).
    """

    def __init__(self, dim: int, depth: int, share_assignment: bool = True, drop_path=0.0,
                 **block_kwargs):
        super().__init__()
        depth = check_positive_int(depth, "depth")
        self.share_assignment = bool(share_assignment)
        rates = list(drop_path) if isinstance(drop_path, Sequence) else [drop_path] * depth
        if len(rates) != depth:
            raise ValueError(f"`drop_path` must have one rate per block ({depth}), got "
                             f"{len(rates)}")
        self.blocks = nn.ModuleList([
            GFCBlock(dim, assign=(i == 0 or not self.share_assignment), drop_path=rates[i],
                     **block_kwargs)
            for i in range(depth)])

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, batch_size: int | None = None, *,
                proposed: Centers | None = None, coords: Tensor | None = None,
                grid_size: Sequence[int] | None = None, neighbors: Tensor | None = None,
                return_assignment: bool = False):
        """Run the blocks (``proposed`` default: the first block's proposal on ``pos``)."""
        b = infer_batch_size(batch, batch_size)
        if proposed is None:
            proposed = self.blocks[0].token_mixer.proposal(pos, batch, b)
        if self.blocks[0].mlp.dwconv is not None and coords is None and neighbors is None:
            neighbors = knn_slots(pos, batch, b)
        assignment = None
        seen = []
        for block in self.blocks:
            x, res = block(x, pos, batch, b, proposed=proposed,
                           assignment=assignment if self.share_assignment else None, coords=coords,
                           grid_size=grid_size, neighbors=neighbors, return_assignment=True)
            assignment = res if assignment is None else assignment
            seen.append(res)
        return (x, seen) if return_assignment else x
