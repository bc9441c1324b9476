"""A small training-loop toolkit shared by the example scripts."""

from .checkpoint import (
    atomic_write_json,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
    stale_temp_files,
)
from .distributed import (
    DistInfo,
    ResumableBatchSampler,
    ShardedEvalSampler,
    cleanup_distributed,
    init_distributed,
    resolve_device,
)
from .interrupt import GracefulInterrupt
from .log import setup_logger
from .metrics import (
    ClassificationMetrics,
    ConfusionMatrix,
    PartIoU,
    PartMetrics,
    PartSegConfusion,
    PartSegMetrics,
    SegmentationConfusion,
    SegmentationMetrics,
    format_class_table,
    smoothed_cross_entropy,
)
from .trainer import Trainer, default_forward, evaluate_model, make_loader, unwrap_model

__all__ = ["atomic_write_json", "atomic_write_text", "capture_rng_state", "load_checkpoint",
           "restore_rng_state", "save_checkpoint", "stale_temp_files", "remove_stale_temp_files",
           "DistInfo", "ResumableBatchSampler", "ShardedEvalSampler", "cleanup_distributed",
           "init_distributed", "resolve_device", "GracefulInterrupt", "setup_logger",
           "ClassificationMetrics", "ConfusionMatrix", "PartIoU", "PartMetrics", "PartSegConfusion",
           "PartSegMetrics", "SegmentationConfusion", "SegmentationMetrics", "format_class_table",
           "smoothed_cross_entropy", "Trainer", "default_forward", "evaluate_model", "make_loader",
           "unwrap_model"]
