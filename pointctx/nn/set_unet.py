"""A U-Net decoder on sets: feature propagation through every stage, down to the input points.

:class:`SetUNetDecoder` (PointNet++'s FP layers on a backbone's stages), its
:class:`LocalBlocks` (local context after every step) and :class:`LatticeFill` (the pixels
missing from a pixel set). Design and results: docs/segmentation-unet.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_number, check_positive_int
from ..batch import PointBatch
from ..ops.grid import pixel_index
from ..ops.hole_fill import fill_holes
from ..ops.interpolate import _check_eps
from .depthwise import SetDepthwiseConv, knn_slots
from .layers import Linear
from .propagation import FeaturePropagation, apply_norm, make_norm

__all__ = ["SetUNetDecoder", "LocalBlocks", "LatticeFill"]


class LocalBlocks(nn.Module):
    """Residual blocks of local context: ``h + Linear(GELU(dwconv3x3(Linear(norm(h)))))``.

    The depthwise convolution is :class:`~pointctx.nn.depthwise.SetDepthwiseConv`: the lattice
    convolution on pixel sets (missing pixels count as 0), the 9 nearest points elsewhere.

    Args:
        channels: channels C.
        blocks: number of blocks (>= 0).
        expand: hidden width of the blocks, in multiples of C.
        norm: pre-norm of the blocks (see :data:`~pointctx.nn.propagation.NORMS`).
        backend: kNN backend for point sets.

    Shapes:
        h: [N, C]; pos: [N, D]; batch: [N]; coords: [N, 2] (pixel sets); return: [N, C].
    """

    def __init__(self, channels: int, blocks: int = 1, expand: int = 1, norm="group",
                 backend: str | None = None):
        super().__init__()
        c = check_positive_int(channels, "channels")
        hidden = c * check_positive_int(expand, "expand")
        blocks = check_positive_int(blocks, "blocks", minimum=0)
        self.backend = backend
        self.norms = nn.ModuleList(make_norm(norm, c) for _ in range(blocks))
        self.fc1 = nn.ModuleList(Linear(c, hidden) for _ in range(blocks))
        self.convs = nn.ModuleList(SetDepthwiseConv(hidden) for _ in range(blocks))
        self.fc2 = nn.ModuleList(Linear(hidden, c) for _ in range(blocks))
        self.act = nn.GELU()

    def forward(self, h: Tensor, pos: Tensor, batch: Tensor, batch_size: int,
                coords: Tensor | None = None, grid_size: Sequence[int] | None = None) -> Tensor:
        """Apply the blocks (lattice convolution with ``coords``/``grid_size``)."""
        nbr = None
        if coords is None and len(self.convs):
            nbr = knn_slots(pos, batch, batch_size, backend=self.backend)
        for norm, fc1, conv, fc2 in zip(self.norms, self.fc1, self.convs, self.fc2):
            t = fc1(apply_norm(norm, h, batch, batch_size))
            h = h + fc2(self.act(conv(t, batch, batch_size, coords, grid_size, nbr)))
        return h


class SetUNetDecoder(nn.Module):
    """Coarse-to-fine feature propagation with a skip at every stage and at the input points.

    Args:
        in_channels: channels of every stage, finest first.
        num_classes: output classes K.
        input_channels: channels of the input points' features (the last skip; 0: none).
        channels: output width of every step, finest first: ``channels[0]`` at the input
            points, ``channels[i]`` at stage ``i - 1``; one int for all.
        k: neighbours of the interpolations (3).
        mlp_layers: MLP layers per step (>= 1).
        norm: norm of the MLPs (``"group"``: per set, ``"batch"``, ``"none"``).
        drop: dropout before the classifier.
        local_blocks: :class:`LocalBlocks` after the last step, at the input points.
        stage_blocks: :class:`LocalBlocks` after every step onto a stage (pixel sets: on the
            stage's lattice).
        eps: added to squared distances in the interpolation weights.
        backend: kNN backend (see :mod:`pointctx.ops`).
        fill: pixel sets: options of :attr:`fill`, the :class:`LatticeFill` that predicts
            the pixels missing from the input (default: no prior).

    Shapes:
        stages: PointBatch per stage (x [M_i, in_channels[i]], pos [M_i, D], B sets);
        x: [N, input_channels]; pos: [N, D]; batch: [N]; coords: [N, 2]; return: [N, K].
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, input_channels: int = 0,
                 channels=32, k: int = 3, mlp_layers: int = 1, norm="group",
                 drop: float = 0.1, eps: float = 1e-16, backend: str | None = None,
                 local_blocks: int = 0, stage_blocks: int = 0, fill=None):
        super().__init__()
        in_channels = [check_positive_int(c, "in_channels") for c in in_channels]
        if not in_channels:
            raise ValueError("`in_channels` must list at least one stage, got []")
        n = len(in_channels)
        channels = [channels] * n if isinstance(channels, int) else list(channels)
        if len(channels) != n:
            raise ValueError(f"`channels` must give one width per stage ({n}: the input points, "
                             f"then stages 0..{n - 2}), got {len(channels)}")
        channels = [check_positive_int(c, "channels") for c in channels]
        self.in_channels = in_channels
        self.input_channels = check_positive_int(input_channels, "input_channels", minimum=0)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.k = check_positive_int(k, "k")
        self.eps = _check_eps(eps)
        self.backend = backend
        mlp_layers = check_positive_int(mlp_layers, "mlp_layers")
        check_number(drop, "drop", 0.0, 1.0, max_open=True, type_error=ValueError)
        self.stage_norms = nn.ModuleList(make_norm(norm, c) for c in in_channels)
        # steps[j] goes from stage n-1-j to stage n-2-j (the last one to the input points)
        self.steps = nn.ModuleList()
        c = in_channels[-1]
        for i in reversed(range(n)):
            skip = in_channels[i - 1] if i else self.input_channels
            self.steps.append(FeaturePropagation(c, [channels[i]] * mlp_layers, skip, k=k,
                                                 norm=norm, eps=eps, backend=backend))
            c = channels[i]
        stage_blocks = check_positive_int(stage_blocks, "stage_blocks", minimum=0)
        local_blocks = check_positive_int(local_blocks, "local_blocks", minimum=0)
        # blocks[j] follows steps[j]
        self.blocks = nn.ModuleList(
            LocalBlocks(channels[i], stage_blocks if i else local_blocks, norm=norm,
                        backend=backend) for i in reversed(range(n)))
        self.drop = nn.Dropout(float(drop))
        self.classifier = Linear(c, self.num_classes)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)
        self.fill = LatticeFill(self.num_classes, **(fill or {"prior_size": None}))

    def forward(self, stages: Sequence[PointBatch], x: Tensor | None, pos: Tensor,
                batch: Tensor, grids: Sequence | None = None, coords: Tensor | None = None,
                grid_size: Sequence[int] | None = None) -> Tensor:
        """Logits at the input points.

        Args:
            stages: one PointBatch per stage, finest first, all with the same B sets.
            x: the input points' features (None iff ``input_channels`` is 0).
            pos: the input points' positions, in the stages' frame.
            batch: sorted set id of every input point.
            grids: optional ``(cell_size, origin)`` per stage, finest first, of a lattice with
                at most one point per cell (grid neighbour search; same result, faster).
            coords: pixel sets: the input points' lattice ``(row, col)`` (for ``local_blocks``;
                without it they use the 9 nearest input points). The stages' own lattices
                come from their ``coords`` / ``grid_size`` attributes when they have them.
            grid_size: pixel sets: ``(H, W)``.

        Shapes:
            x: [N, input_channels]; pos: [N, D]; batch: [N]; return: [N, K].
        """
        if (x is None) != (self.input_channels == 0):
            raise ValueError(f"`x` must be given iff input_channels > 0 (it is "
                             f"{self.input_channels})")
        n = len(self.in_channels)
        if len(stages) != n:
            raise ValueError(f"`stages` must hold {n} stages (in_channels), got {len(stages)}")
        b = stages[0].num_sets
        if any(s.num_sets != b for s in stages):
            raise ValueError(f"every stage must hold the same B = {b} sets, got "
                             f"{[s.num_sets for s in stages]}")
        cells = list(grids) if grids is not None else [None] * n
        feats = [apply_norm(norm, s.x, s.batch, b) for s, norm in zip(stages, self.stage_norms)]
        h = feats[-1]
        for step, i in zip(self.steps, reversed(range(n))):
            src = stages[i]
            if i:
                skip, q_pos, q_batch = feats[i - 1], stages[i - 1].pos, stages[i - 1].batch
            else:
                skip, q_pos, q_batch = x, pos, batch
            kw = {} if cells[i] is None else {"cell_size": cells[i][0],
                                              "cell_origin": cells[i][1]}
            h = step(h, src.pos, q_pos, src.batch, q_batch, skip=skip, batch_size=b, **kw)
            if i:
                dst = stages[i - 1]
                lattice = (getattr(dst, "coords", None), getattr(dst, "grid_size", None))
            else:
                lattice = (coords, grid_size)
            h = self.blocks[n - 1 - i](h, q_pos, q_batch, b, *lattice)
        return self.classifier(self.drop(h))


class LatticeFill(nn.Module):
    """Logits at every pixel from a pixel set's stage-0 cells: holes filled, then upsampled.

    :func:`~pointctx.ops.hole_fill.fill_holes` fills the lattice's empty cells; every cell then
    moves towards a learned layout prior (a ``prior_size`` map over the image plane) by
    ``sigmoid(a * log(1 + d) + b)``: ``d`` is the side of the block its value came from minus
    one, ``a`` and ``b`` are learned. Bilinear upsampling by the stride gives every pixel.

    Args:
        num_classes: K.
        prior_size: ``(rows, cols)`` of the prior map (None: no prior).
        prior_scale: the map is stored divided by this, which multiplies its learning rate
            under Adam (a prior of a few nats is learned within a short schedule).

    Shapes:
        logits: [M, K]; coords: [M, 2] (row, col on the lattice); batch: [M];
        return: [B, K, H, W].
    """

    def __init__(self, num_classes: int, prior_size: Sequence[int] | None = (8, 8),
                 prior_scale: float = 10.0):
        super().__init__()
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.prior_scale = float(check_number(prior_scale, "prior_scale", 0.0, min_open=True,
                                              type_error=ValueError))
        self.prior = self.gate = None
        if prior_size is not None:
            if not isinstance(prior_size, Sequence) or len(prior_size) != 2:
                raise ValueError(f"`prior_size` must be (rows, cols) or None, got {prior_size!r}")
            rows, cols = (check_positive_int(n, "prior_size") for n in prior_size)
            self.prior = nn.Parameter(torch.zeros(num_classes, rows, cols))
            self.gate = nn.Parameter(torch.tensor([2.0, -4.0]))  # a, b

    def forward(self, logits: Tensor, coords: Tensor, batch: Tensor, batch_size: int,
                grid_size: Sequence[int], stride: Sequence[int],
                image_size: Sequence[int]) -> Tensor:
        """Every pixel's logits from the cells' (see the class docstring)."""
        (rows, cols), k = grid_size, logits.shape[1]
        site = pixel_index(coords, grid_size, batch)
        grid = logits.new_zeros(batch_size * rows * cols, k).index_copy_(0, site, logits)
        known = torch.zeros(batch_size * rows * cols, dtype=torch.bool, device=logits.device)
        known[site] = True
        filled = fill_holes(grid.view(batch_size, rows, cols, k).permute(0, 3, 1, 2),
                            known.view(batch_size, rows, cols))
        values = filled.values
        if self.prior is not None:
            prior = F.interpolate(self.prior[None] * self.prior_scale, size=(rows, cols),
                                  mode="bilinear", align_corners=False)
            a, b = self.gate.unbind()
            w = torch.sigmoid(a * filled.level.unsqueeze(1).to(values.dtype) * math.log(2) + b)
            values = values + w * (prior - values)
        up = F.interpolate(values, size=(rows * stride[0], cols * stride[1]), mode="bilinear",
                           align_corners=False)
        return up[:, :, :image_size[0], :image_size[1]].to(logits.dtype)  # the prior: float32
