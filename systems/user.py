"""Systems written outside the package: ``path/to/file.py:NAME``, ``package.module:NAME`` and installed entry points.

A *reference* ``SOURCE:NAME`` names an object in a Python file (``SOURCE`` ends in ``.py``, relative to the working
directory or absolute) or in an importable module. The object is either

* a :class:`~systems.base.TeacherFlow` subclass (used as it is), or
* a **plain description** — a :class:`FlowSpec` or a ``dict`` with the same keys, so the file need not import this
  package::

      SPEC = {"vector_field": f, "dim": 2, "horizon": 2.0, "id_box": ([-2, -2], [2, 2])}

  ``vector_field(t, x)`` may be written in torch or in numpy, for a batch ``x`` of shape ``(N, dim)`` or for one
  state ``(dim,)`` (then it is applied row by row). Optional: ``jacobian(t, x)`` (same conventions, ``(…, dim,
  dim)``), ``flow(x0, t)`` in closed form (``(len(t), N, dim)``), ``ood_box`` (default: the ID box widened by half
  its width on each side), ``autonomous`` (default True), ``stiff`` (default False: the reference flow then uses
  Radau instead of DOP853), ``name``.

Missing pieces are filled in: the Jacobian by autograd for torch fields, by the complex step
``Im f(x + i h e_j)/h`` (``h = 1e-20``, exact to rounding) for numpy fields that accept complex input, else by
central differences; the flow by the DOP853 (or Radau) reference at ``rtol = 1e-11``. Everything is checked on load
(:func:`check_flow`: shapes, finite values, the Jacobian against central differences, a closed-form flow against
the integral of its own field, a bounded reference flow over the horizon from ID states); any failure raises one
:class:`~systems.base.SystemSpecError` line naming the reference.

Installed packages register systems by name through the entry-point group :data:`ENTRY_POINT_GROUP`
(``[project.entry-points."testbed.systems"] my_flow = "mypkg.flows:MyFlow"``); the registry looks there for a name
it does not know.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from systems.base import SystemSpecError, TeacherFlow, as_time_grid

Tensor = torch.Tensor
ENTRY_POINT_GROUP = "testbed.systems"
#: relative tolerance of the checks on load (Jacobian vs central differences; closed-form flow vs its own field)
JACOBIAN_RTOL = 1e-5
FLOW_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """A teacher flow described by its pieces (see the module docstring for the conventions)."""

    vector_field: Callable[..., Any]
    dim: int
    horizon: float
    id_box: tuple[Sequence[float], Sequence[float]]
    ood_box: tuple[Sequence[float], Sequence[float]] | None = None
    jacobian: Callable[..., Any] | None = None
    flow: Callable[..., Any] | None = None
    autonomous: bool = True
    stiff: bool = False
    name: str | None = None

    @classmethod
    def from_mapping(cls, spec: dict[str, Any], where: str) -> FlowSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise SystemSpecError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} in the system description; "
                                  f"known keys: {', '.join(sorted(known))}")
        missing = [k for k in ("vector_field", "dim", "horizon", "id_box") if k not in spec]
        if missing:
            raise SystemSpecError(f"{where}: the system description needs {', '.join(map(repr, missing))}")
        return cls(**spec)


def is_reference(name: str) -> bool:
    """Whether ``name`` is a ``SOURCE:NAME`` reference (not a registered name, not ``dysts:…``)."""
    if not isinstance(name, str) or name.count(":") != 1:
        return False
    source, obj = name.split(":")
    return bool(source) and bool(obj) and source != "dysts" and (source.endswith(".py") or "." in source
                                                                   or source.isidentifier())


def reference_key(ref: str) -> str:
    """The registry key of a reference: a file reference by its resolved path (the same file named from another
    directory is the same system; another file of the same spelling is not), a module reference as written."""
    source, obj = ref.split(":")
    if source.endswith(".py"):
        return f"{Path(source).expanduser().resolve()}:{obj}"
    return ref


def default_name(ref: str) -> str:
    """A file-system-safe name for a reference's system (used in run folders and tables): ``stem.NAME-hash`` for a
    file (the hash of its resolved path tells apart equal stems), ``module.NAME`` for a module."""
    source, obj = ref.split(":")
    if source.endswith(".py"):
        digest = hashlib.sha1(reference_key(ref).encode()).hexdigest()[:8]
        return f"{Path(source).stem}.{obj}-{digest}"
    return f"{source}.{obj}"


def load_object(ref: str) -> Any:
    """The object ``NAME`` of ``SOURCE:NAME`` (a ``.py`` file, imported once under a name derived from its path, or
    a module)."""
    source, obj_name = ref.split(":")
    if source.endswith(".py"):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise SystemSpecError(f"system {ref!r}: no such file {str(path)!r}")
        mod_name = "testbed_user_system_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[mod_name]
                raise SystemSpecError(f"system {ref!r}: importing {str(path)!r} failed: "
                                      f"{type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as err:
            raise SystemSpecError(f"system {ref!r}: cannot import module {source!r}: {err}") from err
    if not hasattr(module, obj_name):
        names = [n for n in vars(module) if not n.startswith("_")]
        raise SystemSpecError(f"system {ref!r}: {source!r} defines no {obj_name!r} (it has: {', '.join(names)})")
    return getattr(module, obj_name)


def flow_class(obj: Any, name: str) -> type[TeacherFlow]:
    """A registrable :class:`TeacherFlow` class from a subclass (returned as is) or a plain description."""
    if isinstance(obj, type) and issubclass(obj, TeacherFlow):
        return obj
    if isinstance(obj, dict):
        obj = FlowSpec.from_mapping(obj, f"system {name!r}")
    if not isinstance(obj, FlowSpec):
        raise SystemSpecError(f"system {name!r}: expected a TeacherFlow subclass, a FlowSpec or a dict describing "
                              f"the flow, got {type(obj).__name__}")
    return described_flow(obj, name)


# ------------------------------------------------------------------------------------------------ wrappers
def _box(box: Any, dim: int, what: str, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        lo, hi = (tuple(float(v) for v in np.asarray(b, dtype=float).reshape(-1)) for b in box)
    except (TypeError, ValueError):
        raise SystemSpecError(f"{where}: {what} must be (low, high), two sequences of {dim} numbers") from None
    if len(lo) != dim or len(hi) != dim:
        raise SystemSpecError(f"{where}: {what} needs {dim} numbers per bound, got {len(lo)} and {len(hi)}")
    if not all(np.isfinite(lo + hi)) or not all(a < b for a, b in zip(lo, hi, strict=True)):
        raise SystemSpecError(f"{where}: {what} must have finite bounds with low < high, got {lo}, {hi}")
    return lo, hi


class _Backend:
    """Calls a user function ``g(t, x)`` written in torch or numpy, batched or per sample, on torch input
    ``x`` of shape ``(..., dim)``; output shape ``(..., *tail)``."""

    def __init__(self, fn: Callable[..., Any], dim: int, tail: tuple[int, ...], what: str, where: str) -> None:
        self.fn, self.dim, self.tail, self.what, self.where = fn, dim, tail, what, where
        self.kind: str | None = None     # "torch", "numpy", "numpy-rows"

    def _rows(self, t: float, xn: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(self.fn(t, row)) for row in xn])

    def _detect(self, t: float, x: Tensor) -> None:
        """Decide how ``fn`` is called, on ``dim + 1`` probe rows near ``x[0]`` (a row count that is not the state
        dimension, so a per-state function cannot pass for a batched one); a batched candidate must also agree with
        ``fn`` applied row by row wherever that works."""
        base = x[:1].to(torch.float64)
        probe = base * (1.0 + 0.01 * torch.arange(self.dim + 1, dtype=torch.float64)[:, None]) + 1e-3 * torch.arange(
            self.dim + 1, dtype=torch.float64)[:, None]
        want = (probe.shape[0], *self.tail)
        xn = probe.numpy()
        errors = []
        try:
            rows = self._rows(t, xn)
            rows = rows if rows.shape == want else None
        except Exception:  # noqa: BLE001  (a batched-only function)
            rows = None
        for kind, arg in (("torch", probe), ("numpy", xn)):
            try:
                out = self.fn(t, arg)
                if kind == "torch" and not isinstance(out, Tensor):
                    errors.append(f"on a torch batch it returned {type(out).__name__}")
                    continue
                arr = out.detach().numpy() if isinstance(out, Tensor) else np.asarray(out)
                if arr.shape != want:
                    errors.append(f"on a {kind} batch of {want[0]} states it returned shape {arr.shape}")
                    continue
                if rows is not None and not np.allclose(arr, rows, rtol=1e-10, atol=1e-12):
                    errors.append(f"on a {kind} batch it differs from the function applied state by state")
                    continue
                self.kind = kind
                return
            except Exception as err:  # noqa: BLE001  (any failure means: not this calling convention)
                errors.append(f"on a {kind} batch: {type(err).__name__}: {err}")
        if rows is not None:
            self.kind = "numpy-rows"
            return
        shape = ", ".join(map(str, self.tail))
        raise SystemSpecError(f"{self.where}: {self.what}(t, x) must return shape (N, {shape}) "
                              f"for x of shape (N, {self.dim}) (or {self.tail} for one state); "
                              + "; ".join(errors))

    def __call__(self, t: Tensor | float, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        tf = float(t)
        if self.kind is None:
            self._detect(tf, flat.detach().to("cpu") if flat.shape[0] else torch.zeros(1, self.dim))
        if self.kind == "torch":
            out = self.fn(tf, flat.to(torch.float64))          # user code sees float64, whatever the caller's dtype
        else:
            xn = flat.detach().to("cpu", torch.float64).numpy()
            if self.kind == "numpy":
                arr = np.asarray(self.fn(tf, xn), dtype=np.float64)
            else:
                arr = np.stack([np.asarray(self.fn(tf, row), dtype=np.float64) for row in xn]) if len(xn) \
                    else np.zeros((0, *self.tail))
            out = torch.from_numpy(np.ascontiguousarray(arr))
        if tuple(out.shape) != (flat.shape[0], *self.tail):
            raise SystemSpecError(f"{self.where}: {self.what}(t, x) returned shape {tuple(out.shape)} for "
                                  f"{flat.shape[0]} states (expected {(flat.shape[0], *self.tail)})")
        return out.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float64).reshape(
            *lead, *self.tail)


def central_difference_jacobian(f: Callable[[float, Tensor], Tensor], t: float, x: Tensor) -> Tensor:
    """``∂f/∂x`` by central differences, step ``h_j = 1e-6·max(1, |x_j|)`` (error O(h²)); ``x`` (N, d) float64."""
    cols = []
    for j in range(x.shape[-1]):
        h = 1e-6 * torch.clamp(x[..., j].abs(), min=1.0)
        e = torch.zeros_like(x)
        e[..., j] = h
        cols.append((f(t, x + e) - f(t, x - e)) / (2 * h[..., None]))
    return torch.stack(cols, dim=-1)


def _numpy_complex_step(fn: Callable[..., Any], batched: bool, t: float, x: np.ndarray) -> np.ndarray | None:
    """``Im f(x + i h e_j)/h`` columns (h = 1e-20), or None when ``fn`` does not take complex input."""
    h = 1e-20
    cols = []
    try:
        with warnings.catch_warnings():
            # a real-only function (math.sin, float(...)) drops the imaginary part with a ComplexWarning: refuse
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            for j in range(x.shape[-1]):
                xc = x.astype(np.complex128)
                xc[:, j] += 1j * h
                out = np.asarray(fn(t, xc)) if batched else np.stack([np.asarray(fn(t, row)) for row in xc])
                if not np.iscomplexobj(out):
                    return None
                cols.append(out.imag / h)
    except Exception:  # noqa: BLE001  (a real-only implementation: fall back to differences)
        return None
    jac = np.stack(cols, axis=-1)
    return jac if np.all(np.isfinite(jac)) else None


def described_flow(spec: FlowSpec, name: str) -> type[TeacherFlow]:
    """A :class:`TeacherFlow` subclass built from ``spec`` (registered by the caller under ``name``)."""
    where = f"system {name!r}"
    if spec.name is not None and (not isinstance(spec.name, str) or not spec.name
                                  or any(c in spec.name for c in "/\\") or spec.name.startswith(".")):
        raise SystemSpecError(f"{where}: name must be a non-empty string without path separators, got {spec.name!r}")
    if isinstance(spec.dim, bool) or not isinstance(spec.dim, int) or spec.dim < 1:
        raise SystemSpecError(f"{where}: dim must be a positive integer, got {spec.dim!r}")
    if not callable(spec.vector_field):
        raise SystemSpecError(f"{where}: vector_field must be callable f(t, x)")
    dim = spec.dim
    id_lo, id_hi = _box(spec.id_box, dim, "id_box", where)
    if spec.ood_box is None:
        w = [(b - a) / 2 for a, b in zip(id_lo, id_hi, strict=True)]
        ood_lo = tuple(a - x for a, x in zip(id_lo, w, strict=True))
        ood_hi = tuple(b + x for b, x in zip(id_hi, w, strict=True))
    else:
        ood_lo, ood_hi = _box(spec.ood_box, dim, "ood_box", where)
        if any(a > c for a, c in zip(ood_lo, id_lo, strict=True)) or any(b < d for b, d in
                                                                        zip(ood_hi, id_hi, strict=True)):
            raise SystemSpecError(f"{where}: ood_box must contain id_box")
    field = _Backend(spec.vector_field, dim, (dim,), "vector_field", where)
    user_jac = None if spec.jacobian is None else _Backend(spec.jacobian, dim, (dim, dim), "jacobian", where)
    user_flow = spec.flow
    complex_step_ok: list[bool | None] = [None]   # numpy fields: decided on the first Jacobian call

    def vector_field(self, t, x: Tensor) -> Tensor:
        return field(t, x)

    def jacobian(self, t, x: Tensor) -> Tensor:
        if user_jac is not None:
            return user_jac(t, x)
        x = torch.as_tensor(x)
        lead, flat = x.shape[:-1], x.reshape(-1, dim).detach().to("cpu", torch.float64)
        if field.kind is None:
            field(t, flat[:1] if flat.shape[0] else torch.zeros(1, dim, dtype=torch.float64))
        if field.kind == "torch":
            tf = float(t)
            try:
                jac = torch.func.vmap(torch.func.jacrev(lambda xi: spec.vector_field(tf, xi[None])[0]))(flat)
            except Exception:  # noqa: BLE001  (not vmappable: plain autograd, one state at a time)
                jac = torch.stack([torch.autograd.functional.jacobian(
                    lambda xi: spec.vector_field(tf, xi[None])[0], xi) for xi in flat]) if len(flat) \
                    else torch.zeros(0, dim, dim, dtype=torch.float64)
        else:
            cs = None
            if complex_step_ok[0] is not False:
                cs = _numpy_complex_step(spec.vector_field, field.kind == "numpy", float(t), flat.numpy())
            fd = None
            if complex_step_ok[0] is None:    # first use: the complex step must agree with differences, else never
                fd = central_difference_jacobian(field, float(t), flat)
                complex_step_ok[0] = cs is not None and _relerr(torch.from_numpy(cs), fd) <= JACOBIAN_RTOL
            if complex_step_ok[0]:
                jac = torch.from_numpy(cs)
            else:
                jac = fd if fd is not None else central_difference_jacobian(field, float(t), flat)
        return jac.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float64).reshape(
            *lead, dim, dim)

    def flow(self, x0: Tensor, t) -> Tensor:
        if user_flow is None:
            return self.reference_flow(x0, t)
        x0 = torch.as_tensor(x0)
        tg = as_time_grid(t)
        out = user_flow(x0, tg)
        out = torch.as_tensor(np.asarray(out) if not isinstance(out, Tensor) else out)
        return out.to(device=x0.device, dtype=x0.dtype if x0.is_floating_point() else torch.float64).reshape(
            tg.numel(), *x0.shape)

    attrs: dict[str, Any] = {
        "__annotations__": {"name": ClassVar[str], "dim": ClassVar[int], "autonomous": ClassVar[bool],
                            "closed_form": ClassVar[bool], "horizon": float},
        "__doc__": f"User system {name!r} ({'closed-form' if user_flow else 'reference'} flow, "
                   f"{'user' if user_jac else 'derived'} Jacobian).",
        "name": spec.name or (default_name(name) if is_reference(name) else name), "dim": dim,
        "autonomous": bool(spec.autonomous),
        "closed_form": user_flow is not None,
        "horizon": float(spec.horizon), "id_low": id_lo, "id_high": id_hi, "ood_low": ood_lo, "ood_high": ood_hi,
        "reference_method": "Radau" if spec.stiff else "DOP853",
        "vector_field": vector_field, "jacobian": jacobian, "flow": flow,
        "jacobian_source": "user" if user_jac is not None else "derived",
    }
    cls = type("UserFlow_" + hashlib.sha1(name.encode()).hexdigest()[:8], (TeacherFlow,), attrs)
    return dataclasses.dataclass(repr=False)(cls)


# ------------------------------------------------------------------------------------------------ checks
def _relerr(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _bounded_flow(system: TeacherFlow, x: Tensor, tg: Tensor, where: str, which: str) -> Tensor:
    """The reference flow from ``x`` over ``tg``; a clear error if it fails or leaves every bound."""
    T = float(tg[-1])
    try:
        ref = system.reference_flow(x, tg)
    except RuntimeError as err:
        raise SystemSpecError(f"{where}: the reference integration over [0, {T:g}] from {which} states failed "
                              f"({err}); stiff? set stiff=True; unbounded? shorten the horizon or shrink the "
                              f"{which.lower()}_box") from None
    if not bool(torch.isfinite(ref).all()) or float(ref.abs().max()) > 1e8:
        raise SystemSpecError(f"{where}: the flow from {which} states leaves every bound (|x| > 1e8) within the "
                              f"horizon {T:g}; shorten the horizon or shrink the {which.lower()}_box")
    return ref


def check_flow(system: TeacherFlow, where: str, n: int = 8, seed: int = 0) -> None:
    """Validate a built system on ``n`` ID states: shapes and finite values of the field and Jacobian, the Jacobian
    against central differences (user-supplied or derived by autograd/complex step), a closed-form flow against the
    reference integral of the field, and a bounded reference flow over ``[0, T]`` from ID and from OOD states."""
    d, T = system.dim, float(system.horizon)
    x = system.sample_id(n, torch.Generator().manual_seed(seed))
    fields = []
    for t in (0.0, T / 2):
        f = system.vector_field(t, x)
        if tuple(f.shape) != (n, d) or not bool(torch.isfinite(f).all()):
            raise SystemSpecError(f"{where}: vector_field at t = {t:g} returned shape {tuple(f.shape)} (expected "
                                  f"{(n, d)}) or non-finite values on ID states")
        fields.append(f)
        try:
            jac = system.jacobian(t, x)
        except SystemSpecError:
            raise
        except Exception as err:  # noqa: BLE001  (one line, whatever the user's code raised)
            raise SystemSpecError(f"{where}: the Jacobian at t = {t:g} could not be computed "
                                  f"({type(err).__name__}: {err})") from None
        if tuple(jac.shape) != (n, d, d) or not bool(torch.isfinite(jac).all()):
            raise SystemSpecError(f"{where}: jacobian at t = {t:g} returned shape {tuple(jac.shape)} (expected "
                                  f"{(n, d, d)}) or non-finite values")
        fd = central_difference_jacobian(system.vector_field, t, x)
        err = _relerr(jac, fd)
        if err > JACOBIAN_RTOL:
            raise SystemSpecError(f"{where}: the Jacobian disagrees with central differences of vector_field at "
                                  f"t = {t:g} (relative error {err:.2g})")
    if system.autonomous and not torch.allclose(fields[0], fields[1], rtol=1e-12, atol=1e-12):
        raise SystemSpecError(f"{where}: declared autonomous, but vector_field differs between t = 0 and t = {T / 2:g} "
                              "(set autonomous=False)")
    tg = torch.tensor([0.0, T / 2, T], dtype=torch.float64)
    ref = _bounded_flow(system, x, tg, where, "ID")
    _bounded_flow(system, system.sample_ood(n, torch.Generator().manual_seed(seed + 1)), tg, where, "OOD")
    if system.closed_form:
        got = system.flow(x, tg)
        if tuple(got.shape) != tuple(ref.shape):
            raise SystemSpecError(f"{where}: flow(x0, t) returned shape {tuple(got.shape)}, expected "
                                  f"{tuple(ref.shape)} (len(t), N, dim)")
        err = _relerr(got, ref)
        if err > FLOW_RTOL:
            raise SystemSpecError(f"{where}: the closed-form flow disagrees with the integral of its own "
                                  f"vector_field (relative error {err:.2g} over [0, {T:g}])")


def user_flow_class(ref: str) -> type[TeacherFlow]:
    """Load, build and check the system named by the reference ``ref`` (cached by the registry)."""
    obj = load_object(ref)
    cls = flow_class(obj, ref)
    try:
        system = cls()
    except TypeError as err:
        raise SystemSpecError(f"system {ref!r}: its class cannot be built with default parameters ({err})") from None
    check_flow(system, f"system {ref!r}")
    return cls


def entry_point_objects() -> dict[str, Any]:
    """``{name: entry point}`` of the installed :data:`ENTRY_POINT_GROUP` (not loaded yet)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
