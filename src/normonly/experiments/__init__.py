"""Experiments E1..E8 of the paper reproduction, and the machinery that runs and reports them.

Write an experiment as a frozen :class:`ExperimentConfig` subclass plus module-level functions,
wrap them in an :class:`Experiment` named ``EXPERIMENT`` in its module, and list the module in
``registry._MODULES`` (the registry imports it on first use; other experiments are added with
:func:`register`). :func:`run_experiment` stores rows under ``DIR/<name>/<digest>/`` with
resume; :func:`write_report` rebuilds ``DIR/report.md`` from saved rows only. Rows flatten a
certificate with :func:`normonly.experiments.rows.certificate_row`.
"""

from __future__ import annotations

from normonly.experiments.base import Experiment, ExperimentConfig, save_figure
from normonly.experiments.registry import all_experiments, get, register, unregister
from normonly.experiments.report import write_report
from normonly.experiments.runner import TrialsFailed, reproduce, run_experiment
from normonly.experiments.store import StoreError, append_row, read_rows

__all__ = [
    "Experiment",
    "ExperimentConfig",
    "StoreError",
    "TrialsFailed",
    "all_experiments",
    "append_row",
    "get",
    "read_rows",
    "register",
    "reproduce",
    "run_experiment",
    "save_figure",
    "unregister",
    "write_report",
]
