"""Multi-path study: transport teachers, calibration metrics, partially observed paths, context students, the
route and digits tasks, and the experiment end to end (tiny settings)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import systems
from testbed.calibration import (
    _bins,
    classification_metrics,
    ece_from_bins,
    expected_calibration_error,
    reliability_bins,
)
from testbed.config import ConfigError
from testbed.experiments import get_experiment
from testbed.multipath.tasks import (
    ROUTE_FLOWS,
    elementary_flow,
    elementary_law,
    route_states,
    route_task,
    shift_images,
    transport_task,
)
from testbed.objectives import make_objective
from testbed.path_data import PathData, aligned_paths, dense_paths, observation_layers
from testbed.students import build_student
from testbed.students.augmented import AugmentedResidualNet, ContextResidualStudent

TRANSPORT = ["moons_shear", "spiral_twist", "circles_lift"]


# ------------------------------------------------------------------ transport teacher flows
@pytest.mark.parametrize("name", TRANSPORT)
def test_transport_flow_matches_reference_and_jacobian(name):
    s = systems.get_system(name)
    x0 = s.sample_id(40, torch.Generator().manual_seed(1))
    t = torch.linspace(0.0, float(s.horizon), 6, dtype=torch.float64)
    assert torch.allclose(s.flow(x0, t), s.reference_flow(x0, t), atol=1e-8)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: s.vector_field(0.0, v)))(x0)
    assert torch.allclose(s.jacobian(0.0, x0), jac, atol=1e-12)
    # flow Jacobian of the closed form agrees with the variational equation
    fj = torch.func.vmap(torch.func.jacrev(lambda v: s.flow(v[None], t)[-1, 0]))(x0[:5])
    assert torch.allclose(s.flow_jacobian(x0[:5], t)[-1], fj, atol=1e-7)


@pytest.mark.parametrize("name", TRANSPORT)
def test_transport_labels_reproduce_the_data_set(name):
    """The teacher's endpoint hyperplane reproduces the data set's own labels on ≥ 99% of the points, and the
    classes are balanced."""
    s = systems.get_system(name)
    x0, y = s.sample_data(4000, torch.Generator().manual_seed(0))
    lab = s.classify(x0)
    assert float((lab == y).double().mean()) >= 0.99
    assert abs(float(lab.double().mean()) - 0.5) < 0.02
    assert torch.all(x0[:, 2] == 0)
    shift = s.sample_ood(10, torch.Generator().manual_seed(0)) - s.sample_id(10, torch.Generator().manual_seed(0))
    assert torch.allclose(shift[:, :2], torch.tensor(s.ood_shift, dtype=shift.dtype).expand(10, 2))


def test_transport_bad_parameters_raise():
    with pytest.raises(systems.SystemSpecError, match="r_max"):
        systems.get_system("spiral_twist", r_min=1.0, r_max=0.5)
    with pytest.raises(systems.SystemSpecError, match="noise"):
        systems.get_system("moons_shear", noise=-0.1)


# ------------------------------------------------------------------ calibration
def test_ece_nll_and_bins_on_a_hand_made_example():
    # two confident correct predictions (p=0.9), two 60% predictions of which one is right
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1])
    logits = p.log()
    rows = reliability_bins(logits, y, n_bins=15)
    assert sum(r["count"] for r in rows) == 4
    b09 = [r for r in rows if r["count"] and r["confidence"] > 0.8][0]
    b06 = [r for r in rows if r["count"] and r["confidence"] < 0.7][0]
    assert b09["count"] == 2 and b09["accuracy"] == 1.0 and b09["confidence"] == pytest.approx(0.9)
    assert b06["count"] == 2 and b06["accuracy"] == 0.5 and b06["confidence"] == pytest.approx(0.6)
    # ECE = 2/4·|1 − 0.9| + 2/4·|0.5 − 0.6| = 0.1
    assert expected_calibration_error(logits, y) == pytest.approx(0.1, abs=1e-12)
    nll = -(math.log(0.9) * 2 + math.log(0.4) + math.log(0.6)) / 4
    m = classification_metrics(logits, y)
    assert m["nll"] == pytest.approx(nll, rel=1e-12) and m["accuracy"] == 0.75


def test_ece_of_a_calibrated_predictor_is_small_and_of_an_overconfident_one_large():
    gen = torch.Generator().manual_seed(0)
    n = 20000
    conf = 0.5 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    correct = torch.rand(n, generator=gen, dtype=torch.float64) < conf        # accuracy = confidence
    y = torch.where(correct, torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long))
    logits = torch.stack([conf, 1 - conf], -1).log()
    assert expected_calibration_error(logits, y) < 0.01
    sharp = torch.stack([torch.full_like(conf, 0.99), torch.full_like(conf, 0.01)], -1).log()
    # always 99% confident, right with probability E[conf] = 0.75 → ECE ≈ 0.24
    assert expected_calibration_error(sharp, y) == pytest.approx(0.99 - float(correct.double().mean()), abs=1e-9)


def test_bin_edges_are_right_closed():
    # confidence exactly 2/3 falls in the bin (0.6, 0.6667] of 15, i.e. the 10th bin
    logits = torch.tensor([[math.log(2.0), 0.0]], dtype=torch.float64)
    rows = reliability_bins(logits, torch.tensor([0]), n_bins=15)
    assert [i for i, r in enumerate(rows) if r["count"]] == [9]


def test_exact_softmax_confidences_on_bin_edges():
    """B = 4, confidences exactly 1/4, 1/2, 3/4 and 1 (equal logits, log 3 vs 0, one logit −1000 below): each is the
    right edge of a bin and lands in that bin; confidence 1 lands in the last bin."""
    cases = [([0.0] * 4, 0), ([0.0, 0.0], 1), ([math.log(3.0), 0.0], 2), ([0.0, -1000.0], 3)]
    for logits, b in cases:
        rows = reliability_bins(torch.tensor([logits], dtype=torch.float64), torch.tensor([0]), n_bins=4)
        assert [i for i, r in enumerate(rows) if r["count"]] == [b]
        assert rows[b]["confidence"] == rows[b]["bin_hi"] == (b + 1) / 4  # the softmax hit the edge exactly
    one = torch.tensor([[0.0, -1000.0, -1000.0]] * 3, dtype=torch.float64)
    for n_bins in (1, 10, 15, 25):
        rows = reliability_bins(one, torch.tensor([0, 0, 1]), n_bins=n_bins)
        assert [r["count"] for r in rows] == [0] * (n_bins - 1) + [3]
        assert rows[-1]["confidence"] == 1.0 and rows[-1]["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("n_bins", [4, 10, 15, 25, 29, 41])
def test_a_confidence_equal_to_a_bin_edge_lands_in_the_bin_it_closes(n_bins):
    """Bins are right-closed, ((b−1)/B, b/B]: the confidence b/B — the value the table reports as that bin's
    bin_hi — is counted in bin b−1 (0-based), for every edge b = 1..B."""
    for b in range(1, n_bins + 1):
        rows = _bins(torch.tensor([b / n_bins], dtype=torch.float64), torch.ones(1, dtype=torch.float64), n_bins)
        assert [i for i, r in enumerate(rows) if r["count"]] == [b - 1], (n_bins, b)
        assert rows[b - 1]["bin_hi"] == rows[b - 1]["confidence"] == b / n_bins
        if b < n_bins:  # and the next bin, whose open left edge it is, stays empty
            assert rows[b]["bin_lo"] == b / n_bins and rows[b]["count"] == 0


def test_confidence_zero_and_the_smallest_top_label_confidence():
    """A top-label confidence is ≥ 1/C > 0, so 0 is outside (0, 1]; the binning clamps it into the first bin (no
    sample is dropped). 1/C itself (C equal logits) lands in bin ⌈B/C⌉ − 1."""
    rows = _bins(torch.tensor([0.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64), 4)
    assert [r["count"] for r in rows] == [1, 1, 0, 0]
    assert rows[0]["confidence"] == 0.0 and rows[0]["accuracy"] == 1.0
    assert ece_from_bins(rows) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    for C, n_bins in ((10, 15), (3, 15), (7, 10)):
        rows = reliability_bins(torch.zeros(1, C, dtype=torch.float64), torch.tensor([0]), n_bins=n_bins)
        assert [i for i, r in enumerate(rows) if r["count"]] == [math.ceil(n_bins / C) - 1], (C, n_bins)


# ------------------------------------------------------------------ partially observed paths
def test_observation_layers_and_aligned_mask():
    assert observation_layers(16, 3).tolist() == [4, 8, 12]
    assert observation_layers(8, 1).tolist() == [4]
    with pytest.raises(ValueError):
        observation_layers(4, 4)
    states = torch.randn(5, 3, 2)
    layers, targets, mask = aligned_paths(states, torch.tensor([1, 2, 3]), torch.tensor([1, 0, 1, 0, 0]).bool())
    assert mask.sum(1).tolist() == [3, 0, 3, 0, 0] and torch.equal(targets, states)


def test_dense_paths_interpolate_and_hold():
    x0 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    states = torch.tensor([[[2.0, 0.0], [2.0, 4.0]], [[9.0, 9.0], [9.0, 9.0]]])     # at layers 2 and 4
    layers, targets, mask = dense_paths(x0, states, torch.tensor([2, 4]), torch.tensor([True, False]), 6)
    assert layers.tolist() == [1, 2, 3, 4, 5, 6] and torch.all(mask == 1)
    expect0 = torch.tensor([[1.0, 0.0], [2.0, 0.0], [2.0, 2.0], [2.0, 4.0], [2.0, 4.0], [2.0, 4.0]])
    assert torch.allclose(targets[0], expect0)
    assert torch.allclose(targets[1], x0[1].expand(6, 2))      # never observed: "stay at x0"


def test_path_data_validation():
    x = torch.randn(4, 2)
    ok = dict(path_layers=torch.tensor([1, 2]), path_targets=torch.zeros(4, 2, 2), path_mask=torch.ones(4, 2))
    PathData(x, **ok)
    with pytest.raises(ValueError, match="path_targets"):
        PathData(x, **{**ok, "path_targets": torch.zeros(4, 3, 2)})
    with pytest.raises(ValueError, match="path_layers"):
        PathData(x, **{**ok, "path_layers": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match="labels"):
        PathData(x, **ok, y=torch.tensor([0, 1, 2, 3]), n_classes=2)
    with pytest.raises(ValueError, match="NaN"):
        PathData(x, **{**ok, "path_targets": torch.full((4, 2, 2), float("nan"))})


def test_observed_path_term_matches_its_formula():
    torch.manual_seed(0)
    model = AugmentedResidualNet(2, 2, aug_dim=1, n_layers=4, width=8, head="linear").double()
    x = torch.randn(6, 2, dtype=torch.float64)
    layers = torch.tensor([2, 4])
    targets = torch.randn(6, 2, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1], [0, 0], [1, 0], [0, 1], [0, 0], [1, 1]], dtype=torch.float64)
    data = PathData(x, layers, targets, mask, y=torch.zeros(6, dtype=torch.long), n_classes=2)
    loss, terms = make_objective("observed_path=1")(model, data)
    traj = model.flow.trajectory(model.initial_state(x))[layers].transpose(0, 1)
    manual = ((traj - targets).pow(2).sum(-1) * mask).sum() / ((targets.pow(2).sum(-1) * mask).sum())
    assert float(loss.detach()) == pytest.approx(float(manual.detach()), rel=1e-12)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.flow.parameters())
    empty = PathData(x, layers, targets, torch.zeros(6, 2, dtype=torch.float64))
    loss0, _ = make_objective("observed_path=1")(model, empty)
    assert float(loss0.detach()) == 0.0 and loss0.requires_grad


# ------------------------------------------------------------------ students with a carried context
def test_context_student_carries_the_context_and_reads_only_the_active_block():
    torch.manual_seed(0)
    st = ContextResidualStudent(2, n_context=6, context_blocks=3, n_layers=6, width=16).double()
    h0 = torch.randn(4, 8, dtype=torch.float64)
    traj = st.trajectory(h0)
    assert torch.equal(traj[:, :, 2:], h0[None, :, 2:].expand(7, 4, 6))             # context never moves
    h1 = h0.clone()
    h1[:, 4:] = torch.randn(4, 4, dtype=torch.float64)                               # change blocks 2 and 3
    # the first segment (layers 0, 1) reads block 1 only → same observed states up to layer 2
    assert torch.allclose(st.trajectory(h1)[:3, :, :2], traj[:3, :, :2], atol=0)
    assert not torch.allclose(st.trajectory(h1)[-1, :, :2], traj[-1, :, :2])
    # the vector field is the layer increment over Δt
    l = 3
    inc = (st.step(l, traj[l]) - traj[l]) / (st.horizon / st.n_layers)
    assert torch.allclose(st.vector_field(l * st.horizon / st.n_layers, traj[l]), inc, atol=1e-12)


def test_augmented_net_layout_and_registry():
    net = build_student("augmented_residual_net", data_dim=2, output_dim=2, aug_dim=1, context_dim=3,
                        n_layers=4, width=8, head="observe")
    x = torch.tensor([[1.0, 2.0, 0.0, 1.0, 0.0]])
    assert net.initial_state(x).tolist() == [[1.0, 2.0, 0.0, 0.0, 1.0, 0.0]]
    assert net.observe(net.initial_state(x)).tolist() == [[1.0, 2.0, 0.0]]
    assert net(x).shape == (1, 2)
    with pytest.raises(ConfigError, match="output_dim"):
        AugmentedResidualNet(2, 4, head="observe")
    with pytest.raises(ValueError, match="features"):
        net.initial_state(torch.zeros(1, 2))


# ------------------------------------------------------------------ routes and digits
@pytest.mark.parametrize("kind", ROUTE_FLOWS)
def test_elementary_flows_solve_their_laws(kind):
    x0 = np.array([0.7, -1.1])
    sol = solve_ivp(lambda t, x: elementary_law(kind, torch.from_numpy(x), 1.5).numpy(), (0, 0.4), x0,
                    rtol=1e-12, atol=1e-12)
    exact = elementary_flow(kind, torch.from_numpy(x0), 0.4, 1.5).numpy()
    assert np.allclose(sol.y[:, -1], exact, atol=1e-9)


def test_routes_do_not_commute_and_compose():
    x0 = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    a = route_states(x0, [(1, 2)], 1.0, 1.5)
    b = route_states(x0, [(2, 1)], 1.0, 1.5)
    assert (a[0, -1] - b[0, -1]).norm() > 0.1
    manual = elementary_flow("shear_y", elementary_flow("shear_x", x0, 0.5, 1.5), 0.5, 1.5)
    assert torch.allclose(a[0, -1], manual[0])


def test_route_task_splits_routes():
    task = route_task(n_segments=2, n_seen_routes=4, n_train=32, n_test=16, n_layers=4, observed_fraction=0.5,
                      noise_std=0.1, width=8, hidden_layers=1)
    seen = {tuple(r) for r in task.info["seen_routes"]}
    assert len(seen) == 4 and task.info["n_routes"] == 9
    codes_unseen = task.evals["unseen_route"].x[:, 2:].reshape(16, 2, 3).argmax(-1)
    assert not any(tuple(c.tolist()) in seen for c in codes_unseen)
    assert int(task.observed.sum()) == 16 and task.obs_layers.tolist() == [2]


def test_shift_images():
    img = torch.arange(64.0).reshape(1, 64)
    out = shift_images(img, 1, 0).reshape(8, 8)
    assert torch.equal(out[:, 1:], img.reshape(8, 8)[:, :-1]) and torch.all(out[:, 0] == 0)


def test_transport_task_holds_out_the_wedge():
    task = transport_task("circles_lift", n_train=64, n_test=32, n_layers=8, n_obs=3, observed_fraction=0.5,
                          wedge_deg=(0.0, 90.0), noise_std=0.1, width=8, hidden_layers=1)
    s = systems.get_system("circles_lift")
    ang = torch.rad2deg(s.polar_angle(task.x0_state.double()))
    assert torch.all((ang >= 90.0) | (ang < 0.0))
    ang_u = torch.rad2deg(s.polar_angle(task.evals["unseen_region"].x.double()))
    assert torch.all((ang_u >= 0.0) & (ang_u < 90.0))
    t = task.obs_layers.double() / 8
    assert torch.allclose(task.states.double(), s.flow(task.x0_state.double(), torch.cat([torch.zeros(1), t]))[1:]
                          .transpose(0, 1), atol=1e-6)


# ------------------------------------------------------------------ the experiment
def test_config_validation():
    exp = get_experiment("multipath")
    with pytest.raises(ConfigError, match="tasks"):
        exp.quick_config(tasks=("mnist",))
    with pytest.raises(ConfigError, match="lambdas"):
        exp.quick_config(lambdas=(0.0, -1.0))
    with pytest.raises(ConfigError, match="observed_fraction"):
        exp.quick_config(observed_fraction=0.0)
    with pytest.raises(ConfigError, match="route_layers"):
        exp.quick_config(route_layers=7)
    with pytest.raises(ConfigError, match="wedge_deg"):
        exp.quick_config(wedge_deg=(90.0, 30.0))


def test_multipath_end_to_end_tiny(tmp_path):
    """Routes + one transport task at toy size: files written; on routes the aligned field term lowers the path
    error and the endpoint error on unseen route combinations, the over-constrained one raises the error."""
    exp = get_experiment("multipath")
    cfg = exp.quick_config(tasks=("routes", "moons_shear"), lambdas=(0.0, 100.0), steps=300, n_train=96,
                           n_test=64, width=24, n_layers=8, progress=False)
    rows = exp.run(cfg, tmp_path)
    exp.plot(tmp_path)
    for f in exp.OUTPUT_FILES:
        assert (tmp_path / f).exists(), f
    assert len(rows) == 2 * (1 + 2 * 1)
    by = {(r["task"], r["variant"], r["lam"]): r for r in rows}
    base = by[("routes", "endpoint", 0.0)]
    assert by[("routes", "aligned", 100.0)]["path_error_unseen_path"] < 0.8 * base["path_error_unseen_path"]
    assert by[("routes", "aligned", 100.0)]["unseen_path"] < 0.7 * base["unseen_path"]    # unseen routes
    assert by[("routes", "over", 100.0)]["seen"] > base["seen"]
    m = by[("moons_shear", "endpoint", 0.0)]
    assert 0.0 <= m["ece"] <= 1.0 and m["seen"] > 0.6 and math.isfinite(m["law_error_seen"])
    assert exp.plot(tmp_path)
