"""The experiment registry: the paper's experiments E1..E8, loaded on first use.

Each module in :data:`_MODULES` defines ``EXPERIMENT`` (an :class:`Experiment`); the registry
imports the modules lazily (on the first :func:`get` or :func:`all_experiments`) and registers
their ``EXPERIMENT``, so a broken experiment module never breaks ``normonly --help``. The
registry imports the experiment modules, never the reverse. Other experiments (the tests' toy
sweep) are added with :func:`register`.
"""

from __future__ import annotations

import importlib
import logging

from normonly.experiments.base import Experiment

__all__ = ["all_experiments", "get", "import_errors", "register", "unregister"]

logger = logging.getLogger(__name__)

#: Experiment modules imported on first use; each defines ``EXPERIMENT``.
_MODULES: tuple[str, ...] = (
    "normonly.experiments.e1_exact",
    "normonly.experiments.e2_residual",
    "normonly.experiments.e3",
    "normonly.experiments.e4",
    "normonly.experiments.e5_width",
    "normonly.experiments.e6_bn_sparse",
    "normonly.experiments.e7_classifier",
    "normonly.experiments.e8_cnn",
)

_REGISTRY: dict[str, Experiment] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_LOADED = False


def register(exp: Experiment) -> Experiment:
    """Add an experiment to the registry and return it.

    Registering the same object twice is a no-op.

    Parameters
    ----------
    exp : Experiment
        The experiment; its ``name`` must be unique (case-insensitively).

    Returns
    -------
    Experiment
        ``exp`` itself, so a module can write ``E1 = register(Experiment(...))``.

    Raises
    ------
    TypeError
        If ``exp`` is not an :class:`Experiment`.
    ValueError
        If another experiment already uses that name.

    Examples
    --------
    >>> from normonly.experiments.base import ExperimentConfig
    >>> demo = Experiment(name="DEMO", title="t", question="q?", config_cls=ExperimentConfig,
    ...                   trials=lambda c: [], run_trial=lambda c, t: {},
    ...                   figures=lambda c, rows, d: [], summarize=lambda c, rows: ("", ""))
    >>> register(demo) is demo
    True
    >>> unregister("DEMO")
    """
    if not isinstance(exp, Experiment):
        raise TypeError(f"register() takes an Experiment, got {type(exp).__name__}")
    key = exp.name.casefold()
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not exp and existing != exp:
        raise ValueError(f"an experiment named {exp.name!r} is already registered")
    _REGISTRY[key] = exp
    return exp


def unregister(name: str) -> None:
    """Remove an experiment from the registry (missing names are ignored)."""
    _REGISTRY.pop(name.casefold(), None)


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
            exp = module.EXPERIMENT
            register(exp)
        except Exception as exc:  # a broken experiment must not break the CLI
            _IMPORT_ERRORS[module_name] = f"{type(exc).__name__}: {exc}"
            logger.warning("could not import experiment module %s: %s", module_name, exc)


def import_errors() -> dict[str, str]:
    """Return ``{module: error}`` for experiment modules that failed to import."""
    _load()
    return dict(_IMPORT_ERRORS)


def all_experiments(*, strict: bool = False) -> list[Experiment]:
    """Return every registered experiment in registration order.

    Parameters
    ----------
    strict : bool, default False
        Raise instead of skipping experiment modules that failed to import.

    Raises
    ------
    RuntimeError
        With ``strict=True``, if an experiment module could not be imported.
    """
    _load()
    if strict and _IMPORT_ERRORS:
        details = "; ".join(f"{m}: {e}" for m, e in _IMPORT_ERRORS.items())
        raise RuntimeError(f"experiment modules failed to import: {details}")
    return list(_REGISTRY.values())


def get(name: str) -> Experiment:
    """Return the experiment called ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If no such experiment is registered; the message lists the known names.
    """
    _load()
    if not isinstance(name, str):
        raise TypeError(f"experiment name must be a string, got {type(name).__name__}")
    exp = _REGISTRY.get(name.strip().casefold())
    if exp is None:
        known = ", ".join(e.name for e in _REGISTRY.values()) or "(none registered)"
        message = f"unknown experiment {name!r}; known experiments: {known}"
        if _IMPORT_ERRORS:
            message += f" (modules that failed to import: {', '.join(_IMPORT_ERRORS)})"
        raise ValueError(message)
    return exp
