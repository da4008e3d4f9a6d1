"""Matrix-free spectral norms of the propagation field's Jacobians (no dense Jacobian, no SVD).

For a student ``h_{l+1} = step(l, h_l)`` with layer Jacobians ``J_l(x) = ∂h_{l+1}/∂h_l`` (at the input ``x``'s
trajectory) and path Jacobians ``P_l(x) = ∂h_L/∂h_l = J_{L-1} ⋯ J_l`` (``P_L = I``):

* :func:`layer_spectral_norms` — ``‖J_l(x)‖₂`` (and, optionally, ``σ_max/σ_min``) for every layer and input;
* :func:`path_spectral_norms` — ``‖P_l(x)‖₂`` for every depth ``l = 0..L`` (or the depths asked for) and input;
  the input mean at ``l = 0`` is the path sensitivity ``E_x‖∂h_L/∂h_0‖₂``
  (:attr:`testbed.field.metrics.PathSensitivity.total`).

**The estimator.** ``‖A‖₂² = λ_max(AᵀA)``: each norm is the top eigenvalue of ``AᵀA``, found by batched Lanczos
iteration over all independent problems (layers × inputs, or depths × inputs) at once
(:func:`testbed.field.lanczos.lanczos_extremes`, whose module docstring gives the estimator, the stopping rule on
``tol`` and the accuracy observed). Only products ``v ↦ A v`` and ``u ↦ Aᵀ u`` are needed; this module builds them
from the student.

**Warm starts.** Nearby problems have nearby top singular vectors, and a start close to it needs few steps.
:func:`layer_spectral_norms` solves every ``anchor_every``-th layer first (random starts, all batched) and starts the
others from their nearest anchor's Ritz vector, when neighbouring layers are alike (tied or smoothly varying
weights). :func:`path_spectral_norms` (``"accumulate"``) solves the depths from ``L − 1`` down and starts depth
``l`` from the last solved depth's top right Ritz vector ``y`` pulled back, ``J_lᵀ y ∝ P_lᵀ u_{l+1}`` (one adjoint
step on a single vector). Each warm start gets ``warm_start`` times a random unit vector added, so that no
direction is missing from the Krylov space (an exactly orthogonal start, e.g. at a crossing of the two top singular
values, would otherwise never see the new top one).

**The products.** For a student that spells out its layers as ``h_{l+1} = h_l + m·g(h_l)``
(:meth:`~testbed.students.base.Student.branch_layers`; e.g. a :class:`~testbed.students.ResidualStudent` or
:class:`~testbed.students.SmoothResidualStudent` with MLP branches), ``g(h) = W_k σ(… σ(W_1 [h, t] + b_1) …) + b_k``,
the layer Jacobian has the closed form

    J_l = I + m · W_k D_{k-1} W_{k-1} ⋯ D_1 W_1[:, :d],      D_i = diag(σ'(z_i)),  z_i the pre-activations,

(``hidden_layers = 0``: ``J_l = I + m W D``, ``D = diag(σ'(h_l))``), applied matrix-free: the ``D_i`` are taken once
along the trajectory, ``J_l v`` costs ``k`` matrix-vector products with the weights and ``J_lᵀ u`` the transposed
ones, batched over layers (one GEMM per weight for tied branches). Any other student (``branch_layers`` is ``None``)
falls back to :func:`torch.func.jvp` / :func:`torch.func.vjp` of ``student.step(l, ·)`` along the stored trajectory.

**Path norms** are computed one of two ways (``method``):

* ``"accumulate"`` — the adjoint recursion ``P_l = P_{l+1} J_l`` from ``P_L = I``: the ``d`` rows of ``P_{l+1}`` are
  pulled back through layer ``l`` as one block of cotangents (``d`` vector-Jacobian products; no ``J_l`` is formed),
  so one backward sweep yields every ``P_l``, held one depth at a time (``B·d²`` numbers), and ``‖P_l‖₂`` is found
  by Lanczos on that ``B × d × d`` block. Cost ``O(L·d)`` products (for a one-hidden-layer branch: two GEMMs of
  ``d·B`` rows per layer, the dominant fixed cost) plus a few Lanczos steps per depth, whatever the depths; the
  exact Frobenius norms ``‖P_l‖_F`` come for free.
* ``"chain"`` — fully matrix-free: ``P_l v`` by forward tangents (``jvp``) through layers ``l..L-1`` and ``P_lᵀ u`` by
  adjoints (``vjp``) back, all asked-for depths batched, on one stored trajectory. Memory ``O(L·B·d)``; cost per
  Lanczos step ``Σ_l (L − l)`` products, so it pays for a few depths (e.g. only ``l = 0``, the summary).

``"auto"`` picks ``"chain"`` when ``40·Σ_l (L − l) ≤ L·d`` (about 20 Lanczos steps of two products each against
``d`` cotangents per layer), else ``"accumulate"``.

**Condition numbers** (``condition=True`` in :func:`layer_spectral_norms`) come from the same Lanczos run: the
bottom Ritz value converges to ``λ_min(JᵀJ) = σ_min²`` (from above, so ``σ_max/σ_min`` is a lower bound); the
stopping rule then also waits for ``σ_min``. It costs no extra products but typically more steps, and since
``JᵀJ`` is applied in the working precision, ``σ_min`` is only resolved to about ``eps·σ_max²/σ_min²`` (relative):
for ill-conditioned layers (``cond ≳ 1e3`` in float32) use the dense :func:`testbed.field.geometry.jacobian_spectra`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from testbed.field.lanczos import (
    SpectralInfo,
    check_settings,
    default_max_iter,
    lanczos_extremes,
    merge_info,
    random_start,
)
from testbed.students.base import Affine, BranchLayers, Student

Tensor = torch.Tensor
Op = tuple[str, Tensor]


# ------------------------------------------------------------------------------------------ results
@dataclass
class LayerSpectra:
    """``‖J_l(x)‖₂`` per layer and input (float64).

    Attributes:
        spectral:  (L, B) ``σ_max(J_l)``.
        condition: (L, B) ``σ_max/σ_min`` (``None`` unless asked for; ``inf`` where singular).
        info:      :class:`SpectralInfo`; with the two-stage warm start (anchor layers, then the rest) its
            ``iterations`` and ``problems`` are summed over the two runs.
        structured: whether the closed-form residual-MLP Jacobian was used (else ``torch.func`` jvp/vjp).
    """

    spectral: Tensor
    condition: Tensor | None
    info: SpectralInfo
    structured: bool

    @property
    def mean(self) -> Tensor:
        """(L,) input mean of ``‖J_l‖₂`` — :attr:`testbed.field.geometry.FieldGeometry.jac_spectral`."""
        return self.spectral.mean(1)


@dataclass
class PathSpectra:
    """``‖P_l(x)‖₂ = ‖∂h_L/∂h_l‖₂`` per depth and input (float64).

    Attributes:
        depths:    the depths ``l`` (ascending).
        spectral:  (len(depths), B) ``σ_max(P_l)``.
        frobenius: (len(depths), B) ``‖P_l‖_F`` (exact, free with ``"accumulate"``; ``None`` with ``"chain"``).
        info:      :class:`SpectralInfo`; with ``"accumulate"`` (one Lanczos run per depth) ``iterations`` and
            ``problems`` are summed over depths, ``rel_change`` is the worst and ``converged`` requires all.
        method:    ``"accumulate"`` or ``"chain"``.
        structured: whether the closed-form residual-MLP Jacobian was used.
    """

    depths: list[int]
    spectral: Tensor
    frobenius: Tensor | None
    info: SpectralInfo
    method: str
    structured: bool

    @property
    def curve(self) -> Tensor:
        """(len(depths),) input mean of ``‖P_l‖₂`` — :attr:`~testbed.field.metrics.PathSensitivity.spectral`."""
        return self.spectral.mean(1)

    @property
    def total(self) -> float:
        """``E_x ‖∂h_L/∂h_0‖₂`` (= :attr:`testbed.field.metrics.PathSensitivity.total`); needs depth 0."""
        if 0 not in self.depths:
            raise ValueError("depth 0 was not computed; pass depths including 0")
        return float(self.spectral[self.depths.index(0)].mean())


# ------------------------------------------------------------------------------------------ layer maps
class LayerMaps:
    """Jacobian-vector products of every layer map along one stored trajectory.

    ``jvp(v, layer)`` returns ``J_l v`` and ``vjp(u, layer)`` returns ``J_lᵀ u`` for a single ``layer = l`` with
    ``v`` of shape ``(..., B, d)`` (any leading dims, e.g. a block of vectors), or for ``layer=None`` all layers at
    once with ``v`` of shape ``(L, B, d)`` (``v[l]`` goes through layer ``l``); ``out`` (same shape, not ``v``) receives
    the result when given. Build with :func:`layer_maps`.
    """

    structured: bool = False

    def __init__(self, student: Student, trajectory: Tensor) -> None:
        self.student = student
        self.trajectory = trajectory
        self.n_layers = trajectory.shape[0] - 1
        self.batch, self.dim = trajectory.shape[-2], trajectory.shape[-1]
        # neighbouring layers share (or smoothly vary) their weights: their Jacobians are close
        self.layers_similar = bool(student.layers_similar)

    def jvp(self, v: Tensor, layer: int | None = None, out: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def vjp(self, u: Tensor, layer: int | None = None, out: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class _StructuredMaps(LayerMaps):
    """Closed-form ``J_l = I + m·W_k D_{k-1} ⋯ D_1 W_1`` applied factor by factor.

    ``ops`` lists the factors of the branch Jacobian in the order they act on a tangent: ``("lin", W)`` with ``W``
    of shape (out, in) (shared by all layers) or (L, out, in), and ``("diag", D)`` with ``D`` of shape (L, B, n).
    Intermediate products go to scratch buffers kept between calls (fresh multi-MB allocations page-fault).
    """

    structured = True

    def __init__(self, student: Student, trajectory: Tensor, multiplier: float, ops: list[Op]) -> None:
        super().__init__(student, trajectory)
        self.multiplier, self.ops = float(multiplier), ops
        self._scratch: dict[tuple, Tensor] = {}

    @staticmethod
    def _factor(op: Op, layer: int | None) -> Tensor:
        kind, a = op
        if layer is None:
            return a
        return a[layer] if (kind == "diag" or a.ndim == 3) else a

    def _buffer(self, slot: int, shape: torch.Size, like: Tensor) -> Tensor:
        key = (slot, tuple(shape), like.dtype, like.device)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return self._scratch[key]

    def _apply(self, v: Tensor, layer: int | None, transpose: bool, out: Tensor | None) -> Tensor:
        ops = list(reversed(self.ops) if transpose else self.ops)
        x = v
        for k, op in enumerate(ops):
            a = self._factor(op, layer)
            if op[0] == "diag":
                x = torch.mul(x, a, out=self._buffer(k, torch.broadcast_shapes(x.shape, a.shape), v)) if x is v \
                    else x.mul_(a)
                continue
            mat = a if transpose else a.mT
            if k == len(ops) - 1 and mat.ndim == 2 and v.is_contiguous():  # v + m·x W, fused into one GEMM
                flat = v.reshape(-1, v.shape[-1])
                res = torch.addmm(flat, x.reshape(-1, x.shape[-1]), mat, alpha=self.multiplier,
                                  out=None if out is None else out.view(flat.shape))
                return res.view(v.shape) if out is None else out
            shape = (*torch.broadcast_shapes(x.shape[:-2], mat.shape[:-2]), x.shape[-2], mat.shape[-1])
            x = torch.matmul(x, mat, out=self._buffer(k, torch.Size(shape), v))
        return torch.add(v, x, alpha=self.multiplier, out=out)

    def jvp(self, v: Tensor, layer: int | None = None, out: Tensor | None = None) -> Tensor:
        return self._apply(v, layer, False, out)

    def vjp(self, u: Tensor, layer: int | None = None, out: Tensor | None = None) -> Tensor:
        return self._apply(u, layer, True, out)


class _AutogradMaps(LayerMaps):
    """``torch.func.jvp`` / ``torch.func.vjp`` of ``student.step(l, ·)`` at the stored states (any student)."""

    def __init__(self, student: Student, trajectory: Tensor) -> None:
        super().__init__(student, trajectory)
        self._vjp_fns: dict[int, Callable] = {}

    def _step(self, l: int) -> Callable[[Tensor], Tensor]:
        return lambda h: self.student.step(l, h)

    @staticmethod
    def _batched(fn: Callable[[Tensor], Tensor], v: Tensor, b: int, d: int) -> Tensor:
        lead = v.shape[:-2]
        flat = v.reshape(-1, b, d)
        if flat.shape[0] == 1:
            out = fn(flat[0])[None]
        else:
            try:
                out = vmap(fn)(flat)
            except RuntimeError as err:  # e.g. torchdiffeq writes its solution in place: no vmap
                if "vmap" not in str(err) and "batch" not in str(err):
                    raise
                out = torch.stack([fn(x) for x in flat])
        return out.reshape(*lead, b, d)

    def _one(self, v: Tensor, l: int, transpose: bool) -> Tensor:
        h = self.trajectory[l]
        if transpose:
            if l not in self._vjp_fns:
                self._vjp_fns[l] = vjp(self._step(l), h)[1]
            fn = self._vjp_fns[l]
            return self._batched(lambda u: fn(u)[0], v, self.batch, self.dim)
        step = self._step(l)
        return self._batched(lambda t: jvp(step, (h,), (t,))[1], v, self.batch, self.dim)

    def _apply(self, v: Tensor, layer: int | None, transpose: bool) -> Tensor:
        if layer is not None:
            return self._one(v, layer, transpose)
        return torch.stack([self._one(v[l], l, transpose) for l in range(self.n_layers)])

    def jvp(self, v: Tensor, layer: int | None = None, out: Tensor | None = None) -> Tensor:
        res = self._apply(v, layer, False)
        return res if out is None else out.copy_(res)

    def vjp(self, u: Tensor, layer: int | None = None, out: Tensor | None = None) -> Tensor:
        res = self._apply(u, layer, True)
        return res if out is None else out.copy_(res)


def _branch_ops(branch: BranchLayers, h: Tensor) -> list[Op]:
    """Factors of ``∂g/∂h`` at the states ``h`` of one layer whose branch is spelled out by ``branch``."""
    d = h.shape[-1]
    x = h
    if branch.time is not None:
        x = torch.cat([h, torch.full_like(h[..., :1], float(branch.time))], dim=-1)
    restrict = branch.time is not None  # the state is the first d input coordinates until an Affine consumes them
    ops: list[Op] = []
    for layer in branch.layers:
        if isinstance(layer, Affine):
            w = layer.weight
            ops.append(("lin", w[:, :d] if restrict else w))
            x = nn.functional.linear(x, w, layer.bias)
            restrict = False
        else:  # an elementwise activation (the BranchLayers contract)
            deriv = jvp(layer, (x,), (torch.ones_like(x),))[1]  # σ'(x), elementwise
            x = layer(x)
            ops.append(("diag", deriv[..., :d] if restrict else deriv))
    return ops


def _structured_ops(student: Student, trajectory: Tensor) -> tuple[float, list[Op]] | None:
    """``(m, factors stacked over layers)`` when every layer of ``student`` is spelled out by
    :meth:`~testbed.students.base.Student.branch_layers` with one multiplier and one branch shape, else ``None``."""
    n_layers = trajectory.shape[0] - 1
    branches = [student.branch_layers(l) for l in range(n_layers)]
    if any(b is None for b in branches) or len({b.multiplier for b in branches}) != 1:
        return None
    layer_ops = [_branch_ops(branch, trajectory[l]) for l, branch in enumerate(branches)]
    if any([(k, a.shape) for k, a in ops] != [(k, a.shape) for k, a in layer_ops[0]] for ops in layer_ops):
        return None
    stacked: list[Op] = []
    for k, (kind, _) in enumerate(layer_ops[0]):
        mats = [ops[k][1] for ops in layer_ops]
        if kind == "lin" and all(m is mats[0] for m in mats):
            stacked.append((kind, mats[0].detach()))  # tied: one weight for every layer
        else:
            stacked.append((kind, torch.stack(mats).detach()))
    return float(branches[0].multiplier), stacked


@torch.no_grad()
def layer_maps(student: Student, x0: Tensor, structured: bool | None = None) -> LayerMaps:
    """:class:`LayerMaps` of ``student`` along the trajectory of ``x0`` (B, d).

    ``structured=None`` uses the closed-form residual-MLP Jacobian when the student allows it, else
    ``torch.func``; ``True`` requires the closed form (``ValueError`` otherwise); ``False`` forces ``torch.func``.
    """
    traj = student.trajectory(x0).detach()
    if structured is not False:
        found = _structured_ops(student, traj)
        if found is not None:
            return _StructuredMaps(student, traj, *found)
        if structured:
            raise ValueError(f"no closed-form layer Jacobian for {type(student).__name__} with this branch")
    return _AutogradMaps(student, traj)


# ------------------------------------------------------------------------------------------ per-layer norms
def _layer_gram(maps: LayerMaps, layers: list[int]) -> Callable[[Tensor], Tensor]:
    """``v ↦ J_lᵀ J_l v[i]`` for ``l = layers[i]``, batched: v of shape (len(layers), B, d)."""
    if layers == list(range(maps.n_layers)):
        return lambda v: maps.vjp(maps.jvp(v))
    if isinstance(maps, _StructuredMaps):
        ops = [(k, a[layers] if (k == "diag" or a.ndim == 3) else a) for k, a in maps.ops]
        sub = _StructuredMaps(maps.student, maps.trajectory, maps.multiplier, ops)
        return lambda v: sub.vjp(sub.jvp(v))
    return lambda v: torch.stack([maps.vjp(maps.jvp(v[i], l), l) for i, l in enumerate(layers)])


@torch.no_grad()
def layer_spectral_norms(student: Student, x0: Tensor, tol: float = 1e-5, max_iter: int | None = None,
                         min_iter: int = 2, condition: bool = False, structured: bool | None = None,
                         warm_start: float | None = 1e-3, anchor_every: int = 4, seed: int = 0,
                         maps: LayerMaps | None = None) -> LayerSpectra:
    """``‖J_l(x)‖₂`` for every layer ``l`` and input ``x`` of ``x0`` (B, d), by batched Lanczos on ``J_lᵀJ_l``.

    All problems run together; each step applies ``J_l`` and ``J_lᵀ`` once (closed form for residual-MLP students,
    else ``torch.func``). ``tol``: relative change of every estimate at which to stop; ``max_iter`` (default
    ``max(20, 2d)``) caps the steps; ``condition=True`` also returns ``σ_max/σ_min`` (see the module docstring for
    its cost and accuracy). ``maps`` reuses prebuilt :func:`layer_maps`.

    Warm start: when neighbouring layers have close Jacobians (tied or smoothly varying weights) and ``L ≥
    2·anchor_every``, the anchor layers ``anchor_every//2, +anchor_every, …`` are solved first from random starts,
    then every other layer starts from its nearest anchor's top Ritz vector (plus its bottom one with
    ``condition=True``) plus ``warm_start`` times a random unit vector, which cuts the steps the rest needs.
    ``warm_start=None`` solves all layers at once from random starts.
    """
    maps = layer_maps(student, x0, structured) if maps is None else maps
    n_layers, b, d = maps.n_layers, maps.batch, maps.dim
    cap = max_iter or default_max_iter(d)
    check_settings(tol, cap, min_iter)
    v0 = random_start((n_layers, b, d), maps.trajectory, seed)
    two_stage = (warm_start is not None and maps.layers_similar and anchor_every >= 2
                 and n_layers >= 2 * anchor_every)
    if not two_stage:
        everything = list(range(n_layers))
        lam_max, lam_min, _, info = lanczos_extremes(_layer_gram(maps, everything), v0, tol, cap, min_iter,
                                                     want_min=condition)
    else:
        anchors = list(range(anchor_every // 2, n_layers, anchor_every))
        rest = [l for l in range(n_layers) if l not in set(anchors)]
        lam_a, min_a, vec, info_a = lanczos_extremes(_layer_gram(maps, anchors), v0[anchors], tol, cap, min_iter,
                                                     want_min=condition, return_vector=True)
        nearest = [min(range(len(anchors)), key=lambda i, l=l: abs(anchors[i] - l)) for l in rest]
        rand = v0[rest]
        unit = torch.linalg.vector_norm
        start = vec[nearest] + warm_start * rand / unit(rand, dim=-1, keepdim=True)
        lam_r, min_r, _, info_r = lanczos_extremes(_layer_gram(maps, rest), start, tol, cap, min_iter,
                                                   want_min=condition)
        lam_max = torch.empty(n_layers, b, dtype=torch.float64, device=lam_a.device)
        lam_max[anchors], lam_max[rest] = lam_a, lam_r
        lam_min = None
        if condition:
            lam_min = torch.empty_like(lam_max)
            lam_min[anchors], lam_min[rest] = min_a, min_r
        info = merge_info([info_a, info_r], tol, cap)
    smax = lam_max.clamp_min(0).sqrt()
    cond = None
    if lam_min is not None:
        smin = lam_min.clamp_min(0).sqrt()
        cond = torch.where(smin > 0, smax / torch.where(smin > 0, smin, torch.ones_like(smin)),
                           torch.full_like(smax, math.inf))
    return LayerSpectra(smax, cond, info, maps.structured)


# ------------------------------------------------------------------------------------------ path norms
def _path_chain(maps: LayerMaps, depths: list[int], tol: float, max_iter: int, min_iter: int,
                seed: int) -> tuple[Tensor, SpectralInfo]:
    n_layers = maps.n_layers
    inner = [l for l in depths if l < n_layers]  # P_L = I
    out = torch.ones(len(depths), maps.batch, dtype=torch.float64, device=maps.trajectory.device)
    if not inner:
        return out, SpectralInfo(0, 0.0, True, tol, max_iter, 0)
    first = inner[0]

    def gram(v: Tensor) -> Tensor:  # v (n_inner, B, d): chain k starts at depth inner[k]
        x = v
        for layer in range(first, n_layers):  # forward tangents: depths ≤ layer are active
            a = sum(1 for l in inner if l <= layer)
            x = torch.cat([maps.jvp(x[:a], layer), x[a:]]) if a < len(inner) else maps.jvp(x, layer)
        for layer in range(n_layers - 1, first - 1, -1):  # adjoints back to each chain's start
            a = sum(1 for l in inner if l <= layer)
            x = torch.cat([maps.vjp(x[:a], layer), x[a:]]) if a < len(inner) else maps.vjp(x, layer)
        return x

    v0 = random_start((len(inner), maps.batch, maps.dim), maps.trajectory, seed)
    lam, _, _, info = lanczos_extremes(gram, v0, tol, max_iter, min_iter)
    out[: len(inner)] = lam.clamp_min(0).sqrt()
    return out, info


def _path_accumulate(maps: LayerMaps, depths: list[int], tol: float, max_iter: int, min_iter: int, seed: int,
                     warm_start: float | None) -> tuple[Tensor, Tensor, SpectralInfo]:
    n_layers, b, d = maps.n_layers, maps.batch, maps.dim
    traj = maps.trajectory
    want = set(depths)
    out = torch.ones(len(depths), b, dtype=torch.float64, device=traj.device)
    frob = torch.full_like(out, math.sqrt(d))  # ‖I‖_F at depth L
    rows = torch.eye(d, dtype=traj.dtype, device=traj.device)[:, None, :].expand(d, b, d).contiguous()
    infos: list[SpectralInfo] = []
    guess: Tensor | None = None  # top right singular direction of the last depth solved, pulled back to depth l
    spare = torch.empty_like(rows)  # reused buffers: no page faults, a small working set
    for l in range(n_layers - 1, depths[0] - 1, -1):
        # rows[r, i] = row r of P_l(x_i) = J_lᵀ (row r of P_{l+1}(x_i))
        rows, spare = maps.vjp(rows, l, out=spare), rows
        work = spare  # free until the next layer: scratch for this depth's products
        if guess is not None:
            guess = maps.vjp(guess, l)
        if l not in want:
            continue
        frob[depths.index(l)] = torch.mul(rows, rows, out=work).sum((0, 2)).to(torch.float64).sqrt()

        def gram(v: Tensor, p: Tensor = rows, work: Tensor = work) -> Tensor:  # P_lᵀ P_l v per input
            pv = torch.mul(p, v, out=work).sum(-1, keepdim=True)
            return torch.mul(p, pv, out=work).sum(0)

        v0 = random_start((b, d), traj, seed + l)
        if guess is not None and warm_start is not None:
            # the last solved depth k's top right singular vector y, pulled back: J_lᵀ⋯J_{k-1}ᵀ y ∝ P_lᵀ u_k
            unit = torch.linalg.vector_norm
            v0 = guess / unit(guess, dim=-1, keepdim=True).clamp_min(1e-30) + warm_start * v0 / unit(v0, dim=-1,
                                                                                                  keepdim=True)
        lam, _, guess, info = lanczos_extremes(gram, v0, tol, max_iter, min_iter, return_vector=warm_start is not None)
        out[depths.index(l)] = lam.clamp_min(0).sqrt()
        infos.append(info)
    info = merge_info(infos, tol, max_iter) if infos else SpectralInfo(0, 0.0, True, tol, max_iter, 0)
    return out, frob, info


@torch.no_grad()
def path_spectral_norms(student: Student, x0: Tensor, depths: Sequence[int] | None = None, tol: float = 1e-5,
                        max_iter: int | None = None, min_iter: int = 2, method: str = "auto",
                        structured: bool | None = None, warm_start: float | None = 1e-3, seed: int = 0,
                        maps: LayerMaps | None = None) -> PathSpectra:
    """``‖∂h_L/∂h_l‖₂`` for depths ``l`` (default ``0..L``) and every input of ``x0`` (B, d), matrix-free.

    ``method``: ``"accumulate"`` (adjoint sweep of ``d`` cotangents, all depths in one pass; also gives the exact
    ``‖P_l‖_F``), ``"chain"`` (jvp/vjp chains, only the asked-for depths) or ``"auto"`` (see the module docstring).
    With ``"accumulate"`` the depths are solved from ``L − 1`` down, and ``warm_start = η`` starts depth ``l``'s
    Lanczos from the previous depth's top singular direction, ``P_lᵀ u_{l+1}`` (normalised), plus ``η`` times a
    random unit vector so that no direction is excluded from the Krylov space (``None``: random starts only).
    ``tol``, ``max_iter`` (default ``max(20, 2d)``), ``min_iter`` as in :func:`layer_spectral_norms`. ``.total``
    of the result is the path sensitivity ``E_x‖∂h_L/∂h_0‖₂`` and ``.curve`` the per-depth input means, as in
    :func:`testbed.field.metrics.path_sensitivity`. ``log|det P_l|`` is not computed here (see
    :func:`testbed.field.geometry.path_logdet`).
    """
    maps = layer_maps(student, x0, structured) if maps is None else maps
    n_layers, d = maps.n_layers, maps.dim
    ds = sorted({int(l) for l in (range(n_layers + 1) if depths is None else depths)})
    if not ds or ds[0] < 0 or ds[-1] > n_layers:
        raise ValueError(f"depths must lie in 0..{n_layers}, got {None if depths is None else list(depths)}")
    if method == "auto":
        method = "chain" if 40 * sum(n_layers - l for l in ds) <= n_layers * d else "accumulate"
    if method not in ("chain", "accumulate"):
        raise ValueError(f"method must be 'auto', 'chain' or 'accumulate', got {method!r}")
    cap = max_iter or default_max_iter(d)
    check_settings(tol, cap, min_iter)
    if method == "chain":
        norms, info = _path_chain(maps, ds, tol, cap, min_iter, seed)
        frob = None
    else:
        norms, frob, info = _path_accumulate(maps, ds, tol, cap, min_iter, seed, warm_start)
    return PathSpectra(ds, norms, frob, info, method, maps.structured)


__all__ = ["LayerMaps", "LayerSpectra", "PathSpectra", "SpectralInfo", "lanczos_extremes", "layer_maps",
           "layer_spectral_norms", "path_spectral_norms"]
