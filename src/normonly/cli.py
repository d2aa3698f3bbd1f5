"""The ``normonly`` command line: reproduce, run, report, list, reconstruct, verify, export.

The CLI only parses arguments, builds configs and calls the library. Exit codes: 0 success,
1 failure (a failing certificate, failed trials, an unexpected error), 2 bad usage or input,
130 interrupted. Errors are one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

# Before torch is imported: idle OpenMP threads sleep instead of spinning, which on a shared
# 2-core machine made solves 2x slower (benchmarks/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Sequence
from typing import Any, NoReturn

from normonly.cli_files import cmd_export, cmd_reconstruct, cmd_verify
from normonly.experiments.store import StoreError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("normonly")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``normonly: error: <message>``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"normonly: error: {message} (see '{self.prog} --help')\n")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        return f"normonly: {level}{record.getMessage()}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (tests and tqdm swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _version() -> str:
    try:
        return importlib.metadata.version("normonly")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _usage_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        ValueError,
        TypeError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
        StoreError,
    ]
    from normonly.errors import NormonlyError

    errors.append(NormonlyError)
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- configs -------------------------------------------------------------------------------------


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    """Split ``--set key=value`` items into ``{key: value text}``.

    The value text is read by the config class
    (:func:`normonly.experiments.values.parse_value`: a TOML value, or ``2,5,8`` for a list).
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _build_config(args: argparse.Namespace, exp: Any) -> tuple[Any, str]:
    from normonly.experiments.base import read_config_file

    config = exp.preset(args.profile)
    profile = args.profile
    if args.config:
        config = config.replace(**read_config_file(args.config, exp.name))
        profile = "custom"
    if args.set:
        config = config.replace(**parse_sets(args.set))
        profile = "custom"
    return config, profile


# --- commands ------------------------------------------------------------------------------------


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from normonly.experiments.runner import reproduce

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    report = reproduce(
        args.out,
        profile=args.profile,
        only=only,
        jobs=args.jobs,
        backend=args.backend,
        ray_address=args.ray_address,
        progress=not args.no_progress,
    )
    print(f"report written to {report}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from normonly.experiments import registry, store
    from normonly.experiments.runner import run_experiment

    exp = registry.get(args.experiment)
    config, profile = _build_config(args, exp)
    rows = run_experiment(
        exp,
        config,
        args.out,
        jobs=args.jobs,
        backend=args.backend,
        ray_address=args.ray_address,
        progress=not args.no_progress,
        profile=profile,
    )
    path = store.run_dir(args.out, exp.name, exp.digest(config))
    print(f"{exp.name}: {len(rows)} rows in {path} (figures in {path / store.FIGURES_DIR})")
    if rows:
        print(exp.summarize(config, rows)[1])
    print(f"build the report with: normonly report {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from normonly.experiments.report import write_report

    root = Path(args.dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory {root} does not exist")
    if not any(p.stat().st_size for p in root.glob("*/*/rows.jsonl")):
        raise ValueError(
            f"no results in {root}: no experiment directory there holds rows; run "
            f"`normonly run EX --out {root}` or `normonly reproduce --out {root}` first"
        )
    print(f"report written to {write_report(args.dir)}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from normonly.experiments import registry

    experiments = registry.all_experiments()
    if not experiments:
        print("no experiments registered")
    for exp in experiments:
        print(f"{exp.name:<5} {exp.title}\n      {exp.question}")
    return 0


# --- parser --------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=("quick", "full"),
        default="quick",
        help="preset of each experiment (default: quick)",
    )
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="parallel workers (default: 1)")
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="run trials in local processes or on Ray (default: local)",
    )
    p.add_argument("--ray-address", default=None, help="address of a running Ray cluster")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``normonly`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks instead of one-line errors",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="only print warnings and errors",
    )
    description = __doc__.split("\n")[0].replace("``", "")
    parser = _Parser(prog="normonly", parents=[common], description=description)
    parser.add_argument("--version", action="version", version=f"normonly {_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common])

    p = add("reproduce", "run every experiment with a preset and write DIR/report.md")
    _add_run_options(p)
    p.add_argument("--only", default=None, help="comma-separated experiments, e.g. E1,E5")
    p.set_defaults(func=_cmd_reproduce)

    p = add("run", "run one experiment (resumes: stored trials are skipped)")
    p.add_argument("experiment", help="experiment name, e.g. E1 (see 'normonly list')")
    _add_run_options(p)
    p.add_argument("--config", default=None, help="TOML or JSON file of config values")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value (repeatable); VALUE is a TOML value: radius=2.0, "
        "widths=[2,5,8] (or widths=2,5,8), norm=affine (quotes optional)",
    )
    p.set_defaults(func=_cmd_run)

    p = add("report", "rebuild DIR/report.md and its figures from saved results")
    p.add_argument("dir", help="results directory")
    p.set_defaults(func=_cmd_report)

    p = add("list", "list the experiments and the question each answers")
    p.set_defaults(func=_cmd_list)

    p = add("reconstruct", "build a norm-only network that reproduces a target MLP exactly")
    p.add_argument("target", help="target MLP (.safetensors, or .onnx: Gemm/MatMul+Add and Relu)")
    p.add_argument("--out", required=True, help="where to save the network (.safetensors)")
    p.add_argument("--method", choices=("wide", "residual"), default="wide",
                   help="wide (Theorem 1) or residual (Theorem 2, skip connections; default wide)")
    p.add_argument("--radius", type=float, default=None,
                   help="input radius R: exactness on ||x|| <= R (this or --data is required)")
    p.add_argument("--data", default=None,
                   help="your inputs (.npy or .csv, one row each): R = their largest norm + 1%%")
    p.add_argument("--activation", default=None,
                   help="activation of a bare state_dict file (only 'relu' is supported); "
                   "files written by normonly record it")
    p.add_argument("--overparam", type=float, default=1.0,
                   help="width factor >= 1 (default: 1; 2 is better conditioned)")
    p.add_argument("--k", type=int, default=None, help="partition size (residual method)")
    p.add_argument("--density", type=float, default=1.0, help="kept fraction of frozen weights")
    p.add_argument("--norm", choices=("batchnorm", "affine"), default="batchnorm",
                   help="BatchNorm1d in eval mode, or a plain per-unit affine map")
    p.add_argument("--uniform-width", action="store_true", help="same width in every layer")
    p.add_argument("--seed", type=int, default=0, help="seed of the frozen random weights")
    p.add_argument("--json", action="store_true", help="print the certificate as JSON")
    p.set_defaults(func=cmd_reconstruct)

    p = add("verify", "check a saved network against a target MLP on the ball of radius R")
    p.add_argument("net", help="network (.safetensors)")
    p.add_argument("target", help="target MLP (.safetensors, or .onnx: Gemm/MatMul+Add and Relu)")
    p.add_argument("--radius", type=float, default=None,
                   help="input radius R (default: the radius the network was built for)")
    p.add_argument("--data", default=None,
                   help="inputs that must lie in the certified ball (.npy or .csv)")
    p.add_argument("--activation", default=None,
                   help="activation of a bare state_dict target file (only 'relu')")
    p.add_argument("--rtol", type=float, default=None,
                   help="pass iff the proven bound <= rtol x output scale (default 1e-9)")
    p.add_argument("--n-points", type=_positive_int, default=None, help="test points")
    p.add_argument("--seed", type=int, default=0, help="seed of the measured points")
    p.add_argument("--json", action="store_true", help="print the certificate as JSON")
    p.set_defaults(func=cmd_verify)

    p = add("export", "write a saved network as ONNX (checked by onnx.checker and onnxruntime)")
    p.add_argument("net", help="network (.safetensors)")
    p.add_argument("--onnx", required=True, help="where to write the ONNX model (.onnx)")
    p.add_argument("--float32", action="store_true",
                   help="export in float32 (not certified; the measured difference is printed)")
    p.set_defaults(func=cmd_export)
    return parser


def _setup_logging(quiet: bool) -> None:
    if not any(getattr(h, "_normonly_cli", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        handler._normonly_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``normonly`` command and return its exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` if omitted.

    Returns
    -------
    int
        0 success, 1 failure, 2 bad usage or input, 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    debug = getattr(args, "debug", False)
    _setup_logging(getattr(args, "quiet", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print(
            "normonly: interrupted; rows already written are kept (rerun to resume)",
            file=sys.stderr,
        )
        return 130
    except _usage_errors() as exc:
        if debug:
            raise
        print(f"normonly: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        from normonly.experiments.runner import TrialsFailed

        text = _one_line(exc) if isinstance(exc, TrialsFailed) else f"{type(exc).__name__}: "
        if not isinstance(exc, TrialsFailed):
            text += _one_line(exc)
        print(f"normonly: error: {text} (run with --debug for the traceback)", file=sys.stderr)
        return 1
