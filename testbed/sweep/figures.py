"""Figures of a sweep (``testbed figures --from SWEEP_DIR``; :func:`from_sweep`, re-exported by
:mod:`testbed.figures`): each metric's mean ± 95% CI over seeds against the swept options, in the
:mod:`testbed.plotting` style, with caption files written by :mod:`testbed.figures`' caption helpers."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.config import ConfigError
from testbed.results import atomic_write_text, git_commit, read_csv, write_csv, write_json
from testbed.stats import summarize as summarize_values

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
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    # numeric: every filled value is a number (a failed row leaves its metrics empty) and at least one is
    numeric = [c for c in dict.fromkeys(k for r in rows for k in r)
               if c not in keys and c not in ("cell_id", "seed")
               and all(number(r.get(c)) or r.get(c) in ("", None) for r in rows)
               and any(number(r.get(c)) for r in rows)]
    if metrics:
        missing = [m for m in metrics if m not in numeric]
        if missing:
            raise ConfigError(f"--metric: no numeric column {missing[0]!r} in the sweep; have: {', '.join(numeric)}")
        return list(metrics)
    preferred = [m for m in PREFERRED_METRICS if m in numeric]
    rest = [m for m in numeric if m not in preferred and "seconds" not in m and len({r.get(m) for r in rows}) > 1]
    return (preferred + rest)[:6]


def from_sweep(sweep_dir: str | Path, out: str | Path | None = None, metrics: Sequence[str] | None = None,
               log=print) -> list[Path]:
    """Figures of a sweep: for each swept option (seed aside), each metric's mean ± 95% CI over seeds against the
    option, one line per group of the experiment's natural keys (system × objective …); log axes where values
    span more than two decades. A seeds-only sweep gets one panel per metric with the groups on the x axis.
    When the sweep varies only seeds, the experiment's own figure is also drawn from the merged results.
    Writes PNG + PDF + caption files to ``out`` (default ``SWEEP_DIR/figures``) and returns the paths."""
    import matplotlib.pyplot as plt
    import numpy as np

    from testbed.experiments import get_experiment
    from testbed.figures import _clean_command, _drawn_by, caption_path, caption_text
    from testbed.plotting import PALETTE, save_figure, use_style
    from testbed.sweep.merge import group_keys

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
    if not mets:
        log(f"{sweep_dir}: no numeric metric to draw; generic sweep figure skipped")
        xs_options = []
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
                    vals = [float(r[m]) for r in sel if (opt is None or r.get(opt) == xv)
                            and isinstance(r.get(m), (int, float)) and not isinstance(r.get(m), bool)]
                    if not vals:
                        continue
                    allvals += vals
                    means.append(float(np.mean(vals)))
                    stds.append(summarize_values(vals).half_width if len(vals) > 1 else 0.0)  # 95% CI
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
        title = f"{meta['experiment']} sweep: mean ± 95% CI over {n_seeds} seed{'s' if n_seeds != 1 else ''}"
        fig.suptitle(title + (f" vs {opt}" if opt else ""))
        stem = out / (f"sweep_{opt}" if opt else "sweep_metrics")
        figs = save_figure(fig, stem)
        paths += figs
        desc = (f"{title}{' against the swept option ' + repr(opt) if opt else ''}: one panel per metric "
                f"({', '.join(mets)}), one line per {' × '.join(line_keys) or 'cell'}; error bars = 95% "
                "t-interval of the mean over seeds; log axes where values span more than two decades.")
        cap = caption_path(stem.with_suffix(".png"))
        atomic_write_text(cap, caption_text(f"{meta['experiment']} sweep: {stem.name}", desc, info,
                                            _drawn_by()))
        paths.append(cap)
        log(f"wrote {', '.join(str(p) for p in figs)} and {cap.name}")
    if set(varying) <= set(getattr(exp, "PARTITION_FIELDS", ())):
        paths += _experiment_figure_from_sweep(exp, sweep_dir, meta, rows, out, info, log)
    return paths


def _merged_metadata(sweep_dir: Path, meta: dict[str, Any], merged: Path) -> Path:
    """``merged/results.json``: the sweep's command and cells, and the provenance every cell's run recorded
    (commit, dirty flag, diff hash, versions, host). Cells that disagree on commit or dirty state are listed
    per cell and ``commit`` is ``"mixed"``, so a merged table never claims one clean commit it does not have."""
    runs = {}
    for c in meta["cells"]:
        rj = sweep_dir / "cells" / c["cell_id"] / "run" / "results.json"
        if rj.exists():
            runs[c["cell_id"]] = json.loads(rj.read_text())
    first = next(iter(runs.values()), {})
    per_run = ("command", "config", "wall_seconds", "time", "seeds")
    same = {k: v for k, v in first.items() if k not in per_run and all(r.get(k) == v for r in runs.values())}
    out = {"experiment": meta["experiment"], "command": meta.get("command"), "sweep": sweep_dir.name,
           "seeds": meta.get("seeds"), "cells": [c["cell_id"] for c in meta["cells"]],
           "commit": same.pop("commit", "mixed"),
           "dirty": same.pop("dirty", any(r.get("dirty") for r in runs.values())), **same,
           "runs": {cid: {k: v for k, v in r.items() if k not in same}
                    for cid, r in runs.items()},
           "wall_seconds": sum(float(r.get("wall_seconds") or 0.0) for r in runs.values())}
    return write_json(merged / "results.json", out)


def _experiment_figure_from_sweep(exp, sweep_dir: Path, meta: dict[str, Any], rows: list[dict[str, Any]], out: Path,
                                  info: dict[str, Any], log) -> list[Path]:
    """The experiment's own figure from a seeds-only sweep: the cells' CSVs concatenated into ``out/merged/``
    (checkpoints copied from the first cell that has each), the sweep's merged rows as ``out/merged/results.csv``
    (written last), then ``exp.plot(out/merged)``. Best effort: an experiment whose plot cannot read merged
    results is skipped with a message."""
    from testbed.figures import _drawn_by, caption_path, caption_text, describe

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
    derived = set(getattr(exp, "DERIVED_FILES", ()))
    for rel, trows in tables.items():
        if rel != "results.csv" and rel not in derived:
            write_csv(merged / rel, trows)
    # the sweep's option columns go, except those the experiment's own rows carry too (e.g. ``n_layers``)
    own = {k for r in tables.get("results.csv", []) for k in r}
    drop = set(meta["swept"]) - {"seed"} - own
    write_csv(merged / "results.csv", [{k: v for k, v in r.items() if k != "cell_id" and k not in drop}
                                       for r in rows])  # last
    _merged_metadata(sweep_dir, meta, merged)
    if hasattr(exp, "derive"):
        exp.derive(merged)
    try:
        figs = [Path(p) for p in exp.plot(merged)]
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
