# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2 · Bring your own system: register a teacher and run law recovery on it
#
# Every experiment in the testbed asks its teacher for the same few things: the law $f^*(t, x)$, its Jacobian
# $\partial f^*/\partial x$, the flow map $\varphi_t(x_0)$ on a time grid, and samplers of in-distribution (ID) and
# out-of-distribution (OOD) initial states. Implement those on a subclass of `systems.TeacherFlow` (ODEs) or
# `systems.pdes.PDESystem` (periodic method-of-lines PDEs), decorate it with `@systems.register`, and
# `systems.get_system("your_name", **params)` — and with it every experiment — finds it.
#
# This notebook
#
# 1. defines a new nonlinear ODE with a closed-form flow, registers it, and checks the closed form against
#    `scipy.integrate.solve_ivp` and the closed-form Jacobian against `torch.func`;
# 2. runs the library's **law-recovery** experiment on it: the same residual student trained on endpoints only and
#    on the field (endpoint + trajectory + vector field), compared by the law-recovery error
#    $\lVert f_\theta - f^*\rVert/\lVert f^*\rVert$ and solver consistency;
# 3. registers a tiny linear PDE (advection–diffusion) from its Fourier symbol alone, and checks its exact flow.
#
# Quick settings: one CPU core, about a minute.

# %%
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import ClassVar

try:
    import testbed  # noqa: F401
except ImportError:  # not pip-installed: make the checkout importable when run from inside it (e.g. notebooks/)
    ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "testbed" / "field").is_dir()), None)
    if ROOT is None:
        raise ImportError("pip install -e . the testbed, or run this notebook inside the checkout") from None
    sys.path.insert(0, str(ROOT))

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display
from scipy.integrate import solve_ivp
from torch.func import jacrev, vmap

import systems
from systems import SystemSpecError, TeacherFlow, as_time_grid
from systems.pdes import PDESystem
from systems.pdes.operators import complex_dtype, spectral_symbol
from testbed.experiments import law_recovery

torch.set_num_threads(1)
# %matplotlib inline

# %% [markdown]
# ## A new teacher: the slow-manifold system
#
# $$\dot x_1 = \mu\, x_1, \qquad \dot x_2 = \lambda\,(x_2 - x_1^2), \qquad \mu, \lambda < 0,\ \lambda \ne 2\mu .$$
#
# It is nonlinear (the $x_1^2$ coupling) yet solvable in closed form: $x_1(t) = x_1^0 e^{\mu t}$, and the linear
# equation for $x_2$ with forcing $-\lambda (x_1^0)^2 e^{2\mu t}$ gives
#
# $$x_2(t) = \bigl(x_2^0 - \beta (x_1^0)^2\bigr) e^{\lambda t} + \beta (x_1^0)^2 e^{2\mu t}, \qquad
#   \beta = \frac{\lambda}{\lambda - 2\mu}.$$
#
# The parabola $x_2 = \beta x_1^2$ is invariant; with $|\lambda| \gg |\mu|$ trajectories fall onto it fast and then
# creep along it (a standard example of a slow manifold). The Jacobian is
# $\partial f^*/\partial x = \begin{pmatrix}\mu & 0\\ -2\lambda x_1 & \lambda\end{pmatrix}$.
#
# **What a system class provides.** A dataclass whose fields are its parameters (so `get_system` validates keyword
# arguments); class attributes `name`, `dim`, `autonomous`, `closed_form`; a `horizon` field $T$; `validate()`
# raising `SystemSpecError` for bad parameters; `vector_field(t, x)` and `jacobian(t, x)` on batches `(..., dim)`;
# optionally `flow(x0, t)` (otherwise the base class integrates with DOP853) and the ID/OOD boxes. Shapes follow
# torchdiffeq: `flow` returns `(len(t), *x0.shape)`.

# %%
@systems.register
@dataclasses.dataclass(repr=False)
class SlowManifold(TeacherFlow):
    """``x1' = mu x1``, ``x2' = lam (x2 - x1^2)``: closed-form flow, invariant parabola ``x2 = beta x1^2``."""

    name: ClassVar[str] = "slow_manifold"
    dim: ClassVar[int] = 2
    autonomous: ClassVar[bool] = True
    closed_form: ClassVar[bool] = True

    horizon: float = 2.0
    mu: float = -0.5
    lam: float = -3.0

    id_low: ClassVar[tuple[float, ...]] = (-2.0, -2.0)
    id_high: ClassVar[tuple[float, ...]] = (2.0, 2.0)
    ood_low: ClassVar[tuple[float, ...]] = (-3.0, -3.0)
    ood_high: ClassVar[tuple[float, ...]] = (3.0, 3.0)

    def validate(self) -> None:
        for p in ("mu", "lam"):
            v = getattr(self, p)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise SystemSpecError(f"{self.name}: parameter {p!r} must be a finite real number, got {v!r}")
        if abs(self.lam - 2 * self.mu) < 1e-12:
            raise SystemSpecError(f"{self.name}: parameters need lam != 2*mu (resonance), got {self.lam}, {self.mu}")

    @property
    def beta(self) -> float:
        return self.lam / (self.lam - 2 * self.mu)

    def vector_field(self, t, x):
        return torch.stack([self.mu * x[..., 0], self.lam * (x[..., 1] - x[..., 0] ** 2)], dim=-1)

    def jacobian(self, t, x):
        zero = torch.zeros_like(x[..., 0])
        row0 = torch.stack([zero + self.mu, zero], dim=-1)
        row1 = torch.stack([-2 * self.lam * x[..., 0], zero + self.lam], dim=-1)
        return torch.stack([row0, row1], dim=-2)

    def flow(self, x0, t):
        x0 = torch.as_tensor(x0, dtype=torch.float64) if not torch.is_tensor(x0) else x0
        self._check_state(x0)
        tau = (as_time_grid(t) - as_time_grid(t)[0]).to(x0)                 # (K,)
        tau = tau.reshape(-1, *([1] * (x0.ndim - 1)))                       # broadcast over the batch
        a, b = x0[..., 0], x0[..., 1]
        x1 = a * torch.exp(self.mu * tau)
        x2 = (b - self.beta * a ** 2) * torch.exp(self.lam * tau) + self.beta * a ** 2 * torch.exp(2 * self.mu * tau)
        return torch.stack([x1, x2], dim=-1)


sm = systems.get_system("slow_manifold", lam=-3.0)
print(sm, "| registered:", "slow_manifold" in systems.list_systems(), "| flow:", sm.flow_kind)
try:
    systems.get_system("slow_manifold", lambda_=1.0)
except SystemSpecError as err:
    print("bad parameter ->", err)

# %% [markdown]
# ### Check the closed forms before trusting them
#
# * the flow against an independent `scipy.integrate.solve_ivp` (DOP853, `rtol = 1e-12`) of the same right-hand side,
#   and against the base class's own numerical `reference_flow`;
# * the Jacobian against `torch.func.jacrev` of `vector_field`;
# * the flow Jacobian $\partial\varphi_T/\partial x_0$ (the base class integrates the variational equation
#   $\dot M = \partial_x f^*\, M$) against `jacrev` of the closed-form flow.
#
# A wrong sign in `flow` or `jacobian` would silently poison every experiment; these checks make it loud.

# %%
gen = torch.Generator().manual_seed(0)
x0 = sm.sample_id(64, generator=gen)
t_grid = torch.linspace(0.0, sm.horizon, 21, dtype=torch.float64)
exact = sm.flow(x0, t_grid)                                              # (21, 64, 2)


def rhs(t, y):
    x = torch.from_numpy(y.reshape(-1, 2))
    return sm.vector_field(t, x).numpy().ravel()


sol = solve_ivp(rhs, (0.0, sm.horizon), x0.numpy().ravel(), method="DOP853", t_eval=t_grid.numpy(),
                rtol=1e-12, atol=1e-12)
scipy_flow = torch.from_numpy(sol.y.T.reshape(21, 64, 2))
flow_gap = float((exact - scipy_flow).abs().max())
ref_gap = float((exact - sm.reference_flow(x0, t_grid)).abs().max())
jac_gap = float((sm.jacobian(0.0, x0) - vmap(jacrev(lambda x: sm.vector_field(0.0, x)))(x0)).abs().max())
fj_num = sm.flow_jacobian(x0, [0.0, sm.horizon])[-1]
fj_exact = vmap(jacrev(lambda x: sm.flow(x, [0.0, sm.horizon])[-1]))(x0)
fj_gap = float((fj_num - fj_exact).abs().max())
on_manifold = sm.flow(torch.tensor([[1.5, sm.beta * 1.5 ** 2]], dtype=torch.float64), t_grid)
manifold_gap = float((on_manifold[..., 1] - sm.beta * on_manifold[..., 0] ** 2).abs().max())
print(f"closed-form flow vs solve_ivp:       {flow_gap:.1e}")
print(f"closed-form flow vs reference_flow:  {ref_gap:.1e}")
print(f"jacobian vs torch.func jacrev:       {jac_gap:.1e}")
print(f"flow_jacobian (variational) vs jacrev of the closed-form flow: {fj_gap:.1e}")
print(f"invariance of x2 = beta x1^2:        {manifold_gap:.1e}")
assert flow_gap < 1e-9 and ref_gap < 1e-9
assert jac_gap < 1e-12
assert fj_gap < 1e-7
assert manifold_gap < 1e-12

# %%
fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
g = np.linspace(-3, 3, 25)
gx, gy = np.meshgrid(g, g)
v = sm.vector_field(0.0, torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))).numpy()
ax.streamplot(gx, gy, v[:, 0].reshape(gx.shape), v[:, 1].reshape(gx.shape), color="0.75", density=0.8,
              linewidth=0.6)
for i in range(12):
    ax.plot(exact[:, i, 0], exact[:, i, 1], color="C0", lw=1.2, label="closed form" if i == 0 else None)
    ax.plot(scipy_flow[::4, i, 0], scipy_flow[::4, i, 1], "k.", ms=3, label="solve_ivp" if i == 0 else None)
xs = np.linspace(-3, 3, 100)
ax.plot(xs, sm.beta * xs ** 2, "C3--", lw=1, label=r"slow manifold $x_2 = \beta x_1^2$")
ax.add_patch(plt.Rectangle((-2, -2), 4, 4, fill=False, ls=":", ec="0.4"))
ax.set_xlim(-3, 3)
ax.set_ylim(-3, 3)
ax.set_xlabel("$x_1$")
ax.set_ylabel("$x_2$")
ax.set_title("slow_manifold: flow over $[0, T]$ (dotted box: ID region)")
ax.legend(frameon=False, fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## Law recovery on the new system, through the library
#
# `testbed.experiments.law_recovery` is what `testbed run law-recovery` runs. Its config validates system names
# against the registry, so our system is accepted like a built-in one. For each objective it builds the same tied
# residual student ($L = 32$, ODE scaling $h_{l+1} = h_l + (T/L)\,g(h_l)$), trains it with the same data and budget,
# and evaluates against the teacher:
#
# * `law_error_id` / `law_error_ood` $= \mathrm{rel}(f_\theta(x_k), f^*(x_k))$ at the teacher's states, with
#   $\mathrm{rel}(a, b) = \sqrt{\sum\lVert a-b\rVert^2/\sum\lVert b\rVert^2}$;
# * `consistency_error`: the endpoint change from the $L$-step network to a dopri5 solve of its own field, beside
#   `teacher_consistency_error`, the same number for $f^*$ (the discretisation floor at this $L$);
# * `path_sensitivity` $\mathbb E\lVert\partial h_L/\partial h_0\rVert_2$ and `flow_jacobian_error` against
#   $\partial\varphi_T/\partial x_0$.
#
# `run` writes `results.csv`, `consistency.csv`, `results.json`, checkpoints and the figure to `OUT`
# (`runs/byo-system/` under the working directory). Quick settings: 400 steps instead of 3000, one seed.

# %%
OUT = Path("runs") / "byo-system"   # relative to the working directory; runs/ is git-ignored
shutil.rmtree(OUT, ignore_errors=True)  # a fresh run (law_recovery would otherwise resume old checkpoints)
cfg = law_recovery.quick_config(systems=("slow_manifold",), objectives=("endpoint", "field"), match_endpoint=0.0,
                                 steps=400, n_train=256, n_test=128, progress=False)   # equal budget only
rows = {r["objective"]: r for r in law_recovery.run(cfg, OUT)}  # computes and writes the tables
law_recovery.plot(OUT)                                              # draws the figure from them
cols = ["endpoint_error", "law_error_id", "law_error_ood", "consistency_error", "teacher_consistency_error",
        "path_sensitivity", "teacher_path_sensitivity", "flow_jacobian_error", "train_seconds"]
print(f"{'metric':>26}" + "".join(f"{k:>12}" for k in rows))
for c in cols:
    print(f"{c:>26}" + "".join(f"{rows[k][c]:>12.4f}" for k in rows))
print("wrote:", sorted(p.name for p in OUT.iterdir()))

# %%
display(Image(filename=str(OUT / "law_recovery.png"), width=720))

# %% [markdown]
# The experiment's figure (above) shows the teacher's and both students' phase portraits, the consistency curves
# beside the teacher's floor and the error bars. Below, the same comparison as a compact bar chart.

# %%
fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
metrics = ["endpoint_error", "law_error_id", "law_error_ood", "flow_jacobian_error"]
xpos = np.arange(len(metrics))
for j, (k, colour) in enumerate((("endpoint", "C0"), ("field", "C2"))):
    ax.bar(xpos + 0.4 * j, [rows[k][m] for m in metrics], 0.4, color=colour, label=f"{k}-trained")
ax.set_xticks(xpos + 0.2, ["endpoint", "law (ID)", "law (OOD)", r"$\partial h_L/\partial h_0$"])
ax.set_yscale("log")
ax.set_ylabel("relative L2 error")
ax.set_title("slow_manifold: endpoint vs field objective")
ax.legend(frameon=False)
plt.show()

# %%
e, f = rows["endpoint"], rows["field"]
assert f["law_error_id"] < 0.5 * e["law_error_id"], (f["law_error_id"], e["law_error_id"])
assert f["law_error_id"] < 0.3, f["law_error_id"]
assert f["flow_jacobian_error"] < e["flow_jacobian_error"]
assert (OUT / "results.csv").exists() and (OUT / "law_recovery.png").exists()
print(f"law error (ID): field {f['law_error_id']:.3f} < endpoint {e['law_error_id']:.3f}")

# %% [markdown]
# ## A tiny PDE: advection–diffusion from its Fourier symbol
#
# For a periodic method-of-lines PDE $u_t = \mathcal L u$ with a shift-invariant linear operator, the base class
# `PDESystem` needs only the Fourier symbol $\lambda_k$ of the semi-discrete operator: it supplies the law
# $f(u) = F^{-1}\operatorname{diag}(\lambda_k) F u$, its Jacobian, the **exact** flow
# $u(t) = F^{-1}\operatorname{diag}(e^{\lambda_k t}) F u_0$, band-limited random initial states (modes
# $1..$`id_k_max` ID, up to `ood_k_max` OOD) and stability checks for explicit students. For
# $u_t = \nu u_{xx} - c\,u_x$ (spectral), $\lambda_k = -\nu\kappa_k^2 - i c\kappa_k$. (Semilinear PDEs add
# `nonlinear_hat`/`nonlinear_jvp_hat` and get an ETDRK4 flow; see `systems/pdes/burgers.py`.)
#
# Checks: the exact semi-discrete flow against the base class's DOP853 `reference_flow` (`solve_ivp`), and, for
# $u_0 = \sin x$, against the continuous solution $e^{-\nu t}\sin(x - ct)$.

# %%
@systems.register
@dataclasses.dataclass(repr=False)
class AdvectionDiffusion(PDESystem):
    """``u_t = nu u_xx - c u_x`` on a periodic grid, Fourier pseudo-spectral; exact flow."""

    name: ClassVar[str] = "advection_diffusion"
    closed_form: ClassVar[bool] = True
    linear: ClassVar[bool] = True

    horizon: float = 1.0
    nu: float = 0.05
    c: float = 1.0

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.nu, (int, float)) and self.nu > 0):
            raise SystemSpecError(f"{self.name}: parameter 'nu' must be > 0, got {self.nu!r}")

    def symbol(self, dtype=torch.float64, device=None):
        n, ell = self.n_grid, float(self.length)
        lam = self.nu * spectral_symbol(n, ell, 2, dtype, device) - self.c * spectral_symbol(n, ell, 1, dtype, device)
        return lam.to(complex_dtype(dtype))


ad = systems.get_system("advection_diffusion", n_grid=32, nu=0.05, c=1.0)
u0 = ad.sample_id(8, generator=torch.Generator().manual_seed(1))
tt = torch.linspace(0.0, ad.horizon, 11, dtype=torch.float64)
pde_gap = float((ad.flow(u0, tt) - ad.reference_flow(u0, tt)).abs().max())
xg = ad.grid()
sine = ad.flow(torch.sin(xg)[None], tt)[:, 0]
cont = torch.exp(-ad.nu * tt)[:, None] * torch.sin(xg[None] - ad.c * tt[:, None])
sine_gap = float((sine - cont).abs().max())
print(ad, f"\nexact flow vs solve_ivp: {pde_gap:.1e};  sin x vs exp(-nu t) sin(x - ct): {sine_gap:.1e}")
print(ad.check_stability(n_steps=16))
assert pde_gap < 1e-8 and sine_gap < 1e-12

# %%
tfine = torch.linspace(0.0, 3 * ad.horizon, 61, dtype=torch.float64)
u = ad.flow(u0[:1], tfine)[:, 0]
fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
im = ax.pcolormesh(xg.numpy(), tfine.numpy(), u.numpy(), cmap="RdBu_r", shading="auto")
ax.set_xlabel("$x$")
ax.set_ylabel("$t$")
ax.set_title(r"advection_diffusion: $u(x, t)$, $\nu = 0.05$, $c = 1$")
fig.colorbar(im, ax=ax, label="$u$")
plt.show()

# %% [markdown]
# The PDE is now a registered system like `heat` or `burgers`: `testbed.experiments.pde_law_recovery` (config
# `systems=("advection_diffusion",)`) trains local (`conv`) and non-local students on it.
#
# **Registration is per process.** A class registered in a notebook exists only in this kernel. To use it from the
# CLI (`testbed run law-recovery --system slow_manifold`), put the class in a module that `systems` imports (e.g. a
# new file under `systems/flows/`, added to the import list in `systems/flows/__init__.py`). Registering the same
# name twice with a different class raises `ValueError`, so restart the kernel after editing a registered class.
