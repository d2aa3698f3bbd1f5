"""Validated reading of stored rows: the one function that ``run`` (resume) and ``report`` share.

A stored row counts only if it is a JSON object whose ``"key"`` names a trial of the directory's
config, whose trial fields equal that trial's spec (same values, same JSON types), and whose
documented fields have the documented types: the certificate keys of
:mod:`normonly.experiments.rows`, the bookkeeping keys the runner adds, and a few result keys the
summaries compute with (:data:`RESULT_TYPES`). Anything else is skipped with one warning naming
the file, the line and the field, and is never counted.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normonly.experiments import store
from normonly.experiments.rows import CERTIFICATE_KEYS

__all__ = ["RESULT_TYPES", "ROW_TYPES", "Skipped", "StoredRows", "check_row", "load_rows"]

logger = logging.getLogger(__name__)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) else "an integer"


def _num(v: Any) -> str | None:
    """A number; NaN allowed (the row schema documents NaN as 'none')."""
    return None if _is_num(v) else "a number"


def _measured(v: Any) -> str | None:
    """A number that is not NaN (``max``/``min`` silently skip NaN); ±inf is a visible result."""
    return None if _is_num(v) and not math.isnan(v) else "a number (not NaN)"


def _finite(v: Any) -> str | None:
    return None if _is_num(v) and math.isfinite(v) else "a finite number"


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def inner(v: Any) -> str | None:
        return None if v is None or check(v) is None else f"{check(v)} or null"

    return inner


def _str_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(s, str) for s in v)
    return None if ok else "a list of strings"


Check = Callable[[Any], str | None]

#: Type of each documented row key (see ``certificate_row`` and ``backends.execute_trial``).
ROW_TYPES: dict[str, Check] = {
    # the certificate keys, as documented in normonly.experiments.rows.certificate_row
    "passed": _bool,
    "reason": _str,
    "radius": _finite,
    "dtype": _str,
    "n_points": _int,
    "tolerance": _finite,
    "output_scale": _measured,
    "max_abs_error": _measured,
    "max_abs_error_sphere": _measured,
    "max_rel_error": _measured,
    "error_bound": _optional(_num),
    "bound_rel": _optional(_num),
    "relu_unproven": _optional(_int),
    "min_relu_margin": _num,
    "max_cond": _num,
    "max_rel_residual": _num,
    "solvers": _str_list,
    "construct_time_s": _finite,
    "trainable": _optional(_int),
    "frozen": _optional(_int),
    "frozen_nonzero": _optional(_int),
    # the bookkeeping keys every row gets from the runner
    "key": _str,
    "seed": _int,
    "wall_time_s": _finite,
    "hostname": _str,
    "timestamp": _str,
    "device": _str,
    "normonly_version": _str,
    "torch_version": _str,
    "numpy_version": _str,
    "git_commit": _str,
}
assert set(CERTIFICATE_KEYS) <= set(ROW_TYPES)

#: Result keys that summaries compute with, per experiment (checked when present).
RESULT_TYPES: dict[str, dict[str, Check]] = {
    "E1": {
        "total_time_s": _finite,
        "target_params": _int,
        "cond2": _measured,  # +inf for a singular K
        "cond2_method": _str,
    },
    "E5": {
        "rank": _int,
        "n": _int,
        "d_in": _int,
        "d_out": _int,
        "ratio": _finite,
        "target_params": _int,
        "counting_bound_m": _int,
        "exact": _bool,
    },
}


@dataclass(frozen=True)
class Skipped:
    """One stored line that does not count, and why."""

    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field {self.field!r}" if self.field else "")
        return f"{where}: {self.reason}"


@dataclass
class StoredRows:
    """What :func:`load_rows` found in a ``rows.jsonl``."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # valid rows, in trial order
    skipped: list[Skipped] = field(default_factory=list)
    torn_bytes: int = 0  # an unfinished last line (removed by the next run)

    def by_key(self) -> dict[str, dict[str, Any]]:
        return {row["key"]: row for row in self.rows}

    def skipped_summary(self, limit: int = 5) -> str:
        """``"2 rows skipped (line 3: ...; line 9: ...)"``, or ``""`` when none were."""
        if not self.skipped:
            return ""
        shown = "; ".join(str(s) for s in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        n = len(self.skipped)
        return f"{n} row{'s' if n != 1 else ''} skipped ({shown}{more})"


def _normal(value: Any) -> Any:
    """The value as JSON stores it (tuples become lists)."""
    return json.loads(json.dumps(value))


def _same(a: Any, b: Any) -> bool:
    """Equal JSON values of the same kind (``1 == 1.0``, but ``1 != True != "1"`` here)."""
    if _is_num(a) and _is_num(b):
        return bool(a == b) or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def check_row(
    row: Any,
    trials: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Check] | None = None,
) -> tuple[str | None, str] | None:
    """Return ``(field, reason)`` if ``row`` must not count, else None.

    Parameters
    ----------
    row : Any
        A parsed line.
    trials : Mapping
        The config's trial specs by key, JSON-normalized (:func:`trial_specs`).
    extra : Mapping, optional
        Result keys of this experiment and their checks (:data:`RESULT_TYPES`).
    """
    if not isinstance(row, dict):
        return None, f"not a JSON object but {type(row).__name__}"
    key = row.get("key")
    if not isinstance(key, str):
        return "key", "missing or not a string"
    spec = trials.get(key)
    if spec is None:
        return "key", f"{key!r} is not a trial of this config"
    for name, expected in spec.items():
        if name not in row:
            return name, f"missing (trial {key} has {name} = {json.dumps(expected)})"
        if not _same(row[name], expected):
            return name, (
                f"{json.dumps(row[name])} does not match trial {key}'s {json.dumps(expected)}"
            )
    for name, check in (*ROW_TYPES.items(), *(extra or {}).items()):
        if name in row and (want := check(row[name])) is not None:
            return name, f"expected {want}, got {json.dumps(row[name])}"
    return None


def trial_specs(trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The trial specs by key, as they look after a JSON round trip."""
    return {t["key"]: _normal(t) for t in trials}


def load_rows(
    path: str | Path,
    experiment: str,
    trials: list[dict[str, Any]],
    *,
    warn: bool = True,
) -> StoredRows:
    """Read the rows of ``path`` that count for this config; skip and report the others.

    Parameters
    ----------
    path : str or Path
        A ``rows.jsonl`` file or the run directory holding it.
    experiment : str
        The experiment name (selects :data:`RESULT_TYPES`).
    trials : list of dict
        ``exp.trials(config)`` of the directory's config.
    warn : bool, default True
        Log one warning per skipped line (naming file, line and field).

    Returns
    -------
    StoredRows
        Valid rows in trial order (the first valid row of a key wins), and the skipped lines.
    """
    path = Path(path)
    if path.is_dir():
        path = path / store.ROWS_FILE
    scan = store.scan_rows(path)
    specs = trial_specs(trials)
    extra = RESULT_TYPES.get(experiment, {})
    found: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    result = StoredRows(path=path, torn_bytes=scan.torn_bytes)
    for number, row in scan.lines:
        problem = (
            (None, "not valid JSON") if row is store.NOT_JSON else check_row(row, specs, extra)
        )
        if problem is None and row["key"] in found:
            problem = ("key", f"duplicate of line {first_line[row['key']]} ({row['key']!r})")
        if problem is not None:
            result.skipped.append(Skipped(number, *problem))
            continue
        found[row["key"]] = row
        first_line[row["key"]] = number
    result.rows = [found[t["key"]] for t in trials if t["key"] in found]
    if warn:
        if scan.torn_bytes:
            logger.warning(
                "%s: ignoring an unfinished last line (%d bytes; the next run removes it)",
                path,
                scan.torn_bytes,
            )
        for skip in result.skipped:
            where = f"{path}:{skip.line}" + (f": field {skip.field!r}" if skip.field else "")
            logger.warning("%s: skipping the row: %s", where, skip.reason)
    return result
