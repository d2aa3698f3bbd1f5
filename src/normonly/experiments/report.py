"""Build ``report.md`` from saved results only (config.json + rows.jsonl of each run).

The report never reruns a trial: it reads the stored rows, asks each experiment for its summary
table and sentence, redraws its figures from those rows, and embeds them with relative paths, so
``normonly report DIR`` works on a copied results directory.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from normonly._atomic import atomic_write_text
from normonly.experiments import registry, rowcheck, rundir, store
from normonly.experiments.base import Experiment, draw_figures

__all__ = ["ReportError", "check_dirs", "find_runs", "write_report"]

logger = logging.getLogger(__name__)

_ENV_FIELDS = (
    ("normonly", "normonly_version"),
    ("torch", "torch_version"),
    ("numpy", "numpy_version"),
    ("commit", "git_commit"),
    ("device", "device"),
    ("host", "hostname"),
)


def _mtime(run: Path) -> float:
    paths = [run / store.CONFIG_FILE, run / store.ROWS_FILE]
    return max(p.stat().st_mtime for p in paths if p.exists())


def find_runs(out_dir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Map each experiment name to its run directories under ``out_dir``, newest first.

    Raises
    ------
    FileNotFoundError
        If ``out_dir`` is not a directory.
    """
    root = Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory {root} does not exist")
    runs: dict[str, list[Path]] = defaultdict(list)
    for config_path in root.glob(f"*/*/{store.CONFIG_FILE}"):
        try:
            name = str(store.read_config(config_path).get("experiment") or "")
        except (OSError, ValueError) as exc:
            logger.warning("skipping %s: %s", config_path, exc)
            continue
        runs[name or config_path.parent.parent.name].append(config_path.parent)
    return {name: sorted(dirs, key=_mtime, reverse=True) for name, dirs in runs.items()}


def _ordered(names: list[str]) -> list[tuple[str, Experiment | None]]:
    """Registered experiments in registration order, then unknown names alphabetically."""
    lookup = {e.name.casefold(): (i, e) for i, e in enumerate(registry.all_experiments())}

    def rank(name: str) -> tuple[int, int, str]:
        hit = lookup.get(name.casefold())
        return (0, hit[0], name) if hit else (1, 0, name)

    return [(n, lookup.get(n.casefold(), (0, None))[1]) for n in sorted(names, key=rank)]


def _values(rows: list[dict[str, Any]], field: str) -> str:
    seen = dict.fromkeys(str(r[field]) for r in rows if r.get(field) is not None)
    if field == "git_commit":
        seen = dict.fromkeys(v[:12] for v in seen)
    return ", ".join(seen) or "unknown"


def _setting(config: dict[str, Any], profile: str, digest: str, name: str) -> str:
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    return (
        f"Setting (profile `{profile}`, results in `{name}/{digest}/`):\n\n"
        "```toml\n" + "\n".join(lines) + "\n```\n"
    )


class ReportError(RuntimeError):
    """The report was written, but a summary or figure of some experiment failed."""


def _section(
    out_dir: Path,
    name: str,
    exp: Experiment | None,
    runs: list[Path],
    errors: list[str],
    drawn: Mapping[Path, list[Path] | Exception],
) -> tuple[str, list[dict[str, Any]]]:
    run = runs[0]
    meta = store.read_config(run)
    title = f"## {name} — {exp.title}" if exp else f"## {name}"
    parts = [title + "\n"]
    if exp is not None:
        parts.append(f"*{exp.question}*\n")
    parts.append(_setting(meta["config"], str(meta.get("profile", "?")), run.name, name))
    if len(runs) > 1:
        others = ", ".join(f"`{p.name}`" for p in runs[1:])
        parts.append(f"Older results with other settings, not shown: {others}.\n")
    if exp is None:
        rows = store.read_rows(run)
        parts.append(f"Experiment {name} is not registered here: {len(rows)} rows, no summary.\n")
        return "\n".join(parts), rows
    try:
        config = exp.config_cls.from_dict(meta["config"])
        trials = exp.trials(config)
    except (TypeError, ValueError) as exc:
        parts.append(f"**The stored config no longer matches {name}'s config class:** {exc}\n")
        return "\n".join(parts), []
    stored = rowcheck.load_rows(run, exp.name, trials)
    rows = stored.rows
    if stored.skipped:
        logger.warning("%s: %s; they are not counted", stored.path, stored.skipped_summary(3))
        parts.append(
            f"**{stored.skipped_summary(10)}**: these stored rows are not counted (each was "
            "reported with its file, line and field when the report was built).\n"
        )
    if rows:
        try:
            table, sentence = exp.summarize(config, rows)
            parts.append(table.rstrip() + "\n")
            parts.append(sentence.strip() + "\n")
        except Exception as exc:  # noqa: BLE001 - one broken summary must not hide the others
            text = " ".join(f"{type(exc).__name__}: {exc}".split())
            errors.append(f"{name} ({stored.path}): the summary failed: {text}")
            parts.append(f"**Summary failed:** `{text}`\n")
        try:
            figures = drawn.get(run.resolve())  # already drawn from these rows by reproduce
            if isinstance(figures, Exception):
                raise figures
            if figures is None:
                figures = draw_figures(exp, config, rows, run / store.FIGURES_DIR)
        except Exception as exc:  # noqa: BLE001
            text = " ".join(f"{type(exc).__name__}: {exc}".split())
            errors.append(f"{name} ({stored.path}): the figures failed: {text}")
            parts.append(f"**Figures failed:** `{text}`\n")
            figures = []
        for fig in figures:
            rel = Path(os.path.relpath(Path(fig).resolve(), out_dir.resolve())).as_posix()
            parts.append(f"![{name}: {Path(fig).stem}]({rel})\n")
    else:
        parts.append("No finished trials yet.\n")
    wall = sum(float(r.get("wall_time_s") or 0.0) for r in rows)
    parts.append(
        f"{len(rows)} of {len(trials)} trials stored; total trial wall time {wall:.1f} s.\n"
    )
    return "\n".join(parts), rows


def check_dirs(out_dir: str | os.PathLike[str]) -> None:
    """Check that every results directory under ``out_dir`` holds its own ``config.json``.

    Raises
    ------
    IdentityError
        For a directory whose ``config.json`` is missing (while rows exist) or belongs to other
        settings (:func:`normonly.experiments.rundir.check_identity`).
    """
    root = Path(out_dir)
    dirs = {p.parent for pattern in (store.CONFIG_FILE, store.ROWS_FILE)
            for p in root.glob(f"*/*/{pattern}")}  # fmt: skip
    for run in sorted(dirs):
        try:
            exp: Experiment | None = registry.get(run.parent.name)
        except ValueError:
            exp = None
        rundir.check_identity(run, exp)


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    figures: Mapping[str | os.PathLike[str], list[Path] | Exception] | None = None,
) -> Path:
    """Write ``out_dir/report.md`` from the saved results and redraw every figure.

    For an experiment with several config directories the most recently modified one is shown
    and the others are listed. Rows are read by :func:`normonly.experiments.rowcheck.load_rows`
    (as ``run`` reads them to resume): rows that are not trials of the directory's config or
    have wrong types are skipped, named in a warning and in the report, and never counted.

    Parameters
    ----------
    out_dir : str or PathLike
        A results root written by ``run_experiment`` (:mod:`normonly.experiments.runner`).
    figures : mapping, optional
        ``{run directory: figure paths}`` of runs whose figures were just drawn from the same
        stored rows (by ``reproduce``'s workers), so they are embedded, not drawn again; a value
        that is an exception is reported as that run's failed figures.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    FileNotFoundError
        If ``out_dir`` does not exist.
    IdentityError
        If a results directory's ``config.json`` is missing or belongs to other settings (see
        :func:`check_dirs`); nothing is written.
    ReportError
        After writing the report, if a summary or the figures of an experiment raised.
    StoreError
        If the report cannot be written.
    """
    root = Path(out_dir)
    runs = find_runs(root)
    check_dirs(root)
    drawn = {Path(run).resolve(): paths for run, paths in (figures or {}).items()}
    sections, all_rows, errors = [], [], []
    for name, exp in _ordered(list(runs)):
        text, rows = _section(root, name, exp, runs[name], errors, drawn)
        sections.append(text)
        all_rows.extend(rows)
    env = " · ".join(f"{label} {_values(all_rows, field)}" for label, field in _ENV_FIELDS)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        "# normonly — reproduction report\n",
        f"Generated {now} from the saved results in `{root}` (no trial was rerun).\n",
        f"Environment: {env}.\n",
    ]
    if not sections:
        header.append("No results found.\n")
    path = root / "report.md"
    try:
        atomic_write_text(path, "\n".join(header + sections))
    except OSError as exc:
        raise store.StoreError(f"cannot write {path}: {exc.strerror or exc}", path=path) from exc
    logger.debug("report written to %s", path)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ReportError(f"{errors[0]}{more}; {path} was written with the failure noted")
    return path
