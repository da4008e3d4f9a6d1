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
