"""How the benchmarks measure: wall time (median with p20/p80), peak memory, and the
environment every CSV row is stamped with.

Wall time on CPU is ``time.perf_counter`` around the call; on CUDA it is CUDA events on
the current stream (the call is asynchronous, the events are not), after a warm-up call
that also compiles Triton kernels and fills the caching allocator.

Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` above what was allocated
before the call. On CPU it is the growth of the process's resident set during one call,
sampled every millisecond by a thread (the kernels release the GIL) after ``malloc_trim``
has returned the freed heap to the system, so memory reused from an earlier call still
counts. It is an estimate: allocations shorter than the sampling period can be missed.
``compare.py`` takes it during the untimed warm-up call.
"""
from __future__ import annotations

import ctypes
import os
import platform
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Stats:
    median: float   # seconds
    p20: float
    p80: float
    n: int
    samples: list

    @property
    def ms(self) -> tuple[float, float, float]:
        return 1e3 * self.median, 1e3 * self.p20, 1e3 * self.p80


def _quantile(xs: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device | str = "cpu", repeat: int = 5, warmup: int = 1,
            min_repeat: int = 3, budget_s: float | None = None) -> Stats:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeat`` timed calls, stopping
    early (after at least ``min_repeat``) once the timed calls have used ``budget_s``."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    sync(device)
    samples: list[float] = []
    spent = 0.0
    for i in range(max(1, repeat)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        samples.append(dt)
        spent += dt
        if budget_s is not None and i + 1 >= min_repeat and spent >= budget_s:
            break
    return Stats(statistics.median(samples), _quantile(samples, 0.2), _quantile(samples, 0.8), len(samples), samples)


# --- peak memory ------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the peak of the whole process, a coarser upper bound
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Bytes of memory ``fn()`` needs above what is allocated before the call (see module doc)."""
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    import gc

    gc.collect()
    _malloc_trim()
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
        peak[0] = max(peak[0], _rss())
    finally:
        done.set()
        t.join()
    del out
    return max(0, peak[0] - base)


# --- environment --------------------------------------------------------------------------------

def git_commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when tracked files other than results
    (benchmarks/results, benchmarks/plots, markdown) differ from it: a run that appends to
    a CSV of the checkout must not mark the next run as made from changed code."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)benchmarks/plots", ":(exclude)*.md"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except Exception:  # noqa: BLE001 -- any import failure means "no usable triton"
        return ""


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def environment(device: torch.device | str) -> dict:
    return {"device_name": device_name(device), "torch": torch.__version__, "triton": triton_version(),
            "commit": git_commit()}
