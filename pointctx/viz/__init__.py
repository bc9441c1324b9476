"""Visualisation: clustering maps of Context Cluster models for pixel sets and point clouds."""

from .draw import (
    INPUT_MISSING_COLOR,
    MISSING_COLOR,
    colorize_labels,
    input_images,
    label_colors,
    label_images,
    point_labels,
    save_cluster_grid,
    save_cluster_ply,
    save_cluster_scatter,
    save_figure,
)
from .trace import ClusterLayer, ClusterTrace, local_labels, trace_clusters

__all__ = ["ClusterLayer", "ClusterTrace", "trace_clusters", "local_labels", "MISSING_COLOR",
           "INPUT_MISSING_COLOR", "label_colors", "colorize_labels", "point_labels", "label_images",
           "input_images", "save_cluster_grid", "save_cluster_scatter", "save_cluster_ply",
           "save_figure"]
