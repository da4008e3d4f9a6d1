"""Side-by-side wall-clock timing for benchmark scripts: callables timed in alternating rounds, paired ratios."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """``repeats`` wall times of each callable, the callables taking turns in each round (one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a[r] / b[r]``: each ratio compares runs taken back to back, so a burst of load
    from other processes moves both; more robust on a shared machine than the ratio of two minima."""
    return float(statistics.median(x / y for x, y in zip(a, b, strict=True)))


def benchmark_header(name: str) -> dict[str, Any]:
    """The fields every benchmark record starts with: its name, the date, torch's thread count and version, the
    machine."""
    import torch

    return {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.machine()}


def _status_kib(field: str) -> int:
    """A ``VmRSS`` / ``VmHWM`` line of ``/proc/self/status`` in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_extra_rss(fn: Callable[[], Any]) -> tuple[int, str]:
    """``(bytes, how)``: the peak resident memory ``fn()`` adds on top of what this process holds when it starts.

    Linux: the RSS high-water mark is reset to the current RSS (``/proc/self/clear_refs`` ← 5) and read back after
    the call (``VmHWM − VmRSS``), per process image — unlike ``ru_maxrss``, which survives ``exec`` and so reports
    a forking parent's peak in a child. Elsewhere: ``ru_maxrss`` (kilobytes on Linux, bytes on macOS) minus the
    RSS before the call, an upper bound. Run it in a fresh process for one route at a time."""
    import resource
    import sys

    try:
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        fn()
        return max(0, _status_kib("VmHWM") - base) * 1024, "VmHWM - VmRSS (proc)"
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        fn()
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - before), "ru_maxrss growth"
