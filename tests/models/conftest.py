"""Fixtures shared by the model tests (instead of a copy in each file).

* ``image_model``: ``image_model(name, seed=0, **kw)`` builds a registered model after
  ``torch.manual_seed(seed)``, with ``num_classes=5`` and ``in_channels=3`` unless given.
* ``random_images``: ``random_images(b, c, hw, seed=0)`` seeded normal images [B, C, hw, hw].
* ``num_params``: ``num_params(model)`` the number of parameter values.
* ``randomize_bn``: ``randomize_bn(model, seed=1)`` gives every ``BatchNorm1d`` non-trivial
  running statistics and affines, so that eval-mode BatchNorm is not the identity.
* ``bad_grads``: ``bad_grads(model)`` the names of the parameters whose gradient (after a
  backward) is missing, not finite or all zero.
* ``shuffle_pixel_sets``: ``shuffle_pixel_sets(pb, seed)`` the pixel sets of a ``PointBatch``
  with their points permuted within each set.
"""

from __future__ import annotations

import pytest
import torch

from pointctx import PointBatch, create_model


def _image_model(name, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_classes", 5)
    kw.setdefault("in_channels", 3)
    return create_model(name, **kw)


def _random_images(b, c, hw, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, hw, hw, generator=g)


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _bad_grads(model) -> list[str]:
    return [n for n, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum()]


def _shuffle_pixel_sets(pb, seed):
    g = torch.Generator().manual_seed(seed)
    perm = torch.cat([lo + torch.randperm(hi - lo, generator=g)
                      for lo, hi in zip(pb.ptr[:-1].tolist(), pb.ptr[1:].tolist())])
    return PointBatch(pb.pos[perm], pb.x[perm], batch=pb.batch, pixel=pb.pixel[perm],
                      image_size=pb.image_size)


@pytest.fixture(scope="session")
def image_model():
    """``image_model(name, seed=0, **kw)``: a seeded model, 5 classes and 3 channels by default."""
    return _image_model


@pytest.fixture(scope="session")
def random_images():
    """``random_images(b, c, hw, seed=0)``: seeded normal images [B, C, hw, hw]."""
    return _random_images


@pytest.fixture(scope="session")
def num_params():
    """``num_params(model)``: the number of parameter values."""
    return _num_params


@pytest.fixture(scope="session")
def randomize_bn():
    """``randomize_bn(model, seed=1)``: non-identity eval-mode BatchNorm1d statistics."""
    return _randomize_bn


@pytest.fixture(scope="session")
def bad_grads():
    """``bad_grads(model)``: parameters with a missing, non-finite or all-zero gradient."""
    return _bad_grads


@pytest.fixture(scope="session")
def shuffle_pixel_sets():
    """``shuffle_pixel_sets(pb, seed)``: the points of every pixel set permuted in their set."""
    return _shuffle_pixel_sets
