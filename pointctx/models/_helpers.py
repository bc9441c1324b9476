"""Construction helpers shared by the registered models (CoC, CLUENet, PointMLP)."""

from __future__ import annotations

from collections.abc import Sequence

from .._checks import check_number, check_positive_int
from ._registry import register_model

__all__ = ["IMAGE_BOUNDS", "per_stage", "check_stages", "stage_options", "check_io",
           "drop_path_rates", "build"]
__all__ += ["TINY_STAGES", "SMALL_STAGES", "MEDIUM_STAGES", "register_configs"]

# The fixed box of image-plane pixel positions (PackedInput.plane), for grid centers and regions.
IMAGE_BOUNDS = (-0.5, 0.5)

# The stage geometries of the four-stage image models: CoC's Tiny / Small / Medium (Table 6 of
# the paper), which CLUENet's Tiny / Small / Base reuse.
TINY_STAGES = dict(layers=(3, 4, 5, 2), embed_dims=(32, 64, 196, 320), heads=(4, 4, 8, 8),
                   head_dims=24)
SMALL_STAGES = dict(layers=(2, 2, 6, 2), embed_dims=(64, 128, 320, 512), heads=(4, 4, 8, 8),
                    head_dims=32)
MEDIUM_STAGES = dict(layers=(4, 4, 12, 4), embed_dims=(64, 128, 320, 512), heads=(6, 6, 12, 12),
                     head_dims=32)


def per_stage(value, num_stages: int, name: str) -> list:
    """Broadcast a scalar (or None) to every stage, or check a per-stage list's length."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        vals = list(value)
        if len(vals) != num_stages:
            raise ValueError(
                f"`{name}` must have one entry per stage ({num_stages}), got {len(vals)}: {value!r}"
            )
        return vals
    return [value] * num_stages


def check_stages(layers: Sequence[int], embed_dims: Sequence[int]) -> tuple[list, list]:
    """Check blocks per stage and channels per stage: positive ints, equal non-zero lengths."""
    layers = [check_positive_int(v, "layers") for v in layers]
    embed_dims = [check_positive_int(v, "embed_dims") for v in embed_dims]
    if not layers or len(embed_dims) != len(layers):
        raise ValueError("`layers` and `embed_dims` must be non-empty with one entry per stage, "
                         f"got {len(layers)} and {len(embed_dims)}")
    return layers, embed_dims


def stage_options(layers: Sequence[int], embed_dims: Sequence[int], **options
                  ) -> tuple[list, list, dict]:
    """:func:`check_stages`, then :func:`per_stage` on every keyword option (in their order)."""
    layers, embed_dims = check_stages(layers, embed_dims)
    return layers, embed_dims, {k: per_stage(v, len(layers), k) for k, v in options.items()}


def check_io(num_classes, in_channels, pos_dim, min_classes: int = 0) -> tuple[int, int, int]:
    """Check the classifier outputs, feature channels and position dimension of a model.

    Args:
        num_classes: classifier outputs (0 allowed when ``min_classes`` is 0: no classifier).
        in_channels: point feature channels C (0: positions only).
        pos_dim: position dimension D (>= 1).
        min_classes: the smallest allowed ``num_classes``.
    """
    return (check_positive_int(num_classes, "num_classes", minimum=min_classes),
            check_positive_int(in_channels, "in_channels", minimum=0),
            check_positive_int(pos_dim, "pos_dim"))


def drop_path_rates(layers: Sequence[int], drop_path_rate: float) -> list[list[float]]:
    """Stochastic depth per block, rising linearly over all blocks from 0 to ``drop_path_rate``."""
    check_number(drop_path_rate, "drop_path_rate", 0.0, 1.0, max_open=True,
                 type_error=ValueError, must="be {bounds}")
    total = sum(layers)
    rates, k = [], 0
    for depth in layers:
        rates.append([drop_path_rate * (k + j) / (total - 1) if total > 1 else 0.0
                      for j in range(depth)])
        k += depth
    return rates


def build(cls, defaults: dict, kwargs: dict):
    """Instantiate ``cls`` with a registered configuration, overridden by the caller's kwargs."""
    cfg = dict(defaults)
    cfg.update(kwargs)
    return cls(**cfg)


def register_configs(cls, module: str, configs: dict) -> None:
    """Register one factory per ``name: (docstring, config)``; the caller's kwargs override."""
    for name, (doc, cfg) in configs.items():
        register_model(_factory(cls, module, name, doc, cfg))


def _factory(cls, module: str, name: str, doc: str, cfg: dict):
    def factory(**kwargs):
        return build(cls, cfg, kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__, factory.__module__ = doc, module
    return factory
