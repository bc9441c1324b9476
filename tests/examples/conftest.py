"""The example scripts' ``--threads`` sets torch's global thread count: restore it per test."""

import pytest


@pytest.fixture(autouse=True)
def _restore_threads(restore_threads):
    yield
