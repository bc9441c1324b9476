"""The classifier base of every registered set model (CoC, CLUENet, PointMLP).

:class:`SetClassifier` is the one contract all backbones share, as timm's models do:

* ``forward_features(inputs, ...) -> PointBatch``: the last stage's points and features (the
  extra arguments are the model's input options: ``mask`` for image models, ``lengths`` /
  ``features`` for PointMLP's padded tensors);
* ``forward_head(features, pre_logits=False) -> [B, num_classes]`` (or the pooled features);
* ``forward(inputs, ...) = forward_head(forward_features(inputs, ...))``;
* ``get_classifier()`` / ``reset_classifier(num_classes)`` (0 classes: no classifier, the model
  returns pooled features);
* ``pack(inputs, mask)``: image tensors (+ mask) or a ``PointBatch`` checked and flattened by
  :func:`~pointctx.models._inputs.pack_input`.

Subclasses set ``num_features``, ``num_classes``, ``in_channels`` and ``pos_dim``, build their
classifier with :meth:`SetClassifier._make_head` (a linear layer by default; override it for
another head) into the attribute named by ``head_name``, and implement ``forward_features`` /
``forward_head``. :class:`StagedClassifier` implements both, and ``forward_stages``, for the
image models whose stages run in one loop (CoC, CLUENet).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from ..batch import PointBatch
from ..nn.layers import Linear
from ..ops.scatter import scatter_mean
from ._helpers import check_io
from ._inputs import PackedInput, check_nonempty_sets, pack_input, pool_pixels
from ._stages import StageBatch


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

    def pack(self, inputs, mask: Tensor | None = None, append_pos: bool = False,
             input_pool: int = 1) -> PackedInput:
        """Check and flatten the inputs (see :func:`pointctx.models._inputs.pack_input`).

        ``input_pool > 1`` pools the pixels of every ``f x f`` block of a pixel set into one
        point (:func:`pointctx.models._inputs.pool_pixels`, a documented deviation).
        """
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
    """A :class:`SetClassifier` whose stages run in one loop, ``_run`` (CoC, CLUENet).

    Subclasses implement ``_run(inputs, mask, collect, input_pool)`` (the last stage's
    :class:`~pointctx.PointBatch`, or with ``collect`` one
    :class:`~pointctx.models._stages.StageBatch` per stage) and ``_norm_features(x, batch, b)``
    (the norm before the head's mean pooling), and own ``head_drop`` and ``head``. ``_run``
    packs with :meth:`SetClassifier.pack` (which applies ``input_pool``), starts the stride count
    at ``packed.input_pool`` and links stage 0 to the input points
    (:func:`~pointctx.models._stages.link_through`).
    """

    def _init_io(self, num_classes, in_channels, pos_dim, embed_dims) -> None:
        """Check and set the model's inputs and outputs and its stage widths.

        Sets ``num_classes``, ``in_channels``, ``pos_dim`` (checked), ``embed_dims`` and
        ``num_features`` (the last stage's channels).
        """
        self.num_classes, self.in_channels, self.pos_dim = check_io(num_classes, in_channels,
                                                                    pos_dim)
        self.embed_dims = list(embed_dims)
        self.num_features = self.embed_dims[-1]

    def forward_features(self, inputs, mask: Tensor | None = None,
                         input_pool: int = 1) -> PointBatch:
        """Stem, stages and reducers / pools: features of the last stage's points.

        Args:
            inputs: images ``[B, C, H, W]`` or a :class:`~pointctx.PointBatch`.
            mask: optional bool ``[B, H, W]`` pixel mask for image inputs.
            input_pool: pixel sets: pool the kept pixels of every ``f x f`` block into one
                point before the stem (:func:`~pointctx.models._inputs.pool_pixels`; a
                documented deviation, 1 = off, the paper's model).

        Returns:
            A :class:`~pointctx.PointBatch` of the B sets after the last stage (``x`` = its
            features, ``pos`` = image-plane positions for pixel sets, positions in the input
            frame for general point sets). Sets keep their order; an empty input set stays empty.

        Shapes:
            return: x [M, embed_dims[-1]], pos [M, 2] (pixel sets) or [M, D], batch [M].
        """
        return self._run(inputs, mask, collect=False, input_pool=input_pool)

    def forward_stages(self, inputs, mask: Tensor | None = None,
                       input_pool: int = 1) -> list[StageBatch]:
        """Features of every stage (the contract of :class:`SetClassifier`).

        What a stage's link means for each backbone is said there and in its ``_run``. With
        ``input_pool`` (see :meth:`forward_features`) the stem reduces the pooled sites; stage 0
        is still linked to the input pixels (those of its sites) and its stride counts pixels.

        Shapes:
            return: one StageBatch per stage: x [M_i, embed_dims[i]], pos [M_i, 2 or D].
        """
        return self._run(inputs, mask, collect=True, input_pool=input_pool)

    def _run(self, inputs, mask, collect: bool, input_pool: int = 1):
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
