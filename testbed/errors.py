"""The testbed's own error types, and how a run names the unit of work that failed.

Every error a user can cause is one of these (or :class:`~testbed.config.ConfigError`, a ``ValueError``), so
the CLI can print it as one line ``testbed: error: …`` and exit with status 2:

* :class:`CheckpointError` — a ``checkpoint.pt`` that is not a testbed checkpoint (foreign, truncated, empty,
  or holding objects other than tensors and plain containers: it is never unpickled with code execution);
* :class:`DivergenceError` — a trained student (or a field) blew up: an adaptive solve exceeded its step budget,
  a state left the allowed range or became NaN/inf;
* :class:`ResourceError` — a request whose estimated memory exceeds what the machine has, refused before
  anything is allocated;
* :class:`OutputLockedError` — another live run holds the output folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from testbed.config import ConfigError


class CheckpointError(ConfigError):
    """A checkpoint file cannot be read as a testbed checkpoint. The message names the file and the remedy."""


class ResourceError(ConfigError):
    """A request would need more memory than the machine has (estimated before allocating)."""


class OutputLockedError(ConfigError):
    """The output folder is in use by another running ``testbed`` process."""


class DivergenceError(FloatingPointError):
    """A solve or a trained student diverged (non-finite or exploding states, or an exhausted step budget)."""


@contextlib.contextmanager
def divergence_context(**labels: Any) -> Iterator[dict[str, Any]]:
    """Re-raise any :class:`FloatingPointError` inside the block as a :class:`DivergenceError` whose message
    starts with ``labels`` (e.g. ``system=…, objective=…, seed=…``).

    The yielded dict may be extended inside the block (e.g. ``ctx["trained steps"] = 50``) so the message also
    says how far the unit of work got.
    """
    info: dict[str, Any] = dict(labels)
    try:
        yield info
    except FloatingPointError as err:
        where = ", ".join(f"{k} {v}" for k, v in info.items())
        raise DivergenceError(f"{where}: {err}") from None
