"""The ``normonly`` command line, in process and (for kill -9 and bad usage) as a real process."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from experiments.toy import TOY, ToyConfig  # tests/experiments/toy.py; tests/ is on sys.path

from normonly import cli
from normonly.experiments import registry, store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def toy():
    registry.register(TOY)
    yield TOY
    registry.unregister(TOY.name)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def strict_lines(path: Path) -> list[dict]:
    """Every complete line of a rows file; a half-written line may only be the last."""
    parts = path.read_text().split("\n")
    rows = []
    for line in parts[:-1]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a fragment cut by kill -9, followed by a fresh line
    return rows


def test_run_then_report_end_to_end(tmp_path, capsys, toy):
    out = tmp_path / "res"
    code, stdout, err = run_cli(
        capsys, "run", "toy", "--set", "n_trials=3", "--out", out, "--no-progress"
    )
    assert code == 0, err
    run = out / "TOY" / TOY.digest(ToyConfig(n_trials=3))
    assert (run / "config.json").exists()
    assert len(store.read_rows(run)) == 3
    assert (run / "figures" / "values.png").read_bytes()[:8] == PNG_MAGIC
    assert "3 rows" in stdout
    code, stdout, err = run_cli(capsys, "report", out)
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert "## TOY — Toy sweep" in report
    assert f"(TOY/{run.name}/figures/values.png)" in report


def test_reproduce_and_list(tmp_path, capsys, toy):
    code, stdout, err = run_cli(
        capsys, "reproduce", "--only", "TOY", "--out", tmp_path, "--no-progress", "--quiet"
    )
    assert code == 0, err
    assert "## TOY" in (tmp_path / "report.md").read_text()
    code, stdout, _ = run_cli(capsys, "list")
    assert code == 0
    assert "TOY" in stdout and TOY.question in stdout


def test_config_file_and_set_overrides(tmp_path, capsys, toy):
    toml = tmp_path / "cfg.toml"
    toml.write_text("n_trials = 2\nwidths = [4, 5]\nscale = 2\nfail_keys = []\n")
    code, _, err = run_cli(
        capsys,
        "run",
        "TOY",
        "--config",
        toml,
        "--set",
        "scale=3",
        "--set",
        "verbose=true",
        "--out",
        tmp_path,
        "--no-progress",
    )
    assert code == 0, err
    expected = ToyConfig(n_trials=2, widths=(4, 5), scale=3.0, verbose=True)
    saved = tmp_path / "TOY" / TOY.digest(expected) / "config.json"
    data = json.loads(saved.read_text())
    assert data["config"] == expected.to_dict()
    assert data["profile"] == "custom"
    # a saved config.json is a valid --config file and lands in the same directory
    code, stdout, err = run_cli(capsys, "run", "TOY", "--config", saved, "--out", tmp_path)
    assert code == 0, err
    assert str(saved.parent) in stdout
    jsonfile = tmp_path / "cfg.json"
    jsonfile.write_text(json.dumps({"n_trials": 1}))
    assert run_cli(capsys, "run", "TOY", "--config", jsonfile, "--out", tmp_path)[0] == 0


def test_set_values_are_toml_or_comma_lists(tmp_path, capsys, toy):
    sets = ["n_trials=2", "widths=[6, 7]", "scale=2.5", 'fail_keys=["t009"]', "verbose=false"]
    code, _, err = run_cli(capsys, "run", "TOY", *[a for x in sets for a in ("--set", x)],
                           "--out", tmp_path, "--no-progress")  # fmt: skip
    assert code == 0, err
    expected = ToyConfig(n_trials=2, widths=(6, 7), scale=2.5, fail_keys=("t009",))
    assert (tmp_path / "TOY" / TOY.digest(expected) / "config.json").exists()
    # the README's comma lists are the same values
    code, _, err = run_cli(capsys, "run", "TOY", "--set", "n_trials=2", "--set", "widths=6,7",
                           "--set", "scale=2.5", "--set", "fail_keys=t009", "--out", tmp_path,
                           "--no-progress")  # fmt: skip
    assert code == 0, err
    assert len(list((tmp_path / "TOY").iterdir())) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["run", "E99"], "unknown experiment 'E99'"),
        (["run", "TOY", "--set", "n_trials"], "--set expects key=value"),
        (["run", "TOY", "--set", "bogus=1"], "valid keys: n_trials, scale"),
        (["run", "TOY", "--set", "n_trials=many"], "expected an integer"),
        (["run", "TOY", "--set", "widths=[1, x]"], "expected an integer"),
        (["run", "TOY", "--set", "verbose=maybe"], "expected a boolean (true or false)"),
        (["run", "TOY", "--jobs", "0"], "positive integer"),
        (["run", "TOY", "--config", "missing.toml"], "missing.toml"),
        (["run", "TOY", "--config", "cfg.yaml"], ".toml or .json"),
        (["report", "no-such-dir"], "does not exist"),
        (["verify", "a.safetensors", "b.safetensors"], "network file 'a.safetensors' does not"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path, capsys, toy, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("n_trials: 1")
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("normonly: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_help_of_every_command(capsys):
    for command in ("reproduce", "run", "report", "list", "reconstruct", "verify"):
        code, stdout, _ = run_cli(capsys, command, "--help")
        assert code == 0
        assert "usage: normonly " + command in stdout
    assert run_cli(capsys, "--help")[0] == 0


def test_unwritable_out_dir_exits_2(tmp_path, capsys, toy, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anyway: simulate the refusal at the writer

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(store, "atomic_write_text", refuse)
    try:
        code, _, err = run_cli(capsys, "run", "TOY", "--out", locked / "res")
    finally:
        locked.chmod(0o700)
    assert code == 2
    assert "Permission denied" in err and str(locked) in err
    assert err.count("\n") == 1


def test_failed_trials_exit_1(tmp_path, capsys, toy):
    code, _, err = run_cli(capsys, "run", "TOY", "--set", "fail_keys=t001", "--out", tmp_path)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("normonly: error:")]
    assert len(errors) == 1
    assert "1 of 4 trials of TOY failed" in errors[0] and "t001" in errors[0]
    assert "Traceback" not in err


def test_unexpected_error_exit_1_and_debug_reraises(tmp_path, capsys, toy, monkeypatch):
    from normonly.experiments import runner

    def crash(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(runner, "run_experiment", crash)
    code, _, err = run_cli(capsys, "run", "TOY", "--out", tmp_path)
    assert code == 1
    assert "RuntimeError: something broke" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(["--debug", "run", "TOY", "--out", str(tmp_path)])
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(["run", "TOY", "--out", str(tmp_path), "--debug"])


def test_keyboard_interrupt_exit_130(tmp_path, capsys, toy, monkeypatch):
    from normonly.experiments import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_experiment", interrupted)
    code, _, err = run_cli(capsys, "run", "TOY", "--out", tmp_path)
    assert code == 130
    assert "rows already written are kept" in err


def _subprocess_env() -> dict[str, str]:
    """The environment of a ``normonly`` subprocess that can import the package and the toy."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    src = str(Path(cli.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join([src, tests, env.get("PYTHONPATH", "")])
    return env


#: ``normonly`` with the toy experiment registered, as a real process (argv follows).
TOY_CLI = [sys.executable, "-c", "import sys, experiments.toy as t; sys.exit(t.main())"]


@pytest.mark.slow
def test_bad_usage_in_a_real_process_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "normonly", "run", "NOPE"],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("normonly: error: unknown experiment 'NOPE'")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_kill_9_midway_then_rerun_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "res"
    argv = [
        *TOY_CLI,
        "run",
        "TOY",
        "--set",
        "n_trials=12",
        "--set",
        "sleep=0.15",
        "--out",
        str(out),
        "--no-progress",
    ]
    rows_file = out / "TOY" / TOY.digest(ToyConfig(n_trials=12, sleep=0.15)) / "rows.jsonl"
    proc = subprocess.Popen(
        argv, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if rows_file.exists() and len(store.read_rows(rows_file)) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    partial = len(store.read_rows(rows_file))
    assert 3 <= partial < 12
    rerun = subprocess.run(argv, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{partial} already stored" in rerun.stderr
    keys = [row["key"] for row in strict_lines(rows_file)]
    assert sorted(keys) == [f"t{i:03d}" for i in range(12)]  # each trial exactly once


# --- reconstruct / verify -------------------------------------------------------------------------


def _library():
    from normonly import TargetMLP

    return TargetMLP


def test_reconstruct_and_verify(tmp_path, capsys):
    target_cls = _library()
    target_path = tmp_path / "target.safetensors"
    target_cls.random([3, 4, 2], seed=0).save(target_path)
    net_path = tmp_path / "net.safetensors"
    code, stdout, err = run_cli(
        capsys,
        "reconstruct",
        target_path,
        "--out",
        net_path,
        "--radius",
        "1",
        "--seed",
        "0",
        "--json",
    )
    assert code == 0, err
    cert = json.loads(stdout)
    assert cert["passed"] is True
    assert cert["max_rel_error"] < 1e-6
    assert net_path.exists()
    code, stdout, err = run_cli(
        capsys, "verify", net_path, target_path, "--radius", "1", "--n-points", "64", "--json"
    )
    assert code == 0, err
    cert = json.loads(stdout)
    assert cert["passed"] is True and cert["max_rel_error"] < 1e-6
    code, stdout, err = run_cli(capsys, "verify", net_path, target_path, "--radius", "1")
    assert code == 0, err
    assert stdout.strip()


def test_reconstruct_bad_inputs_exit_2(tmp_path, capsys):
    _library()
    code, _, err = run_cli(
        capsys, "reconstruct", tmp_path / "none.safetensors", "--out", tmp_path / "n.safetensors"
    )
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    code, _, err = run_cli(capsys, "reconstruct", bad, "--out", tmp_path / "n.safetensors")
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_domain_activation_and_data(tmp_path, capsys):
    import numpy as np
    import safetensors.torch
    import torch
    from torch import nn

    target_cls = _library()
    target_path = tmp_path / "target.safetensors"
    target_cls.random([4, 5, 3], seed=0).save(target_path)
    net_path = tmp_path / "net.safetensors"
    code, _, err = run_cli(capsys, "reconstruct", target_path, "--out", net_path)
    assert code == 2 and "--radius R" in err and "--data" in err and not net_path.exists()
    X = 2.0 * np.random.default_rng(0).standard_normal((200, 4))
    np.save(tmp_path / "X.npy", X)
    np.savetxt(tmp_path / "X.csv", X, delimiter=",", header="a,b,c,d")
    code, out, err = run_cli(capsys, "reconstruct", target_path, "--out", net_path, "--data",
                             tmp_path / "X.npy", "--overparam", "2")  # fmt: skip
    assert code == 0, err
    assert "proven bound" in out and "PASS" in out
    code, out, err = run_cli(capsys, "verify", net_path, target_path, "--data", tmp_path / "X.csv")
    assert code == 0, err
    assert "proven bound" in out and "measured" in out and "K shape" not in out
    # a net built for R = 1 does not cover these data: exit 1, saying how many lie outside
    small = tmp_path / "small.safetensors"
    assert run_cli(capsys, "reconstruct", target_path, "--out", small, "--radius", "1")[0] == 0
    code, out, err = run_cli(capsys, "verify", small, target_path, "--data", tmp_path / "X.npy")
    assert code == 1 and "data points lie outside the certified ball" in err
    # a bare state_dict of a Sigmoid network: no activation, no pass
    seq = nn.Sequential(nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 3))
    bare = tmp_path / "bare.safetensors"
    safetensors.torch.save_file(seq.state_dict(), str(bare))
    code, _, err = run_cli(capsys, "reconstruct", bare, "--out", net_path, "--radius", "1")
    assert code == 2 and "--activation relu" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "reconstruct", bare, "--out", net_path, "--radius", "1",
                           "--activation", "sigmoid")  # fmt: skip
    assert code == 2 and "'sigmoid' is not supported" in err
    relu_bare = tmp_path / "relu_bare.safetensors"
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    safetensors.torch.save_file(seq.state_dict(), str(relu_bare))
    code, _, err = run_cli(capsys, "reconstruct", relu_bare, "--out", net_path, "--radius", "1",
                           "--activation", "relu", "--overparam", "2")  # fmt: skip
    assert code == 0, err


def test_cli_talks_plainly(tmp_path, capsys):
    import logging

    from normonly.cli import build_parser
    from normonly.experiments.progress import progress

    code, _, err = run_cli(capsys, "report", tmp_path)  # no rows: say so, exit 2
    assert code == 2 and "no results in" in err
    p = build_parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sp in sub.choices.items():
        for act in sp._actions:
            assert act.help or act.dest == "help", (name, act.option_strings)
    assert "``" not in p.format_help()
    # not a terminal: plain progress lines on a timer, also while a trial runs
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("normonly")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        bar = progress(10, 2, "E9", True, every=0.05)
        time.sleep(0.2)
        bar.update(3)
        bar.close()
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    lines = [m for m in records if m.startswith("E9:")]
    assert len(lines) >= 3 and lines[-1].startswith("E9: 5/10 trials") and "ETA" in lines[-1]


def test_list_does_not_import_torch():
    code = (
        "import sys; from normonly.cli import main; main(['list']); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False"), out.stdout[-200:]
