"""Fixtures shared by the test files (instead of copies in each).

* ``repo_root``: the checkout's root folder.
* ``load_module``: ``load_module(path, name)`` imports the Python file ``path`` as a fresh module
  called ``name`` (scripts of bench/, the official fixtures' ``fill.py``).
* ``load_example``: ``load_example("scanobjectnn")`` imports ``examples/scanobjectnn.py`` as a
  module (the examples are scripts, not a package).
* ``restore_threads``: restores torch's global thread count after a test (the example CLIs'
  ``--threads`` sets it); autouse for every test under ``tests/examples``.
* ``tiny_point_run``: the tiny PointMLP-CoC run of ``examples/scanobjectnn.py`` on the bundled
  sample (``.argv``, ``.model``, ``.model_kwargs``), shared by the example, predict and README
  tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# the checkout's default data folder (the package reads only root= or $POINTCTX_DATA)
os.environ.setdefault("POINTCTX_DATA", str(ROOT.parent / "shared" / "data"))
if str(ROOT / "examples") not in sys.path:  # the examples import `_cli` from their folder
    sys.path.insert(0, str(ROOT / "examples"))


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


class TinyPointRun(NamedTuple):
    """A seconds-long ``examples/scanobjectnn.py`` run (add ``--epochs`` and ``--output``)."""

    argv: tuple[str, ...]
    model: str
    model_kwargs: dict


# a narrow two-stage model on 64 points keeps each run to seconds on one CPU core; one thread
# also makes runs compared bit for bit use the same reduction order
_TINY_MODEL = "pointmlp_coc_elite"
_TINY_KWARGS = {"embed_dim": 8, "res_expansion": 0.5, "dim_expansion": [2, 2],
                "pre_blocks": [1, 1], "pos_blocks": [1, 1], "k_neighbors": 8}


@pytest.fixture(scope="session")
def tiny_point_run() -> TinyPointRun:
    """The tiny PointMLP-CoC run of ``examples/scanobjectnn.py`` on the bundled real sample."""
    argv = (
        "--sample", "--model", _TINY_MODEL, "--model-kwargs", json.dumps(_TINY_KWARGS),
        "--num-points", "64", "--train-fraction", "0.2", "--batch-size", "16",
        "--eval-batch-size", "50", "--device", "cpu", "--no-progress", "--seed", "1",
        "--threads", "1",
    )
    return TinyPointRun(argv, _TINY_MODEL, json.loads(json.dumps(_TINY_KWARGS)))
