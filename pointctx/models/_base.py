"""Shared plumbing of the image/point-set classifiers (CoC, CLUENet).

:class:`SetClassifier` holds what every such model does the same way: the linear head
(timm's ``get_classifier`` / ``reset_classifier``), input packing through
:func:`~pointctx.models._inputs.pack_input`, and ``forward = forward_head(forward_features(.))``.
Subclasses set ``num_features``, ``num_classes``, ``in_channels``, ``pos_dim`` and a ``norm``
module (whose weight tells the device), and implement ``forward_features`` / ``forward_head``.
"""

from __future__ import annotations

from torch import Tensor, nn

from .._checks import check_positive_int
from ._inputs import PackedInput, pack_input


class SetClassifier(nn.Module):
    """Base class: classifier head, input packing and ``forward`` for set classifiers.

    **Per-stage features contract** (dense prediction; the ragged counterpart of timm's
    ``features_only``). Every backbone implements ``forward_stages(inputs, ...)`` taking the
    inputs of its ``forward`` and returning a list with one
    :class:`~pointctx.models._stages.StageBatch` (a :class:`~pointctx.PointBatch`) per stage,
    finest first. Stage ``i`` carries:

    * ``pos [M_i, D]``: its points' positions (pixel sets: the image-plane positions in
      ``[-0.5, 0.5]`` that the model clusters on, x = column then y = row; general point sets:
      the input frame), the same frame for every stage, so features of one stage can be
      interpolated onto another's points or onto any query position;
    * ``batch [M_i]`` / ``ptr``: the set of every point; all stages hold the same ``B`` sets in
      the input's order (an empty input set stays empty in every stage);
    * ``x [M_i, C_i]``: the stage's output features (``C_i = embed_dims[i]``);
    * ``link [2, E_i]``: pairs ``(point of stage i, point of stage i - 1 it was pooled from)``,
      sorted, without duplicates; every point has at least one parent, always in its own set;
      the parents of stage 0 are the input points (rows of the packed input). What "pooled
      from" means per backbone: CoC, the reducer's window (stem cell, then the 3x3 stride-2
      window; on general point sets the anchor's kNN slots); CLUENet, the skip reducer's window
      plus the points that joined the anchor's cluster in Improved Cluster Pooling; PointMLP,
      the FPS anchor's kNN group (its stage 0 is the per-point embedding, linked to itself).
    * ``stride``: for pixel sets the ``(row, col)`` pixels per lattice cell of the stage, else
      None.

    ``forward_stages(x)[-1]`` has the points and features of ``forward_features(x)``. The
    segmentation models (:mod:`pointctx.models.segmentation`) are built on this contract, and
    ``tests/models/test_stages.py`` checks it for every backbone.
    """

    num_features: int
    num_classes: int
    in_channels: int
    pos_dim: int

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        head = nn.Linear(self.num_features, num_classes)
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        return head

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` with 0 classes)."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none)."""
        self.num_classes = check_positive_int(num_classes, "num_classes", minimum=0)
        device = self.norm.weight.device
        self.head = self._make_head(self.num_classes).to(device)

    def pack(self, inputs, mask: Tensor | None = None) -> PackedInput:
        """Check and flatten the inputs (see :func:`pointctx.models._inputs.pack_input`)."""
        return pack_input(inputs, mask, in_channels=self.in_channels, pos_dim=self.pos_dim)

    def forward_features(self, inputs, mask: Tensor | None = None):  # pragma: no cover
        raise NotImplementedError

    def forward_head(self, features, pre_logits: bool = False) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, inputs, mask: Tensor | None = None) -> Tensor:
        """Classify every set.

        Shapes:
            inputs: [B, C, H, W] (mask [B, H, W]) or a PointBatch of B sets; return:
            [B, num_classes].
        """
        return self.forward_head(self.forward_features(inputs, mask))
