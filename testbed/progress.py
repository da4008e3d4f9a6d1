"""Progress reporting that suits where the output goes.

On a terminal, :func:`progress` is a tqdm bar. When stderr is redirected (sweeps, CI, ``nohup … > log``) it is a
:class:`LineProgress`: one plain line each time another ``every`` percent is done (and one at the end), instead
of hundreds of carriage-return updates. Both accept the calls the testbed makes: iteration, ``update``,
``set_postfix``, ``set_postfix_str``, ``close`` and use as a context manager.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


class LineProgress:
    """A progress report for logs: ``desc: 40/100 (40%) 12.3 s loss=0.1`` every ``every`` percent."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 initial: int = 0, every: float = 10.0, file: TextIO | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.n, self.every = total, desc, initial, every
        self.file = file if file is not None else sys.stderr
        self.postfix = ""
        self.t0 = time.perf_counter()
        self._next = self._threshold_after(initial)
        self._closed = False

    def _threshold_after(self, n: int) -> float:
        if not self.total:
            return float("inf")
        step = max(self.total * self.every / 100.0, 1.0)
        return (int(n / step) + 1) * step

    def _emit(self) -> None:
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        tot = f"/{self.total}" if self.total else ""
        extra = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{tot}{pct} {time.perf_counter() - self.t0:.1f} s{extra}", file=self.file,
              flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next:
            self._next = self._threshold_after(self.n)
            self._emit()

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self._closed and self.total and self.n < self.total and self.n >= 1:
            self._emit()  # say where it stopped (a break or an error)
        self._closed = True

    def __iter__(self) -> Iterator:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True,
             initial: int = 0, unit: str = "it") -> Any:
    """A tqdm bar when stderr is a terminal, a :class:`LineProgress` when it is redirected, a silent tqdm when
    ``enabled`` is false."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, leave=False, dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, initial=initial)
