"""Fixtures shared by the test files (instead of copies in each).

* ``repo_root``: the checkout's root folder.
* ``load_example``: ``load_example("scanobjectnn")`` imports ``examples/scanobjectnn.py`` as a
  module (the examples are scripts, not a package).
* ``restore_threads``: restores torch's global thread count after a test (the example CLIs'
  ``--threads`` sets it); autouse for every test under ``tests/examples``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_example(name: str):
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return ROOT


@pytest.fixture(scope="session")
def load_example():
    """A function that imports ``examples/<name>.py`` as a fresh module."""
    return _load_example


@pytest.fixture
def restore_threads():
    """Restore torch's global thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
