"""Registered models. Import a model module here so that its ``@register_model`` runs."""

from ._registry import (
    TASKS,
    create_model,
    is_model,
    list_models,
    model_entrypoint,
    model_task,
    register_model,
)
from ._runs import TrainedModel, load_model
from ._stages import StageBatch  # per-stage features (forward_stages)
from .cluenet import CLUENet  # registers the cluenet_* models
from .coc import ContextClusterNet  # registers the coc_* models
from .official import convert_official, load_official, official_archs
from .pointmlp import PointMLP  # registers the pointmlp* models
from .pointmlp_seg import SHAPENETPART_NUM_CATEGORIES, SHAPENETPART_NUM_PARTS  # pointmlp*_seg
from .segmentation import SetSegmenter, input_pool_for_keep  # registers the *_seg models
from .unet import UNet  # registers the unet_*_seg CNN baselines

__all__ = ["create_model", "is_model", "list_models", "model_entrypoint", "register_model"]
__all__ += ["TASKS", "model_task", "TrainedModel", "load_model"]
__all__ += ["ContextClusterNet"]
__all__ += ["PointMLP", "SHAPENETPART_NUM_CATEGORIES", "SHAPENETPART_NUM_PARTS"]
__all__ += ["CLUENet"]
__all__ += ["convert_official", "load_official", "official_archs"]
__all__ += ["SetSegmenter", "StageBatch", "input_pool_for_keep"]
__all__ += ["UNet"]
