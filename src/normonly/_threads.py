"""Intra-op thread control for small tensor work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from normonly._checks import check_int

__all__ = ["limit_threads"]


@contextlib.contextmanager
def limit_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous setting.

    Experiment trials work on small matrices: on a shared 2-core machine one intra-op thread
    per process was several times faster than two competing ones (measured 5 ms vs 240 ms per
    small-MLP step under load), and sweeps get their parallelism from worker processes.
    """
    import torch  # here, not at import: `normonly list` and `--help` stay torch-free

    previous = torch.get_num_threads()
    torch.set_num_threads(check_int("n", n, minimum=1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
