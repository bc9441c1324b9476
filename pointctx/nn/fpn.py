"""A Semantic-FPN-style segmentation head for ragged multi-stage features."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .._checks import check_number, check_positive_int
from ..batch import PointBatch
from ..ops.interpolate import _check_eps, knn_interpolate
from .layers import Linear
from .norm import SetGroupNorm
from .propagation import SharedMlp

__all__ = ["SemanticFPNHead"]


class SemanticFPNHead(nn.Module):
    """Lateral projection per stage, propagation to the finest stage, sum, MLP, classifier.

    Args:
        in_channels: channels of every stage, finest first.
        num_classes: output classes K.
        channels: common width of the laterals and the MLP (Semantic FPN: 128).
        k: neighbours of the interpolations (3).
        mlp_layers: layers of the fusion MLP after the sum (>= 1).
        norm: norm of the fusion MLP (``"group"``: per set, ``"batch"``, ``"none"``).
        stage_norm: normalise every stage (per-set GroupNorm) before its lateral.
        drop: dropout before the classifier (mmseg's Semantic FPN: 0.1).
        eps: added to squared distances in the interpolation weights.
        backend: kNN backend (see :mod:`pointctx.ops`).

    Shapes:
        stages: PointBatch per stage (x [M_i, in_channels[i]], pos [M_i, D], B sets);
        pos_query: [Nq, D]; batch_query: [Nq]; return: [Nq, K] (or [M_0, K] without queries).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 128,
                 k: int = 3, mlp_layers: int = 1, norm="group", stage_norm: bool = True,
                 drop: float = 0.1, eps: float = 1e-16, backend: str | None = None):
        super().__init__()
        in_channels = [check_positive_int(c, "in_channels") for c in in_channels]
        if not in_channels:
            raise ValueError("`in_channels` must list at least one stage, got []")
        self.in_channels = in_channels
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.channels, self.k = check_positive_int(channels, "channels"), check_positive_int(k, "k")
        mlp_layers = check_positive_int(mlp_layers, "mlp_layers")
        check_number(drop, "drop", 0.0, 1.0, max_open=True, type_error=ValueError)
        self.eps, self.backend = _check_eps(eps), backend
        self.stage_norms = nn.ModuleList(
            [SetGroupNorm(c) if stage_norm else nn.Identity() for c in in_channels])
        self.laterals = nn.ModuleList([Linear(c, self.channels) for c in in_channels])
        self.fuse = SharedMlp(self.channels, [self.channels] * mlp_layers, norm=norm)
        self.drop = nn.Dropout(float(drop))
        self.classifier = Linear(self.channels, self.num_classes)
        for lin in [*self.laterals, self.classifier]:
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def _interp(self, x, src: PointBatch, pos_q, batch_q, b, grid):
        kw = {} if grid is None else {"cell_size": grid[0], "cell_origin": grid[1]}
        return knn_interpolate(x, src.pos, pos_q, src.batch, batch_q, self.k, batch_size=b,
                               eps=self.eps, backend=self.backend, **kw)

    def forward(self, stages: Sequence[PointBatch], pos_query: Tensor | None = None,
                batch_query: Tensor | None = None, grids: Sequence | None = None) -> Tensor:
        """Logits at the query positions (default: at the finest stage's points).

        Args:
            stages: one PointBatch per stage, finest first, all with the same B sets.
            pos_query: query positions in the frame of the stages' ``pos``.
            batch_query: sorted set id per query (None: one set).
            grids: per-stage ``(cell_size, origin)`` of a one-point-per-cell lattice (faster kNN).
        """
        if len(stages) != len(self.in_channels):
            raise ValueError(f"`stages` must hold {len(self.in_channels)} stages (in_channels), "
                             f"got {len(stages)}")
        cells = list(grids) if grids is not None else [None] * len(stages)
        fine = stages[0]
        b = fine.num_sets
        acc = None
        for i, (stage, norm, lateral) in enumerate(zip(stages, self.stage_norms, self.laterals)):
            if stage.num_sets != b:
                raise ValueError(f"every stage must hold the same B = {b} sets, stage {i} has "
                                 f"{stage.num_sets}")
            x = stage.x
            x = norm(x, stage.batch, b) if isinstance(norm, SetGroupNorm) else norm(x)
            x = lateral(x)
            if i > 0:
                x = self._interp(x, stage, fine.pos, fine.batch, b, cells[i])
            acc = x if acc is None else acc + x
        logits = self.classifier(self.drop(self.fuse(acc, fine.batch, b)))
        if pos_query is None:
            return logits
        return self._interp(logits, fine, pos_query, batch_query, b, cells[0])
