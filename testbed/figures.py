"""Regenerate every experiment's figure in one style, with captions and an index (``testbed figures``).

:func:`regenerate` redraws each experiment's figures from its results folder ``OUT/EXPERIMENT/`` (running the
experiment first, quick or full settings, when its results are missing), writes a caption file
``STEM.caption.txt`` beside each figure (what was run: command, seeds, git commit, date, and a one-paragraph
description) and the index ``OUT/README.md`` (one section per experiment: picture + caption).
:func:`from_sweep` draws a sweep's metrics against its swept options with mean ± 95% CI error bars over seeds
(``testbed figures --from SWEEP_DIR``). Every figure uses :mod:`testbed.plotting`'s style: Okabe–Ito
colour-blind-safe palette, 8 pt text for single-column width, vector PDF plus PNG.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.results import atomic_write_text, git_commit

#: extra notes per experiment for the index (e.g. folders the command does not redraw)
EXPERIMENT_NOTES: dict[str, str] = {
    "depth-scaling": "Quick mode at the top level, one folder per sub-study; `summary.csv` puts every fitted "
                     "number beside the claim it tests. `full/` (if present) holds the full settings.",
    "pde-law-recovery": "`full/` holds the full mode (`benchmarks/sweeps/pde_full.toml`: local-scheme teachers, "
                        "whitened polynomial and conv students, 3 objectives, 5 seeds; see README).",
    "multipath": "`full/` holds the full mode (`benchmarks/sweeps/multipath_full.toml`: five tasks, 5 seeds, λ "
                 "chosen on validation data, logit-distillation baseline; see README).",
    "continual": "`full-split-mnist/`, `full-perm-mnist/` and `full-rot-mnist/` hold the full runs on Seq-MNIST, "
                 "P-MNIST and R-MNIST (`benchmarks/sweeps/continual_full.toml`, `continual_perm_mnist_full.toml`, "
                 "`continual_rot_mnist_full.toml`: ER, DER, DER++ and field preservation at buffers 200/500, 5 seeds, "
                 "γ chosen on validation data; see README).",
    "endpoint-equivalence": "`full-partial/` (if present) holds part of the full configuration.",
    "law-recovery": "`full/` holds the full mode (`benchmarks/sweeps/law_recovery_full.toml`: 6 flows × 4 objectives × "
                    "5 seeds, equal budget and matched endpoint error, consistency vs depth L; see README).",
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
    """One paragraph for a figure: the experiment's ``CAPTIONS[stem]``, else the first paragraph of the
    experiment module's docstring."""
    if stem in module.CAPTIONS:
        return str(module.CAPTIONS[stem])
    doc = (module.__doc__ or "").strip()
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
        p = write_index(out, records, quick=quick, keep_others=bool(experiments))
        log(f"wrote {p}")
    return records


def _index_sections(text: str) -> dict[str, str]:
    """The ``## EXPERIMENT`` sections of an index, by name (each with its heading, up to the next one)."""
    sections: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            name = line[3:].strip()
            sections[name] = ""
        if name is not None:
            sections[name] += line
    return sections


def write_index(out: str | Path, records: Sequence[FigureRecord], quick: bool = True,
                keep_others: bool = False) -> Path:
    """``out/README.md``: one section per experiment with each figure, its caption and what was run; figures
    under the experiment's folder that this call did not draw (e.g. ``full/``) are linked at the end. With
    ``keep_others`` (some experiments redrawn), the existing index's sections of the other experiments are kept
    as they were; sections are in experiment-name order."""
    out = Path(out)
    kept = _index_sections((out / "README.md").read_text()) if keep_others and (out / "README.md").exists() else {}
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
    for name in sorted(set(by_exp) | set(kept)):
        if name not in by_exp:
            lines += [kept[name].rstrip("\n"), ""]
            continue
        recs = by_exp[name]
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
from testbed.sweep.figures import from_sweep  # noqa: E402 — sweep figures live in testbed.sweep.figures

__all__ = ["FigureRecord", "caption_text", "describe", "from_sweep", "regenerate", "run_info",
           "write_index"]
