"""Run an experiment's trials with resume, parallelism and crash-safe storage.

Every finished trial is appended to ``rows.jsonl`` at once, so a crash loses at most the trials in
flight; rerunning the same command skips the keys already stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from normonly.experiments import registry, rowcheck, rundir, store
from normonly.experiments.backends import preload, run_local, run_ray
from normonly.experiments.base import Experiment, ExperimentConfig, draw_figures
from normonly.experiments.pool import (
    SharedPool,
    Terminated,
    shared_pool,
    signals_stop_run,
)
from normonly.experiments.progress import progress as progress_reporter
from normonly.experiments.report import write_report

__all__ = ["TrialsFailed", "reproduce", "run_experiment"]

logger = logging.getLogger(__name__)


class TrialsFailed(RuntimeError):
    """Some trials raised; their keys and messages are in ``failures`` (other rows are stored)."""

    def __init__(self, experiment: str, failures: list[tuple[str, str]], total: int | None = None):
        self.experiment = experiment
        self.failures = failures
        shown = "; ".join(f"{key}: {msg}" for key, msg in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        of = f" of {total}" if total is not None else ""
        super().__init__(
            f"{len(failures)}{of} trials of {experiment} failed ({shown}{more}); "
            "the other rows are stored, rerun to retry the failed ones"
        )


def _check_trials(exp: Experiment, trials: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for trial in trials:
        key, seed = trial.get("key"), trial.get("seed")
        if not isinstance(key, str) or isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{exp.name}: each trial needs a str 'key' and an int 'seed': {trial}")
        if key in seen:
            raise ValueError(f"{exp.name}: duplicate trial key {key!r}")
        seen.add(key)


def _infer_profile(exp: Experiment, config: ExperimentConfig) -> str:
    if config == exp.config_cls.quick():
        return "quick"
    if config == exp.config_cls.full():
        return "full"
    return "custom"


def _sweep(
    exp: Experiment,
    config: ExperimentConfig,
    trials: list[dict[str, Any]],
    done: dict[str, dict[str, Any]],
    rows_path: Path,
    jobs: int,
    backend: str,
    ray_address: str | None,
    progress: bool,
    pool: SharedPool | None = None,
) -> list[tuple[str, str]]:
    """Run the trials not in ``done``, append each valid row at once; return the failures."""
    todo = [t for t in trials if t["key"] not in done]
    logger.info(
        "%s: %d trials, %d already stored, running %d (%s, jobs=%d) -> %s",
        exp.name,
        len(trials),
        len(trials) - len(todo),
        len(todo),
        backend,
        jobs,
        rows_path.parent,
    )
    failures: list[tuple[str, str]] = []
    if not todo:
        return failures
    meta = store.static_metadata()
    if backend == "ray":
        results = run_ray(exp, config, todo, jobs, meta, ray_address)
    else:
        results = run_local(exp, config, todo, jobs, meta, pool)
    specs = rowcheck.trial_specs(trials)
    extra = rowcheck.RESULT_TYPES.get(exp.name, {})
    bar = progress_reporter(len(trials), len(trials) - len(todo), exp.name, progress)
    with contextlib.closing(results), bar:
        for trial, row, error in results:
            problem = None if row is None else rowcheck.check_row(_jsonable(row), specs, extra)
            if problem is not None:
                field, reason = problem
                error = f"its row is not stored: field {field!r}: {reason}"
                row = None
            if row is None:
                failures.append((trial["key"], error or "unknown error"))
                logger.warning("%s: trial %s failed: %s", exp.name, trial["key"], error)
            else:
                store.append_row(rows_path, row)
                done[trial["key"]] = row
            bar.update(1)
    return failures


def _jsonable(row: dict[str, Any]) -> Any:
    """The row as it will read back from the file (tuples become lists, ...)."""
    try:
        return json.loads(json.dumps(row))
    except (TypeError, ValueError):
        return row  # append_row reports what cannot be stored


def run_experiment(
    exp: Experiment,
    config: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    jobs: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
    profile: str | None = None,
    figures: bool = True,
    pool: SharedPool | None = None,
) -> list[dict[str, Any]]:
    """Run the trials of ``exp`` not yet stored under ``out_dir``, store them, draw the figures.

    Only one run may write a results directory at a time; stored rows are read and checked by
    :func:`normonly.experiments.rowcheck.load_rows` (as the report reads them), and a trial whose
    row fails those checks counts as failed and is not stored. SIGTERM stops the workers and
    exits with 143 (SIGINT: ``KeyboardInterrupt``); finished rows are kept.

    Parameters
    ----------
    exp : Experiment
        The experiment.
    config : ExperimentConfig
        An instance of ``exp.config_cls``.
    out_dir : str or PathLike
        Results root; rows go to ``out_dir/<exp.name>/<digest>/rows.jsonl``.
    jobs : int, default 1
        Parallel workers: 1 runs in this process, more use a process pool (or Ray CPUs).
    backend : {"local", "ray"}, default "local"
        Where trials run.
    ray_address : str, optional
        Address of an existing Ray cluster (``backend="ray"`` only).
    progress : bool, default True
        Show progress: a tqdm bar on a terminal, a line at least every 10 s otherwise.
    profile : str, optional
        Label stored in ``config.json``; inferred ("quick", "full" or "custom") if omitted.
    figures : bool, default True
        Draw the figures from the stored rows. :func:`reproduce` passes False because its
        report redraws every figure from the same rows right after (drawing costs seconds).
    pool : SharedPool, optional
        Worker pool to run the trials in (local backend), instead of a new one for this sweep
        (:func:`reproduce` shares one across experiments); ``jobs`` is then its size.

    Returns
    -------
    list of dict
        The stored rows of this config's trials, in trial order.

    Raises
    ------
    TrialsFailed
        After the sweep, if any trial raised or returned a row that fails the row checks (the
        others are stored).
    RunLocked
        At once, if another run is writing the same directory (its PID, host and start time
        are in the message).
    IdentityError
        If the directory's ``config.json`` belongs to other settings.
    StoreError
        If the results cannot be written; rows written before stay readable.
    ValueError, TypeError
        For bad arguments or a config of the wrong class.
    """
    if not isinstance(exp, Experiment):
        raise TypeError(f"exp must be an Experiment, got {type(exp).__name__}")
    if not isinstance(config, exp.config_cls):
        raise TypeError(f"config for {exp.name} must be a {exp.config_cls.__name__}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if ray_address is not None and backend != "ray":
        raise ValueError("ray_address is only used with backend='ray'")
    if pool is not None and backend != "local":
        raise ValueError("pool is only used with backend='local'")

    digest = exp.digest(config)
    path = store.ensure_run_dir(store.run_dir(out_dir, exp.name, digest))
    trials = exp.trials(config)
    _check_trials(exp, trials)
    with rundir.writer_lock(path), signals_stop_run():
        if (path / store.CONFIG_FILE).exists():
            rundir.check_identity(path, exp)
        elif (path / store.ROWS_FILE).exists():  # the directory name vouches for these settings
            logger.warning("%s: config.json was missing; written again from these settings", path)
        store.write_config(
            path, exp.name, config.to_dict(), profile or _infer_profile(exp, config), digest
        )
        rows_path = path / store.ROWS_FILE
        store.repair_rows(rows_path)
        stored = rowcheck.load_rows(rows_path, exp.name, trials)
        done = stored.by_key()
        try:
            failures = _sweep(exp, config, trials, done, rows_path, jobs, backend, ray_address,
                              progress, pool)  # fmt: skip
        except Terminated:
            logger.error(
                "%s: terminated; the %d finished trials are stored (rerun to resume)",
                exp.name,
                len(done),
            )
            raise
    if failures:
        order = {t["key"]: i for i, t in enumerate(trials)}
        failures.sort(key=lambda kv: order[kv[0]])
        raise TrialsFailed(exp.name, failures, len(trials))

    rows = [done[t["key"]] for t in trials]
    if not figures:
        return rows
    try:
        draw_figures(exp, config, rows, path / store.FIGURES_DIR)
    except OSError as exc:
        raise store.StoreError(f"cannot write the figures of {exp.name} in {path}: {exc}") from exc
    return rows


def reproduce(
    out_dir: str | os.PathLike[str],
    *,
    profile: str = "quick",
    only: Iterable[str] | None = None,
    jobs: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
) -> Path:
    """Run every registered experiment (or those in ``only``) with a preset and write the report.

    Parameters
    ----------
    out_dir : str or PathLike
        Results root.
    profile : {"quick", "full"}, default "quick"
        Which preset of each experiment to run.
    only : iterable of str, optional
        Experiment names (case-insensitive); all registered experiments if omitted.
    jobs, backend, ray_address, progress
        As in :func:`run_experiment`. With the local backend and ``jobs > 1`` one pool of
        workers serves every experiment (each worker imports and caches once) and draws each
        experiment's figures while the next one runs; otherwise the report draws them. Either
        way every figure is drawn once, from the stored rows.

    Returns
    -------
    Path
        The written ``report.md``.

    Raises
    ------
    TrialsFailed
        After all experiments ran and the report was written, if any trial failed.
    """
    if profile not in ("quick", "full"):
        raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")
    if only is None:
        experiments = registry.all_experiments(strict=True)
    else:
        experiments = [registry.get(name) for name in only]
    if not experiments:
        raise ValueError("no experiments are registered (nothing to reproduce)")
    failed: list[TrialsFailed] = []
    drawn: dict[Path, Any] = {}  # run directory -> future of its figures (drawn by a worker)
    with contextlib.ExitStack() as stack:
        pool = None
        if backend == "local" and jobs > 1:  # one pool for all experiments: workers start once
            pool = stack.enter_context(shared_pool(jobs, preload(experiments)))
        for exp in experiments:
            config = exp.preset(profile)
            try:
                rows = run_experiment(
                    exp,
                    config,
                    out_dir,
                    jobs=jobs,
                    backend=backend,
                    ray_address=ray_address,
                    progress=progress,
                    profile=profile,
                    figures=False,  # drawn once: by a worker below, or by write_report
                    pool=pool,
                )
            except TrialsFailed as exc:
                logger.error("%s", exc)
                failed.append(exc)
                continue
            if pool is not None:  # drawn while the next experiment's trials run
                run = store.run_dir(out_dir, exp.name, exp.digest(config))
                directory = run / store.FIGURES_DIR
                drawn[run] = pool.get().submit(draw_figures, exp, config, rows, directory)
        figures = {run: _outcome(future) for run, future in drawn.items()}
    report = write_report(out_dir, figures=figures)
    if failed:
        failures = [(f"{e.experiment}/{k}", m) for e in failed for k, m in e.failures]
        raise TrialsFailed(", ".join(e.experiment for e in failed), failures)
    return report


def _outcome(future: Any) -> list[Path] | Exception:
    """The figure paths a worker returned, or the exception it raised."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the report notes it as a failed figure
        return exc
