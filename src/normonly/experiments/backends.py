"""How trials run: in this process, in a pool of local worker processes, or on Ray.

Each backend yields ``(trial, row or None, error text or None)`` as trials finish; the runner
(:mod:`normonly.experiments.runner`) stores the rows and reports the failures.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Generator, Iterable
from datetime import UTC, datetime
from typing import Any

from normonly.experiments import store
from normonly.experiments.base import Experiment, ExperimentConfig
from normonly.experiments.pool import SharedPool, run_pool

__all__ = ["execute_trial", "run_local", "run_ray", "error_text", "preload", "Results"]

#: What a backend yields per finished trial: (trial, row or None, error text or None).
Results = Generator[tuple[dict[str, Any], dict[str, Any] | None, str | None], None, None]


def execute_trial(
    run_trial: Callable[[Any, dict[str, Any]], dict[str, Any]],
    config: ExperimentConfig,
    trial: dict[str, Any],
    meta: dict[str, str],
) -> dict[str, Any]:
    """Run one trial and return its row with the bookkeeping fields (runs inside the worker).

    The row holds the trial spec, then the result, then ``key``, ``seed``, ``wall_time_s``, the
    versions and commit in ``meta``, ``hostname``, ``timestamp`` and ``device`` (the experiment's
    own ``device`` field wins if it sets one).
    """
    from normonly._threads import limit_threads

    start = time.perf_counter()
    with limit_threads(1):  # small tensors: one intra-op thread; --jobs gives the parallelism
        result = run_trial(config, trial)
    wall = time.perf_counter() - start
    if not isinstance(result, dict):
        raise TypeError(f"run_trial must return a dict, got {type(result).__name__}")
    row = {**trial, **result}
    row.setdefault("device", store.device_name())
    row.update(
        key=trial["key"],
        seed=trial["seed"],
        wall_time_s=wall,
        hostname=socket.gethostname(),
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
    )
    return row


def error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # Ray wraps the trial's exception
    exc = cause if isinstance(cause, BaseException) else exc
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def preload(exps: Iterable[Experiment]) -> list[str]:
    """Modules the pool's fork server imports once: this one and the experiments' trials."""
    modules = [__name__, *(getattr(e.run_trial, "__module__", __name__) for e in exps)]
    return list(dict.fromkeys(modules))


def run_local(
    exp: Experiment,
    config: ExperimentConfig,
    todo: list[dict[str, Any]],
    jobs: int,
    meta: dict,
    pool: SharedPool | None = None,
) -> Results:
    if pool is None and jobs == 1:
        for trial in todo:
            try:
                yield trial, execute_trial(exp.run_trial, config, trial, meta), None
            except Exception as exc:  # noqa: BLE001 - collected and reported after the sweep
                yield trial, None, error_text(exc)
        return
    tasks = [(t, (exp.run_trial, config, t, meta)) for t in todo]
    executor = None if pool is None else pool.get()
    for trial, row, exc in run_pool(execute_trial, tasks, jobs, preload([exp]), executor):
        yield trial, row, None if exc is None else error_text(exc)


def run_ray(
    exp: Experiment,
    config: ExperimentConfig,
    todo: list[dict[str, Any]],
    jobs: int,
    meta: dict,
    address: str | None,
) -> Results:
    try:
        import ray
    except ImportError as exc:
        raise ModuleNotFoundError(
            "--backend ray needs the ray package: pip install 'normonly[ray]'"
        ) from exc
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address, log_to_driver=False)
    elif started:
        ray.init(
            num_cpus=jobs, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False
        )
    try:
        remote = ray.remote(execute_trial)
        pending = {remote.remote(exp.run_trial, config, t, meta): t for t in todo}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    trial = pending.pop(ref)
                    try:
                        yield trial, ray.get(ref), None
                    except Exception as exc:  # noqa: BLE001
                        yield trial, None, error_text(exc)
        finally:
            for ref in pending:
                ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()
