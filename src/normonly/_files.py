"""Reading safetensors files defensively: no pickle, clear errors for anything else."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["read_safetensors", "load_points", "require_regular_file", "available_memory"]

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def require_regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it names a regular file; a one-line error at once otherwise.

    A FIFO, socket or device is refused before it is opened (opening a FIFO would wait forever
    for a writer).
    """
    import stat

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist")
    if p.is_dir():
        raise IsADirectoryError(f"{what} path {str(p)!r} is a directory, expected a file")
    mode = p.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = (
            "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file"
        )  # fmt: skip
        raise ValueError(f"{what} path {str(p)!r} is {kind}; give a regular file")
    return p


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_size(f, p: Path, what: str) -> None:
    """Refuse, from the header alone, tensors that would not fit in memory."""
    total = 0
    for k in f.keys():  # noqa: SIM118 (safe_open API)
        sl = f.get_slice(k)
        n = 1
        for dim in sl.get_shape():
            n *= int(dim)
        total += n * 8  # loaded as float64 copies
    avail = available_memory()
    if avail is not None and total > avail // 2:
        raise ValueError(
            f"{p}: the {what} holds {total // 8:,} numbers ({total / 2**30:.1f} GiB as float64), "
            f"more than this machine can load and work with ({avail / 2**30:.1f} GiB available)"
        )


def read_safetensors(
    path: str | os.PathLike, *, what: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(tensors, metadata)`` of a safetensors file, parsed without unpickling.

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        What the file should hold, for error messages ("target network", ...).

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        The path does not name a readable file.
    ValueError
        The file is not a valid safetensors file (a pickle / ``torch.save`` file included: it is
        refused, never loaded).
    """
    from safetensors import safe_open

    p = require_regular_file(path, what)
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise ValueError(
            f"{p} looks like a pickle / torch.save file; normonly never unpickles files (they can "
            "run code). Save your network with safetensors: "
            "safetensors.torch.save_file(model.state_dict(), 'net.safetensors')"
        )
    try:
        with safe_open(str(p), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            _check_size(f, p, what)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except ValueError as e:
        if "more than this machine can load" in str(e):
            raise
        raise ValueError(
            f"{p} is not a valid safetensors file ({type(e).__name__}: {e}); expected the "
            f"{what} written by safetensors.torch.save_file"
        ) from None
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
        raise ValueError(
            f"{p} is not a valid safetensors file ({type(e).__name__}: {e}); expected the "
            f"{what} written by safetensors.torch.save_file"
        ) from None
    return tensors, metadata


def load_points(path: str | os.PathLike) -> torch.Tensor:
    """Read input points (one per row) from a ``.npy`` or ``.csv`` file as float64.

    ``.npy`` is read with ``allow_pickle=False`` (object arrays are refused, never unpickled);
    ``.csv`` is comma-separated numbers, with or without one header line.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        The path does not name a file.
    ValueError
        Another extension, or contents that are not a 2-D array of numbers.
    """
    import numpy as np

    p = require_regular_file(path, "data")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".csv":
            try:
                arr = np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
            except ValueError:
                arr = np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2, skiprows=1)
        else:
            raise ValueError(
                f"data file {p} must end in .npy (numpy.save) or .csv (comma-separated rows)"
            )
    except (ValueError, OSError, EOFError) as e:
        if "must end in" in str(e):
            raise
        raise ValueError(
            f"data file {p} could not be read as a numeric array ({type(e).__name__}: {e}); "
            "write it with numpy.save(path, X) or as comma-separated rows"
        ) from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"data file {p} holds {arr.dtype} values, expected numbers")
    return torch.as_tensor(np.asarray(arr, dtype=np.float64))
