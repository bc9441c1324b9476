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
    """Base class: classifier head, input packing and ``forward`` for set classifiers."""

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

    def pack(self, inputs, mask: Tensor | None = None, append_pos: bool = False) -> PackedInput:
        """Check and flatten the inputs (see :func:`pointctx.models._inputs.pack_input`)."""
        return pack_input(inputs, mask, in_channels=self.in_channels, pos_dim=self.pos_dim,
                          append_pos=append_pos)

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
