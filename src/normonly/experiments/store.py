"""The results store: one directory per (experiment, config digest), rows appended crash-safely.

Layout::

    DIR/<experiment>/<digest>/config.json   experiment name, config dict, profile
    DIR/<experiment>/<digest>/rows.jsonl    one JSON object per finished trial
    DIR/<experiment>/<digest>/figures/      PNGs drawn from the rows

Appending is one ``write`` of one full line under an exclusive ``fcntl`` lock, followed by
``fsync``. Reading keeps only complete lines that parse as JSON objects with a ``"key"``, so a line
half-written when the process was killed is skipped (with a warning) and never read as data; the
next append starts on a fresh line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from normonly._atomic import atomic_write_text

__all__ = [
    "StoreError",
    "append_row",
    "device_name",
    "ensure_run_dir",
    "read_config",
    "read_rows",
    "run_dir",
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
    path: str | os.PathLike[str], experiment: str, config: Mapping[str, Any], profile: str
) -> Path:
    """Write ``config.json`` (experiment name, config dict, profile) atomically into a run dir.

    Raises
    ------
    StoreError
        If the file cannot be written.
    """
    target = Path(path) / CONFIG_FILE
    payload = {"experiment": experiment, "config": dict(config), "profile": profile}
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


def append_row(path: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append one row to ``rows.jsonl`` as a single, fsynced, exclusively locked line.

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
        with _locked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, fcntl.LOCK_EX) as fd:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # never glue a row onto a half-written line
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
    except OSError as exc:
        raise _store_error("append a row to", path, exc) from exc


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the complete rows of a ``rows.jsonl`` file (or of a run directory).

    Lines that are not complete JSON objects with a string ``"key"`` (e.g. a line cut by
    ``kill -9``) are skipped with a logged warning; for duplicate keys the first row wins.

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
    if not path.exists():
        return []
    with _locked(path, os.O_RDONLY, fcntl.LOCK_SH) as fd:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    data = b"".join(chunks)
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or an unfinished line
    if tail.strip():
        logger.warning("%s: ignoring an unfinished last line (%d bytes)", path, len(tail))
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
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


# --- bookkeeping fields added to every row -------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _git_commit() -> str:
    """The commit of the repository this package is imported from, or ``"unknown"``."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if len(out) != 2 or not (Path(out[0]) / "src" / "normonly").is_dir():
        return "unknown"  # some other repository happens to contain the install
    return out[1]


@functools.cache
def static_metadata() -> dict[str, str]:
    """Versions and commit, computed once in the process that launches the sweep."""
    return {
        "normonly_version": _version("normonly"),
        "torch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "git_commit": _git_commit(),
    }


def device_name() -> str:
    """The CUDA device name if the trial imported torch and CUDA is available, else ``cpu``."""
    torch = sys.modules.get("torch")  # a trial that never imported torch ran on the CPU
    try:
        if torch is not None and torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # noqa: BLE001 - a broken CUDA setup still means "cpu" for bookkeeping
        pass
    return "cpu"
