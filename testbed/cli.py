"""Command line: ``testbed list | run | plot | consistency | sweep | figures | report`` (thin: parse, call the library).

Every error a user can cause (unknown system/experiment/key, bad value, NaN loss, a diverged student, a
checkpoint that is not data, a size past the machine's memory, an unusable path, a locked output folder) is
reported as one line ``testbed: error: …`` on stderr with exit status 2; Ctrl-C ends with one line and status 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

from testbed.config import ConfigError, apply_overrides, check_unique, parse_int_list, to_jsonable
from testbed.lock import describe_os_error, output_lock
from testbed.results import check_clean_tree, set_allow_dirty

#: longest error message printed (the first line of it)
MAX_MESSAGE = 600


def _parse_int_list(text: str) -> list[int]:
    return parse_int_list(text, positive=False)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line ``testbed: error: …`` (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        _fail(f"{self.prog}: {message}")
        raise SystemExit(2)


def _fail(message: str) -> None:
    line = " ".join(str(message).split())
    if len(line) > MAX_MESSAGE:
        line = line[: MAX_MESSAGE - 1] + "…"
    print(f"testbed: error: {line}", file=sys.stderr)


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{flag} must be a positive integer, got {value}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="testbed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="list systems and experiments")

    r = sub.add_parser("run", help="run an experiment and write its results and figure")
    r.add_argument("experiment", help="experiment name (see `testbed list`)")
    r.add_argument("--quick", action="store_true", help="small settings: minutes on 2 CPU cores")
    r.add_argument("--system", nargs="+", help="system name(s) to run on (overrides the config)")
    r.add_argument("--seed", nargs="+", type=int, help="seed(s) (overrides the config)")
    r.add_argument("--study", nargs="+", help="sub-study/studies to run (experiments that have them, e.g. "
                                              "depth-scaling: convergence lr_transfer features weight_reuse "
                                              "trained_limit)")
    r.add_argument("--benchmark", nargs="+", help="benchmark(s)/task(s) to run, for experiments that have them "
                                                  "(e.g. continual: split_digits split_mnist perm_mnist rot_mnist "
                                                  "seq_cifar10 split_cifar100)")
    r.add_argument("--data-dir", type=Path, default=None, help="local data folder (experiments on real data)")
    r.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    r.add_argument("--out", type=Path, default=None, help="output folder (default: runs/EXPERIMENT)")
    r.add_argument("--set", dest="overrides", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set steps=500 n_layers=64 (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    r.add_argument("--allow-dirty", action="store_true",
                   help="write under figures/ from a tree with uncommitted changes (recorded in results.json)")
    r.add_argument("--fresh", action="store_true",
                   help="delete OUT/checkpoints first: train every student from scratch instead of resuming")

    pl = sub.add_parser("plot", help="redraw an experiment's figure from its results folder")
    pl.add_argument("experiment")
    pl.add_argument("--out", type=Path, required=True, help="the experiment's results folder")

    c = sub.add_parser("consistency", help="solver consistency of a saved student")
    c.add_argument("checkpoint", type=Path, help="checkpoint.pt (or the folder holding it)")
    c.add_argument("--steps", type=_parse_int_list, default=None,
                   help="comma-separated step counts L' (default: L/4,L/2,2L,4L)")
    c.add_argument("--methods", default="euler", help="fixed-step solvers, comma-separated (euler,midpoint,rk4)")
    c.add_argument("--adaptive", default="dopri5", help="adaptive solvers, comma-separated ('' for none)")
    c.add_argument("--n", type=int, default=128, help="number of in-distribution initial states")
    c.add_argument("--seed", type=int, default=0, help="seed for the initial states")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sw = sub.add_parser("sweep", help="run a sweep spec (grid × seeds) on Dask; resumable; one tidy table",
                        description="Run every unfinished cell of a sweep spec (TOML) as a task on a Dask cluster "
                                    "and write SWEEP_DIR/results.csv, summary.csv (mean, sample std and 95% CI over "
                                    "seeds) and cells.csv. Re-running the same command skips finished cells.")
    sw.add_argument("spec", type=Path, help="sweep spec (TOML): experiment, quick, seeds, [fixed], [grid], [[cells]]")
    sw.add_argument("--out", type=Path, default=None, help="sweep folder (default: runs/sweeps/SPEC_STEM)")
    sw.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                    help="address of a running Dask scheduler (default: a LocalCluster on this machine)")
    sw.add_argument("--workers", type=int, default=None,
                    help="LocalCluster worker processes (default: one per core)")
    sw.add_argument("--threads", type=int, default=None,
                    help="torch threads per cell (default: cores // workers, at least 1)")
    sw.add_argument("--sequential", action="store_true",
                    help="run the cells one after another in this process (no Dask)")
    sw.add_argument("--spawn-workers", action="store_true",
                    help="start each LocalCluster worker as a fresh interpreter that imports everything itself "
                         "(Dask's default) instead of forking it from one preloaded server (faster start)")
    sw.add_argument("--keep-failed", action="store_true", help="do not re-run cells that failed before")
    sw.add_argument("--dry-run", action="store_true", help="list the cells and their status; run nothing")
    sw.add_argument("--max-cells", type=int, default=None,
                    help="refuse specs with more cells than this (default 10000), checked before expanding")
    sw.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    fg = sub.add_parser("figures", help="regenerate experiments' figures with captions and an index",
                        description="Redraw every (or each named) experiment's figures from OUT/EXPERIMENT/ "
                                    "(running it first when its results are missing), with a caption file beside "
                                    "each figure and the index OUT/README.md; or, with --from, draw a sweep.")
    fg.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="experiment name(s) (default: all)")
    fg.add_argument("--quick", action="store_true", help="quick settings for experiments that must be run")
    fg.add_argument("--out", type=Path, default=None,
                    help="figures folder (default: figures/; with --from: SWEEP_DIR/figures)")
    fg.add_argument("--rerun", action="store_true", help="run every experiment again even if it has results")
    fg.add_argument("--from", dest="sweep_dir", type=Path, default=None, metavar="SWEEP_DIR",
                    help="draw a sweep's metrics vs its swept options with mean ± 95%% CI error bars over seeds")
    fg.add_argument("--metric", nargs="+", default=None, help="with --from: the metric column(s) to draw")
    fg.add_argument("--device", default=None, help="torch device for experiments that must be run")
    fg.add_argument("--no-progress", action="store_true", help="hide progress bars")
    fg.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    fg.add_argument("--allow-dirty", action="store_true",
                    help="regenerate under figures/ from a tree with uncommitted changes (recorded)")
    rp = sub.add_parser("report", help="the README's measured tables, generated from the results in figures/")
    rp.add_argument("--figures", type=Path, default=Path("figures"), help="results folder (default: figures/)")
    rp.add_argument("--write", type=Path, default=None, metavar="README",
                    help="replace the generated block of this file instead of printing the tables")
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from testbed import report

    if not args.figures.is_dir():
        raise FileNotFoundError(f"{args.figures} is not a folder of results")
    if args.write is None:
        print(report.render(args.figures), end="")
        return 0
    print(f"wrote {report.write(args.write, args.figures)}")
    return 0


def cmd_list() -> int:
    import systems
    from testbed.experiments import get_experiment, list_experiments

    print("systems:")
    for name in systems.list_systems():
        s = systems.get_system(name)
        kind = s.flow_kind
        auto = "" if s.autonomous else ", time-dependent"
        print(f"  {name:<22} dim={s.dim}  T={s.horizon:g}  ({kind}{auto})")
    print("  … and by reference: path/to/file.py:NAME, package.module:NAME, dysts:NAME (the dysts catalogue),")
    print("    or a name an installed package registers (entry points 'testbed.systems')")
    print("experiments:")
    for name in list_experiments():
        doc = (get_experiment(name).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<22} {doc}")
    return 0


#: command-line flag → argparse destination, for the flags that set config fields (declared in each config's
#: field metadata: ``testbed.experiments.protocol.flag``)
CONFIG_FLAGS = {"--system": "system", "--seed": "seed", "--study": "study", "--benchmark": "benchmark",
                "--data-dir": "data_dir", "--device": "device"}


def config_changes(exp, cfg, args: argparse.Namespace) -> dict:
    """The config fields set by command-line flags, through the fields' declared ``flag`` metadata."""
    import typing

    from testbed.experiments.protocol import flag_fields

    fields = flag_fields(type(cfg))
    hints = typing.get_type_hints(type(cfg))
    changes: dict = {}
    for flag_name, dest in CONFIG_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if flag_name not in fields:
            raise ConfigError(f"{flag_name}: experiment {exp.NAME!r} has no such option")
        f = fields[flag_name]
        values = value if isinstance(value, list) else [value]
        if typing.get_origin(hints[f.name]) is tuple:
            changes[f.name] = tuple(str(v) if isinstance(v, Path) else v for v in values)
        elif len(values) == 1:
            changes[f.name] = str(values[0]) if isinstance(values[0], Path) else values[0]
        else:
            raise ConfigError(f"{flag_name}: experiment {exp.NAME!r} takes one value, got {len(values)}")
    if args.no_progress:
        changes["progress"] = False
    return changes


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from testbed.experiments import get_experiment

    exp = get_experiment(args.experiment)
    _positive("--threads", args.threads)
    for flag_name, values in (("--system", args.system), ("--seed", args.seed), ("--study", args.study),
                              ("--benchmark", args.benchmark)):
        if values:
            check_unique(flag_name, values)
    cfg = exp.quick_config() if args.quick else exp.Config()
    cfg = dataclasses.replace(cfg, **config_changes(exp, cfg, args))
    cfg = apply_overrides(cfg, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / exp.NAME
    check_clean_tree(out, args.allow_dirty)
    if args.allow_dirty:
        set_allow_dirty()
    with output_lock(out):
        if args.fresh:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        rows = exp.run(cfg, out)
        figures = [p for p in exp.plot(out) if Path(p).suffix == ".png"]
    print(f"{exp.NAME}: wrote {len(rows)} rows to {out / 'results.csv'}"
          + (f" and {len(figures)} figure(s) (PNG + PDF) to {out}/" if figures else ""))
    _print_table(rows, list(exp.SUMMARY_COLUMNS))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from testbed.experiments import get_experiment

    exp = get_experiment(args.experiment)
    if not (args.out / "results.csv").is_file():
        raise FileNotFoundError(f"{args.out / 'results.csv'} not found: run `testbed run {args.experiment}` first")
    with output_lock(args.out):
        for p in exp.plot(args.out):
            print(f"wrote {p}")
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    import torch

    import systems
    from testbed.errors import divergence_context
    from testbed.field.consistency import solver_consistency
    from testbed.train import load_student

    student, ckpt = load_student(args.checkpoint)
    student = student.double().eval()
    extra = ckpt.get("extra", {})
    if args.n <= 0:
        raise ConfigError(f"--n must be a positive integer, got {args.n}")
    from testbed.limits import check_memory

    check_memory(args.n * student.dim * 8 * 16, f"--n {args.n:,} initial states")
    gen = torch.Generator().manual_seed(args.seed)
    methods = [m for m in args.methods.split(",") if m]
    adaptive = [m for m in args.adaptive.split(",") if m]
    out: dict = {"checkpoint": str(args.checkpoint), "n_layers": student.n_layers, "horizon": student.horizon}
    if "system" in extra:
        system = systems.get_system(extra["system"], **extra.get("system_params", {}))
        x0 = system.sample_id(args.n, generator=gen)
        target = system.flow(x0, [0.0, float(system.horizon)])[-1]
        teacher = solver_consistency(system.vector_field, x0, student.horizon, student.n_layers, args.steps,
                                     methods, adaptive, target=target)
        out["system"] = extra["system"]
        out["teacher"] = teacher.rows
    else:
        x0 = torch.randn(args.n, student.dim, generator=gen, dtype=torch.float64)
        target = None
    with divergence_context(checkpoint=args.checkpoint):
        res = solver_consistency(student.vector_field, x0, student.horizon, student.n_layers, args.steps, methods,
                                 adaptive, target=target)
    out["student"] = res.rows
    out["consistency_error"] = res.summary
    if args.json:
        print(json.dumps(to_jsonable(out), indent=2))
        return 0
    print(f"{args.checkpoint}: L={student.n_layers}, T={student.horizon:g}, reference = euler at L steps")
    cols = ["method", "n_steps", "endpoint_change", "trajectory_change", "target_error", "nfev"]
    print("student f_θ:")
    _print_table(res.rows, cols)
    if "teacher" in out:
        print(f"teacher f* ({out['system']}) — the discretisation floor:")
        _print_table(out["teacher"], cols)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from testbed.experiments import module_name
    from testbed.sweep import cell_status, format_report, load_spec, run_sweep
    from testbed.sweep.runner import WORKER_PRELOAD, default_threads, default_workers, start_worker_server
    from testbed.sweep.spec import spec_experiment

    _positive("--threads", args.threads)
    _positive("--workers", args.workers)
    _positive("--max-cells", args.max_cells)
    if not (args.dry_run or args.sequential or args.scheduler or args.spawn_workers):  # overlaps the spec's expansion
        experiment = spec_experiment(args.spec)
        module = module_name(experiment) if experiment else None
        start_worker_server(args.threads or default_threads(args.workers or default_workers()),
                            (*WORKER_PRELOAD, *([module] if module else [])))
    spec = load_spec(args.spec, max_cells=args.max_cells)
    if args.dry_run:
        out = (args.out or Path("runs") / "sweeps" / args.spec.stem).resolve()
        print(f"{args.spec}: experiment {spec.experiment} ({'quick' if spec.quick else 'full'}), "
              f"{len(spec.cells)} cells, swept: {', '.join(spec.swept)}; folder {out}")
        rows = [{"cell_id": c.cell_id, **{k: _short(v) for k, v in c.options.items()},
                 "status": cell_status(out, c.cell_id)} for c in spec.cells]
        _print_table(rows, list(rows[0]))
        return 0
    out = args.out or Path("runs") / "sweeps" / args.spec.stem
    with output_lock(out):
        res = run_sweep(spec, out, workers=args.workers, threads=args.threads, scheduler=args.scheduler,
                        sequential=args.sequential, rerun_failed=not args.keep_failed,
                        progress=not args.no_progress, fork=not args.spawn_workers)
    print(format_report(res))
    return 1 if res.failed or res.missing else 0


def _short(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def cmd_figures(args: argparse.Namespace) -> int:
    import torch

    from testbed import figures

    _positive("--threads", args.threads)
    if args.device is not None:
        from testbed.devices import check_device

        check_device("--device", args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sweep_dir is not None:
        if args.experiments:
            raise ConfigError("--from SWEEP_DIR draws the sweep's own experiment: give no EXPERIMENT names")
        figures.from_sweep(args.sweep_dir, args.out, metrics=args.metric)
        return 0
    if args.metric:
        raise ConfigError("--metric only applies with --from SWEEP_DIR")
    if args.experiments:
        check_unique("EXPERIMENT", args.experiments)
    out = args.out or Path("figures")
    check_clean_tree(out, args.allow_dirty)
    if args.allow_dirty:
        set_allow_dirty()
    with output_lock(out):
        figures.regenerate(args.experiments or None, quick=args.quick, out=out, rerun=args.rerun,
                           progress=not args.no_progress, device=args.device)
    return 0


def _print_table(rows: list[dict], cols: list[str]) -> None:
    cols = [c for c in cols if any(c in r for r in rows)]
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3e}"
    return "-" if v is None else str(v)


def _headless() -> None:
    """Draw off-screen (Agg) without importing matplotlib before a command needs it (the CLI stays light until
    it knows what to run: ``testbed sweep`` starts its workers' fork server first)."""
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    else:
        os.environ["MPLBACKEND"] = "Agg"


def main(argv: list[str] | None = None) -> int:
    _headless()  # the CLI saves figures to files
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or an argparse error already printed as one line
        return int(stop.code or 0)
    from testbed.results import git_state, set_command

    set_command(["testbed", *(sys.argv[1:] if argv is None else argv)])
    git_state()  # provenance of the tree as the command starts (before a run writes into tracked folders)
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "run":
            return cmd_run(args)
        if args.command == "plot":
            return cmd_plot(args)
        if args.command == "consistency":
            return cmd_consistency(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "figures":
            return cmd_figures(args)
        if args.command == "report":
            return cmd_report(args)
    except (ConfigError, FloatingPointError, ValueError) as err:  # systems.SystemSpecError is a ValueError
        _fail(str(err) or type(err).__name__)
        return 2
    except FileNotFoundError as err:
        _fail(str(err) if err.filename is None or str(err.filename) in str(err.args[0])
              else describe_os_error(err))
        return 2
    except OSError as err:
        _fail(describe_os_error(err))
        return 2
    except MemoryError:
        _fail("out of memory: reduce the size of the run (width, depth, batch, number of samples)")
        return 2
    except RuntimeError as err:
        if "allocate" not in str(err) and "out of memory" not in str(err):
            raise
        _fail(f"out of memory: {str(err).splitlines()[0][:200]}; reduce the size of the run")
        return 2
    except KeyboardInterrupt:
        _fail("interrupted (Ctrl-C); results.csv was not written for the unfinished run")
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
