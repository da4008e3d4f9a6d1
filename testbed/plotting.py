"""One style for every figure: colour-blind-safe palette, readable at single-column width, PNG + PDF."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from testbed.results import atomic_path  # noqa: E402

logging.getLogger("fontTools").setLevel(logging.ERROR)  # font-subsetting chatter when embedding PDF fonts
import matplotlib.pyplot as plt  # noqa: E402

# Okabe–Ito palette (colour-blind safe)
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
OBJECTIVE_COLORS = {"endpoint": "#D55E00", "field": "#0072B2", "teacher": "#000000", "trajectory": "#009E73"}

STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}


def use_style() -> None:
    plt.rcParams.update(STYLE)


def color_for(name: str, i: int = 0) -> str:
    return OBJECTIVE_COLORS.get(name, PALETTE[i % len(PALETTE)])


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf``; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(p)
    plt.close(fig)
    return paths
