"""Logging to the console (without breaking tqdm bars) and to a file in the run folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["setup_logger", "TqdmHandler"]


class TqdmHandler(logging.Handler):
    """Write records with ``tqdm.write`` so they appear above live progress bars."""

    def __init__(self, stream=None) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record above the progress bars."""
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.stream.flush()
        except Exception:  # logging must never raise
            self.handleError(record)


def setup_logger(name: str = "pointctx.train", log_file: str | Path | None = None,
                 is_main: bool = True, level: int = logging.INFO,
                 console: bool = True) -> logging.Logger:
    """A logger writing to the console and (appending) to ``log_file``; quiet on non-main ranks.

    Args:
        name: logger name.
        log_file: file to append to (its folder is created); ``None`` for none.
        is_main: whether this is the rank-0 process.
        level: level of the main process's records.
        console: also print to stdout.
    """
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.propagate = False
    logger.setLevel(level if is_main else logging.WARNING)
    if console:
        con = TqdmHandler()
        con.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(con)
    if is_main and log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, mode="a", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(fh)
    return logger
