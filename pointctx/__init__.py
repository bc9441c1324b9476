"""pointctx: Context Clusters and learning on ragged point sets, in native PyTorch."""

from . import ops
from .batch import PointBatch
from .data import collate
from .models import create_model, list_models, load_model, load_official
from .rgbd import rgbd_to_points

__version__ = "0.1.0"

__all__ = ["PointBatch", "collate", "ops", "create_model", "list_models", "__version__"]
__all__ += ["rgbd_to_points", "load_model", "load_official"]
