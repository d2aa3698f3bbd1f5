"""The local process pool of the runner, and the signal handling that leaves no orphans.

* :func:`signals_stop_run` turns SIGTERM into :class:`Terminated` (a ``SystemExit`` with code
  143) and SIGINT into ``KeyboardInterrupt`` (exit code 130 from the command line) while a sweep
  runs in the main thread; unwinding stops the pool and keeps the rows already written.
* :func:`run_pool` terminates its workers (SIGTERM, then SIGKILL after a grace period) whenever
  the sweep ends early, instead of waiting for the trials in flight.
* Each worker dies with the process that started the sweep: on Linux through
  ``prctl(PR_SET_PDEATHSIG)``, everywhere through a watcher thread that polls the parent PID and
  the sweep's PID, so ``kill -9`` of the sweep leaves nothing running.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

__all__ = ["SharedPool", "Terminated", "open_pool", "run_pool", "shared_pool", "signals_stop_run"]

#: Per finished task: (task, result or None, exception or None).
Results = Generator[tuple[Any, Any, BaseException | None], None, None]

_POLL_S = 0.25  # how often a worker checks that its sweep is still alive
_GRACE_S = 3.0  # how long a worker may take to die after SIGTERM before it gets SIGKILL


class Terminated(SystemExit):
    """The sweep got SIGTERM; exits with 143 (128 + 15) once the pool is stopped."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _on_sigint(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_stop_run() -> Iterator[None]:
    """Raise :class:`Terminated` on SIGTERM and ``KeyboardInterrupt`` on SIGINT in this block.

    Only in the main thread (elsewhere signals cannot be handled, and nothing is changed); an
    ignored SIGINT (e.g. a background job) stays ignored. The old handlers are restored after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _on_sigterm)
    if old[signal.SIGINT] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        for sig, handler in old.items():
            if handler is not None:
                signal.signal(sig, handler)


# --- worker side ---------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # killed but not yet reaped by its own parent: a zombie is not running
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent exits."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _watch(parent: int, sweep: int) -> None:
    while True:
        time.sleep(_POLL_S)
        if os.getppid() != parent or not pid_alive(sweep):
            os._exit(1)  # the sweep is gone: nobody will read this worker's result


def worker_init(sweep_pid: int) -> None:
    """Initializer of each pool worker: die with the sweep, leave SIGINT to the sweep."""
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent or not pid_alive(sweep_pid):  # died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the sweep, which stops us
    threading.Thread(target=_watch, args=(parent, sweep_pid), daemon=True).start()


# --- main side -----------------------------------------------------------------------------------


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers now (SIGKILL after a grace)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    deadline = time.monotonic() + _GRACE_S
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)


def _context(preload: list[str]) -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # import the heavy modules once in the server; each worker is then a cheap fork of it
        context.set_forkserver_preload([__name__, *preload])
        return context
    return multiprocessing.get_context("spawn")


#: Imported once in the fork server instead of once per worker: torch, and what its optimizers
#: import on first use (torch._dynamo, ~1.7 s of CPU per process on a 2-core machine).
_SERVER_PRELOAD = ["torch", "torch._dynamo"]


def open_pool(jobs: int, preload: list[str]) -> cf.ProcessPoolExecutor:
    """A pool of ``jobs`` workers that die with this process (torch and the modules in
    ``preload`` are imported once in the fork server, so each worker starts with them)."""
    return cf.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=_context([*_SERVER_PRELOAD, *preload]),
        initializer=worker_init,
        initargs=(os.getpid(),),
    )


class SharedPool:
    """One pool for several sweeps in a row (see :func:`shared_pool`)."""

    def __init__(self, jobs: int, preload: list[str]) -> None:
        self.jobs, self.preload = jobs, preload
        self._pool: cf.ProcessPoolExecutor | None = None

    def get(self) -> cf.ProcessPoolExecutor:
        """The running pool; a new one if there is none yet or a worker died (broken pool)."""
        if self._pool is None or getattr(self._pool, "_broken", False):
            if self._pool is not None:
                _stop_workers(self._pool)
            self._pool = open_pool(self.jobs, self.preload)
        return self._pool

    def stop(self) -> None:
        """Terminate the workers now."""
        if self._pool is not None:
            _stop_workers(self._pool)
            self._pool = None

    def close(self) -> None:
        """Shut the pool down after the work already submitted."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@contextlib.contextmanager
def shared_pool(jobs: int, preload: list[str]) -> Iterator[SharedPool]:
    """A :class:`SharedPool` for several sweeps in a row.

    Its workers, their imports and their caches (a generated dataset, a trained classifier) start
    once instead of once per sweep. They are stopped at once if the block raises and shut down
    cleanly otherwise; the pool itself is only started by the first :meth:`SharedPool.get`.
    """
    shared = SharedPool(jobs, preload)
    try:
        yield shared
    except BaseException:
        shared.stop()
        raise
    shared.close()


def run_pool(
    func: Callable[..., Any],
    tasks: list[tuple[Any, tuple[Any, ...]]],
    jobs: int,
    preload: list[str],
    pool: cf.ProcessPoolExecutor | None = None,
) -> Results:
    """Run ``func(*args)`` for each ``(task, args)`` in ``jobs`` worker processes.

    Yields ``(task, result, None)`` or ``(task, None, exception)`` as tasks finish. If the
    consumer stops early (an exception, ``close()``, a signal), the workers are terminated at
    once; on a normal end the pool is shut down cleanly. A ``pool`` from :func:`shared_pool`
    is used instead of a new one and left running at a normal end.
    """
    own = pool is None
    pool = open_pool(jobs, preload) if pool is None else pool
    try:
        futures = {pool.submit(func, *args): task for task, args in tasks}
        for future in cf.as_completed(futures):
            try:
                yield futures[future], future.result(), None
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                yield futures[future], None, exc
    except BaseException:
        _stop_workers(pool)
        raise
    if own:
        pool.shutdown(wait=True)
