"""Reading E4 rows: medians, ranges and the learning rate chosen on validation data."""

from __future__ import annotations

import numpy as np

from normonly.experiments._common import group
from normonly.experiments.e4.sweep import FIT_METHODS, err_value

__all__ = ["med", "range_of", "chosen_rows", "grid", "methods_rows", "why_chosen", "lrs"]


def med(rs: list[dict], key: str) -> float:
    return float(np.median([err_value(r[key]) for r in rs]))


def range_of(rs: list[dict], key: str) -> tuple[float, float]:
    v = [err_value(r[key]) for r in rs]
    return min(v), max(v)


def chosen_rows(rows: list[dict]) -> dict[tuple, list[dict]]:
    """``{(overparam, method): rows of the lr with the lowest median validation error}``."""
    out = {}
    for (o, m), rs in group([r for r in rows if r["kind"] == "fit"], "overparam", "method").items():
        by_lr = group(rs, "lr")
        best = min(by_lr, key=lambda k: (med(by_lr[k], "val_rel_error"), k))
        out[(o, m)] = by_lr[best]
    return out


def grid(rows: list[dict], o: float, m: str) -> list[float]:
    """The learning rates that were run for ``method`` at ``overparam`` (from the rows)."""
    return sorted({r["lr"] for r in rows if r["kind"] == "fit" and r["overparam"] == o
                   and r["method"] == m})  # fmt: skip


def methods_rows(rows: list[dict]) -> dict[float, list[tuple[str, list[dict]]]]:
    """Per overparam: ``[("construction", rows), (method, rows at the chosen lr), ...]``."""
    chosen, out = chosen_rows(rows), {}
    for (o,), rs in group([r for r in rows if r["kind"] == "construction"], "overparam").items():
        fits = [(m, chosen[(o, m)]) for m in FIT_METHODS if (o, m) in chosen]
        out[o] = [("construction", rs), *fits]
    return out


def why_chosen(rows: list[dict]) -> dict[tuple, list[dict]]:
    """``{(overparam, optimizer, ε): why rows at the lr chosen for norm_<optimizer>}``.

    Without fit rows of ``norm_<optimizer>`` at that overparam (nothing to choose by), the
    optimizer's why rows are left out.
    """
    chosen, out = chosen_rows(rows), {}
    why = [r for r in rows if r["kind"] == "why"]
    for (o, opt, lr, eps), rs in group(why, "overparam", "optimizer", "lr", "noise").items():
        fit = chosen.get((o, f"norm_{opt}"))
        if fit is not None and fit[0]["lr"] == lr:
            out[(o, opt, eps)] = rs
    return out


def lrs(v: list[float]) -> str:
    return ", ".join(f"{x:g}" for x in v)
