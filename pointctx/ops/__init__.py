"""Point ops on packed ragged sets: native PyTorch by default, torch-cluster when present."""

from ._backend import (
    cluster_available,
    get_backend,
    require_cluster,
    resolve_backend,
    set_backend,
    use_backend,
)
from .fps import fps, fps_naive, sample_counts
from .grid import (
    GridCluster,
    GridPool,
    SetBounds,
    cell_coords,
    grid_box,
    grid_cell_coords,
    grid_cluster,
    grid_cluster_naive,
    grid_pool,
    lattice_sites,
    linear_index,
    relabel,
    set_bounds,
    unravel_index,
)
from .grid_knn import grid_knn
from .hole_fill import FilledGrid, fill_holes, fill_holes_naive
from .interpolate import knn_interpolate, knn_interpolate_naive
from .knn import KNN, knn, knn_naive
from .linear import (
    get_linear_backend,
    linear,
    linear_reference,
    onednn_linear_available,
    set_linear_backend,
    use_linear_backend,
)
from .random import random_sample, random_sample_naive
from .scatter import (
    ScatterMax,
    scatter_argmax,
    scatter_count,
    scatter_max,
    scatter_mean,
    scatter_softmax,
    scatter_sum,
)
from .segment import batch_to_ptr, infer_batch_size, local_index, ptr_to_batch, set_sizes
from .slot_max import slot_max

__all__ = ["cluster_available", "get_backend", "require_cluster", "resolve_backend", "set_backend",
           "use_backend", "get_linear_backend", "linear", "linear_reference",
           "onednn_linear_available", "set_linear_backend", "use_linear_backend", "ScatterMax",
           "scatter_argmax", "scatter_count", "scatter_max", "scatter_mean", "scatter_softmax",
           "scatter_sum", "slot_max", "batch_to_ptr", "infer_batch_size", "local_index",
           "ptr_to_batch", "set_sizes", "fps", "fps_naive", "sample_counts", "GridCluster",
           "GridPool", "grid_cluster", "grid_cluster_naive", "grid_pool", "SetBounds",
           "cell_coords", "grid_box", "grid_cell_coords", "lattice_sites", "linear_index",
           "relabel", "set_bounds", "unravel_index", "KNN", "knn", "knn_naive", "knn_interpolate",
           "grid_knn", "knn_interpolate_naive", "random_sample", "random_sample_naive",
           "FilledGrid", "fill_holes", "fill_holes_naive"]
