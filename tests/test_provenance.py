"""Provenance in results.json: commit, dirty flag and diff hash of the tree a run started from, a command without
absolute home paths, package versions and the host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testbed.cli import main
from testbed.results import git_state, relative_command


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_git_state_tracks_dirty_trees_and_hashes_the_difference(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None, "diff_sha256": None}
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "0")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-q", "-m", "a")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False and clean["diff_sha256"] is None
    (tmp_path / "a.py").write_text("x = 2\n")
    one = git_state(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    two = git_state(tmp_path)
    assert one["dirty"] and two["dirty"] and one["diff_sha256"] != two["diff_sha256"]
    assert one["commit"] == clean["commit"]
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "new.txt").write_text("untracked\n")
    assert git_state(tmp_path)["dirty"] is True  # an untracked file makes the tree dirty too


def test_command_has_no_absolute_home_paths(tmp_path):
    home = str(Path.home())
    cmd = relative_command(["/opt/venv/bin/testbed", "run", "law-recovery", "--out", f"{tmp_path}/figures/x",
                            f"--data-dir={home}/data", "/etc/passwd"], tmp_path)
    assert cmd == "testbed run law-recovery --out figures/x --data-dir=~/data /etc/passwd"


def test_results_json_records_provenance(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "law-recovery", "--quick", "--system", "linear_spiral", "--no-progress", "--out", "o",
                 "--set", "steps=5", "n_train=16", "n_test=8", "n_layers=8", "width=8", "objectives=endpoint"]) == 0
    meta = json.loads((tmp_path / "o" / "results.json").read_text())
    assert meta["command"].startswith("testbed run law-recovery --quick --system linear_spiral --no-progress --out o")
    assert str(Path.home()) + "/" not in json.dumps(meta["command"])
    assert set(meta) >= {"commit", "dirty", "diff_sha256", "versions", "host", "config", "seeds"}
    assert isinstance(meta["dirty"], bool) and len(meta["commit"]) == 40
    assert (meta["diff_sha256"] is None) == (meta["dirty"] is False)
    assert {"cpu", "cores", "gpu", "threads"} <= set(meta["host"]) and meta["versions"]["testbed"]


def test_writing_under_figures_needs_a_clean_tree(tmp_path, monkeypatch, capsys):
    import testbed.results as results

    monkeypatch.setattr(results, "committed_results_folders", lambda: [tmp_path / "figures"])
    monkeypatch.setattr(results, "git_state", lambda cwd=None: {"commit": "a" * 40, "dirty": True,
                                                                "diff_sha256": "b" * 64})
    monkeypatch.setattr(results, "_ALLOW_DIRTY", False)
    tiny = ["--quick", "--system", "linear_spiral", "--no-progress", "--set", "steps=5", "n_train=16", "n_test=8",
            "n_layers=8", "width=8", "objectives=endpoint"]
    out = tmp_path / "figures" / "law-recovery"
    assert main(["run", "law-recovery", *tiny, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "uncommitted changes (diff bbbbbbbbbbbb)" in err and "--allow-dirty" in err and not out.exists()
    assert main(["figures", "law-recovery", "--out", str(tmp_path / "figures")]) == 2
    assert main(["run", "law-recovery", *tiny, "--out", str(tmp_path / "runs" / "x")]) == 0  # not committed
    assert json.loads((tmp_path / "runs" / "x" / "results.json").read_text())["allow_dirty"] is False
    assert main(["run", "law-recovery", *tiny, "--out", str(out), "--allow-dirty"]) == 0
    meta = json.loads((out / "results.json").read_text())
    assert meta["dirty"] is True and meta["allow_dirty"] is True and meta["diff_sha256"] == "b" * 64


def test_every_committed_result_comes_from_a_clean_ancestor_commit():
    """Each results.json under figures/ names the commit it was produced at, that commit is an ancestor of the
    checkout (it contains the code), and the tree was clean — no committed number without its code."""
    root = Path(__file__).resolve().parents[1]
    found = sorted((root / "figures").rglob("results.json"))
    assert found, "no committed results under figures/"

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    in_checkout = git("rev-parse", "--is-inside-work-tree").stdout.strip() == "true"
    shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    for path in found:
        meta = json.loads(path.read_text())
        rel = path.relative_to(root)
        assert meta.get("dirty") is False, f"{rel}: produced from a dirty tree"
        # a merged sweep whose cells ran at different commits says "mixed" and lists every cell's state in "runs"
        states = list(meta["runs"].values()) if meta.get("commit") == "mixed" else [meta]
        assert states, f"{rel}: commit 'mixed' but no per-cell states"
        for state in states:
            commit = state.get("commit")
            assert state.get("dirty") is False, f"{rel}: a cell produced from a dirty tree"
            assert isinstance(commit, str) and len(commit) == 40, f"{rel}: no commit recorded"
            if in_checkout and not shallow:
                assert git("merge-base", "--is-ancestor", commit, "HEAD").returncode == 0, \
                    f"{rel}: commit {commit[:8]} is not an ancestor of HEAD"
