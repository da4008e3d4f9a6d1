"""The tables of a sweep, merged from its finished cells in spec order (:func:`merge`).

From the cells' ``rows.csv`` in spec order (so a resumed sweep gives the same table as an uninterrupted one):

* ``SWEEP_DIR/results.csv`` (and ``results.parquet`` if pyarrow is installed): ``cell_id``, one column per
  swept option (``seed`` included), then the experiment's own result columns;
* ``SWEEP_DIR/summary.csv``: mean, sample std (ddof = 1) and 95% CI half-width over seeds of every numeric column,
  grouped by the swept options and the experiment's natural keys (its ``GROUP_KEYS``: system, objective, …),
  with ``n`` the number of rows in the group;
* ``SWEEP_DIR/cells.csv``: one line per cell with its status, error and wall time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.results import read_csv, write_csv
from testbed.stats import summarize as summarize_values
from testbed.sweep.cells import STATUS_FAILED, STATUS_MISSING, STATUS_OK, _status, cell_status
from testbed.sweep.spec import SEED_COLUMN, SweepSpec

if TYPE_CHECKING:
    from testbed.sweep.runner import SweepResult


def _column_value(v: Any) -> Any:
    """A swept option's value as one table cell: one-element tuples unwrapped, others joined by commas."""
    if isinstance(v, (list, tuple)):
        return v[0] if len(v) == 1 else ",".join(map(str, v))
    return v


def merged_rows(spec: SweepSpec, sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of every finished cell, in spec order: ``cell_id``, the swept options, the experiment's
    columns (read back from each cell's ``rows.csv``, so fresh and resumed sweeps give identical values)."""
    sweep_dir = Path(sweep_dir)
    out: list[dict[str, Any]] = []
    for cell in spec.cells:
        cdir = sweep_dir / "cells" / cell.cell_id
        if cell_status(sweep_dir, cell.cell_id) != STATUS_OK or not (cdir / "rows.csv").exists():
            continue
        swept = {k: _column_value(v) for k, v in cell.options.items()}
        for row in read_csv(cdir / "rows.csv"):
            out.append({"cell_id": cell.cell_id, **swept, **{k: v for k, v in row.items() if k not in swept}})
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def group_keys(rows: Sequence[Mapping[str, Any]], swept: Sequence[str], module=None) -> list[str]:
    """Columns a summary groups by: the swept options but the seed, then the experiment's ``GROUP_KEYS`` (part of
    the experiment contract), or — when those are empty or no module is given — its non-numeric columns."""
    keys = [k for k in swept if k != SEED_COLUMN]
    natural = list(module.GROUP_KEYS) if module is not None else []
    if not natural:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        natural = [c for c in cols if c not in ("cell_id", SEED_COLUMN) and c not in keys
                   and any(r.get(c, "") != "" for r in rows)
                   and not all(_is_number(r.get(c)) for r in rows if r.get(c, "") != "")]
    return keys + [k for k in natural if k not in keys]


def summarize(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, sample std (ddof = 1) and 95% t-interval half-width (:mod:`testbed.stats`; empty for one row) of
    every numeric column over the rows of each group of ``keys`` (groups in first-seen order), with ``n`` rows per
    group."""
    metrics = [c for c in dict.fromkeys(k for r in rows for k in r)
               if c not in keys and c not in ("cell_id", SEED_COLUMN)
               and any(_is_number(r.get(c)) for r in rows)
               and all(_is_number(r.get(c)) or r.get(c, "") == "" for r in rows)]
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k, "") for k in keys), []).append(r)
    out = []
    for gkey, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, gkey, strict=True))
        row["n"] = len(members)
        for m in metrics:
            s = summarize_values([float(r[m]) for r in members if _is_number(r.get(m))])
            row[f"{m}_mean"] = s.mean
            row[f"{m}_std"] = s.std if s.n > 1 else ""
            row[f"{m}_ci95"] = s.half_width if s.n > 1 else ""
        out.append(row)
    return out


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        return None
    from testbed.results import atomic_path

    cols = list(dict.fromkeys(k for r in rows for k in r))
    data: dict[str, list[Any]] = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        vals = [None if v == "" else v for v in vals]
        kinds = {type(v) for v in vals if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            vals = [None if v is None else str(v) for v in vals]
        elif kinds == {int, float}:
            vals = [None if v is None else float(v) for v in vals]
        data[c] = vals
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(data), tmp)
    return path


def merge(spec: SweepSpec, sweep_dir: str | Path) -> tuple[Path | None, Path | None]:
    """Write ``results.csv`` (+ ``.parquet``), ``summary.csv`` and ``cells.csv`` for the finished cells; returns
    the paths of the first two (None when no cell has finished)."""
    sweep_dir = Path(sweep_dir)
    status_rows = []
    for cell in spec.cells:
        st = _status(sweep_dir / "cells" / cell.cell_id) or {"status": STATUS_MISSING}
        status_rows.append({"cell_id": cell.cell_id, **{k: _column_value(v) for k, v in cell.options.items()},
                            "status": st.get("status", STATUS_FAILED), "error": st.get("error", ""),
                            "seconds": st.get("seconds", "")})
    write_csv(sweep_dir / "cells.csv", status_rows)
    rows = merged_rows(spec, sweep_dir)
    res_path, sum_path = sweep_dir / "results.csv", sweep_dir / "summary.csv"
    if not rows:
        for p in (res_path, sum_path, sweep_dir / "results.parquet"):
            p.unlink(missing_ok=True)
        return None, None
    swept = list(spec.swept)
    keys = group_keys(rows, swept, spec.module)
    summary = summarize(rows, keys)
    write_csv(sum_path, summary)
    _write_parquet(sweep_dir / "results.parquet", rows)
    write_csv(res_path, rows)  # last
    return res_path, sum_path


def format_report(res: SweepResult) -> str:
    """A short human summary of a sweep call."""
    lines = [f"sweep {res.sweep_dir}: {res.n_cells} cells, {res.skipped} already done, ran {res.ran} "
             f"in {res.seconds:.1f} s; {len(res.failed)} failed, {len(res.missing)} missing"]
    if res.results:
        lines.append(f"wrote {res.results}, {res.summary} and {res.sweep_dir / 'cells.csv'}")
    for cid in res.failed:
        st = _status(res.sweep_dir / "cells" / cid) or {}
        lines.append(f"  failed {cid}: {st.get('error', '?')}  (cells/{cid}/status.json)")
    return "\n".join(lines)
