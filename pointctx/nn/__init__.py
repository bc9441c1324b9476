"""pointctx.nn."""

from .blocks import ContextClusterBlock, GFCBlock, GFCStage, MixerBlock
from .context_cluster import Assignment, ContextCluster
from .depthwise import DepthwiseMlp, SetDepthwiseConv, knn_slots
from .fpn import SemanticFPNHead
from .gfc import GlobalFeatureClustering, HeadGate
from .grouping import (
    GeometricAffine,
    GroupContextCluster,
    Groups,
    fps_start_points,
    gather_groups,
    sample_and_group,
)
from .icp import ImprovedClusterPool
from .layers import DropPath, LayerScale, Linear, Mlp
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
from .soft_aggregation import nearest_center, soft_aggregate

__all__ = ["Assignment", "ContextCluster", "CenterProposal", "Centers", "FPSProposal",
           "GridProposal", "RandomProposal", "list_proposals", "register_proposal",
           "resolve_proposal"]
__all__ += ["MixerBlock", "ContextClusterBlock", "DropPath", "LayerScale", "Linear", "Mlp",
            "SetGroupNorm"]
__all__ += ["PointReducer", "Reduced", "FeaturePropagation", "SharedMlp", "SemanticFPNHead"]
__all__ += ["GeometricAffine", "GroupContextCluster", "Groups", "fps_start_points", "gather_groups",
            "sample_and_group"]
__all__ += ["DepthwiseMlp", "GFCBlock", "GFCStage", "GlobalFeatureClustering", "HeadGate",
            "ImprovedClusterPool", "SetDepthwiseConv", "knn_slots", "nearest_center",
            "soft_aggregate"]
