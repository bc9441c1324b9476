"""Fixtures shared by the test files (instead of copies in each).

* ``repo_root``: the checkout's root folder.
* ``load_module``: ``load_module(path, name)`` imports the Python file ``path`` as a fresh module
  called ``name`` (scripts of bench/, the official fixtures' ``fill.py``).
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


def _load_module(path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_example(name: str):
    return _load_module(ROOT / "examples" / f"{name}.py", f"{name}_example")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return ROOT


@pytest.fixture(scope="session")
def load_module():
    """A function that imports a Python file as a fresh module: ``load_module(path, name)``."""
    return _load_module


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
