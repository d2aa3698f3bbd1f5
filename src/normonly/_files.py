"""Reading safetensors files defensively: no pickle, clear errors for anything else."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["read_safetensors", "load_points"]

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


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

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist")
    if p.is_dir():
        raise IsADirectoryError(f"{what} path {str(p)!r} is a directory, expected a file")
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
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
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

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist")
    if p.is_dir():
        raise IsADirectoryError(
            f"data path {str(p)!r} is a directory, expected a .npy or .csv file"
        )
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
