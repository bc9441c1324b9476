"""Fixtures shared by the example tests.

* ``_restore_threads`` (autouse): the example scripts' ``--threads`` sets torch's global thread
  count; it is restored after every test.
* ``last_weights``: ``last_weights(run)`` the model state_dict saved in ``run/last.pt``.
* ``same_weights``: ``same_weights(a, b)`` whether two state_dicts hold the same keys and
  bit-identical tensors.
"""

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads(restore_threads):
    yield


def _last_weights(run):
    return torch.load(Path(run) / "last.pt", map_location="cpu", weights_only=False)["model"]


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session")
def last_weights():
    """``last_weights(run)``: the model state_dict saved in ``run/last.pt``."""
    return _last_weights


@pytest.fixture(scope="session")
def same_weights():
    """``same_weights(a, b)``: same keys and bit-identical tensors."""
    return _same_weights
