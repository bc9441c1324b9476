"""Helpers shared by the bench scripts that measure each row in a fresh subprocess.

* :func:`run_child`: run one measuring child (``python bench/<script>.py --child ...``) with this
  checkout on ``PYTHONPATH`` and, for ``what="memory"``, a fixed glibc mmap threshold; return the
  JSON dict its last stdout line holds, or ``{"error": ...}``;
* :func:`cpu_peak_bytes`: the peak extra resident memory of one call (:data:`MEMORY_METHOD`);
* :func:`cpu_name`: the CPU model, for the JSON header;
* :func:`conditions`: the torch version, CPU and load average every result JSON records;
* :func:`alternate`: median times of callables run in turn in one process (side-by-side ratios);
* :func:`positive_int`: the ``argparse`` type of the counts.

The bench scripts are run as files (``python bench/models.py``), so they import this module by
its file name, with ``bench/`` on ``sys.path``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

__all__ = ["MEMORY_METHOD", "run_child", "cpu_peak_bytes", "cpu_name", "conditions",
           "alternate", "positive_int"]

ROOT = Path(__file__).resolve().parent

MEMORY_METHOD = (
    "fresh subprocess per row (separate from the timing one), after one warm-up forward: VmHWM "
    "after one forward (high-water mark reset via /proc/self/clear_refs) minus VmRSS before it, "
    "glibc mmap threshold 128 KiB (CPU); cuda.max_memory_allocated minus allocated before the "
    "forward (CUDA)"
)


def run_child(cmd: list[str], what: str, timeout: float) -> dict:
    """Run one measuring child process; returns its result dict or ``{"error": ...}``.

    The memory child runs with a fixed glibc mmap threshold (freed tensors leave the resident
    set); the timing child with the default allocator settings (the fixed threshold makes every
    large allocation a fresh ``mmap`` and would slow the forwards down).

    Args:
        cmd: the child's command line; it prints its result as JSON on its last stdout line.
        what: ``"time"`` or ``"memory"``.
        timeout: seconds before the child is stopped (the row then holds the error).
    """
    env = dict(os.environ)
    if what == "memory":
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    root = str(ROOT.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env["PYTHONPATH"]]) if env.get("PYTHONPATH") \
        else root
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{what} run timed out after {timeout} s"}
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exit status {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_peak_bytes(run) -> tuple[int, str]:
    """Peak extra resident memory of ``run()`` and how it was measured."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status_kib("VmRSS")
        run()
        return (_status_kib("VmHWM") - before) * 1024, "VmHWM"
    except OSError:
        before = _status_kib("VmRSS")
        run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (peak - before) * 1024, "ru_maxrss"


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def conditions() -> dict:
    """What every result JSON records: torch version, CPU model, 1/5/15-minute load at the end."""
    import torch

    return {"torch": torch.__version__, "cpu": cpu_name(),
            "load_avg_1_5_15_at_end": [round(v, 2) for v in os.getloadavg()]}


def alternate(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, calls alternating; one untimed warm-up each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value
