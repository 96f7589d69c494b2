"""Shared helpers for the hand-run benchmarks in ``bench/``.

Every benchmark prints the machine's measured matmul speed beside its own figures, so a reader on
another machine can scale them. Timings are medians of several runs (the first call of anything is
usually slower: caches, allocation, tracing), and peak memory is the process's high-water RSS.

Keep this module small and stable: every ``bench_*.py`` imports it. It imports only the standard
library and NumPy.

>>> median_time(lambda: None, repeat=3) >= 0.0
True
>>> peak_rss_mb() > 0
True
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

import numpy as np

__all__ = ["matmul_gflops", "median_time", "timings", "peak_rss_mb", "machine_line", "today"]


def matmul_gflops(n: int = 2048, repeat: int = 5) -> float:
    """Measured float32 matrix-multiply speed of this machine, in GFLOP/s.

    Parameters
    ----------
    n : int
        Side of the square matrices; 2048 keeps one product well above timer resolution.
    repeat : int
        Number of timed products; the median is used.

    Returns
    -------
    float
        ``2 n^3 / median seconds / 1e9`` (the best steady-state figure NumPy's BLAS gives).

    Examples
    --------
    >>> matmul_gflops(n=64, repeat=2) > 0
    True
    """
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b  # warm-up: BLAS thread pool start and page faults on the output
    seconds = median_time(lambda: a @ b, repeat=repeat)
    return 2.0 * n**3 / max(seconds, 1e-12) / 1e9


def timings(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls.

    Examples
    --------
    >>> len(timings(lambda: None, repeat=4, warmup=0))
    4
    """
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 0) -> float:
    """Median wall-clock seconds of ``repeat`` calls of ``fn`` (after ``warmup`` untimed calls).

    The median, not the mean, because a single descheduled run on a shared machine should not move
    the figure.

    Examples
    --------
    >>> median_time(lambda: sum(range(10)), repeat=3) < 1.0
    True
    """
    return statistics.median(timings(fn, repeat=repeat, warmup=warmup))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``VmHWM``; getrusage as fallback).

    It only ever grows, so measure a workload's peak in a fresh subprocess when earlier work in
    the same process might have used more.

    Examples
    --------
    >>> peak_rss_mb() > 1.0
    True
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # the kernel reports kB
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return ru / (1024.0 * 1024.0) if sys.platform == "darwin" else ru / 1024.0


def machine_line(gflops: float | None = None) -> str:
    """One line naming the machine and its matmul speed, to print above the figures.

    Examples
    --------
    >>> "GFLOP/s" in machine_line(gflops=1.0)
    True
    """
    if gflops is None:
        gflops = matmul_gflops()
    cpus = os.cpu_count()
    return (f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs, "
            f"python {platform.python_version()}, numpy {np.__version__}, "
            f"float32 matmul {gflops:.1f} GFLOP/s")


def today() -> str:
    """Today's date as YYYY-MM-DD, for result files.

    Examples
    --------
    >>> len(today())
    10
    """
    return _dt.date.today().isoformat()
