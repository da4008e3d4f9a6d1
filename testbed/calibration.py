"""Calibration of a classifier's confidence: expected calibration error, NLL and reliability bins.

With top-label confidence ``p̂_n = max_c softmax(z_n)_c`` and prediction ``ŷ_n = argmax_c z_n``, the confidence
range ``(0, 1]`` is cut into ``B`` equal-width bins ``I_b = ((b−1)/B, b/B]``. Then

    ``ECE = Σ_b (|I_b|/N) · |acc(I_b) − conf(I_b)|``,   ``acc(I_b) = mean_{n∈I_b} 1[ŷ_n = y_n]``,
    ``conf(I_b) = mean_{n∈I_b} p̂_n``                         (Guo et al., 2017; ``B = 15`` there and here),

and ``NLL = −mean_n log softmax(z_n)_{y_n}``. :func:`reliability_bins` returns the per-bin table a reliability
diagram draws (empty bins are kept, with count 0 and NaN accuracy/confidence).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def _top_label(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(y.shape)}")
    p = torch.softmax(logits.double(), -1)
    conf, pred = p.max(-1)
    return conf, (pred == y).double()


def reliability_bins(logits: Tensor, y: Tensor, n_bins: int = 15) -> list[dict[str, float]]:
    """Rows ``{bin_lo, bin_hi, count, accuracy, confidence}`` for the ``n_bins`` equal-width confidence bins."""
    return _bins(*_top_label(logits, y), n_bins)


def _bins(conf: Tensor, correct: Tensor, n_bins: int) -> list[dict[str, float]]:
    if n_bins < 1:
        raise ValueError(f"n_bins must be ≥ 1, got {n_bins}")
    # bin b holds confidences in ((b-1)/B, b/B], the edges being the floats the rows report (bin_hi = b/B): the first
    # bin with conf ≤ bin_hi (ceil(conf·B) can round across an edge: (7/25)·25 = 7.000000000000001); confidence 0
    # cannot occur for a top label (≥ 1/C) and is clamped into the first bin
    hi = torch.tensor([(b + 1) / n_bins for b in range(n_bins)], dtype=conf.dtype, device=conf.device)
    idx = torch.searchsorted(hi, conf).clamp(0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        k = int(sel.sum())
        rows.append({"bin_lo": b / n_bins, "bin_hi": (b + 1) / n_bins, "count": k,
                     "accuracy": float(correct[sel].mean()) if k else math.nan,
                     "confidence": float(conf[sel].mean()) if k else math.nan})
    return rows


def ece_from_bins(bins: list[dict[str, float]]) -> float:
    """``ECE = Σ_b (|I_b|/N)·|acc(I_b) − conf(I_b)|`` from a :func:`reliability_bins` table."""
    n = sum(r["count"] for r in bins)
    if n == 0:
        return math.nan
    return sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in bins if r["count"])


def expected_calibration_error(logits: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """``ECE`` over ``n_bins`` equal-width confidence bins (see the module docstring)."""
    return ece_from_bins(reliability_bins(logits, y, n_bins))


def negative_log_likelihood(logits: Tensor, y: Tensor) -> float:
    """``−mean log softmax(z)_y`` (nats)."""
    return float(torch.nn.functional.cross_entropy(logits.double(), y))


def classification_metrics(logits: Tensor, y: Tensor, n_bins: int = 15) -> dict[str, float]:
    """``{accuracy, ece, nll}`` of logits against labels (one pass over the confidences)."""
    conf, correct = _top_label(logits, y)
    return {"accuracy": float(correct.mean()), "ece": ece_from_bins(_bins(conf, correct, n_bins)),
            "nll": negative_log_likelihood(logits, y)}
