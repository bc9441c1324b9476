"""The classifier base of every registered set model (CoC, CLUENet, PointMLP)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from ..batch import PointBatch
from ..nn.layers import Linear
from ..ops.scatter import scatter_mean
from ._helpers import check_io
from ._inputs import PackedInput, check_nonempty_sets, pack_input, padded_batch, pool_pixels
from ._stages import StageBatch


class SetClassifier(nn.Module):
    """Base class: classifier head, input packing and ``forward`` for set classifiers."""

    num_features: int
    num_classes: int
    in_channels: int
    pos_dim: int
    # the attribute holding the classifier (its name is part of the state_dict keys)
    head_name: str = "head"

    def _make_head(self, num_classes: int) -> nn.Module:
        """A classifier from ``num_features`` to ``num_classes`` (``nn.Identity`` for 0)."""
        if num_classes == 0:
            return nn.Identity()
        head = Linear(self.num_features, num_classes)
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        return head

    def get_classifier(self) -> nn.Module:
        """The classifier (``nn.Identity`` with 0 classes)."""
        return getattr(self, self.head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none)."""
        self.num_classes = check_positive_int(num_classes, "num_classes", minimum=0)
        device = next(self.parameters()).device
        setattr(self, self.head_name, self._make_head(self.num_classes).to(device))

    #: :meth:`forward` refuses empty sets (an image whose mask keeps no pixel, a point set
    #: without points): it would return made-up logits for them. The features
    #: (:meth:`forward_features`, ``forward_stages``) of an empty set are simply empty; a dense /
    #: per-point model on this backbone sets it to True.
    allow_empty_sets: bool = False
    #: ``forward_stages`` takes empty sets (their stages are empty).
    stages_allow_empty: bool = True

    def pack(self, inputs, mask: Tensor | None = None, append_pos: bool = False,
             input_pool: int = 1) -> PackedInput:
        """Check and flatten the inputs (see :func:`pointctx.models._inputs.pack_input`)."""
        packed = pack_input(inputs, mask, in_channels=self.in_channels, pos_dim=self.pos_dim,
                            dtype=self.param_dtype, allow_empty=True, append_pos=append_pos)
        return pool_pixels(packed, input_pool)

    @property
    def param_dtype(self) -> torch.dtype:
        """Floating dtype of the parameters: inputs are cast to it."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()),
                    torch.get_default_dtype())

    def forward_features(self, inputs, *args, **kwargs):
        """The last stage's points and features, as a :class:`~pointctx.PointBatch`."""
        raise NotImplementedError

    def forward_head(self, features, pre_logits: bool = False) -> Tensor:
        """Pool every set of ``features`` and classify (``pre_logits``: the pooled features)."""
        raise NotImplementedError

    def forward(self, inputs, *args, **kwargs) -> Tensor:
        """Classify every set: ``forward_head(forward_features(inputs, *args, **kwargs))``.

        Shapes:
            inputs: [B, C, H, W] (mask [B, H, W]) or a PointBatch of B sets (PointMLP also a
            padded [B, Nmax, D]); return: [B, num_classes].
        """
        feats = self.forward_features(inputs, *args, **kwargs)
        if not self.allow_empty_sets:
            check_nonempty_sets(feats.sizes, isinstance(inputs, Tensor) and inputs.dim() == 4)
        return self.forward_head(feats)


class StagedClassifier(SetClassifier):
    """A :class:`SetClassifier` whose stages run in one loop, ``_run`` (CoC, CLUENet)."""

    def _init_io(self, num_classes, in_channels, pos_dim, embed_dims) -> None:
        """Check and set the model's inputs and outputs and its stage widths."""
        self.num_classes, self.in_channels, self.pos_dim = check_io(num_classes, in_channels,
                                                                    pos_dim)
        self.embed_dims = list(embed_dims)
        self.num_features = self.embed_dims[-1]

    def _init_head(self, norm: nn.Module, drop_rate: float) -> None:
        """Set the head: ``norm``, dropout and the linear classifier ``head``."""
        self.norm, self.head_drop = norm, nn.Dropout(drop_rate)
        self.head = self._make_head(self.num_classes)

    def forward_features(self, inputs, mask: Tensor | None = None, input_pool: int = 1,
                         lengths: Tensor | None = None,
                         features: Tensor | None = None) -> PointBatch:
        """Stem, stages and reducers / pools: features of the last stage's points.

        Args:
            inputs: images ``[B, C, H, W]``, a :class:`~pointctx.PointBatch` or padded points
                ``[B, Nmax, D]``.
            mask: optional bool ``[B, H, W]`` pixel mask for image inputs.
            input_pool: pixel sets: pool every ``f x f`` block into one point first (1: off).
            lengths: padded points: valid rows per set ``[B]``.
            features: padded points: features ``[B, Nmax, C]``.

        Shapes:
            return: x [M, embed_dims[-1]], pos [M, 2] (pixel sets) or [M, D], batch [M].
        """
        return self._run(self._packed(inputs, mask, input_pool, lengths, features), False)

    def forward_stages(self, inputs, mask: Tensor | None = None, input_pool: int = 1,
                       lengths: Tensor | None = None,
                       features: Tensor | None = None) -> list[StageBatch]:
        """Features of every stage (the contract of :class:`SetClassifier`).

        Shapes:
            return: one StageBatch per stage: x [M_i, embed_dims[i]], pos [M_i, 2 or D].
        """
        return self._run(self._packed(inputs, mask, input_pool, lengths, features), True)

    def _packed(self, inputs, mask, input_pool, lengths, features) -> PackedInput:
        """Checked and packed inputs (padded points as a PointBatch first), pooled by ``f``."""
        padded = isinstance(inputs, Tensor) and inputs.dim() == 3 \
            and inputs.shape[-1] == self.pos_dim
        if padded or lengths is not None or features is not None:
            inputs = padded_batch(inputs, lengths, features, self.param_dtype)
        return self.pack(inputs, mask, append_pos=True, input_pool=input_pool)

    def _run(self, packed: PackedInput, collect: bool):
        raise NotImplementedError

    def _norm_features(self, x: Tensor, batch: Tensor, b: int) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: PointBatch, pre_logits: bool = False) -> Tensor:
        """The norm (``_norm_features``), mean over each set's points, dropout and the classifier.

        Args:
            features: the output of :meth:`forward_features`.
            pre_logits: return the pooled features instead of the logits.

        Shapes:
            return: [B, num_classes], or [B, embed_dims[-1]] with ``pre_logits``.
        """
        b = features.num_sets
        x = scatter_mean(self._norm_features(features.x, features.batch, b), features.batch, b)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)
