"""The experiment contract: a typed, frozen config and the functions that run and plot it.

An experiment is a :class:`ExperimentConfig` subclass (a frozen dataclass with a ``quick`` and a
``full`` preset) plus an :class:`Experiment` record holding module-level functions:

* ``trials(config) -> list[dict]`` -- JSON-serializable trial specs, each with a unique ``"key"``
  (str) and a ``"seed"`` (int);
* ``run_trial(config, trial) -> dict`` -- one finished row; module level so that process pools and
  Ray can pickle it by reference;
* ``figures(config, rows, directory) -> list[Path]`` -- PNGs drawn from saved rows only;
* ``summarize(config, rows) -> (markdown_table, sentence)``.

The runner (:mod:`normonly.experiments.runner`) adds resume, parallelism and bookkeeping.

Config values come typed from ``--config`` files (TOML or JSON) or as text from
``--set key=VALUE``; text has one syntax, TOML values with a comma-list shorthand
(:func:`normonly.experiments.values.parse_value`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from normonly._atomic import atomic_write_bytes
from normonly.experiments.values import coerce

__all__ = ["Experiment", "ExperimentConfig", "draw_figures", "read_config_file", "save_figure"]

def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ExperimentConfig:
    """Base class of experiment configs; subclasses are frozen dataclasses with defaults.

    Fields whose ``dataclasses.field(metadata={"digest": False})`` is set (e.g. a verbosity knob)
    do not enter :meth:`digest`, so changing them reuses the same results directory.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Cfg(ExperimentConfig):
    ...     widths: tuple[int, ...] = (2, 4)
    ...     lr: float = 0.1
    >>> Cfg().replace(widths="1,2,3", lr="1e-3")
    Cfg(widths=(1, 2, 3), lr=0.001)
    >>> Cfg().replace(widths="[5, 6]").widths
    (5, 6)
    """

    @classmethod
    def quick(cls) -> Self:
        """The preset used by ``normonly reproduce --profile quick`` (default: all defaults)."""
        return cls()

    @classmethod
    def full(cls) -> Self:
        """The preset used by ``--profile full``; subclasses override it (default: ``quick``)."""
        return cls.quick()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and not value and not f.metadata.get("allow_empty"):
                raise ValueError(
                    f"{type(self).__name__}.{f.name} must not be empty: a sweep needs at least "
                    "one value (e.g. --set " + f.name + "=1,2)"
                )
        self.validate()

    def validate(self) -> None:
        """Check field values (subclasses override; raise ValueError naming the field).

        Empty tuple fields are refused before this runs (a sweep over nothing is a mistake),
        unless declared with ``field(metadata={"allow_empty": True})``.
        """

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Map each init field name to its resolved type annotation."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def _coerce_all(cls, values: Mapping[str, Any], *, text: bool = False) -> dict[str, Any]:
        types_ = cls.field_types()
        unknown = sorted(set(values) - set(types_))
        if unknown:
            raise ValueError(
                f"unknown config key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)} for {cls.__name__}; "
                f"valid keys: {', '.join(types_) or '(none)'}"
            )
        return {
            k: coerce(v, types_[k], f"{cls.__name__}.{k}", text=text) for k, v in values.items()
        }

    def replace(self, **overrides: Any) -> Self:
        """Return a copy with ``overrides`` applied, validated and coerced to the field types.

        Parameters
        ----------
        **overrides
            Field values. A string is read by
            :func:`~normonly.experiments.values.parse_value` (TOML values plus the
            ``1,2,3`` list shorthand: ``"3"`` -> 3, ``"true"`` -> True, ``"[1, 2]"`` or
            ``"1,2"`` -> ``(1, 2)``; ``"none"`` unsets an optional field); a string field
            keeps its text. Lists become tuples.

        Returns
        -------
        ExperimentConfig
            A new config of the same class.

        Raises
        ------
        ValueError
            For an unknown key (the message lists the valid keys) or an unparseable value.
        TypeError
            For a value of the wrong type that is not a string.
        """
        return dataclasses.replace(self, **type(self)._coerce_all(overrides, text=True))

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serializable dict (tuples become lists)."""
        types_ = self.field_types()
        out = {}
        for name, tp in types_.items():
            value = getattr(self, name)
            try:  # canonical form: an int stored in a float field is written as a float
                value = coerce(value, tp, name)
            except (TypeError, ValueError):
                pass
            out[name] = _jsonable(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build a config from :meth:`to_dict` output (missing keys take their defaults).

        Values must already have their types (as in JSON or TOML); strings are not parsed.

        Raises
        ------
        ValueError
            For an unknown key; the message lists the valid keys.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"config data must be a mapping, got {type(data).__name__}")
        return cls(**cls._coerce_all(data))

    def digest(self, experiment: str = "") -> str:
        """Return a short stable hash (12 hex digits) of the canonical JSON of the config.

        Parameters
        ----------
        experiment : str, optional
            The experiment name, mixed into the hash so two experiments never share a digest.
        """
        skip = {f.name for f in dataclasses.fields(self) if f.metadata.get("digest") is False}
        config = {k: v for k, v in self.to_dict().items() if k not in skip}
        canonical = json.dumps(
            {"experiment": experiment, "config": config}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper reproduction; see the module docstring for the contract.

    Parameters
    ----------
    name : str
        Short id such as ``"E1"``; also the results directory name.
    title : str
        Short title for the report.
    question : str
        One sentence: the question the experiment answers.
    config_cls : type[ExperimentConfig]
        The config class with its ``quick``/``full`` presets.
    trials, run_trial, figures, summarize : callable
        Module-level functions, see the module docstring.
    """

    name: str
    title: str
    question: str
    config_cls: type[ExperimentConfig]
    trials: Callable[[Any], list[dict[str, Any]]]
    run_trial: Callable[[Any, dict[str, Any]], dict[str, Any]]
    figures: Callable[[Any, list[dict[str, Any]], Path], list[Path]]
    summarize: Callable[[Any, list[dict[str, Any]]], tuple[str, str]]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"experiment name must be a non-empty word, got {self.name!r}")
        cls = self.config_cls
        if not (isinstance(cls, type) and issubclass(cls, ExperimentConfig)):
            raise TypeError(
                f"config_cls of {self.name} must subclass ExperimentConfig, got {self.config_cls!r}"
            )
        for attr in ("trials", "run_trial", "figures", "summarize"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"{attr} of {self.name} must be callable")

    def preset(self, profile: str) -> ExperimentConfig:
        """Return the ``"quick"`` or ``"full"`` config."""
        if profile not in ("quick", "full"):
            raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")
        return self.config_cls.quick() if profile == "quick" else self.config_cls.full()

    def digest(self, config: ExperimentConfig) -> str:
        """Return the results-directory digest of ``config`` for this experiment."""
        return config.digest(self.name)

    def run(self, config: ExperimentConfig) -> list[dict[str, Any]]:
        """Run every trial serially in this process, without storing anything."""
        return [self.run_trial(config, trial) for trial in self.trials(config)]


def read_config_file(path: str | Path, experiment: str | None = None) -> dict[str, Any]:
    """Read config overrides from a ``.toml`` or ``.json`` file.

    A saved ``config.json`` of a run (``{"experiment": ..., "config": {...}}``) is accepted too.

    Raises
    ------
    ValueError
        For an unknown suffix, unparseable content, or a config saved for another experiment.
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    if path.suffix.lower() in (".toml", ".json"):
        from normonly._files import require_regular_file

        require_regular_file(path, "config")  # a FIFO would block open() forever
    if path.suffix.lower() == ".toml":
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    elif path.suffix.lower() == ".json":
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    else:
        raise ValueError(f"config file {path} must end in .toml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of key = value pairs")
    if isinstance(data.get("config"), dict):
        saved_for = data.get("experiment")
        if experiment and saved_for and str(saved_for).casefold() != experiment.casefold():
            raise ValueError(f"config file {path} was saved for {saved_for}, not {experiment}")
        data = data["config"]
    return data


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to save.
    path : str or Path
        Destination ``.png`` file; its directory must exist.
    dpi : int, default 120
        Resolution.

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    A figure with a layout engine (``layout="constrained"``) already fits its labels and legends
    inside the canvas, so it is saved as laid out; others are cropped to their tight bounding
    box, which costs a second pass over every text extent (about a third of a figure's time).
    """
    buffer = io.BytesIO()
    tight = None if fig.get_layout_engine() is not None else "tight"
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches=tight)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def draw_figures(
    exp: Experiment, config: ExperimentConfig, rows: list[dict[str, Any]], directory: Path
) -> list[Path]:
    """Draw the experiment's figures from saved rows with the Agg backend.

    Used by the runner after a sweep and by the report when it redraws from saved rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [Path(p) for p in exp.figures(config, rows, directory)]
