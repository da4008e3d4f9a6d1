"""The law-recovery report: markdown tables and verdict lines computed from ``results.csv``, ``summary.csv`` and
``paired.csv`` (nothing typed by hand).

Per claim of the study:

* **law error at matched endpoint error** — law error (ID) per objective in both regimes, with how many students
  reached the endpoint band, and the paired geometric-mean ratio against ``endpoint``;
* **trajectory-only recovery** — the ``trajectory`` row of the same ratio table (states observed, law not);
* **consistency across step sizes** — ``consistency_excess`` per objective and depth;
* **aliasing** — how many students were flagged (endpoint fits, interior does not).

A ratio counts as *lower* when its whole 95% CI lies below 1 (as *higher* when above 1); otherwise the
comparison is inconclusive at that n.
"""

from __future__ import annotations

from typing import Any

from testbed.report import is_finite_number
from testbed.results import is_true
from testbed.stats import summarize

#: one row of results.csv, summary.csv or paired.csv
Row = dict[str, Any]


def summary_cell(summary: list[Row], metric: str, **key: Any) -> str:
    """``mean ± CI (n)`` of ``metric`` in the summary row matching ``key`` (``—`` if none; band counts if matched)."""
    s = next((r for r in summary if all(str(r.get(k)) == str(v) for k, v in key.items())), None)
    if s is None:
        return "—"
    mean, ci, n = s.get(f"{metric}_mean"), s.get(f"{metric}_ci95"), int(s.get("n") or 0)
    if n == 0 or not is_finite_number(mean):
        text = "– (0)"
    elif is_finite_number(ci):
        text = f"{mean:.3g} ± {ci:.2g} ({n})"
    else:
        text = f"{mean:.3g} (n={n})"
    if s.get("regime") == "matched" and is_finite_number(s.get("n_reached")):
        text += f" [{int(s['n_reached'])}/{int(s['n_trained'])} in band]"
    return text


def format_ratio(p: Row | None) -> str:
    """``0.21× [0.15, 0.30], p = 0.06`` from a log10 row of :func:`testbed.stats.paired_table`."""
    if p is None or not is_finite_number(p.get("ratio")):
        return "—"

    def g(x: float) -> str:  # two significant digits, three where two would round to 1 and hide the side of 1
        return f"{x:.2g}" if f"{x:.2g}" != "1" else f"{x:.3g}"

    ci = f" [{g(p['ratio_lo'])}, {g(p['ratio_hi'])}]" if is_finite_number(p.get("ratio_lo")) else ""
    pv = f", p = {p['p_sign_flip']:.2g}" if is_finite_number(p.get("p_sign_flip")) and int(p["n"]) > 1 else ""
    return f"{g(p['ratio'])}×{ci}{pv} (n={int(p['n'])})"


def verdict(p: Row) -> str:
    """``lower`` / ``higher`` when the ratio's 95% CI excludes 1, else ``inconclusive``."""
    if is_finite_number(p.get("ratio_hi")) and p["ratio_hi"] < 1:
        return "lower"
    if is_finite_number(p.get("ratio_lo")) and p["ratio_lo"] > 1:
        return "higher"
    return "inconclusive"


def _groups(rows: list[Row], keys: tuple[str, ...]) -> list[tuple]:
    return list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))


def report_markdown(results: list[Row], summary: list[Row], paired: list[Row], depth: int) -> str:
    """The study's report at its main depth ``depth`` (plus the consistency-vs-depth table when several)."""
    objectives = list(dict.fromkeys(r["objective"] for r in results))
    others = [o for o in objectives if o != "endpoint"]
    main = [s for s in summary if int(s["n_layers"]) == depth]
    lines: list[str] = []
    for metric, title in (("law_error_id", "Law error ‖f_θ − f*‖/‖f*‖ on in-distribution test states"),
                          ("endpoint_error", "Endpoint error on test trajectories (the matched quantity)")):
        lines += [f"{title}, depth L = {depth}; mean ± 95% CI (n seeds); matched = each student at the first "
                  "check where its *validation* endpoint error entered the band (students that never did are "
                  "counted, not averaged):", "",
                  "| system | student | regime | " + " | ".join(objectives) + " |",
                  "|---|---|---|" + "---|" * len(objectives)]
        for system, student, regime in _groups(main, ("system", "student", "regime")):
            cells = [summary_cell(main, metric, system=system, student=student, regime=regime, objective=o)
                     for o in objectives]
            lines.append(f"| {system} | {student} | {regime} | " + " | ".join(cells) + " |")
        lines.append("")
    pairs = [p for p in paired if int(p["n_layers"]) == depth and p["metric"] == "law_error_id"]
    if pairs and others:
        lines += ["Law-error ratio against the endpoint-trained student over shared seeds (geometric mean of "
                  "objective / endpoint, 95% CI, exact sign-flip p):", "",
                  "| system | student | regime | " + " | ".join(others) + " |", "|---|---|---|" + "---|" * len(others)]
        for system, student, regime in _groups(pairs, ("system", "student", "regime")):
            by = {p["a"]: p for p in pairs if (p["system"], p["student"], p["regime"]) == (system, student, regime)}
            lines.append(f"| {system} | {student} | {regime} | " + " | ".join(format_ratio(by.get(o)) for o in others)
                         + " |")
        lines.append("")
        for regime in dict.fromkeys(p["regime"] for p in pairs):
            for o in others:
                sel = [p for p in pairs if p["regime"] == regime and p["a"] == o]
                if sel:
                    counts = {v: sum(verdict(p) == v for p in sel) for v in ("lower", "higher", "inconclusive")}
                    lines.append(f"- {regime}: `{o}` / `endpoint` law-error ratio — 95% CI below 1 in "
                                 f"{counts['lower']}, above 1 in {counts['higher']}, containing 1 in "
                                 f"{counts['inconclusive']} of {len(sel)} system × student cells.")
        lines.append("")
    lines += _consistency(summary, objectives, depth)
    lines += _aliasing(results, objectives, depth)
    return "\n".join(lines).rstrip() + "\n"


def _consistency(summary: list[Row], objectives: list[str], depth: int) -> list[str]:
    budget = [s for s in summary if s["regime"] == "budget"]
    depths = sorted({int(s["n_layers"]) for s in budget})
    lines = []
    if len(depths) > 1:
        lines += ["Consistency excess over the true law's own floor vs depth L (equal budget; mean ± 95% CI (n)); "
                  "0 = as consistent as f*:", "",
                  "| system | student | objective | " + " | ".join(f"L = {d}" for d in depths) + " |",
                  "|---|---|---|" + "---|" * len(depths)]
        for system, student, obj in _groups(budget, ("system", "student", "objective")):
            have = {int(s["n_layers"]) for s in budget if (s["system"], s["student"], s["objective"])
                    == (system, student, obj)}
            if len(have) < 2:
                continue
            cells = [summary_cell(budget, "consistency_excess", system=system, student=student, objective=obj,
                           n_layers=d) if d in have else "—" for d in depths]
            lines.append(f"| {system} | {student} | {obj} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _aliasing(results: list[Row], objectives: list[str], depth: int) -> list[str]:
    rows = [r for r in results if r["regime"] == "budget" and int(r["n_layers"]) == depth]
    flagged = [r for r in rows if is_true(r.get("aliased"))]
    lines = [f"Aliased laws (endpoint error ≤ 0.1 while the interior error is ≥ 3× larger and ≥ 0.1), equal budget, "
             f"L = {depth}: {len(flagged)} of {len(rows)} students."]
    for o in objectives:
        sel = [r for r in rows if r["objective"] == o]
        bad = [r for r in sel if is_true(r.get("aliased"))]
        if bad:
            names = dict.fromkeys(r["system"] for r in bad)
            where = ", ".join(f"{s} ({sum(r['system'] == s for r in bad)})" for s in names)
            inner = summarize([float(r["interior_error"]) for r in bad])
            lines.append(f"- `{o}`: {len(bad)} of {len(sel)} — {where}; their interior error {inner.format(3)}.")
    return lines + [""]


__all__ = ["format_ratio", "report_markdown", "verdict"]
