"""Who may write a run directory, and whether its ``config.json`` belongs to it.

* One writer per directory: :func:`writer_lock` holds an exclusive ``fcntl.flock`` on
  ``DIR/<experiment>/<digest>/run.lock`` for the whole run and writes its PID, host and start
  time into the file. A second run on the same directory is refused at once with those details.
  The kernel drops the lock when its process dies (even by ``kill -9``), so the lock of a killed
  run is stale by construction and simply taken over (the old holder is named in the log).
* The config is the identity of a directory: the directory is named by the digest of its config,
  so :func:`check_identity` refuses a ``config.json`` that names another digest or holds settings
  of another digest, and a directory with rows but no ``config.json``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from normonly.experiments import store
from normonly.experiments.pool import pid_alive

__all__ = ["IdentityError", "RunLocked", "check_identity", "writer_lock"]

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"


class RunLocked(store.StoreError):
    """Another run is writing the same results directory."""


class IdentityError(store.StoreError):
    """A results directory's ``config.json`` is missing or belongs to another config."""




def _holder(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _read_holder(fd: int, wait_s: float = 1.0) -> dict[str, Any]:
    """The lock holder's details; it writes them just after taking the lock, so wait a little."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if holder or time.monotonic() >= deadline:
            return holder
        time.sleep(0.02)


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another run (it has not written its details yet)"
    return (
        f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


@contextlib.contextmanager
def writer_lock(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the writer lock of a run directory for the duration of the ``with`` block.

    Raises
    ------
    RunLocked
        At once, if another live run holds the lock; the message names its PID, host and
        start time.
    StoreError
        If the lock file cannot be created.
    """
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise store.StoreError(
            f"cannot create the lock file {path}: {exc.strerror or exc}", path=path
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            here = holder.get("host") == socket.gethostname()
            orphaned = here and isinstance(holder.get("pid"), int) and not pid_alive(holder["pid"])
            note = (
                " (that process has ended, but processes it started still hold the lock: "
                "stop them first)"
                if orphaned
                else "; wait for it to finish or stop it, then rerun to resume"
            )
            raise RunLocked(
                f"{directory} is being written by another run: {_describe(holder)}{note}",
                path=path,
                err=errno.EBUSY,
            ) from None
        old = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if old.get("pid") is not None:
            logger.info("%s: taking over the lock of an ended run (%s)", path, _describe(old))
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a cleanly ended run leaves no holder behind
    finally:
        os.close(fd)  # releases the flock


def _stored_digest(meta: dict[str, Any], exp: Any) -> str | None:
    """The digest of the settings in ``config.json`` (None if they no longer parse)."""
    try:
        return str(exp.digest(exp.config_cls.from_dict(meta["config"])))
    except (TypeError, ValueError):
        return None


def check_identity(directory: str | os.PathLike[str], exp: Any | None) -> dict[str, Any] | None:
    """Check that ``config.json`` belongs to ``directory``; return it (None if there is none).

    The directory name is the digest of its config: ``config.json`` must name the same
    experiment and digest (when it records one) and, when ``exp`` is given and the settings still
    parse, its settings must hash to that digest.

    Raises
    ------
    IdentityError
        For a mismatch, an unreadable ``config.json``, or rows without a ``config.json``; the
        message names the directory and what it holds.
    """
    run = Path(directory)
    config_path, rows_path = run / store.CONFIG_FILE, run / store.ROWS_FILE
    if not config_path.exists():
        if rows_path.exists() and rows_path.stat().st_size:
            raise IdentityError(
                f"{rows_path} holds rows but {config_path} is missing, so nothing says which "
                f"settings they belong to; rerun 'normonly run {run.parent.name}' with the "
                f"settings whose digest is {run.name} to restore it (stored rows are kept)",
                path=config_path,
            )
        return None
    try:
        meta = store.read_config(config_path)
    except (OSError, ValueError) as exc:
        raise IdentityError(f"cannot read {config_path}: {exc}", path=config_path) from exc
    name = str(meta.get("experiment") or "")
    if name and name != run.parent.name:
        raise IdentityError(
            f"{config_path} is the config of experiment {name}, but the directory "
            f"{run} belongs to {run.parent.name}",
            path=config_path,
        )
    recorded = meta.get("digest")
    computed = _stored_digest(meta, exp) if exp is not None else None
    if recorded is not None and recorded != run.name:
        raise IdentityError(
            f"{config_path} names digest {recorded}, but it sits in directory {run.name} "
            f"(rows there belong to the settings of digest {run.name}); put back the right "
            "config.json or move the rows",
            path=config_path,
        )
    if recorded is None and computed is not None and computed != run.name:
        raise IdentityError(
            f"{config_path} holds settings of digest {computed}, but it sits in directory "
            f"{run.name} (rows there belong to the settings of digest {run.name}); put back the "
            "right config.json or move the rows",
            path=config_path,
        )
    if computed is not None and computed != run.name:
        logger.warning(
            "%s: the settings now hash to %s, not %s: %s's config class changed since "
            "these results were written (or the file was edited)",
            config_path,
            computed,
            run.name,
            run.parent.name,
        )
    return meta
