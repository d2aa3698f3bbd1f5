"""Small helpers shared by experiment modules: grouping rows, markdown tables, figures."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["group", "median", "md_table", "fmt", "pyplot", "log_ticks"]


def group(rows: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of ``keys``, groups in sorted key order."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return dict(sorted(out.items()))


def median(rows: Sequence[dict], key: str | Callable[[dict], float]) -> float:
    """Median of a field (or of a function of the row) over rows; NaN for no rows."""
    get = key if callable(key) else (lambda r: r[key])
    values = [float(get(r)) for r in rows]
    return statistics.median(values) if values else float("nan")


def fmt(x: Any) -> str:
    """Compact number formatting for report tables."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:
            return "—"
        if x == 0 or 1e-3 <= abs(x) < 1e4:
            return f"{x:.3g}"
        return f"{x:.2e}"
    return str(x)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_ticks(ax, values: Iterable[float], axis: str = "x") -> None:
    """Put plain-number ticks at ``values`` on a log axis (instead of 2×10⁰ style labels)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())
    (ax.set_xticks if axis == "x" else ax.set_yticks)(sorted(set(values)))


def profile_name(cfg: Any) -> str:
    """``"quick"``/``"full"`` when the config is that preset, else ``"custom"``."""
    for name in ("quick", "full"):
        if cfg == getattr(type(cfg), name)():
            return name
    return "custom"


def value_range(values: Sequence[float], form: str = "{:.3g}") -> str:
    """``"A–B"``, or ``"A"`` when both ends print the same."""
    lo, hi = form.format(min(values)), form.format(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def spread(values: Sequence[float], form: str = "{:.1e}") -> str:
    """``"median M, range A–B"``, or ``"A in every trial"`` when all print the same."""
    lo, hi = form.format(min(values)), form.format(max(values))
    if lo == hi:
        return f"{lo} in every trial"
    return f"median {form.format(statistics.median(values))}, range {lo}–{hi}"
