"""Progress of a sweep: a tqdm bar on a terminal, plain lines every few seconds elsewhere.

When stderr is not a terminal (CI, ``| tee``, nohup) a bar is useless, so a line such as
``E4: 12/96 trials, 35 s elapsed, ETA 3 min 55 s`` is logged at least every ``every`` seconds —
also while one long trial runs (a timer thread), so a job never looks hung.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

__all__ = ["progress"]

logger = logging.getLogger("normonly")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class _Lines:
    """A tqdm-like object that logs progress lines on a timer."""

    def __init__(self, total: int, initial: int, desc: str, every: float) -> None:
        self.total, self.n, self.desc, self.every = total, initial, desc, every
        self.start_n = initial
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._tick, daemon=True, name="normonly-progress")
        self._thread.start()

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        done = self.n - self.start_n
        text = f"{self.desc}: {self.n}/{self.total} trials, {_duration(elapsed)} elapsed"
        if done > 0 and self.n < self.total:
            eta = elapsed / done * (self.total - self.n)
            text += f", ETA {_duration(eta)}"
        return text

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                logger.info("%s", self.line())

    def update(self, k: int = 1) -> None:
        with self._lock:
            self.n += k

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        with self._lock:
            logger.info("%s", self.line())

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int, initial: int, desc: str, enabled: bool, every: float = 10.0) -> Any:
    """A progress reporter for ``total`` trials of which ``initial`` are already done."""
    from tqdm.auto import tqdm

    if enabled and sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit="trial")
    if enabled and initial < total:
        return _Lines(total, initial, desc, every)
    return tqdm(total=total, initial=initial, desc=desc, unit="trial", disable=True)
