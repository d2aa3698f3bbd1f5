"""Crash-safe file writes: a reader sees the old file or the new one, never half of one.

The recipe is the usual one: write a temporary file in the same directory, ``fsync`` it,
``os.replace`` it over the destination (atomic on POSIX within one file system), then ``fsync``
the directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text"]


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk; silently skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination file. Its parent directory must exist.
    data : bytes
        The full new content.

    Returns
    -------
    Path
        The destination path.

    Raises
    ------
    OSError
        If the directory is not writable or the disk is full; the destination is then untouched
        and no temporary file is left behind.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
    >>> _ = atomic_write_bytes(p, b"abc")
    >>> p.read_bytes()
    b'abc'
    """
    path = Path(path)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Parameters
    ----------
    path : str or PathLike
        Destination file. Its parent directory must exist.
    text : str
        The full new content.
    encoding : str, default "utf-8"
        Text encoding.

    Returns
    -------
    Path
        The destination path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> atomic_write_text(p, "hi").read_text()
    'hi'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))
