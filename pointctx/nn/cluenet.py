"""CLUENet layers (Song, Huang et al., "Cluster Attention Makes Neural Networks Have Eyes") on sets.

CLUENet replaces the local Context Cluster mixer of CoC with a *global* one and the strided
convolutions between stages with a clustering reducer. Rebuilt on packed ragged point sets
(``x [N, C]``, ``pos [N, D]``, sorted ``batch [N]``), without flash-attn or torch-scatter, one
module per concept; this module is the index (and the old import path of every name below):

============================== ==================================================================
module                         what
============================== ==================================================================
``nn/soft_aggregation.py``     :func:`soft_aggregate` (every center attends over all points of its
                               set, ``scaled_dot_product_attention`` on padded set blocks) and
                               :func:`nearest_center` (the hard argmax choice)
``nn/gfc.py``                  :class:`GlobalFeatureClustering` (GFC, the token mixer: pooled
                               centers, soft aggregation, per-head gate :class:`HeadGate`, hard
                               dispatch) and its :class:`ClusterAssignment`
``nn/depthwise.py``            :class:`SetDepthwiseConv` (the depthwise 3x3 convolution on pixel
                               lattices or over the 9 nearest neighbours, :func:`knn_slots`) and
                               :class:`DepthwiseMlp`
``nn/icp.py``                  :class:`ImprovedClusterPool` (ICP, the reducer between stages)
``nn/blocks.py``               :class:`GFCBlock` (the shared pre-norm residual
                               :class:`~pointctx.nn.blocks.MixerBlock` with LayerNorm, GFC and the
                               depthwise MLP) and :class:`GFCStage` (shared centers and
                               assignments)
============================== ==================================================================

Everything is batch independent: a set's output never depends on the other sets of the batch.
"""

from __future__ import annotations

import sys
import types

from . import soft_aggregation as _soft_aggregation
from .blocks import GFCBlock, GFCStage
from .depthwise import DepthwiseMlp, SetDepthwiseConv, knn_slots
from .gfc import ClusterAssignment, GlobalFeatureClustering, HeadGate
from .icp import ImprovedClusterPool
from .soft_aggregation import _BLOCK_ELEMENTS, nearest_center, soft_aggregate

__all__ = [
    "ClusterAssignment",
    "GlobalFeatureClustering",
    "GFCBlock",
    "GFCStage",
    "ImprovedClusterPool",
    "SetDepthwiseConv",
    "DepthwiseMlp",
    "HeadGate",
    "knn_slots",
    "soft_aggregate",
    "nearest_center",
]


class _IndexModule(types.ModuleType):
    # The padded-block budget moved to nn/soft_aggregation.py; setting it here (the old place,
    # e.g. a test's monkeypatch) sets it there too, so both names keep meaning one value.
    def __setattr__(self, name, value):
        if name == "_BLOCK_ELEMENTS":
            setattr(_soft_aggregation, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _IndexModule
_ = _BLOCK_ELEMENTS  # re-exported for the old path (read it from soft_aggregation)
