"""Graceful Ctrl-C: turn SIGINT/SIGTERM into a flag the training loop checks between steps."""

from __future__ import annotations

import signal
import threading

__all__ = ["GracefulInterrupt"]


class GracefulInterrupt:
    """Context manager that records SIGINT (Ctrl-C) and SIGTERM instead of raising at once.

    Attributes:
        requested: a stop was asked for.
        signal_name: the signal that asked (``None`` when :meth:`request` did).
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._old: dict[int, object] = {}

    def request(self, reason: str | None = None) -> None:
        """Ask for a stop (as a signal would)."""
        self.requested, self.signal_name = True, reason

    def _handler(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested, self.signal_name = True, signal.Signals(signum).name

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
