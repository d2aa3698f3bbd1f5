"""External reference numbers quoted by the experiments, read from ``references.toml``.

The numbers live in one data file shipped with the package (one table per source, each with a
``source`` citation in words and a ``what`` description), not in the experiments' code. They are
shown next to measurements as references, never used to rescale them.

Example
-------
>>> refs = load_references()
>>> sorted(refs["e6_mnist1d_baselines"])[:2]
['models', 'source']
"""

from __future__ import annotations

import tomllib
from importlib import resources

__all__ = ["load_references"]

_FILE = "references.toml"


def load_references() -> dict:
    """All reference tables, ``{table name: {"source", "what", ...numbers}}`` (a fresh dict)."""
    text = resources.files("normonly.experiments").joinpath(_FILE).read_text(encoding="utf-8")
    refs = tomllib.loads(text)
    for name, table in refs.items():
        missing = {"source", "what"} - set(table)
        if missing:
            raise ValueError(f"{_FILE}: table [{name}] lacks {sorted(missing)}")
    return refs
