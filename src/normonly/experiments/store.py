"""The results store: one directory per (experiment, config digest), rows appended crash-safely.

Layout::

    DIR/<experiment>/<digest>/config.json   experiment name, config dict, profile
    DIR/<experiment>/<digest>/rows.jsonl    one JSON object per finished trial
    DIR/<experiment>/<digest>/figures/      PNGs drawn from the rows

Appending is one ``write`` of one full line under an exclusive ``fcntl`` lock, followed by
``fsync``. Reading keeps only complete lines, so a line half-written when the process was killed
is skipped (with a warning) and never read as data; the next append removes it first. Which rows
count is decided by :mod:`normonly.experiments.rowcheck`; who may write a directory, and whether
its ``config.json`` belongs to it, by :mod:`normonly.experiments.rundir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from normonly._atomic import atomic_write_text
from normonly.experiments.bookkeeping import device_name, static_metadata

__all__ = [
    "Scan",
    "StoreError",
    "append_row",
    "device_name",
    "ensure_run_dir",
    "read_config",
    "read_rows",
    "repair_rows",
    "run_dir",
    "scan_rows",
    "static_metadata",
    "write_config",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ROWS_FILE = "rows.jsonl"
FIGURES_DIR = "figures"


class StoreError(OSError):
    """The results store could not be written (unwritable directory, disk full, ...).

    The message names the path and the reason; rows written before the error stay readable.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, err: int = 0):
        super().__init__(message)
        self.message = message
        self.errno = err or None
        self.strerror = message
        self.filename = None if path is None else os.fspath(path)

    def __str__(self) -> str:
        return self.message


def _store_error(action: str, path: Path, exc: OSError) -> StoreError:
    reason = exc.strerror or str(exc)
    hint = ""
    if exc.errno == errno.ENOSPC:
        hint = "; free some space (or pick another --out) and rerun: finished rows are kept"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; choose a writable --out directory"
    return StoreError(f"cannot {action} {path}: {reason}{hint}", path=path, err=exc.errno or 0)


def run_dir(out_dir: str | os.PathLike[str], experiment: str, digest: str) -> Path:
    """Return ``out_dir/experiment/digest`` (nothing is created)."""
    return Path(out_dir) / experiment / digest


def ensure_run_dir(path: str | os.PathLike[str]) -> Path:
    """Create a run directory and its ``figures/`` subdirectory.

    Raises
    ------
    StoreError
        If a directory cannot be created.
    """
    path = Path(path)
    try:
        (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _store_error("create the results directory", path, exc) from exc
    return path


def write_config(
    path: str | os.PathLike[str],
    experiment: str,
    config: Mapping[str, Any],
    profile: str,
    digest: str | None = None,
) -> Path:
    """Write ``config.json`` (experiment name, config dict, profile) atomically into a run dir.

    ``digest`` (the directory's name) is stored too when given, so the file names the
    directory it belongs to.

    Raises
    ------
    StoreError
        If the file cannot be written.
    """
    target = Path(path) / CONFIG_FILE
    payload = {"experiment": experiment, "config": dict(config), "profile": profile}
    if digest is not None:
        payload["digest"] = digest
    try:
        atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise _store_error("write", target, exc) from exc
    return target


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``config.json`` from a run directory (or the file itself)."""
    path = Path(path)
    target = path / CONFIG_FILE if path.is_dir() else path
    with open(target, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"{target} is not a normonly config.json (no 'config' table)")
    return data


@contextlib.contextmanager
def _locked(path: Path, flags: int, lock: int) -> Iterator[int]:
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, lock)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (the single low-level write point of the store)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _repair_tail(fd: int, path: Path) -> int:
    """Remove an unfinished last line (left by a killed writer); return the new file size.

    Runs under the exclusive lock: every writer appends whole lines under that lock, so bytes
    after the last newline belong to a writer that died. A tail that is a complete JSON object
    (only its newline is missing) is kept and given its newline.
    """
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = size
    while start > 0:
        block = os.pread(fd, min(start, 1 << 16), max(0, start - (1 << 16)))
        cut = block.rfind(b"\n")
        if cut >= 0:
            start = start - len(block) + cut + 1
            break
        start -= len(block)
    tail = os.pread(fd, size - start, start)
    try:
        complete = isinstance(json.loads(tail), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        complete = False
    if complete:
        if os.pwrite(fd, b"\n", size) != 1:  # at the end, also on a descriptor without O_APPEND
            raise OSError(errno.EIO, "short write")
        return size + 1
    os.ftruncate(fd, start)
    logger.warning(
        "%s: removed an unfinished last line (%d bytes) left by an interrupted run",
        path,
        size - start,
    )
    return start


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until a row is written whole (they are delivered right after)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def append_row(path: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append one row to ``rows.jsonl`` as a single, fsynced, exclusively locked line.

    An unfinished last line left by a killed writer is removed first, so later reads are quiet.
    SIGINT and SIGTERM wait until the line is written.

    Parameters
    ----------
    path : str or PathLike
        The ``rows.jsonl`` file (created if missing).
    row : Mapping
        A JSON-serializable row with a string ``"key"``.

    Raises
    ------
    StoreError
        If the file cannot be written (e.g. disk full); the file is restored to its previous
        length where possible, and earlier rows stay readable.
    TypeError
        If the row is not JSON-serializable.
    """
    path = Path(path)
    if not isinstance(row.get("key"), str):
        raise ValueError(f"a row needs a string 'key', got {row.get('key')!r}")
    line = (json.dumps(dict(row), separators=(",", ":")) + "\n").encode()
    try:
        with (
            _signals_deferred(),
            _locked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, fcntl.LOCK_EX) as fd,
        ):
            size = _repair_tail(fd, path)
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
    except OSError as exc:
        raise _store_error("append a row to", path, exc) from exc


def repair_rows(path: str | os.PathLike[str]) -> None:
    """Remove an unfinished last line of an existing ``rows.jsonl`` (see :func:`append_row`).

    Raises
    ------
    StoreError
        If the file cannot be repaired.
    """
    path = Path(path)
    if not path.exists():
        return
    try:
        with _signals_deferred(), _locked(path, os.O_RDWR, fcntl.LOCK_EX) as fd:
            _repair_tail(fd, path)
    except OSError as exc:
        raise _store_error("repair", path, exc) from exc


#: Stands for a line that is not valid JSON in :attr:`Scan.lines`.
NOT_JSON: Any = object()


@dataclasses.dataclass
class Scan:
    """The lines of a rows file: ``(line number, parsed JSON or NOT_JSON)`` and the torn tail."""

    lines: list[tuple[int, Any]]
    torn_bytes: int


def scan_rows(path: str | os.PathLike[str]) -> Scan:
    """Parse every complete line of a ``rows.jsonl`` (no checks, no warnings).

    Blank lines are left out; bytes after the last newline (a line cut by ``kill -9``) are
    counted in ``torn_bytes`` and never parsed. A missing file scans as empty.
    """
    path = Path(path)
    if not path.exists():
        return Scan([], 0)
    with _locked(path, os.O_RDONLY, fcntl.LOCK_SH) as fd:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    lines = b"".join(chunks).split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or an unfinished line
    parsed: list[tuple[int, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            parsed.append((number, json.loads(raw)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed.append((number, NOT_JSON))
    return Scan(parsed, len(tail) if tail.strip() else 0)


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the complete rows of a ``rows.jsonl`` file (or of a run directory), unvalidated.

    Lines that are not complete JSON objects with a string ``"key"`` (e.g. a line cut by
    ``kill -9``) are skipped with a logged warning; for duplicate keys the first row wins.
    ``run`` and ``report`` read through :func:`normonly.experiments.rowcheck.load_rows`
    instead, which also checks every row against the config's trials and the row schema.

    Parameters
    ----------
    path : str or PathLike
        The ``rows.jsonl`` file or the run directory holding it.

    Returns
    -------
    list of dict
        Rows in file order; empty if the file does not exist.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ROWS_FILE
    scan = scan_rows(path)
    if scan.torn_bytes:
        logger.warning("%s: ignoring an unfinished last line (%d bytes)", path, scan.torn_bytes)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, row in scan.lines:
        if row is NOT_JSON:
            logger.warning("%s:%d: skipping a line that is not valid JSON", path, number)
            continue
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            logger.warning("%s:%d: skipping a line that is not a row with a 'key'", path, number)
            continue
        if row["key"] in seen:
            logger.warning("%s:%d: duplicate key %r, keeping the first", path, number, row["key"])
            continue
        seen.add(row["key"])
        rows.append(row)
    return rows
