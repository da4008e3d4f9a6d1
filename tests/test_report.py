"""``testbed report``: the README's generated tables equal the report of the committed results."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import report
from testbed.cli import main
from testbed.config import ConfigError
from testbed.results import write_csv

ROOT = Path(__file__).resolve().parents[1]


def test_readme_block_equals_the_report_of_figures():
    block = report.current_block(ROOT / "README.md")
    assert block is not None, "README.md lost its report markers"
    assert block == report.render(ROOT / "figures"), "README tables are stale: run `testbed report --write README.md`"
    assert report.stale(ROOT / "README.md", ROOT / "figures") == [], "run `testbed report --write README.md`"


def test_readme_sections_hold_the_reports_of_their_folders(tmp_path):
    """A section block names a folder; --write fills it with that folder's report and leaves the rest alone."""
    rows = [{"system": "a", "objective": "field", "seed": k, "endpoint_error": float(k + 1)} for k in range(3)]
    write_csv(tmp_path / "law-recovery" / "full" / "results.csv", rows)
    begin, end = report.section_markers("law-recovery/full")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{begin}\nstale 9.99\n{end}\ntext\n{report.BEGIN}\n{report.END}\n")
    assert report.stale(readme, tmp_path) == ["law-recovery/full", "measured results"]
    report.write(readme, tmp_path)
    text = readme.read_text()
    assert "9.99" not in text and "| 2 ± 2.5 (3) | a | field |" in text and text.startswith("# x\n")
    assert report.stale(readme, tmp_path) == []
    readme.write_text(f"{report.section_markers('law-recovery/none')[0]}\n{report.section_markers('law-recovery/none')[1]}"
                      f"\n{report.BEGIN}\n{report.END}\n")
    with pytest.raises(ConfigError, match="does not exist"):
        report.write(readme, tmp_path)


def test_report_groups_seeds_into_mean_and_ci(tmp_path, capsys):
    rows = [{"system": s, "objective": o, "seed": k, "endpoint_error": e, "law_error_id": 1.0, "flag": "ok",
             "student": "residual", "n_layers": 8, "width": 8, "tied": True}
            for s, o, k, e in [("a", "field", 0, 1.0), ("a", "field", 1, 2.0), ("a", "field", 2, 3.0),
                               ("a", "field", 3, 4.0), ("a", "field", 4, 5.0), ("b", "endpoint", 0, 0.5)]]
    write_csv(tmp_path / "law-recovery" / "results.csv", rows)
    out = report.render(tmp_path, ["law-recovery"])
    # 1..5: mean 3, t-interval half-width 1.963 → "3 ± 2 (5)"; one seed → "(n=1)"
    assert "| a | field | 3 ± 2 (5) | 1 ± 0 (5) | residual | ok |" in out and "| b | endpoint | 0.5 (n=1) |" in out
    assert out.startswith(report.BEGIN) and out.rstrip().endswith(report.END)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    assert main(["report", "--figures", str(tmp_path), "--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "3 ± 2 (5)" in text and "old" not in text
    (tmp_path / "bare.md").write_text("no markers\n")
    assert main(["report", "--figures", str(tmp_path), "--write", str(tmp_path / "bare.md")]) == 2


def test_result_folders_list_nested_runs_but_not_sub_studies(tmp_path):
    """A study folder with summary.csv only (depth-scaling) owns its sub-study folders; a nested folder with its
    own results.json (depth-scaling/full/) is a separate run and is listed, its own sub-studies again not."""
    from testbed.report import result_folders

    for rel in ("summary.csv", "results.json", "convergence/results.csv", "full/summary.csv", "full/results.json",
                "full/convergence/results.csv", "other/results.csv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("a\n1\n")
    assert [p.relative_to(tmp_path).as_posix() for p in result_folders(tmp_path)] == [".", "full"]
