"""A tiny deterministic experiment for the runner and CLI tests (``TOY``; not in the registry).

Tests register it with :func:`normonly.experiments.registry.register` (the ``toy`` fixture of
``tests/experiments/conftest.py``). Pytest puts ``tests/`` on ``sys.path``, so this module is
importable as ``experiments.toy`` there and in the worker processes and Ray workers that unpickle
``run_trial`` by reference. A command line of its own, with ``TOY`` registered, is
``PYTHONPATH=tests python -c 'import sys, experiments.toy as t; sys.exit(t.main())' run TOY``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normonly.experiments.base import Experiment, ExperimentConfig, save_figure

__all__ = ["TOY", "ToyConfig", "main"]


@dataclass(frozen=True)
class ToyConfig(ExperimentConfig):
    """Settings of the toy sweep.

    Parameters
    ----------
    n_trials : int
        Number of trials (keys ``t000``, ``t001``, ...; seed = index).
    scale : float
        Multiplies every value.
    sleep : float
        Seconds each trial sleeps (lets the kill test interrupt a sweep).
    fail_keys : tuple of str
        Trials that raise ``ValueError`` (to test failure collection).
    widths : tuple of int
        Unused by the computation; exercises tuple coercion.
    verbose : bool
        Unused; exercises bool coercion.
    """

    n_trials: int = 4
    scale: float = 1.0
    sleep: float = 0.0
    fail_keys: tuple[str, ...] = field(default=(), metadata={"allow_empty": True})
    widths: tuple[int, ...] = (2, 3)
    verbose: bool = False

    @classmethod
    def full(cls) -> ToyConfig:
        return cls(n_trials=8)


def trials(config: ToyConfig) -> list[dict[str, Any]]:
    """One trial per index."""
    return [{"key": f"t{i:03d}", "seed": i, "index": i} for i in range(config.n_trials)]


def run_trial(config: ToyConfig, trial: dict[str, Any]) -> dict[str, Any]:
    """A deterministic value from the seed (after an optional sleep)."""
    if config.sleep:
        time.sleep(config.sleep)
    if trial["key"] in config.fail_keys:
        raise ValueError(f"planned failure of {trial['key']}")
    rng = np.random.default_rng(trial["seed"])
    return {"index": trial["index"], "value": float(config.scale * rng.standard_normal())}


def figures(config: ToyConfig, rows: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One scatter plot of value against index."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([r["index"] for r in rows], [r["value"] for r in rows], "o")
    ax.set_xlabel("index")
    ax.set_ylabel("value")
    return [save_figure(fig, Path(directory) / "values.png")]


def summarize(config: ToyConfig, rows: list[dict[str, Any]]) -> tuple[str, str]:
    """A two-column table and a sentence."""
    table = "| key | value |\n| --- | --- |\n" + "".join(
        f"| {r['key']} | {r['value']:.4f} |\n" for r in rows
    )
    mean = float(np.mean([r["value"] for r in rows])) if rows else float("nan")
    return table, f"The toy values have mean {mean:.3f} over {len(rows)} trials."


TOY = Experiment(
    name="TOY",
    title="Toy sweep",
    question="Does the experiment runner store, resume and report a sweep correctly?",
    config_cls=ToyConfig,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)


def main(argv: list[str] | None = None) -> int:
    """Run the ``normonly`` command line with ``TOY`` registered (for tests in a subprocess)."""
    from normonly.cli import main as cli_main
    from normonly.experiments.registry import register

    register(TOY)
    return cli_main(sys.argv[1:] if argv is None else argv)
