"""Size limits checked before allocation: a request that cannot fit in memory is refused with its estimate.

* :func:`available_memory` — bytes this process may use: ``MemAvailable`` (Linux ``/proc/meminfo``), capped by a
  cgroup limit when one is set; physical memory elsewhere.
* :func:`check_memory` — raise :class:`~testbed.errors.ResourceError` when an estimate exceeds
  ``fraction × available``.
* :func:`build_checked` — build a module on PyTorch's ``meta`` device first (no storage, no RNG draws; deep
  models extrapolated from two shallow probes), count its parameter and buffer bytes, refuse it if too large,
  then build it for real.
* :func:`check_training_memory` — estimate what one optimisation step of a depth-``L`` student holds
  (parameters, gradients, two Adam moments, and the activations autograd saves, measured on a 2-sample,
  2-layer probe and scaled by ``batch/2 · L/2``), before training starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from testbed.errors import ResourceError

#: share of the available memory a single request may claim
DEFAULT_FRACTION = 0.8
#: requests below this are never refused (no /proc reads on the common path: every solve asks)
ALWAYS_FITS = 64 << 20


def format_bytes(n: float) -> str:
    """``1.5e9`` → ``'1.4 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _cgroup_limit() -> int | None:
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def available_memory() -> int:
    """Bytes of memory available to this process (see the module docstring)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            avail = 8 << 30
    limit = _cgroup_limit()
    return min(avail, limit) if limit else avail


def check_memory(nbytes: float, what: str, fraction: float = DEFAULT_FRACTION) -> None:
    """Refuse ``what`` if its estimated ``nbytes`` exceed ``fraction`` of :func:`available_memory` (requests
    under :data:`ALWAYS_FITS` pass without asking)."""
    if nbytes < ALWAYS_FITS:
        return
    avail = available_memory()
    if nbytes > fraction * avail:
        raise ResourceError(f"{what} needs an estimated {format_bytes(nbytes)} of memory; this machine has "
                            f"{format_bytes(avail)} available: reduce the size")


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (works on ``meta`` modules: nothing is read)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _meta_bytes(factory: Callable[..., Any], kwargs: dict[str, Any]) -> int | None:
    try:
        with torch.device("meta"):
            probe = factory(**kwargs)
    except RuntimeError as err:
        if "overflow" in str(err):  # a tensor with more than 2**63 bytes
            return 2**63
        return None
    except (NotImplementedError, TypeError, ValueError, AttributeError):
        return None
    return module_bytes(probe) if isinstance(probe, torch.nn.Module) else 0


def estimate_module_bytes(factory: Callable[..., Any], kwargs: dict[str, Any], depth_key: str = "n_layers",
                          probe_depths: tuple[int, int] = (4, 8)) -> int | None:
    """Bytes of ``factory(**kwargs)``'s parameters and buffers, measured on the ``meta`` device.

    When ``kwargs[depth_key]`` exceeds the probe depths, two probes at ``probe_depths`` are extrapolated
    linearly in depth (per-layer modules are built in a Python loop: building ``10^9`` of them even on ``meta``
    would never end). ``None`` when the factory cannot run on ``meta``.
    """
    depth = kwargs.get(depth_key)
    a, b = probe_depths
    if isinstance(depth, int) and not isinstance(depth, bool) and depth > b:
        ba, bb = _meta_bytes(factory, {**kwargs, depth_key: a}), _meta_bytes(factory, {**kwargs, depth_key: b})
        if ba is not None and bb is not None:
            return int(ba + (depth - a) * (bb - ba) / (b - a))
        if depth > 10_000:
            return None
    return _meta_bytes(factory, kwargs)


def build_checked(factory: Callable[..., Any], kwargs: dict[str, Any], what: str,
                  fraction: float = DEFAULT_FRACTION) -> Any:
    """``factory(**kwargs)``, refused with :class:`~testbed.errors.ResourceError` when the estimate of
    :func:`estimate_module_bytes` exceeds ``fraction`` of the available memory."""
    size = estimate_module_bytes(factory, kwargs)
    if size is not None:
        check_memory(size, what, fraction)
    return factory(**kwargs)


def _saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for the backward pass of ``fn()``."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def check_training_memory(student: torch.nn.Module, x: torch.Tensor, batch_size: int,
                          fraction: float = DEFAULT_FRACTION) -> int:
    """Estimate and check the memory of one training step of ``student`` on a batch like ``x``.

    ``4 ×`` parameter bytes (weights, gradients, two Adam moments) plus the saved activations of the
    ``L`` layers: measured for 2 samples through the first ``min(L, 2)`` layers with ``student.step`` and scaled
    by ``batch_size / 2 · L / min(L, 2)``. Returns the estimate in bytes.
    """
    flow = student if callable(getattr(student, "step", None)) else getattr(student, "flow", None)
    init = getattr(student, "initial_state", None)
    n_layers = int(getattr(flow, "n_layers", 1) or 1)
    params = sum(p.numel() * p.element_size() for p in student.parameters())
    est = 4 * params
    if flow is not None and x.ndim >= 2 and x.shape[0] >= 1:
        probe = x[:2]
        k = min(n_layers, 2)

        def forward() -> torch.Tensor:
            h = init(probe) if callable(init) else probe
            for layer in range(k):
                h = flow.step(layer, h)
            return h

        try:
            with torch.enable_grad():
                saved = _saved_bytes(forward)
        except (RuntimeError, TypeError, ValueError, IndexError):
            saved = 0
        est += saved * (batch_size / probe.shape[0]) * (n_layers / k)
    check_memory(est, f"training (depth {n_layers}, batch {batch_size}, "
                      f"{sum(p.numel() for p in student.parameters()):,} parameters)", fraction)
    return int(est)
