"""Regenerate every experiment's figure in one style, with captions and an index (``testbed figures``).

:func:`regenerate` redraws each experiment's figures from its results folder ``OUT/EXPERIMENT/`` (running the
experiment first, quick or full settings, when its results are missing), writes a caption file
``STEM.caption.txt`` beside each figure (what was run: command, seeds, git commit, date, and a one-paragraph
description) and the index ``OUT/README.md`` (one section per experiment: picture + caption).
:func:`from_sweep` draws a sweep's metrics against its swept options with mean ± std error bars over seeds
(``testbed figures --from SWEEP_DIR``). Every figure uses :mod:`testbed.plotting`'s style: Okabe–Ito
colour-blind-safe palette, 8 pt text for single-column width, vector PDF plus PNG.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.results import atomic_write_text, git_commit, read_csv

#: one-paragraph descriptions of each figure, by file stem (an experiment's ``CAPTIONS`` / ``CAPTION`` wins)
FIGURE_CAPTIONS: dict[str, str] = {
    "law_recovery": (
        "One row per teacher flow. Columns 1–3: phase portraits of the teacher law f* and of the residual students "
        "trained on the endpoint only and on the field objective (endpoint + trajectory + vector field); "
        "streamlines coloured by log10 |f|, dashed box = region of training initial states. Column 4: solver "
        "consistency — relative endpoint change when the learned field is re-integrated with L' Euler steps "
        "(dotted: dopri5), beside the teacher law's own curve. Column 5: the re-integrated endpoint's error against "
        "the exact flow map. Bottom: endpoint error, law error (ID / OOD) and consistency error per system and "
        "objective (relative L2, log axis; error bars = std over seeds when there are several)."),
    "pde_law_recovery": (
        "One row per PDE on a 32-point periodic grid. Columns 1–3: space-time plots of one in-distribution initial "
        "condition under the teacher and under the local (conv) student trained on the endpoint only and on the "
        "field objective, continued past the training horizon T (dashed) to 4T with the network's own step. "
        "Column 4: roll-out error vs time (relative L2, log axis). Column 5: solver consistency beside the teacher "
        "law's own floor."),
    "endpoint_vs_field": (
        "One marker per model: the endpoint metric (x: relative endpoint error on the flow task; test error rate "
        "on digits) against each field metric (y, log axes). The grey band holds the models whose endpoint metric "
        "reached the target; inside it the field metrics (trajectory length, kinetic energy, curvature, layer "
        "conditioning) spread over orders of magnitude while endpoint-map quantities stay put. Crosses: exact "
        "endpoint-preserving constructions (clock warp, conjugation, detour)."),
    "consistency_curves": (
        "Each model's own field re-integrated at L/8 … 8L steps: relative distance to its dopri5 solve vs L'/L, "
        "one panel per solver and task (log–log). The teacher's own curves are dashed; a learned law converges "
        "at the solver's order like the teacher."),
    "convergence": (
        "Depth as step size. (a) One continuous weight function W(t) discretised at L = 4 … 512: relative distance "
        "of the hidden trajectory to the finest network vs L (log–log, claim O(1/L)). (b–d) i.i.d. weights under "
        "1/√L: the statistic ‖h_T‖²/n converges, paths of independent draws do not, Brownian-coupled paths "
        "converge at order ½."),
    "lr_curves": (
        "Test loss vs base learning rate (log axes), one curve per depth L, for SP and Depth-μP with one- and "
        "two-matrix residual blocks (stars: parabola-refined optima). Curves that line up across L transfer the "
        "learning rate across depth."),
    "optimal_lr": (
        "Optimal learning rate vs depth L (log–log) per parameterization and block depth, with the fitted drift "
        "exponent of η*(L); a flat line means the optimum transfers across depth."),
    "feature_change_per_layer": (
        "Relative feature change ‖Δh_l‖/‖h_l‖ after training vs layer time l/L, one curve per depth, per "
        "parameterization and block depth."),
    "update_vs_depth": (
        "Layer-mean feature and weight updates after training vs depth L (log–log), including the first internal "
        "layer's own update ‖ΔW₁h‖/‖W₁h‖; slopes below zero flag layers whose updates vanish as L grows."),
    "weight_reuse": (
        "Forward/backward coupling through W_lᵀ against a control whose backward pass uses an independent copy of "
        "each weight: excess coupling at initialisation vs width n (claim 1/n) and its effect on training vs "
        "depth L (claim 1/L²), log–log."),
}

#: extra notes per experiment for the index (e.g. folders the command does not redraw)
EXPERIMENT_NOTES: dict[str, str] = {
    "depth-scaling": "Quick mode at the top level, one folder per sub-study; `summary.csv` puts every fitted "
                     "number beside the claim it tests. `full/` (if present) holds the full settings.",
    "pde-law-recovery": "`full/` (if present) holds the full configuration (both students, 3000 steps, seeds 0–2).",
    "multipath": "`full/` holds all five tasks with 3 seeds (a CPU-sized full run; see README).",
    "continual": "`full-split-mnist/` holds the published Seq-MNIST protocol (3 seeds) and the γ ablation.",
    "endpoint-equivalence": "`full-partial/` (if present) holds part of the full configuration.",
}


@dataclasses.dataclass
class FigureRecord:
    """One regenerated figure: its files, caption and what it was drawn from."""

    experiment: str
    png: Path
    pdf: Path | None
    caption: Path
    description: str
    info: dict[str, Any]


# --------------------------------------------------------------------------------------------- captions
def _clean_command(cmd: str | None) -> str:
    """``/path/to/bin/testbed run …`` → ``testbed run …``."""
    if not cmd:
        return "unknown"
    head, _, rest = cmd.partition(" ")
    path = Path(head)
    if path.name == "testbed" or (path.name in ("__main__.py", "cli.py") and path.parent.name == "testbed"):
        return f"testbed {rest}".strip()
    return f"{path.name} {rest}".strip()


def run_info(folder: Path) -> dict[str, Any]:
    """Command, seeds, commit and date of the run whose results are in ``folder`` (from ``results.json``)."""
    meta: dict[str, Any] = {}
    for p in (folder / "results.json", folder / "sweep.json"):
        if p.exists():
            try:
                meta = json.loads(p.read_text())
                break
            except ValueError:
                pass
    cfg = meta.get("config") or {}
    seeds = meta.get("seeds") or cfg.get("seeds")
    return {"command": _clean_command(meta.get("command")), "seeds": seeds,
            "commit": meta.get("commit") or "unknown", "date": meta.get("time", "unknown")}


def describe(module, stem: str) -> str:
    """One paragraph for a figure: the experiment's ``CAPTIONS[stem]`` or ``CAPTION``, :data:`FIGURE_CAPTIONS`,
    else the first paragraph of the experiment module's docstring."""
    own = getattr(module, "CAPTIONS", None)
    if isinstance(own, dict) and stem in own:
        return str(own[stem])
    if isinstance(getattr(module, "CAPTION", None), str):
        return module.CAPTION
    if stem in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[stem]
    doc = (getattr(module, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else stem


def caption_text(title: str, description: str, info: dict[str, Any], drawn_by: str | None = None) -> str:
    """The caption file: title, description, then what was run (command, seeds, commit, date)."""
    seeds = info.get("seeds")
    seeds_txt = ", ".join(map(str, seeds)) if isinstance(seeds, (list, tuple)) else str(seeds or "unknown")
    lines = [title, "", description, "",
             f"command: {info.get('command', 'unknown')}",
             f"seeds: {seeds_txt}",
             f"commit: {info.get('commit') or 'unknown'}",
             f"date: {info.get('date', 'unknown')}"]
    if drawn_by:
        lines.append(f"drawn by: {drawn_by} (commit {git_commit() or 'unknown'}, "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')})")
    return "\n".join(lines) + "\n"


def caption_path(png: Path) -> Path:
    return png.with_name(png.stem + ".caption.txt")


# --------------------------------------------------------------------------------------------- regenerate
def has_results(folder: Path) -> bool:
    """Whether ``folder`` holds a finished run (``results.csv``, or ``summary.csv`` for multi-study
    experiments: both are written last)."""
    return (folder / "results.csv").exists() or (folder / "summary.csv").exists()


def _drawn_by() -> str:
    return _clean_command(" ".join(sys.argv)) if sys.argv and sys.argv[0] else "testbed.figures.regenerate"


def regenerate(experiments: Sequence[str] | None = None, quick: bool = True, out: str | Path = "figures", *,
               rerun: bool = False, progress: bool = True, device: str | None = None, index: bool = True,
               log=print) -> list[FigureRecord]:
    """Redraw every (or each named) experiment's figures in ``out/EXPERIMENT/`` with captions, and the index.

    An experiment whose results are missing (or every one, with ``rerun``) is run first with its quick
    (``quick``) or full config. Returns one :class:`FigureRecord` per figure.
    """
    import dataclasses as dc

    from testbed.experiments import get_experiment, list_experiments

    out = Path(out)
    names = list(experiments) if experiments else list_experiments()
    modules = {n: get_experiment(n) for n in names}  # unknown names fail before anything runs
    records: list[FigureRecord] = []
    drawn_by = _drawn_by()
    for name, exp in modules.items():
        folder = out / name
        if rerun or not has_results(folder):
            cfg = exp.quick_config() if quick else exp.Config()
            changes = {k: v for k, v in (("progress", progress), ("device", device)) if v is not None
                       and hasattr(cfg, k)}
            cfg = dc.replace(cfg, **changes)
            log(f"{name}: running {'quick' if quick else 'full'} config into {folder}/")
            exp.run(cfg, folder)
        paths = [Path(p) for p in exp.plot(folder)]
        info = run_info(folder)
        for png in (p for p in paths if p.suffix == ".png"):
            pdf = png.with_suffix(".pdf")
            desc = describe(exp, png.stem)
            cap = caption_path(png)
            atomic_write_text(cap, caption_text(f"{name}: {png.stem}", desc, info, drawn_by))
            records.append(FigureRecord(name, png, pdf if pdf.exists() else None, cap, desc, info))
            log(f"wrote {png}, {pdf.name}, {cap.name}")
    if index:
        p = write_index(out, records, quick=quick)
        log(f"wrote {p}")
    return records


def write_index(out: str | Path, records: Sequence[FigureRecord], quick: bool = True) -> Path:
    """``out/README.md``: one section per experiment with each figure, its caption and what was run; figures
    under the experiment's folder that this call did not draw (e.g. ``full/``) are linked at the end."""
    out = Path(out)
    mode = "quick" if quick else "full"
    lines = [f"# Figures ({mode} mode)", "",
             f"Regenerate with `testbed figures{' --quick' if quick else ''} --out {out.as_posix()}` (runs an "
             "experiment first when its results are missing; `--rerun` runs them all again). Each folder holds the "
             "figures (PNG + vector PDF), a caption file `FIGURE.caption.txt` beside each (command, seeds, commit, "
             "date, description), the tidy tables they were drawn from and `results.json`. This index is generated "
             "by that command; do not edit it by hand.", ""]
    by_exp: dict[str, list[FigureRecord]] = {}
    for r in records:
        by_exp.setdefault(r.experiment, []).append(r)
    for name, recs in by_exp.items():
        lines += [f"## {name}", ""]
        if name in EXPERIMENT_NOTES:
            lines += [EXPERIMENT_NOTES[name], ""]
        for r in recs:
            rel = r.png.relative_to(out).as_posix() if r.png.is_relative_to(out) else r.png.as_posix()
            seeds = r.info.get("seeds")
            seeds_txt = ", ".join(map(str, seeds)) if isinstance(seeds, (list, tuple)) else str(seeds or "unknown")
            pdf = f" · [PDF]({Path(rel).with_suffix('.pdf').as_posix()})" if r.pdf else ""
            lines += [f"![{r.png.stem}]({rel})", "", r.description, "",
                      f"*Run:* `{r.info.get('command')}` · seeds {seeds_txt} · "
                      f"commit `{str(r.info.get('commit'))[:10]}` · {r.info.get('date')}{pdf} · "
                      f"[caption]({caption_path(Path(rel)).as_posix()})", ""]
        drawn = {r.png.resolve() for r in recs}
        others = sorted(p for p in (out / name).rglob("*.png") if p.resolve() not in drawn
                        and "checkpoints" not in p.parts)
        if others:
            lines += ["Other figures in this folder (not redrawn by this command):", ""]
            lines += [f"- [{p.relative_to(out).as_posix()}]({p.relative_to(out).as_posix()})" for p in others]
            lines.append("")
    return atomic_write_text(out / "README.md", "\n".join(lines).rstrip() + "\n")


# --------------------------------------------------------------------------------------------- sweeps
PREFERRED_METRICS = ("endpoint_error", "law_error_id", "law_error_ood", "consistency_error", "path_sensitivity",
                     "trajectory_error", "rollout_error_4T", "endpoint_metric", "kinetic_energy", "value")


def _spans_decades(values: Sequence[float], decades: float = 2.0) -> bool:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return len(pos) == len([v for v in values if math.isfinite(v)]) and len(pos) > 1 and \
        math.log10(max(pos) / min(pos)) > decades


def _ylabel(metric: str) -> str:
    if "error" in metric or "change" in metric:
        return f"{metric} (relative L2)"
    if "seconds" in metric:
        return f"{metric} (s)"
    return metric


def _distinct_keys(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """The ``keys`` that vary across ``rows``, without those that repeat an earlier kept key row for row
    (e.g. ``objective`` beside a swept ``objectives``)."""
    kept: list[str] = []
    for k in keys:
        col = [str(r.get(k, "")) for r in rows]
        if len(set(col)) > 1 and not any(col == [str(r.get(j, "")) for r in rows] for j in kept):
            kept.append(k)
    return kept


def _label(keys: Sequence[str], values: Sequence[str]) -> str:
    if len(keys) == 1:
        return values[0]
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


def _sweep_metrics(rows: list[dict[str, Any]], keys: Sequence[str], metrics: Sequence[str] | None) -> list[str]:
    numeric = [c for c in dict.fromkeys(k for r in rows for k in r)
               if c not in keys and c not in ("cell_id", "seed")
               and all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows)]
    if metrics:
        missing = [m for m in metrics if m not in numeric]
        if missing:
            from testbed.config import ConfigError

            raise ConfigError(f"--metric: no numeric column {missing[0]!r} in the sweep; have: {', '.join(numeric)}")
        return list(metrics)
    preferred = [m for m in PREFERRED_METRICS if m in numeric]
    rest = [m for m in numeric if m not in preferred and "seconds" not in m and len({r[m] for r in rows}) > 1]
    return (preferred + rest)[:6]


def from_sweep(sweep_dir: str | Path, out: str | Path | None = None, metrics: Sequence[str] | None = None,
               log=print) -> list[Path]:
    """Figures of a sweep: for each swept option (seed aside), each metric's mean ± std over seeds against the
    option, one line per group of the experiment's natural keys (system × objective …); log axes where values
    span more than two decades. A seeds-only sweep gets one panel per metric with the groups on the x axis.
    When the sweep varies only seeds, the experiment's own figure is also drawn from the merged results.
    Writes PNG + PDF + caption files to ``out`` (default ``SWEEP_DIR/figures``) and returns the paths."""
    import matplotlib.pyplot as plt
    import numpy as np

    from testbed.experiments import get_experiment
    from testbed.plotting import PALETTE, save_figure, use_style
    from testbed.sweep import group_keys

    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "results.csv").exists() or not (sweep_dir / "sweep.json").exists():
        raise FileNotFoundError(f"{sweep_dir}: no results.csv / sweep.json: run `testbed sweep SPEC --out "
                                f"{sweep_dir}` first")
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    exp = get_experiment(meta["experiment"])
    rows = read_csv(sweep_dir / "results.csv")
    swept = [s for s in meta["swept"] if s != "seed"]
    keys = group_keys(rows, meta["swept"], exp)
    natural = [k for k in keys if k not in swept]
    mets = _sweep_metrics(rows, keys, metrics)
    out = Path(out) if out is not None else sweep_dir / "figures"
    use_style()
    info = {"command": _clean_command(meta.get("command")), "seeds": meta.get("seeds"),
            "commit": git_commit() or "unknown", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    paths: list[Path] = []
    varying = [s for s in swept if len({str(r.get(s)) for r in rows}) > 1]
    xs_options = varying or [None]
    for opt in xs_options:
        n_cols = min(3, len(mets))
        n_rows = math.ceil(len(mets) / n_cols)
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.3 * n_cols + 0.3, 1.9 * n_rows + 0.5),
                                 layout="constrained", squeeze=False)
        others = [s for s in varying if s != opt]  # other swept options become part of the line label
        line_keys = [k for k in _distinct_keys(rows, [*([opt] if opt else []), *others, *natural]) if k != opt]
        lines = list(dict.fromkeys(tuple(str(r.get(k, "")) for k in line_keys) for r in rows))
        xvals = list(dict.fromkeys(r.get(opt) for r in rows)) if opt else [""]
        numeric_x = opt is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xvals)
        if numeric_x:
            xvals = sorted(xvals)
        for ax, m in zip(axes.flat, mets, strict=False):
            allvals: list[float] = []
            for li, lk in enumerate(lines):
                sel = [r for r in rows if tuple(str(r.get(k, "")) for k in line_keys) == lk]
                means, stds, xs = [], [], []
                for xi, xv in enumerate(xvals):
                    vals = [float(r[m]) for r in sel if opt is None or r.get(opt) == xv]
                    if not vals:
                        continue
                    allvals += vals
                    means.append(float(np.mean(vals)))
                    stds.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
                    dodge = (li - (len(lines) - 1) / 2) * min(0.08, 0.6 / len(lines))  # categorical x: side by side
                    xs.append(li if opt is None else xv if numeric_x else xi + dodge)
                label = _label(line_keys, lk) if lk and opt is not None else None
                color = PALETTE[li % len(PALETTE)]
                ax.errorbar(xs, means, yerr=stds if any(stds) else None, marker="os^vD<>p"[li // len(PALETTE) % 8],
                            ms=3, lw=1 if opt else 0, elinewidth=0.8, capsize=2, color=color, label=label)
            if _spans_decades(allvals):
                ax.set_yscale("log")
            if numeric_x and _spans_decades([float(v) for v in xvals]):
                ax.set_xscale("log")
            if opt is None:  # seeds-only sweep: the groups on the x axis
                ax.set_xticks(range(len(lines)), [_label(line_keys, lk) for lk in lines], rotation=45, ha="right")
                ax.set_xlim(-0.5, len(lines) - 0.5)
            elif not numeric_x:
                ax.set_xticks(range(len(xvals)), [str(v) for v in xvals], rotation=30)
                ax.set_xlim(-0.5, len(xvals) - 0.5)
            ax.set_xlabel(opt or "")
            ax.set_ylabel(_ylabel(m))
        for ax in list(axes.flat)[len(mets):]:
            ax.set_axis_off()
        if opt is not None and lines and lines[0]:
            handles, labels = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), frameon=False)
        n_seeds = len(meta.get("seeds") or [])
        title = f"{meta['experiment']} sweep: mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}"
        fig.suptitle(title + (f" vs {opt}" if opt else ""))
        stem = out / (f"sweep_{opt}" if opt else "sweep_metrics")
        figs = save_figure(fig, stem)
        paths += figs
        desc = (f"{title}{' against the swept option ' + repr(opt) if opt else ''}: one panel per metric "
                f"({', '.join(mets)}), one line per {' × '.join(line_keys) or 'cell'}; error bars = sample std over "
                "seeds; log axes where values span more than two decades.")
        cap = caption_path(stem.with_suffix(".png"))
        atomic_write_text(cap, caption_text(f"{meta['experiment']} sweep: {stem.name}", desc, info,
                                            _drawn_by()))
        paths.append(cap)
        log(f"wrote {', '.join(str(p) for p in figs)} and {cap.name}")
    if not varying:
        paths += _experiment_figure_from_sweep(exp, sweep_dir, meta, rows, out, info, log)
    return paths


def _experiment_figure_from_sweep(exp, sweep_dir: Path, meta: dict[str, Any], rows: list[dict[str, Any]], out: Path,
                                  info: dict[str, Any], log) -> list[Path]:
    """The experiment's own figure from a seeds-only sweep: the cells' CSVs concatenated into ``out/merged/``
    (checkpoints copied from the first cell that has each) and ``exp.plot(out/merged, rows)``. Best effort:
    an experiment whose plot cannot read merged results is skipped with a message."""
    from testbed.results import write_csv

    merged = out / "merged"
    merged.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, Any]]] = {}
    for c in meta["cells"]:
        run = sweep_dir / "cells" / c["cell_id"] / "run"
        if not run.is_dir():
            continue
        for csv_path in run.rglob("*.csv"):
            rel = csv_path.relative_to(run).as_posix()
            if "checkpoints" not in rel:
                tables.setdefault(rel, []).extend(read_csv(csv_path))
        ck = run / "checkpoints"
        if ck.is_dir():
            for d in ck.iterdir():
                if not (merged / "checkpoints" / d.name).exists():
                    shutil.copytree(d, merged / "checkpoints" / d.name)
    for rel, trows in tables.items():
        write_csv(merged / rel, trows)
    try:
        figs = [Path(p) for p in exp.plot(merged, [{k: v for k, v in r.items() if k != "cell_id"} for r in rows])]
    except Exception as err:  # noqa: BLE001 — the generic sweep figure is already drawn
        log(f"{meta['experiment']}: its own figure could not be drawn from merged sweep results "
            f"({type(err).__name__}: {err}); skipped")
        return []
    paths: list[Path] = []
    for png in (p for p in figs if p.suffix == ".png"):
        cap = caption_path(png)
        atomic_write_text(cap, caption_text(f"{meta['experiment']} (sweep, all seeds): {png.stem}",
                                            describe(exp, png.stem), info, _drawn_by()))
        paths += [png, png.with_suffix(".pdf"), cap]
        log(f"wrote {png} and {cap.name}")
    return paths


__all__ = ["FIGURE_CAPTIONS", "FigureRecord", "caption_text", "describe", "from_sweep", "regenerate", "run_info",
           "write_index"]
