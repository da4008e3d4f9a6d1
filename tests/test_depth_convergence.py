"""Depth-scaling sub-study ``convergence``: smooth weights converge at O(1/L); i.i.d. weights converge in law only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from testbed.config import ConfigError
from testbed.experiments.depth import convergence as conv
from testbed.experiments.depth_scaling import DepthScalingConfig
from testbed.results import read_csv
from testbed.seeding import generator
from testbed.students.smooth import SmoothResidualStudent

TINY = dict(depths=(4, 8, 16, 32), width=8, hidden=8, anchors=3, n_inputs=16, n_draws=8)


def _cfg(**kw) -> DepthScalingConfig:
    """The depth-scaling config of a tiny convergence run; ``kw`` override fields of ``convergence.Config``."""
    return DepthScalingConfig(studies=("convergence",), seeds=(0,), progress=False,
                              convergence=conv.Config(**{**TINY, **kw}))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv")
    rows = conv.run(_cfg(), out)
    conv.plot(out)
    return out, rows


def _series(rows, case, quantity, bd=1):
    sel = sorted((int(r["L"]), float(r["value"])) for r in rows
                 if r["case"] == case and r["quantity"] == quantity and int(r["block_depth"]) == bd)
    return [L for L, _ in sel], [v for _, v in sel]


def test_loglog_slope_recovers_a_power_law():
    Ls = [4, 8, 16, 32]
    assert conv.loglog_slope(Ls, [3.0 / L for L in Ls]) == pytest.approx(-1.0)
    assert conv.loglog_slope(Ls, [2.0 * L**0.5 for L in Ls]) == pytest.approx(0.5)
    assert math.isnan(conv.loglog_slope([4], [1.0]))


def test_brownian_coarsening_is_the_pairwise_sum_over_sqrt2():
    W = torch.randn(8, 3, 3, dtype=torch.float64)
    W4 = conv.brownian_coarsen(W, 4)
    torch.testing.assert_close(W4[1], (W[2] + W[3]) / math.sqrt(2))
    # coarsening in two halvings is the same as coarsening at once, and keeps the variance
    torch.testing.assert_close(conv.brownian_coarsen(W4, 2), conv.brownian_coarsen(W, 2))
    big = torch.randn(64, 200, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(conv.brownian_coarsen(big, 4).var()) == pytest.approx(1.0, rel=0.02)


def test_grid_states_are_the_trajectory_at_the_coarse_grid(float64_default):
    s = SmoothResidualStudent(3, n_layers=8, width=5, hidden_layers=1, n_anchors=2)
    x0 = torch.randn(4, 3)
    g = conv.grid_states(s, x0, 4)
    with torch.no_grad():
        full = s.trajectory(x0)
    torch.testing.assert_close(g, full[2::2])
    with pytest.raises(ConfigError):
        conv.grid_states(s, x0, 3)


def test_depths_must_share_a_coarse_grid(tmp_path):
    with pytest.raises(ConfigError, match="multiples"):
        conv.run(_cfg(depths=(4, 6, 8)), tmp_path)


def test_smooth_weights_converge_at_order_one(tiny_run):
    """Forward Euler of one smooth ODE: dist(L) = C·(1/L − 1/L_ref) + O(1/L²) against the finest network."""
    _, rows = tiny_run
    summ = {r["key"]: r["value"] for r in conv.summary(rows)}
    l_ref = 256  # REF_FACTOR (8) × the largest depth (32)
    assert {int(r["L_ref"]) for r in rows if r["case"] == "smooth"} == {l_ref}
    for bd in (1, 2):
        for q in ("dist_traj", "dist_end"):
            Ls, d = _series(rows, "smooth", q, bd)
            assert Ls == [4, 8, 16, 32]
            assert all(np.isfinite(d)) and all(v > 0 for v in d)
            assert all(a > b for a, b in zip(d, d[1:], strict=False)), f"{q} bd{bd} not decreasing: {d}"
            # closed form 1: dist(L)/dist(2L) → (1/L − 1/L_ref)/(1/2L − 1/L_ref) (2.03, 2.07, 2.14 here), the
            # relative gap shrinking with L (it is O(1/L)) and below 0.5 % at the last pair
            gaps = [abs((d[i] / d[i + 1]) / ((1 / L - 1 / l_ref) / (1 / (2 * L) - 1 / l_ref)) - 1)
                    for i, L in enumerate(Ls[:-1])]
            assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), f"{q} bd{bd}: {gaps}"
            assert gaps[-1] < 0.005, f"{q} bd{bd}: {gaps}"
        # closed form 2: the fitted order is the log-log slope of 1/L − 1/L_ref over these depths (1.056, not
        # exactly 1, because of the finite reference) within 0.03, and within 0.1 of the asymptotic order 1
        ideal = -conv.loglog_slope(Ls, [1 / L - 1 / l_ref for L in Ls])
        assert ideal == pytest.approx(1.0557, abs=1e-4)
        for key in (f"order_smooth_weights_bd{bd}", f"order_smooth_weights_bd{bd}_endpoint"):
            assert summ[key] == pytest.approx(ideal, abs=0.03), key
            assert summ[key] == pytest.approx(1.0, abs=0.1), key


def test_iid_paths_do_not_converge_but_the_statistic_does(tiny_run):
    _, rows = tiny_run
    Ls, indep = _series(rows, "iid", "path_dist_independent")
    assert Ls == [4, 8, 16]
    assert min(indep) > 0.2 and indep[-1] > 0.8 * indep[0]  # O(1), not shrinking
    _, coupled = _series(rows, "iid", "path_dist_coupled")
    assert all(a > b for a, b in zip(coupled, coupled[1:], strict=False))
    assert coupled[-1] < 0.5 * indep[-1]
    _, err = _series(rows, "iid", "stat_mean_err")
    _, stat = _series(rows, "iid", "stat_mean")
    assert err[-1] < err[0] and err[-1] < 0.02 * stat[-1]
    summ = {r["key"]: r["value"] for r in conv.summary(rows)}
    assert abs(summ["slope_iid_path_independent"]) < 0.1
    assert summ["order_iid_path_coupled"] == pytest.approx(0.5, abs=0.15)


def test_iid_case_matches_a_direct_computation():
    """iid_case against the module docstring's definitions, evaluated here in numpy: the same seeded draws, the
    Brownian coupling by block sums / √k, the depth-μP recursion h ← h + (W_l tanh h + b_l)/√L written out, and
    the statistics / coupled path distances on the coarse grid."""
    depths, n, n_in, D, seed = [2, 4, 8], 4, 5, 3, 1
    cfg = _cfg(depths=tuple(depths), width=n, n_inputs=n_in, n_draws=D)
    got = {(r["quantity"], r["L"]): r["value"] for r in conv.iid_case(cfg, seed, depths)}
    x0 = torch.randn(n_in, n, generator=generator(seed, 20), dtype=torch.float64).numpy()
    gen = generator(seed, 21)
    K, l_max = min(depths), max(depths)
    q = {L: [] for L in depths}
    paths = {L: [] for L in depths}
    for _ in range(D):
        W = (torch.randn(l_max, n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)).numpy()
        b = (torch.randn(l_max, n, generator=gen, dtype=torch.float64) / math.sqrt(n)).numpy()
        for L in depths:
            k = l_max // L
            WL, bL = W.reshape(L, k, n, n).sum(1) / math.sqrt(k), b.reshape(L, k, n).sum(1) / math.sqrt(k)
            h, grid = x0.copy(), []
            for l in range(L):
                h = h + (np.tanh(h) @ WL[l].T + bL[l]) / math.sqrt(L)
                if (l + 1) % (L // K) == 0:
                    grid.append(h)
            q[L].append(float((h**2).sum(1).mean() / n))
            paths[L].append(np.stack(grid))

    def rel(a, c):
        return float(np.sqrt(((a - c) ** 2).sum() / (c**2).sum()))

    for i, L in enumerate(depths):
        assert got["stat_mean", L] == pytest.approx(np.mean(q[L]), rel=1e-12)
        assert got["stat_std", L] == pytest.approx(np.std(q[L], ddof=1), rel=1e-10)
        if L < l_max:
            assert got["stat_mean_err", L] == pytest.approx(abs(np.mean(q[L]) - np.mean(q[l_max])), rel=1e-9)
            nxt = depths[i + 1]
            assert got["path_dist_coupled", L] == pytest.approx(
                np.mean([rel(paths[L][d], paths[nxt][d]) for d in range(D)]), rel=1e-12)
            assert got["path_dist_independent", L] == pytest.approx(
                np.mean([rel(paths[L][d], paths[nxt][(d + 1) % D]) for d in range(D)]), rel=1e-12)


def test_outputs_summary_keys_and_replot(tiny_run):
    out, rows = tiny_run
    disk = read_csv(out / "results.csv")
    assert len(disk) == len(rows)
    assert list(disk[0]) == conv.COLUMNS
    assert {r["case"] for r in disk} == {"smooth", "iid"}
    assert all(math.isfinite(float(r["value"])) for r in disk)
    keys = {r["key"] for r in conv.summary(disk)}
    assert {"order_smooth_weights_bd1", "order_smooth_weights_bd2", "order_smooth_weights_bd1_endpoint",
            "order_iid_stat_mean", "order_iid_stat_std", "slope_iid_path_independent",
            "iid_path_independent_at_max_depth", "order_iid_path_coupled"} <= keys
    assert all({"key", "value", "claim"} <= set(r) for r in conv.summary(disk))
    for ext in ("png", "pdf"):
        (out / f"convergence.{ext}").unlink()
    paths = conv.plot(out)
    assert {p.name for p in paths} == {"convergence.png", "convergence.pdf"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_deterministic_given_seed(tmp_path):
    cfg = _cfg(depths=(4, 8), n_draws=3, n_inputs=4)
    a = conv.smooth_case(cfg, 1, 2, [4, 8]) + conv.iid_case(cfg, 1, [4, 8])
    b = conv.smooth_case(cfg, 1, 2, [4, 8]) + conv.iid_case(cfg, 1, [4, 8])
    assert a == b
