"""One base for the testbed's data containers (teacher trajectories, labelled examples, partially observed paths).

A container is a dataclass of tensors validated once, in ``__post_init__``. :class:`SampleData` gives every
container the same cheap, *unchecked* operations on already-validated data (they run once per training step):

* :meth:`SampleData.subset` — the samples ``idx`` (a 1-D index tensor), indexing each per-sample field along its
  declared sample axis (``SAMPLE_AXES``: e.g. axis 1 for states of shape ``(K+1, N, d)``);
* :meth:`SampleData.to` — move every tensor to a device; ``dtype`` casts only the floating fields
  (``FLOAT_FIELDS``; labels and indices stay int64);
* :meth:`SampleData.replace` — a copy with some fields replaced, skipping validation (``meta`` is copied).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch

Tensor = torch.Tensor
D = TypeVar("D", bound="SampleData")


class SampleData:
    """Mixin for dataclass containers; subclasses declare ``SAMPLE_AXES`` and ``FLOAT_FIELDS``."""

    #: per-sample fields → the axis that indexes the samples (fields that are None are skipped)
    SAMPLE_AXES: ClassVar[dict[str, int]] = {}
    #: floating-point tensor fields (cast by ``to(dtype=…)``); every other tensor field only moves device
    FLOAT_FIELDS: ClassVar[tuple[str, ...]] = ()

    def replace(self: D, **fields: Any) -> D:
        """A copy with ``fields`` replaced, without re-validation (for rows of validated data)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__, **fields)
        if isinstance(self.__dict__.get("meta"), dict):
            new.__dict__["meta"] = dict(new.__dict__["meta"])
        return new

    def subset(self: D, idx: Tensor) -> D:
        """The samples ``idx`` (1-D index tensor) of every per-sample field."""
        out: dict[str, Any] = {}
        for name, axis in self.SAMPLE_AXES.items():
            v = getattr(self, name)
            if v is not None:
                out[name] = v[(slice(None),) * axis + (idx.to(v.device),)]
        return self.replace(**out)

    def to(self: D, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> D:
        """Move every tensor to ``device``; ``dtype`` applies to :data:`FLOAT_FIELDS` only."""
        out: dict[str, Any] = {}
        for name, v in self.__dict__.items():
            if isinstance(v, Tensor):
                out[name] = v.to(device=device, dtype=dtype if name in self.FLOAT_FIELDS else None)
        return self.replace(**out)
