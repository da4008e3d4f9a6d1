"""Names of the trained families of the depth-scaling sub-studies: ``<parameterization>[+corr][+<optimizer>]``.

Adam is the default and carries no suffix (``depth_mup+corr``); another optimizer is appended
(``depth_mup+corr+sgd``). One place for the rule, so ``features`` and ``lr_transfer`` name and parse alike.
"""

from __future__ import annotations

DEFAULT_OPTIMIZER = "adam"


def variant_name(base: str, optimizer: str) -> str:
    """``base`` with the optimizer suffix (none for Adam)."""
    return base if optimizer == DEFAULT_OPTIMIZER else f"{base}+{optimizer}"


def optimizer_of(variant: str) -> str:
    """The optimizer a variant name encodes (``sgd`` for ``…+sgd``, else Adam)."""
    return "sgd" if variant.endswith("+sgd") else DEFAULT_OPTIMIZER


def base_variant(variant: str) -> str:
    """The variant without its optimizer suffix (``depth_mup+corr+sgd`` → ``depth_mup+corr``)."""
    return variant[: -len("+sgd")] if variant.endswith("+sgd") else variant


__all__ = ["DEFAULT_OPTIMIZER", "base_variant", "optimizer_of", "variant_name"]
