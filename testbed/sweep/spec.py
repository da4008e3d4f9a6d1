"""Sweep specs: read and validate a TOML spec and expand it into cells (:func:`load_spec`).

A **spec** (TOML) names one experiment and the cells to run::

    experiment = "law-recovery"     # a registered experiment (`testbed list`)
    quick = true                    # start from quick_config(), or from Config() (false, the default)
    seeds = [0, 1, 2]               # every cell runs once per seed (default: the base config's seeds)
    figures = false                 # draw each cell's own figure too (default false: sweeps need the tables)

    [fixed]                         # options shared by every cell
    systems = ["van_der_pol"]
    steps = 300

    [grid]                          # Cartesian product of these lists
    n_layers = [16, 32, 64]
    objectives = ["endpoint", "field"]

    [[cells]]                       # optional extra cells (each merged over [fixed]; not crossed with [grid])
    n_layers = 128
    lr = 1e-3

Every option must be a field of the experiment's ``Config`` (``seeds`` is set by the top-level ``seeds``); a
field of a sub-config (a field that is itself a dataclass) is named with a dot: ``"convergence.depths" = [4, 8]``
(a quoted key) or a sub-table ``[fixed.convergence]`` / ``[grid.convergence]`` (flattened to dotted names). Values
are read by :func:`testbed.config.parse_value`: a tuple-valued field takes a scalar as a one-element tuple, so
``objectives = ["endpoint", "field"]`` in ``[grid]`` gives one cell per objective. Each cell's config is built
(and so validated) before anything runs; the number of cells is checked against ``--max-cells`` before that.

A **cell** is (experiment, resolved config with one seed); its id is a stable hash of that canonical config.
The TOML parser is :mod:`tomllib` (Python ≥ 3.11), or the ``tomli`` package on Python 3.10.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.config import ConfigError, apply_options, option_of, option_value, to_jsonable, unknown_option

#: default bound on the number of cells in one spec (``--max-cells`` raises it); checked before expanding
MAX_CELLS = 10_000
SPEC_KEYS = ("experiment", "quick", "seeds", "figures", "fixed", "grid", "cells", "description")
SEED_COLUMN = "seed"
#: config fields that do not change a cell's results (left out of the cell id)
NON_RESULT_FIELDS = ("progress",)


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError("reading a sweep spec needs Python >= 3.11 (tomllib) or the 'tomli' package "
                              "(pip install tomli)") from None
    if path.is_dir():
        raise ConfigError(f"sweep spec {path} is a folder; give the path of a .toml file")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"sweep spec {path} not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep spec {path} is not a UTF-8 text file (binary?)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"sweep spec {path}: cannot be read ({err.strerror or err})") from None


def spec_experiment(path: str | Path) -> str | None:
    """The ``experiment`` a spec names, read without validating anything else (``None`` if it cannot be read):
    enough to start the right workers while :func:`load_spec` does the real parsing."""
    try:
        value = _load_toml(Path(path)).get("experiment")
    except (ConfigError, OSError):
        return None
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class Cell:
    """One task of a sweep: the experiment's config for one option set and one seed."""

    cell_id: str
    options: dict[str, Any]  # swept option -> value (as given in the spec, ``seed`` included)
    overrides: dict[str, Any]  # every option applied to the base config (fixed + swept, ``seeds=(s,)``)
    config: Any  # the resolved, validated experiment config


@dataclasses.dataclass
class SweepSpec:
    """A parsed, validated sweep spec and the cells it defines (in spec order: grid product, then ``[[cells]]``,
    each once per seed)."""

    path: Path
    experiment: str
    quick: bool
    seeds: tuple[int, ...]
    fixed: dict[str, Any]
    swept: list[str]  # swept option names, ``seed`` last
    cells: list[Cell]
    figures: bool = False
    description: str = ""
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def module(self):
        from testbed.experiments import get_experiment

        return get_experiment(self.experiment)


# --------------------------------------------------------------------------------------------- options
def _seed_field(config_cls: type) -> str:
    names = {f.name for f in dataclasses.fields(config_cls)}
    if "seeds" in names:
        return "seeds"
    if "seed" in names:
        return "seed"
    raise ConfigError(f"{config_cls.__name__} has no seeds/seed field: cannot sweep seeds")


def flatten_options(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML sub-tables → dotted option names: ``{"convergence": {"depths": [4, 8]}}`` →
    ``{"convergence.depths": [4, 8]}``. An empty table stays a value (for a sub-config field
    :func:`~testbed.config.parse_value` reads it as that sub-config's defaults; for any other field it is a bad
    value), so it is never silently dropped."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten_options(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_options(opts: Mapping[str, Any], base: Any, seed_field: str, where: str, experiment: str) -> None:
    for key in opts:
        if key in ("seeds", "seed"):
            raise ConfigError(f"{where}: option {key!r}: set seeds with the top-level `seeds = [...]` of the spec")
        miss = unknown_option(base, key, exclude=(seed_field,))
        if miss is not None:
            raise ConfigError(f"{where}: unknown option {key!r}{miss.hint} for experiment {experiment!r}; "
                              f"valid options: {', '.join(miss.valid_dotted)}")
    for key in opts:
        whole = next((k for k in opts if key.startswith(k + ".")), None)
        if whole is not None:
            raise ConfigError(f"{where}: option {whole!r} is set both whole and by its field {key!r}")


# --------------------------------------------------------------------------------------------- cell ids
def canonical(obj: Any) -> Any:
    """A JSON-stable form of a config value (tuples → lists, floats kept exact)."""
    return to_jsonable(obj)


def cell_id_of(experiment: str, config: Any) -> str:
    """Stable id of a cell: the first 12 hex digits of the SHA-256 of its canonical config (without
    :data:`NON_RESULT_FIELDS`)."""
    cfg = {k: v for k, v in canonical(config).items() if k not in NON_RESULT_FIELDS}
    text = json.dumps({"experiment": experiment, "config": cfg}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------- spec → cells
def load_spec(path: str | Path, max_cells: int | None = None) -> SweepSpec:
    """Read and validate a sweep spec; every cell's config is built (so validated) here.

    Raises :class:`ConfigError` naming the spec file and the offending key for an unknown experiment or option,
    an empty ``[grid]`` or grid list, bad seeds, a config the experiment rejects, or more than ``max_cells``
    cells (default :data:`MAX_CELLS`; counted from the list lengths before anything is expanded).
    """
    from testbed.experiments import get_experiment

    path = Path(path)
    raw = _load_toml(path)
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SPEC_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}{hint}; valid keys: {', '.join(SPEC_KEYS)}")
    if "experiment" not in raw:
        raise ConfigError(f"{path}: missing `experiment = \"NAME\"` (see `testbed list`)")
    name = str(raw["experiment"])
    try:
        exp = get_experiment(name)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    quick = raw.get("quick", False)
    if not isinstance(quick, bool):
        raise ConfigError(f"{path}: `quick` must be true or false, got {quick!r}")
    figures = raw.get("figures", False)
    if not isinstance(figures, bool):
        raise ConfigError(f"{path}: `figures` must be true or false, got {figures!r}")
    base = exp.quick_config() if quick else exp.Config()
    seed_field = _seed_field(type(base))

    seeds_raw = raw.get("seeds")
    if seeds_raw is None:
        base_seeds = getattr(base, seed_field)
        seeds = tuple(base_seeds) if isinstance(base_seeds, (list, tuple)) else (base_seeds,)
    else:
        if not isinstance(seeds_raw, list) or not seeds_raw:
            raise ConfigError(f"{path}: `seeds` must be a non-empty list of non-negative integers, got {seeds_raw!r}")
        seeds = tuple(seeds_raw)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"{path}: `seeds` must hold non-negative integers, got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: `seeds` has duplicates: {list(seeds)!r}")

    def table(key: str) -> dict[str, Any]:
        val = raw.get(key, {})
        if not isinstance(val, dict):
            raise ConfigError(f"{path}: `{key}` must be a table ([{key}]), got {val!r}")
        return flatten_options(val)

    fixed, grid = table("fixed"), table("grid")
    extra = raw.get("cells", [])
    if not isinstance(extra, list) or not all(isinstance(c, dict) for c in extra):
        raise ConfigError(f"{path}: `cells` must be an array of tables ([[cells]])")
    extra = [flatten_options(c) for c in extra]
    _check_options(fixed, base, seed_field, f"{path} [fixed]", name)
    _check_options(grid, base, seed_field, f"{path} [grid]", name)
    for i, c in enumerate(extra):
        _check_options(c, base, seed_field, f"{path} [[cells]] #{i + 1}", name)
        if not c:
            raise ConfigError(f"{path}: [[cells]] #{i + 1} is empty: give at least one option")
    if "grid" in raw and not grid:
        raise ConfigError(f"{path}: [grid] is empty: give at least one option with a list of values "
                          "(or drop the table)")
    for key, vals in grid.items():
        if not isinstance(vals, list):
            raise ConfigError(f"{path} [grid]: option {key!r} must be a list of values, got {vals!r}")
        if not vals:
            raise ConfigError(f"{path} [grid]: option {key!r} is an empty list: the grid would have no cells")
    both = [k for k in grid if k in fixed]
    if both:
        raise ConfigError(f"{path}: option {both[0]!r} is in both [fixed] and [grid]")
    limit = MAX_CELLS if max_cells is None else max_cells
    n_cells = (math.prod(len(v) for v in grid.values()) if grid else (0 if extra else 1)) + len(extra)
    n_cells *= len(seeds)
    if n_cells > limit:
        sizes = " × ".join(f"{k}: {len(v)}" for k, v in grid.items())
        raise ConfigError(f"{path}: the spec defines {n_cells:,} cells ({sizes or 'no grid'}, "
                          f"{len(extra)} extra cell(s), {len(seeds)} seed(s)), more than the limit of {limit:,}; "
                          "shrink the grid or pass --max-cells N")

    swept = list(grid)
    for c in extra:
        swept += [k for k in c if k not in swept]
    option_sets: list[tuple[str, dict[str, Any]]] = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)) if keys else ([] if extra else [()]):
        option_sets.append(("[grid]", dict(zip(keys, combo, strict=True))))
    option_sets += [(f"[[cells]] #{i + 1}", dict(c)) for i, c in enumerate(extra)]

    cells: list[Cell] = []
    seen: dict[str, str] = {}
    for where, opts in option_sets:
        values_of = {k: option_value(base, k, v, f"{path} {where}") for k, v in {**fixed, **opts}.items()}
        for seed in seeds:
            overrides = {**values_of, seed_field: (seed,) if seed_field == "seeds" else seed}
            try:
                cfg = apply_options(base, overrides)
            except (ConfigError, ValueError, TypeError, KeyError) as err:
                opts_shown = ", ".join(f"{k}={v!r}" for k, v in opts.items())
                raise ConfigError(f"{path} {where} ({opts_shown}, seed={seed}): {err}") from None
            if hasattr(cfg, "progress"):
                cfg = dataclasses.replace(cfg, progress=False)
            cid = cell_id_of(name, cfg)
            label = f"{where} {opts} seed={seed}"
            if cid in seen:
                raise ConfigError(f"{path}: {label} is the same cell as {seen[cid]}")
            seen[cid] = label
            values = {k: option_of(cfg, k) for k in swept}
            values[SEED_COLUMN] = seed
            cells.append(Cell(cid, values, overrides, cfg))
    if not cells:
        raise ConfigError(f"{path}: the spec defines no cells")
    return SweepSpec(path=path, experiment=name, quick=quick, seeds=seeds, fixed=fixed, swept=[*swept, SEED_COLUMN],
                     cells=cells, figures=figures, description=str(raw.get("description", "")), raw=raw)
