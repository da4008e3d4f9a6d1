"""The README's Python API tour runs as written (so its imports and calls stay current)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_python_api_tour_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Python API tour"):text.index("## Notebooks")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    runnable = [b for b in blocks if "model.blocks" not in b]
    assert len(runnable) == 4
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile("\n".join(runnable), str(README), "exec"), scope)  # noqa: S102
    assert scope["testbed"].law_error(scope["student"].vector_field, scope["test"]) < 0.5
    assert len(scope["df"]) == 8 and (tmp_path / "runs" / "api-demo" / "law_recovery.png").exists()
    rep = scope["rep"]
    assert rep.blocks == [f"layers.{i}" for i in range(4)] and len(rep.path_spectral) == 5 and rep.dim == 96
