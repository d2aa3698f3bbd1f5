"""Fixtures for the runner tests: the toy experiment of ``toy.py``, registered for one test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from normonly.experiments import registry

from .toy import TOY, ToyConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Row fields that legitimately differ between two runs of the same trial.
VOLATILE = frozenset({"wall_time_s", "timestamp", "hostname", "device"})


@pytest.fixture
def toy():
    """The toy experiment, registered for the duration of the test."""
    registry.register(TOY)
    yield TOY
    registry.unregister(TOY.name)


@pytest.fixture
def toy_config() -> ToyConfig:
    return ToyConfig(n_trials=4)


def stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the timing and host fields."""
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def rows_path(out: Path, config: ToyConfig) -> Path:
    return out / "TOY" / TOY.digest(config) / "rows.jsonl"


def file_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a rows file, parsed strictly (fails on any garbage line)."""
    text = path.read_text()
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]
