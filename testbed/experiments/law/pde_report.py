"""The PDE law-recovery tables and report: ``summary.csv`` / ``paired.csv`` from ``results.csv`` and the markdown
``testbed report`` writes (nothing typed by hand).

Per claim of the study:

* **a local student can recover the law** — law error (ID and OOD) per student × objective, and per student ×
  objective the systems whose mean (and whose whole 95% CI) is at or below :data:`TARGET`;
* **endpoint-only training does not** — the paired geometric-mean ratio of every objective's law error against
  ``endpoint`` over shared seeds, with a verdict (CI below / above / containing 1);
* **what a local field can represent at all** — the least-squares floor of a local polynomial field per window
  width (``representability.csv``).

Every table is read at one learning rate per system × student × objective, chosen by :data:`SELECTION`: the
candidate (a sweep over ``lr``) with the smallest seed-mean *validation* loss of the run's own objective
(``lr_selection.csv`` lists every candidate's validation mean ± 95% CI and the choice).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from testbed.experiments.law.report import format_ratio, summary_cell, verdict
from testbed.report import is_finite_number
from testbed.results import is_true, read_csv, write_csv
from testbed.selection import SelectionRule, rows_at_choice, select
from testbed.stats import paired_table

Row = dict[str, Any]
#: the study's natural keys besides objective and seed (``steps`` may differ between students in a sweep)
GROUP = ("system", "student", "n_layers", "n_grid", "steps")
#: the learning rate of every system × student × objective: the smallest seed-mean loss of its own objective on the
#: validation split (never a test metric)
SELECTION = SelectionRule("lr", "val_loss", "min")
SELECT_BY = ("system", "student", "objective", "n_layers", "n_grid", "steps", "jacobian_probes")
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
    rows, choices = select_lr(read_csv(out / "results.csv"))
    write_csv(out / "lr_selection.csv", choices)
    group = [k for k in GROUP if any(k in r for r in rows)]
    keys = [*group[:2], "objective", "lr", *group[2:]]
    metric_rows = [{**{k: r.get(k, "") for k in keys}, "seed": r["seed"],
                    **{m: r.get(m, "") for m in TABLE_METRICS}} for r in rows]
    write_csv(out / "summary.csv", group_summary(metric_rows, keys))
    write_csv(out / "paired.csv", paired_table(rows, group, "objective", "endpoint", TABLE_METRICS, LOG_METRICS))
    return [out / "lr_selection.csv", out / "summary.csv", out / "paired.csv"]


def select_lr(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """``(rows at the chosen learning rates, lr_selection table)`` under :data:`SELECTION`, per
    system × student × objective (× depth, grid and step budget)."""
    if rows and any(k not in rows[0] for k in ("lr", "val_loss")):
        raise ValueError("results.csv has no lr / val_loss columns (made before learning rates were chosen on "
                         "validation loss): rerun the study")
    keys = [k for k in SELECT_BY if any(k in r for r in rows)]
    # a candidate whose validation loss is not finite on some seed (a diverged run) is ruled out, not averaged
    # over its remaining seeds
    def group(r: Row) -> tuple:
        return tuple(r.get(k) for k in keys)

    # a candidate is ruled out — its validation loss set to inf, never averaged over its remaining seeds — when a
    # seed diverged (non-finite validation loss) or when it lacks a seed another candidate of its group has (a
    # failed or lost run: candidates are compared on the same seeds)
    seeds: dict[tuple, dict[Any, set]] = {}
    for r in rows:
        seeds.setdefault(group(r), {}).setdefault(r["lr"], set()).add(r["seed"])
    n_diverged = Counter((group(r), r["lr"]) for r in rows if not is_finite_number(r.get("val_loss")))
    reason: dict[tuple, str] = {}
    for g, by_lr in seeds.items():
        every = set().union(*by_lr.values())
        for lr, have in by_lr.items():
            if n_diverged[(g, lr)]:
                reason[(g, lr)] = "diverged"
            elif have != every:
                reason[(g, lr)] = f"missing seeds {sorted(every - have)}"
    scored = [{**r, "val_loss": float("inf")} if (group(r), r["lr"]) in reason else r for r in rows]
    # a group none of whose candidates is usable has no choice: it is listed in the selection table (selected
    # nowhere) and left out of every other table
    unstable = {g for g, by_lr in seeds.items() if all((g, lr) in reason for lr in by_lr)}
    choices = select([r for r in scored if group(r) not in unstable], SELECTION, keys)
    table = [row for c in choices.values() for row in c.as_rows(keys, "lr")]
    table += [{**dict(zip(keys, g, strict=True)), "lr": lr, "val_mean": float("inf"), "val_lo": "", "val_hi": "",
               "n": len(seeds[g][lr]), "selected": False} for g in sorted(unstable, key=str)
              for lr in sorted(seeds[g], key=float)]
    for row in table:  # why a candidate was not eligible, and how many of its seeds diverged
        g = tuple(row.get(k) for k in keys)
        row["n_diverged"] = n_diverged[(g, row["lr"])]
        row["ruled_out"] = reason.get((g, row["lr"]), "")
        row["candidates"] = len(seeds[g])
    kept = rows_at_choice(scored, choices, SELECTION, keys)
    mixed: dict[tuple, set] = {}
    for r in kept:      # dense and probe-estimated runs of one objective are different methods: never pooled
        mixed.setdefault(tuple(r.get(k) for k in SELECT_BY if k != "jacobian_probes"), set()).add(
            r.get("jacobian_probes", 0))
    clash = next((g for g, v in mixed.items() if len(v) > 1), None)
    if clash is not None:
        raise ValueError(f"rows of {clash} mix jacobian_probes values {sorted(mixed[clash])}: write dense and "
                         "probe-estimated runs to separate folders")
    return kept, table


def chosen_lrs(out: str | Path) -> dict[tuple[str, str], float]:
    """``(system, "student/objective") → chosen lr`` from ``out/lr_selection.csv``."""
    return {(r["system"], f"{r['student']}/{r['objective']}"): float(r["lr"])
            for r in read_csv(Path(out) / "lr_selection.csv") if is_true(r["selected"])}


def _groups(rows: list[Row], keys: tuple[str, ...]) -> list[tuple]:
    return list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))


def report_markdown(results: list[Row], summary: list[Row], paired: list[Row], floors: list[Row],
                    selection: list[Row] | None = None) -> str:
    """Law-error, endpoint-error and ratio tables, verdict lines, the target count, the learning rates chosen on
    validation loss and the representability floors."""
    objectives = sorted(dict.fromkeys(r["objective"] for r in results), key=lambda o: o != "endpoint")
    others = [o for o in objectives if o != "endpoint"]
    # a learning rate was chosen only where some cell had more than one candidate; else it is fixed and shown
    multi = any(int(c.get("candidates") or 0) > 1 for c in selection or [])
    if selection and not any("candidates" in c for c in selection):    # tables written before the column existed
        multi = len(selection) > sum(is_true(c["selected"]) for c in selection)
    selection = selection if multi else None
    keys = tuple(k for k in (GROUP if selection else (*GROUP, "lr")) if k in summary[0])
    groups = _groups(summary, keys)
    same = ("depth and step budget, each at its learning rate chosen on validation loss (table below)" if selection
            else "depth, learning rate and step budget")

    def label(g: tuple) -> str:
        d = dict(zip(keys, g, strict=True))
        parts = [d["student"], f"L = {d['n_layers']}"]
        shown = ("steps",) if selection else ("lr", "steps")     # older tables: one fixed lr per row, no selection
        parts += [f"{k} {d[k]}" for k in shown if d.get(k) not in ("", None)]
        return f"| {d['system']} | {', '.join(parts)} |"

    lines: list[str] = ["Seeds vary the student's initialisation and the minibatch order on one fixed draw of the "
                        "data; a `poly` student starts at F_θ ≡ 0, so its seeds vary the minibatch order only — the "
                        "CIs are over training randomness, not over data.", ""]
    for metric, title in (("law_error_id", "Law error ‖F_θ − F*‖/‖F*‖ on in-distribution test states"),
                          ("law_error_ood", "Law error on out-of-distribution states (higher wavenumbers)"),
                          ("endpoint_error", "Endpoint error on in-distribution test trajectories")):
        lines += [f"{title}; mean ± 95% CI (n seeds); within a row every objective has the same student, data, {same}:",
                  "",
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
    if selection:
        lines += ["", "Learning rate of each cell, chosen on the validation split (smallest seed-mean loss of the "
                  "run's own objective on held-out training trajectories; every candidate's validation loss, "
                  "mean ± 95% CI, in `lr_selection.csv`):", "",
                  "| system | student | " + " | ".join(objectives) + " |", "|---|---|" + "---|" * len(objectives)]
        for g in groups:
            d = dict(zip(keys, g, strict=True))
            cells = []
            for o in objectives:
                cands = [c for c in selection if c["objective"] == o and all(str(c.get(k, "")) == str(v)
                                                                             for k, v in d.items())]
                pick = [c for c in cands if is_true(c["selected"])]
                of = ", ".join(f"{c['lr']:g}" for c in cands)
                cells.append(f"{pick[0]['lr']:g} (of {of})" if pick else f"none: diverged at every lr (of {of})"
                             if cands else "—")
            lines.append(label(g) + " " + " | ".join(cells) + " |")
    diverged = [r for r in results if is_true(r.get("diverged"))]
    if diverged:
        runs = "; ".join(f"{r['system']} {r['student']}/{r['objective']} seed {r['seed']} at lr {r['lr']:g}"
                         for r in diverged)
        lines += ["", f"Training runs whose loss became non-finite ({len(diverged)} of {len(results)}; "
                  f"recorded, never averaged: a learning rate with a diverged seed is not a candidate): {runs}."]
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
    selection = read_csv(folder / "lr_selection.csv") if (folder / "lr_selection.csv").exists() else []
    return report_markdown(results, summary, read_csv(folder / "paired.csv"), floors, selection)


__all__ = ["GROUP", "LOG_METRICS", "TABLE_METRICS", "TARGET", "derive", "report", "report_markdown"]
