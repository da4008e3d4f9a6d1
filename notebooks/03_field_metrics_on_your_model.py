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
# # 3 · Field metrics on your own torch model
#
# Any network built from residual stages, $h_{l+1} = \mathrm{stage}_l(h_l) = h_l + r_l(h_l)$, has a propagation field:
# the trajectory $h_0, \dots, h_L$ of an input through the stages and the stage Jacobians
# $J_l = \partial h_{l+1}/\partial h_l$. Reading depth as time on $[0, T]$ with $\Delta t = T/L$, the stages are
# forward-Euler steps of the implied (piecewise-constant in time) vector field
#
# $$f(t, h) = \frac{\mathrm{stage}_{l(t)}(h) - h}{\Delta t}, \qquad l(t) = \lfloor t/\Delta t \rfloor .$$
#
# The testbed's field metrics are written against one small interface, `testbed.students.Student`: `n_layers`,
# `horizon`, `step(l, h)` (one stage) and `vector_field(t, x)`. This notebook shows how an arbitrary `nn.Module`
# meets it:
#
# 1. a hand-built ResNet-style MLP (stem → residual blocks → head), trained on two moons;
# 2. the library's **recorder** `testbed.field.record`, which hooks the blocks and records the hidden trajectory
#    during the model's own `forward` (for one call that also reports the metrics: `testbed.field_report`);
# 3. the library's **adapter** `ResidualStages` that exposes the blocks as a `Student`, so `layer_jacobians`,
#    `path_sensitivity`, `field_geometry`, the matrix-free `path_spectral_norms` and `solver_consistency` apply
#    unchanged;
# 4. checks of every metric against a dense `torch.func` Jacobian of the model itself;
# 5. a field regulariser (kinetic energy of the trajectory) in a plain training loop, and what it does to the field.
#
# Requirements on the stages: each maps a single sample `(d,)` as well as a batch `(B, d)` (true for `nn.Linear`
# stacks), and has no batch-coupled layers in training mode (`BatchNorm` breaks `vmap`/`jacrev`; call `model.eval()`).

# %%
import sys
from pathlib import Path

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
from sklearn.datasets import make_moons
from torch import nn
from torch.func import jacrev, vmap

from testbed.field import (
    field_geometry,
    kinetic_energy,
    layer_jacobians,
    path_jacobians,
    path_sensitivity,
    solver_consistency,
)
from testbed.field.record import record
from testbed.field.spectral import path_spectral_norms
from testbed.students import ResidualStages

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)  # float64 so the Jacobian checks can be tight
# %matplotlib inline

# %% [markdown]
# ## Your model: a small ResNet-style MLP
#
# Nothing here knows about the testbed. The residual stream has width `d = 2` so that we can draw it; every metric
# below works the same for any width.

# %%
class ResBlock(nn.Module):
    def __init__(self, d: int, width: int, scale: float) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, d))
        self.scale = scale

    def forward(self, h):
        return h + self.scale * self.branch(h)


class TinyResNet(nn.Module):
    def __init__(self, in_dim: int = 2, d: int = 2, width: int = 32, n_blocks: int = 10, n_classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Linear(in_dim, d)
        self.blocks = nn.ModuleList(ResBlock(d, width, 1.0 / n_blocks) for _ in range(n_blocks))
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


x_np, y_np = make_moons(n_samples=768, noise=0.1, random_state=0)
x_all, y_all = torch.from_numpy(x_np), torch.from_numpy(y_np)
x_tr, y_tr, x_te, y_te = x_all[:512], y_all[:512], x_all[512:], y_all[512:]

torch.manual_seed(0)
model = TinyResNet()
init_state = {k: v.clone() for k, v in model.state_dict().items()}
print(model.blocks[0], f"\n{len(model.blocks)} blocks, {sum(p.numel() for p in model.parameters())} parameters")

# %% [markdown]
# ## Recording the trajectory with forward hooks
#
# `testbed.field.record(model, x)` puts a forward hook on each block (by default the children of the model's
# largest `nn.ModuleList` — here `model.blocks`; or name them with `blocks=[...]`) and records the state entering
# the first block and the state leaving every block, $h_0, \dots, h_L$, during the model's own forward pass — the
# least invasive way to *observe* a trajectory. For Jacobians the metrics must call the stage maps themselves: the
# recording carries them as a `ResidualStages` adapter (`rec.student`), described next.

# %%
rec = record(model.eval(), x_te)      # eval mode: no layer here depends on it, but the recorder asks for it
model.train()
traj_hooks = rec.states
print("recorded blocks:", rec.names[:3], "…;", "trajectory", tuple(traj_hooks.shape), "= (L+1, B, d)")

# %% [markdown]
# ## The adapter: residual stages as a `Student`
#
# `testbed.students.ResidualStages(stages, dim, horizon)` is the library's adapter (about 20 lines, in
# `testbed/students/stages.py`): `step(l, h)` runs stage `l`; `vector_field` is the implied Euler field above;
# `horizon` is a convention (here $T = 1$, so $\Delta t = 1/L$ and each block is $h + \Delta t\, r_l(h)$ — the
# blocks' `scale = 1/L` makes this an ODE-scaled network). The adapter holds the model's own blocks: no copy,
# gradients flow into the model.

# %%
field = ResidualStages(model.blocks, dim=2)
with torch.no_grad():
    h0 = model.stem(x_te)
    hook_gap = float((field.trajectory(h0) - traj_hooks).abs().max())
print(f"adapter trajectory vs hooked trajectory: {hook_gap:.1e}")
assert hook_gap == 0.0

# %% [markdown]
# ## Field metrics, checked against dense `torch.func` Jacobians
#
# * `layer_jacobians(field, h0)` → $J_l = \partial h_{l+1}/\partial h_l$, shape `(L, B, d, d)`
#   (per-sample `vmap(jacfwd)`);
# * `path_jacobians(J)` → $P_l = \partial h_L/\partial h_l = J_{L-1}\cdots J_l$;
# * `path_sensitivity(field, h0)` → $\mathbb E\lVert P_l\rVert_2$, $\mathbb E\lVert P_l\rVert_F$ and
#   $\mathbb E\log|\det P_l|$ for $l = 0..L$;
# * `path_spectral_norms(field, h0)` → the same $\lVert P_l\rVert_2$ matrix-free (Lanczos on jvp/vjp of the stages; it
#   never forms $P_l$, so it scales to wide residual streams).
#
# The reference for each is a dense Jacobian of the model's own code with `vmap(jacrev(·))`: of one block, of the
# composition of blocks `l..L-1`, and of the whole model; the input–output Jacobian factorises as
# $\partial\,\mathrm{logits}/\partial x = W_\mathrm{head}\, P_0\, W_\mathrm{stem}$.

# %%
def gap(a, b):
    return float((a - b).detach().abs().max())


def check_against_torch_func(model, field, x):
    h0 = model.stem(x).detach()
    traj, J = layer_jacobians(field, h0)
    L = field.n_layers
    gaps = {"J_l vs jacrev(block_l)": max(gap(J[l], vmap(jacrev(model.blocks[l]))(traj[l])) for l in range(L))}

    def blocks_from(l):
        def run(h):
            for block in model.blocks[l:]:
                h = block(h)
            return h
        return run

    P = path_jacobians(J)
    gaps["P_l vs jacrev(blocks l..L-1)"] = max(gap(P[l], vmap(jacrev(blocks_from(l)))(traj[l]))
                                              for l in (0, L // 2, L - 1))
    sens = path_sensitivity(field, h0)
    gaps["path_sensitivity P_0"] = gap(sens.endpoint_jacobian, P[0])
    full = vmap(jacrev(model))(x)                                                   # (B, classes, in_dim)
    factored = model.head.weight @ P[0] @ model.stem.weight
    gaps["W_head P_0 W_stem vs jacrev(model)"] = gap(factored, full)
    spec = path_spectral_norms(field, h0, tol=1e-8)
    gaps["Lanczos ||P_l||_2 vs dense (rel.)"] = gap(spec.curve / sens.spectral, torch.ones_like(sens.spectral))
    return gaps, sens


gaps, sens_init = check_against_torch_func(model, field, x_te[:64])
for k, v in gaps.items():
    print(f"{k:>36}: {v:.1e}")
assert max(v for k, v in gaps.items() if "Lanczos" not in k) < 1e-12
assert gaps["Lanczos ||P_l||_2 vs dense (rel.)"] < 1e-5

# %% [markdown]
# ## Train it — twice, with and without a field regulariser
#
# A plain training loop (Adam, full batch, cross-entropy). The second run adds the kinetic energy of the propagation
# field, $E = \sum_l \lVert h_{l+1} - h_l\rVert^2/\Delta t$ (`testbed.field.kinetic_energy`, computed on the adapter's
# differentiable trajectory), relative to the input scale — the RNODE regulariser. Both start from the same
# initialisation.

# %%
def fit(model, kinetic_weight=0.0, steps=300, lr=1e-2):
    field = ResidualStages(model.blocks, dim=2)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        h0 = model.stem(x_tr)
        traj = field.trajectory(h0)
        loss = nn.functional.cross_entropy(model.head(traj[-1]), y_tr)
        if kinetic_weight:
            energy = kinetic_energy(traj, field.horizon).mean() / h0.detach().pow(2).sum(-1).mean()
            loss = loss + kinetic_weight * energy
        loss.backward()
        opt.step()
    return field


models, fields = {}, {}
for name, kw in (("plain", 0.0), ("kinetic", 0.5)):
    models[name] = TinyResNet()
    models[name].load_state_dict(init_state)
    fields[name] = fit(models[name], kinetic_weight=kw)
models["init"] = TinyResNet()
models["init"].load_state_dict(init_state)
fields["init"] = ResidualStages(models["init"].blocks, dim=2)

# %% [markdown]
# ## Compare the fields
#
# `field_geometry` gives trajectory length $\Lambda = \sum_l\lVert h_{l+1} - h_l\rVert$, kinetic energy, total turning
# angle, the layer Jacobians' spectral norms and condition numbers, and $\log|\det\partial h_L/\partial h_0|$;
# `solver_consistency` re-integrates the implied field with $L/2 \dots 4L$ Euler steps and RK4 and reports how far the
# endpoint moves from the $L$-stage network (the model's computation is tied to its step size if it moves a lot).
# The input-space path sensitivity is reported for the trained models at their own stem.

# %%
summ = {}
for name, m in models.items():
    with torch.no_grad():
        h0 = m.stem(x_te)
        acc = float((m(x_te).argmax(-1) == y_te).double().mean())
    geo = field_geometry(fields[name], h0).summary()
    cons = solver_consistency(fields[name].vector_field, h0, 1.0, fields[name].n_layers, [5, 20, 40],
                              methods=("euler", "rk4"), adaptive=())
    summ[name] = {"accuracy": acc, **geo, "consistency (40 Euler steps)": cons.change("euler", 40),
                  "consistency (rk4, 40 steps)": cons.change("rk4", 40)}
    if name != "init":
        gaps, _ = check_against_torch_func(m, fields[name], x_te[:64])   # the checks hold after training too
        assert max(v for k, v in gaps.items() if "Lanczos" not in k) < 1e-12, gaps
keys = ["accuracy", "trajectory_length", "kinetic_energy", "total_curvature", "jac_spectral_max",
        "jac_condition_max", "logdet", "path_sensitivity", "consistency (40 Euler steps)",
        "consistency (rk4, 40 steps)"]
print(f"{'':>30}" + "".join(f"{k:>10}" for k in summ))
for k in keys:
    print(f"{k:>30}" + "".join(f"{summ[n][k]:>10.3f}" for n in summ))

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
for ax, name in zip(axes[:2], ("plain", "kinetic"), strict=True):
    traj = record(models[name].eval(), x_te[:120]).states
    for i in range(traj.shape[1]):
        ax.plot(traj[:, i, 0], traj[:, i, 1], color="C0" if y_te[i] == 0 else "C1", lw=0.5, alpha=0.6)
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=4, c="k", label="$h_0$ (stem)")
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=8, c=["C0" if c == 0 else "C1" for c in y_te[:120]],
               edgecolors="k", linewidths=0.3, label="$h_L$")
    ax.set_title(f"{name}: hidden trajectories (acc {summ[name]['accuracy']:.2f})")
    ax.set_xlabel("$h_1$")
    ax.set_ylabel("$h_2$")
    ax.legend(frameon=False, fontsize=7)
for name, colour in (("init", "0.5"), ("plain", "C0"), ("kinetic", "C2")):
    with torch.no_grad():
        h0 = models[name].stem(x_te[:64])
    axes[2].plot(np.arange(fields[name].n_layers + 1), path_sensitivity(fields[name], h0).spectral, "o-", ms=3,
                 color=colour, label=name)
axes[2].set_xlabel("depth $l$")
axes[2].set_ylabel(r"$\mathbb{E}\,\|\partial h_L/\partial h_l\|_2$")
axes[2].set_yscale("log")
axes[2].set_title("path sensitivity")
axes[2].legend(frameon=False)
plt.show()

# %% [markdown]
# ## Checks
#
# Both trained models classify the moons, with very different fields. Unregularised, the network stretches the
# residual stream (long trajectories, path sensitivity $\lVert\partial h_L/\partial h_0\rVert_2 \gg 1$, a positive
# log-volume change); with the kinetic regulariser it solves the same task with a field close to the identity's
# length and energy (the stem and head take over the scaling), and the implied field is far more consistent under
# re-integration. Two models with (nearly) the same input–output behaviour and different propagation fields is
# exactly what the field metrics are there to see. The dense-Jacobian agreement above is the guarantee that the adapter
# exposes the model faithfully.

# %%
assert summ["plain"]["accuracy"] > 0.9 and summ["kinetic"]["accuracy"] > 0.9, summ
assert summ["kinetic"]["kinetic_energy"] < 0.8 * summ["plain"]["kinetic_energy"], summ
assert summ["kinetic"]["trajectory_length"] < summ["plain"]["trajectory_length"]
print("accuracy: plain {:.3f}, kinetic {:.3f}; kinetic energy: plain {:.3f} > kinetic {:.3f}".format(
    summ["plain"]["accuracy"], summ["kinetic"]["accuracy"], summ["plain"]["kinetic_energy"],
    summ["kinetic"]["kinetic_energy"]))
print("all checks passed")
