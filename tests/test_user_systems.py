"""Systems written outside the package (``file.py:NAME``, ``module:NAME``, entry points): loaded, completed (Jacobian,
flow) and checked against closed forms, refused with one clear line when wrong, and run through ``testbed run`` and
``testbed sweep``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import systems
from systems.user import FlowSpec, central_difference_jacobian

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "systems/examples/user_duffing.py:DUFFING"

SPIRAL_TORCH = """
import torch
A = torch.tensor([[-0.1, -2.0], [2.0, -0.1]], dtype=torch.float64)

def field(t, x):
    return x @ A.T

def flow(x0, t):
    # exp(tA) for A = a I + b J (J the rotation generator): e^{at} [[cos bt, -sin bt], [sin bt, cos bt]]
    a, b = -0.1, 2.0
    c, s = torch.cos(b * t), torch.sin(b * t)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2) * torch.exp(a * t)[:, None, None]
    return torch.einsum("tij,nj->tni", rot, x0)

SPEC = {"vector_field": field, "flow": flow, "dim": 2, "horizon": 1.5, "id_box": ([-1, -1], [1, 1])}
"""


def write(tmp_path: Path, text: str, name: str = "flows.py") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def ref(path: Path, obj: str) -> str:
    return f"{path}:{obj}"


def test_torch_description_gets_its_jacobian_by_autograd_and_its_closed_form_flow_checked(tmp_path):
    s = systems.get_system(ref(write(tmp_path, SPIRAL_TORCH), "SPEC"))
    A = torch.tensor([[-0.1, -2.0], [2.0, -0.1]], dtype=torch.float64)
    x = s.sample_id(5, torch.Generator().manual_seed(0))
    assert torch.allclose(s.jacobian(0.3, x), A.expand(5, 2, 2), atol=1e-14)
    assert s.closed_form and s.dim == 2 and float(s.horizon) == 1.5
    t = torch.linspace(0.0, 1.5, 4, dtype=torch.float64)
    assert float((s.flow(x, t) - s.reference_flow(x, t)).abs().max()) < 1e-9
    # any leading shape, as the built-in systems: (T, N, d) → (T, N, d)
    assert s.vector_field(0.0, torch.stack([x, x])).shape == (2, 5, 2)
    assert bool((s.sample_ood(50) .abs() > 1).any(-1).all())     # default OOD box: the ID box widened, minus it


def test_numpy_description_gets_the_complex_step_jacobian():
    s = systems.get_system(EXAMPLE)
    x = s.sample_id(6, torch.Generator().manual_seed(1))
    p = x[:, 0]
    exact = torch.zeros(6, 2, 2, dtype=torch.float64)
    exact[:, 0, 1] = 1.0
    exact[:, 1, 0] = 1.0 - 3.0 * p**2           # −α − 3β p² with α = −1, β = 1
    exact[:, 1, 1] = -0.3
    assert float((s.jacobian(0.0, x) - exact).abs().max()) < 1e-13
    assert s.name == "duffing" and not s.closed_form


def test_per_sample_real_only_numpy_field_falls_back_to_central_differences(tmp_path):
    path = write(tmp_path, """
        import math
        import numpy as np

        def pendulum(t, x):            # one state at a time, math.sin: no batches, no complex numbers
            return np.array([x[1], -math.sin(x[0]) - 0.2 * x[1]])

        SPEC = {"vector_field": pendulum, "dim": 2, "horizon": 2.0, "id_box": ([-1, -1], [1, 1])}
    """)
    s = systems.get_system(ref(path, "SPEC"))
    x = s.sample_id(4, torch.Generator().manual_seed(2))
    z = torch.zeros(4, dtype=torch.float64)
    exact = torch.stack([torch.stack([z, z + 1.0], -1), torch.stack([-torch.cos(x[:, 0]), z - 0.2], -1)], -2)
    assert float((s.jacobian(0.0, x) - exact).abs().max()) < 1e-8
    assert s.vector_field(0.0, x).dtype == torch.float64


def test_teacher_flow_subclass_in_an_importable_module(tmp_path, monkeypatch):
    write(tmp_path, """
        import dataclasses
        from typing import ClassVar
        import torch
        from systems import TeacherFlow

        @dataclasses.dataclass(repr=False)
        class Decay(TeacherFlow):
            name: ClassVar[str] = "decay"
            dim: ClassVar[int] = 1
            closed_form: ClassVar[bool] = True
            id_low: ClassVar[tuple] = (0.5,)
            id_high: ClassVar[tuple] = (1.5,)
            ood_low: ClassVar[tuple] = (0.0,)
            ood_high: ClassVar[tuple] = (3.0,)
            horizon: float = 1.0
            rate: float = 0.7

            def vector_field(self, t, x):
                return -self.rate * x

            def jacobian(self, t, x):
                return torch.full((*x.shape, 1), -self.rate, dtype=x.dtype)

            def flow(self, x0, t):
                t = torch.as_tensor(t, dtype=x0.dtype)
                return torch.exp(-self.rate * t)[:, None, None] * x0
    """, name="user_decay_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = systems.get_system("user_decay_mod:Decay", rate=0.5)
    assert s.rate == 0.5 and "rate" in systems.system_parameters("user_decay_mod:Decay")
    x = torch.tensor([[1.0]], dtype=torch.float64)
    assert float(s.flow(x, torch.tensor([0.0, 2.0]))[-1, 0, 0]) == pytest.approx(np.exp(-1.0), rel=1e-14)


def test_entry_points_register_systems_by_name(monkeypatch):
    class FakeEntryPoint:
        value = "fakepkg.flows:SPEC"

        @staticmethod
        def load():
            return FlowSpec(vector_field=lambda t, x: -x, dim=3, horizon=1.0, id_box=([0, 0, 0], [1, 1, 1]))

    monkeypatch.setattr("systems.user.entry_point_objects", lambda: {"ep_decay3": FakeEntryPoint()})
    s = systems.get_system("ep_decay3")
    x = torch.ones(2, 3, dtype=torch.float64)
    assert torch.allclose(s.reference_flow(x, torch.tensor([0.0, 1.0]))[-1], x * np.exp(-1.0), rtol=1e-9)
    assert torch.allclose(s.jacobian(0.0, x), -torch.eye(3, dtype=torch.float64).expand(2, 3, 3))


@pytest.mark.parametrize("body, match", [
    ("SPEC = {'vector_field': lambda t, x: x[:, :1], 'dim': 2, 'horizon': 1.0, 'id_box': ([0, 0], [1, 1])}",
     r"must return shape \(N, 2\)"),
    ("SPEC = {'vector_field': lambda t, x: -x, 'jacobian': lambda t, x: 0 * x[..., None] + np.eye(2), 'dim': 2, "
     "'horizon': 1.0, 'id_box': ([0, 0], [1, 1])}", "disagrees with central differences"),
    ("SPEC = {'vector_field': lambda t, x: -x, 'flow': lambda x0, t: np.stack([x0] * len(t)), 'dim': 2, "
     "'horizon': 1.0, 'id_box': ([0.5, 0.5], [1, 1])}", "disagrees with the integral of its own"),
    ("SPEC = {'vector_field': lambda t, x: x**2, 'dim': 1, 'horizon': 5.0, 'id_box': ([1.0], [2.0])}",
     "shorten the horizon"),
    ("SPEC = {'vector_field': lambda t, x: -x, 'dim': 2, 'horizon': 1.0, 'id_box': ([0, 0], [1, 1]), 'colour': 1}",
     "unknown key"),
    ("SPEC = {'vector_field': lambda t, x: -x, 'dim': 2, 'horizon': 1.0, 'id_box': ([0, 0], [1])}", "id_box"),
    ("SPEC = 42", "expected a TeacherFlow subclass"),
    ("raise RuntimeError('boom')", "importing .* failed: RuntimeError: boom"),
])
def test_bad_user_systems_fail_with_one_clear_line(tmp_path, body, match):
    path = write(tmp_path, "import numpy as np\n" + body + "\n", name=f"bad_{abs(hash(body)) % 10**6}.py")
    with pytest.raises(systems.SystemSpecError, match=match) as err:
        systems.get_system(ref(path, "SPEC"))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_file_module_and_object_are_named():
    with pytest.raises(systems.SystemSpecError, match="no such file"):
        systems.get_system("no/such/file.py:SPEC")
    with pytest.raises(systems.SystemSpecError, match="cannot import module"):
        systems.get_system("no_such_module_xyz:SPEC")
    with pytest.raises(systems.SystemSpecError, match="defines no 'NOPE'"):
        systems.get_system("systems/examples/user_duffing.py:NOPE")


def test_central_differences_are_second_order_accurate():
    f = lambda t, x: torch.stack([torch.sin(x[:, 0]) * x[:, 1], x[:, 0] ** 3], -1)  # noqa: E731
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    exact = torch.stack([torch.stack([torch.cos(x[:, 0]) * x[:, 1], torch.sin(x[:, 0])], -1),
                         torch.stack([3 * x[:, 0] ** 2, torch.zeros(2, dtype=torch.float64)], -1)], -2)
    assert float((central_difference_jacobian(f, 0.0, x) - exact).abs().max()) < 1e-8


def _env(extra_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(extra_path), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_user_systems_run_through_testbed_run_and_sweep(tmp_path):
    """The example file through ``testbed run``; a file, an importable module and (with the extra) a dysts flow
    through ``testbed sweep`` (worker processes load them again by reference)."""
    import importlib.util

    refs = [f"{tmp_path / 'user_spiral_mod.py'}:SPEC", "user_spiral_mod:SPEC"]
    if importlib.util.find_spec("dysts") is not None:
        refs.append("dysts:Lorenz")
    write(tmp_path, SPIRAL_TORCH, name="user_spiral_mod.py")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "testbed", "run", "law-recovery", "--quick", "--system", EXAMPLE, "--out", str(out),
           "--no-progress", "--threads", "1", "--set", "steps=5", "n_train=16", "n_test=8", "objectives=endpoint",
           "match_endpoint=0"]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert EXAMPLE in (out / "results.csv").read_text()
    spec = tmp_path / "spec.toml"
    spec.write_text(textwrap.dedent(f"""\
        experiment = "law-recovery"
        quick = true
        seeds = [0]
        [fixed]
        steps = 5
        n_train = 16
        n_test = 8
        objectives = ["endpoint"]
        match_endpoint = 0.0
        [grid]
        systems = {json.dumps(refs)}
    """))
    sweep_out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "testbed", "sweep", str(spec), "--out", str(sweep_out), "--workers", "1",
           "--threads", "1", "--no-progress"]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    status = json.loads((sweep_out / "sweep.json").read_text())
    assert len(status["cells"]) == len(refs)
    merged = (sweep_out / "results.csv").read_text()
    assert all(r in merged for r in refs)


def test_references_are_exact_and_keyed_by_the_resolved_file(tmp_path, monkeypatch):
    """A reference is never case- or hyphen-folded (another file, another system); the same file reached by another
    relative path is the same system; its default name is a safe file-name component."""
    a = write(tmp_path, SPIRAL_TORCH, name="flow_a.py")
    write(tmp_path, SPIRAL_TORCH.replace('"horizon": 1.5', '"horizon": 1.25'), name="Flow-A.py")
    s1 = systems.get_system(ref(a, "SPEC"))
    monkeypatch.chdir(tmp_path)
    assert type(systems.get_system("flow_a.py:SPEC")) is type(s1)                 # same file, relative path
    other = systems.get_system("Flow-A.py:SPEC")
    assert type(other) is not type(s1) and float(other.horizon) == 1.25           # not folded into flow_a.py
    name = type(s1).name
    assert name.startswith("flow_a.SPEC-") and "/" not in name and ":" not in name


def test_run_folders_stay_inside_the_output_directory(tmp_path):
    from testbed.experiments import law_recovery

    path = write(tmp_path, SPIRAL_TORCH, name="abs_flow.py")
    cfg = law_recovery.quick_config(systems=(ref(path, "SPEC"),), objectives=("endpoint",), steps=3, n_train=16,
                                    n_test=8, match_endpoint=0.0, progress=False)
    out = tmp_path / "out"
    law_recovery.run(cfg, out)
    made = [p for p in (out / "checkpoints").iterdir()]
    assert len(made) == 1 and made[0].parent == out / "checkpoints"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abs_flow.py", "out"]
