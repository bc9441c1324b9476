"""pointctx.nn."""

from .blocks import ContextClusterBlock, MixerBlock
from .cluenet import (
    ClusterAssignment,
    DepthwiseMlp,
    GFCBlock,
    GFCStage,
    GlobalFeatureClustering,
    HeadGate,
    ImprovedClusterPool,
    SetDepthwiseConv,
    knn_slots,
    nearest_center,
    soft_aggregate,
)
from .context_cluster import Assignment, ContextCluster
from .fpn import SemanticFPNHead
from .grouping import (
    GeometricAffine,
    GroupContextCluster,
    Groups,
    fps_start_points,
    gather_groups,
    sample_and_group,
)
from .layers import DropPath, LayerScale, Mlp
from .norm import SetGroupNorm
from .propagation import FeaturePropagation, SharedMlp
from .proposal import (
    CenterProposal,
    Centers,
    FPSProposal,
    GridProposal,
    RandomProposal,
    list_proposals,
    register_proposal,
    resolve_proposal,
)
from .reducer import PointReducer, Reduced

__all__ = [
    "Assignment",
    "ContextCluster",
    "CenterProposal",
    "Centers",
    "FPSProposal",
    "GridProposal",
    "RandomProposal",
    "list_proposals",
    "register_proposal",
    "resolve_proposal",
]
__all__ += ["MixerBlock", "ContextClusterBlock", "DropPath", "LayerScale", "Mlp", "SetGroupNorm"]
__all__ += ["PointReducer", "Reduced", "FeaturePropagation", "SharedMlp", "SemanticFPNHead"]
__all__ += [
    "GeometricAffine",
    "GroupContextCluster",
    "Groups",
    "fps_start_points",
    "gather_groups",
    "sample_and_group",
]
__all__ += [
    "ClusterAssignment",
    "DepthwiseMlp",
    "GFCBlock",
    "GFCStage",
    "GlobalFeatureClustering",
    "HeadGate",
    "ImprovedClusterPool",
    "SetDepthwiseConv",
    "knn_slots",
    "nearest_center",
    "soft_aggregate",
]
