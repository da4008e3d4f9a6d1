"""Sweeps over seeds × configs on Dask distributed: resumable, one tidy table (``testbed sweep SPEC.toml``).

One job per module:

* :mod:`~testbed.sweep.spec` — the TOML spec (format in its docstring): parsing, validation, the ``--max-cells``
  bound checked before expansion, the cells and their stable ids (:func:`load_spec`);
* :mod:`~testbed.sweep.cells` — running one cell in a temporary folder and publishing it atomically as
  ``SWEEP_DIR/cells/ID/`` (:func:`run_cell`, :func:`cell_status`);
* :mod:`~testbed.sweep.runner` — running the unfinished cells on a Dask ``LocalCluster`` (or a given scheduler,
  or in sequence) with one progress bar (:func:`run_sweep`, :func:`local_cluster`);
* :mod:`~testbed.sweep.merge` — ``results.csv`` / ``.parquet``, ``summary.csv`` and ``cells.csv`` from the
  finished cells in spec order (:func:`merge`, :func:`summarize`, :func:`group_keys`, :func:`format_report`);
* :mod:`~testbed.sweep.figures` — a sweep's figures (:func:`~testbed.sweep.figures.from_sweep`, also
  :func:`testbed.figures.from_sweep`; not imported here, so ``import testbed.sweep`` stays free of matplotlib).

Re-running the same sweep skips cells whose status is ok and re-runs failed or missing ones; a killed sweep loses
at most the cells in flight; a resumed sweep gives the same tables as an uninterrupted one.
"""

from __future__ import annotations

from testbed.sweep.cells import STATUS_FAILED, STATUS_MISSING, STATUS_OK, cell_status, run_cell
from testbed.sweep.merge import format_report, group_keys, merge, merged_rows, summarize
from testbed.sweep.runner import SweepResult, default_workers, local_cluster, run_sweep
from testbed.sweep.spec import (
    MAX_CELLS,
    NON_RESULT_FIELDS,
    SEED_COLUMN,
    SPEC_KEYS,
    Cell,
    SweepSpec,
    apply_options,
    canonical,
    cell_id_of,
    flatten_options,
    load_spec,
)

__all__ = ["MAX_CELLS", "NON_RESULT_FIELDS", "SEED_COLUMN", "SPEC_KEYS", "STATUS_FAILED", "STATUS_MISSING",
           "STATUS_OK", "Cell", "SweepResult", "SweepSpec", "apply_options", "canonical", "cell_id_of", "cell_status",
           "default_workers", "flatten_options", "format_report", "group_keys", "load_spec", "local_cluster", "merge",
           "merged_rows", "run_cell", "run_sweep", "summarize"]
