"""The PDE law-recovery tables and report: ``summary.csv`` / ``paired.csv`` from ``results.csv`` and the markdown
``testbed report`` writes (nothing typed by hand).

Per claim of the study:

* **a local student can recover the law** — law error (ID and OOD) per student × objective, and per student ×
  objective the systems whose mean (and whose whole 95% CI) is at or below :data:`TARGET`;
* **endpoint-only training does not** — the paired geometric-mean ratio of every objective's law error against
  ``endpoint`` over shared seeds, with a verdict (CI below / above / containing 1);
* **what a local field can represent at all** — the least-squares floor of a local polynomial field per window
  width (``representability.csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed.experiments.law.report import format_ratio, summary_cell, verdict
from testbed.report import is_finite_number
from testbed.results import read_csv, write_csv
from testbed.stats import paired_table

Row = dict[str, Any]
#: the study's natural keys besides objective and seed (``lr``/``steps`` may differ between students in a sweep)
GROUP = ("system", "student", "n_layers", "n_grid", "lr", "steps")
TABLE_METRICS = ("endpoint_error", "law_error_id", "law_error_ood", "trajectory_error", "consistency_error",
                 "teacher_consistency_error", "rollout_error_4T")
#: compared as ratios (log10 differences); the others as linear differences
LOG_METRICS = ("endpoint_error", "law_error_id", "law_error_ood", "trajectory_error", "rollout_error_4T")
#: the issue's target for a field-trained local student: law error ≤ 0.05 in distribution
TARGET = 0.05


def derive(out: str | Path) -> list[Path]:
    """``summary.csv`` (mean, sample std, 95% CI and n of every metric per system × student × objective × L × N)
    and ``paired.csv`` (every objective against ``endpoint`` over shared seeds, :func:`testbed.stats.paired_table`)
    from ``out/results.csv``."""
    from testbed.sweep.merge import summarize as group_summary

    out = Path(out)
    rows = read_csv(out / "results.csv")
    group = [k for k in GROUP if any(k in r for r in rows)]        # older tables have no lr / steps columns
    keys = [*group[:2], "objective", *group[2:]]
    metric_rows = [{**{k: r.get(k, "") for k in keys}, "seed": r["seed"],
                    **{m: r.get(m, "") for m in TABLE_METRICS}} for r in rows]
    write_csv(out / "summary.csv", group_summary(metric_rows, keys))
    write_csv(out / "paired.csv", paired_table(rows, group, "objective", "endpoint", TABLE_METRICS, LOG_METRICS))
    return [out / "summary.csv", out / "paired.csv"]


def _groups(rows: list[Row], keys: tuple[str, ...]) -> list[tuple]:
    return list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))


def report_markdown(results: list[Row], summary: list[Row], paired: list[Row], floors: list[Row]) -> str:
    """Law-error, endpoint-error and ratio tables, verdict lines, the target count and the representability floors."""
    objectives = sorted(dict.fromkeys(r["objective"] for r in results), key=lambda o: o != "endpoint")
    others = [o for o in objectives if o != "endpoint"]
    keys = tuple(k for k in GROUP if k in summary[0])
    groups = _groups(summary, keys)

    def label(g: tuple) -> str:
        d = dict(zip(keys, g, strict=True))
        parts = [d["student"], f"L = {d['n_layers']}"]
        parts += [f"{k} {d[k]}" for k in ("lr", "steps") if d.get(k) not in ("", None)]
        return f"| {d['system']} | {', '.join(parts)} |"

    lines: list[str] = ["Seeds vary the student's initialisation and the minibatch order on one fixed draw of the "
                        "data; a `poly` student starts at F_θ ≡ 0, so its seeds vary the minibatch order only — the "
                        "CIs are over training randomness, not over data.", ""]
    for metric, title in (("law_error_id", "Law error ‖F_θ − F*‖/‖F*‖ on in-distribution test states"),
                          ("law_error_ood", "Law error on out-of-distribution states (higher wavenumbers)"),
                          ("endpoint_error", "Endpoint error on in-distribution test trajectories")):
        lines += [f"{title}; mean ± 95% CI (n seeds); within a row every objective has the same student, data, "
                  "depth, learning rate and step budget:", "",
                  "| system | student | " + " | ".join(objectives) + " |",
                  "|---|---|" + "---|" * len(objectives)]
        for g in groups:
            cells = [summary_cell(summary, metric, objective=o, **dict(zip(keys, g, strict=True)))
                     for o in objectives]
            lines.append(label(g) + " " + " | ".join(cells) + " |")
        lines.append("")
    law = [p for p in paired if p["metric"] == "law_error_id"]
    if law and others:
        lines += ["Law-error ratio against the endpoint-trained student over shared seeds (geometric mean of "
                  "objective / endpoint, 95% t-interval, exact two-sided sign-flip p — whose smallest value with "
                  "n = 5 is 2/32 = 0.0625):", "",
                  "| system | student | " + " | ".join(others) + " |", "|---|---|" + "---|" * len(others)]
        for g in groups:
            key = tuple(str(v) for v in g)
            cells = [format_ratio(next((p for p in law if tuple(str(p.get(k, "")) for k in keys) == key
                                        and p["a"] == o), None)) for o in others]
            lines.append(label(g) + " " + " | ".join(cells) + " |")
        lines.append("")
        for student in dict.fromkeys(p["student"] for p in law):
            for o in others:
                ps = [p for p in law if p["student"] == student and p["a"] == o]
                counts = {v: sum(verdict(p) == v for p in ps) for v in ("lower", "higher", "inconclusive")}
                lines.append(f"- `{student}`: `{o}` / `endpoint` law-error ratio — 95% CI below 1 in "
                             f"{counts['lower']}, above 1 in {counts['higher']}, containing 1 in "
                             f"{counts['inconclusive']} of {len(ps)} system cells.")
        lines.append("")
    for student in dict.fromkeys(s["student"] for s in summary):
        for o in objectives:
            rows = [s for s in summary if s["student"] == student and s["objective"] == o
                    and is_finite_number(s.get("law_error_id_mean"))]
            if not rows:
                continue
            mean_ok = [s["system"] for s in rows if s["law_error_id_mean"] <= TARGET]
            ci_ok = [s["system"] for s in rows if is_finite_number(s.get("law_error_id_ci95"))
                     and s["law_error_id_mean"] + s["law_error_id_ci95"] <= TARGET]
            lines.append(f"- target law error ≤ {TARGET:g} (ID), `{student}` trained on `{o}`: mean at or below in "
                         f"{len(mean_ok)} of {len(rows)} system cells ({', '.join(mean_ok) or 'none'}); whole 95% "
                         f"CI below in {len(ci_ok)} ({', '.join(ci_ok) or 'none'}).")
    if floors:
        ks = sorted({int(f["kernel_size"]) for f in floors})
        lines += ["", "What a local polynomial field of window k can represent at all: least-squares law error on the "
                  "training states (`lsq_floor`; the fit's ID test error in brackets):", "",
                  "| system | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for system in dict.fromkeys(f["system"] for f in floors):
            cells = []
            for k in ks:
                f = next((f for f in floors if f["system"] == system and int(f["kernel_size"]) == k), None)
                cells.append("—" if f is None else f"{f['lsq_floor']:.2g} [{f['lsq_error_id']:.2g}]")
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines).rstrip() + "\n"


def report(folder: str | Path) -> str | None:
    """Markdown for ``testbed report`` from a folder that :func:`derive` has filled (None otherwise)."""
    folder = Path(folder)
    if not (folder / "summary.csv").exists() or not (folder / "paired.csv").exists():
        return None
    results, summary = read_csv(folder / "results.csv"), read_csv(folder / "summary.csv")
    if not results or not summary or "law_error_id_mean" not in summary[0]:
        return None
    floors = read_csv(folder / "representability.csv") if (folder / "representability.csv").exists() else []
    return report_markdown(results, summary, read_csv(folder / "paired.csv"), floors)


__all__ = ["GROUP", "LOG_METRICS", "TABLE_METRICS", "TARGET", "derive", "report", "report_markdown"]
