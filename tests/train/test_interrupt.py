import os
import signal

import pytest

from pointctx.train import GracefulInterrupt


def test_sigint_sets_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with GracefulInterrupt() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C is not swallowed
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_and_request():
    with GracefulInterrupt() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    other = GracefulInterrupt()
    other.request("manual")
    assert other.requested and other.signal_name == "manual"
