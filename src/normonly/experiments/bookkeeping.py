"""Bookkeeping fields added to every stored row: versions, commit and device."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
import sys
from pathlib import Path

__all__ = ["device_name", "static_metadata"]


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
