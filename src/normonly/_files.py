"""Reading safetensors files defensively: no pickle, clear errors for anything else."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["read_safetensors"]

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
