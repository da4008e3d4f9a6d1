"""One validation of a user's ``device`` string, before any work (configs call it in ``__post_init__``).

Accepted: ``cpu``; ``cuda`` / ``cuda:N`` when CUDA is available and ``N`` < the device count; ``mps`` when the
Metal backend is available. Anything else — an unknown name, ``meta`` (no data), a CUDA device on a machine
without CUDA — raises :class:`~testbed.config.ConfigError` naming the field and what this machine offers.
"""

from __future__ import annotations

import torch

from testbed.config import ConfigError, shown


def available_devices() -> list[str]:
    """The devices this machine can compute on, e.g. ``['cpu', 'cuda:0']``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(name: str, value: object) -> str:
    """Return ``value`` if it names a usable compute device, else raise :class:`ConfigError` naming ``name``."""
    offer = ", ".join(available_devices())
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a device name such as 'cpu' or 'cuda', got {shown(value)}")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{name}: unknown device {shown(value)}; this machine offers: {offer}") from None
    if dev.type == "cpu":
        return value
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{name}: device {shown(value)} requested but CUDA is not available on this machine "
                              f"(torch {torch.__version__}); this machine offers: {offer}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{name}: device {shown(value)} does not exist; this machine offers: {offer}")
        return value
    if dev.type == "mps" and "mps" in available_devices():
        return value
    raise ConfigError(f"{name}: device {shown(value)} cannot run experiments here; this machine offers: {offer}")
