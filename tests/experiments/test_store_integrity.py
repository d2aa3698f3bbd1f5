"""What a results directory may hold: validated rows, its own config, one writer, no orphans."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normonly import cli
from normonly.experiments import registry, rowcheck, rundir, store
from normonly.experiments.report import ReportError, write_report
from normonly.experiments.runner import TrialsFailed, run_experiment

from .conftest import file_lines, rows_path
from .toy import TOY, ToyConfig

TESTS = Path(__file__).resolve().parents[1]
SRC = Path(store.__file__).resolve().parents[2]
TOY_CLI = [sys.executable, "-c", "import sys, experiments.toy as t; sys.exit(t.main())"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")])
    return env


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _append_raw(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


# --- 1. rows validated on read, the same way by run and report ------------------------------------


def test_stray_and_mistyped_rows_are_skipped_once_and_never_counted(tmp_path, toy, caplog):
    cfg = ToyConfig(n_trials=4)
    run_experiment(toy, cfg, tmp_path, progress=False)
    path = rows_path(tmp_path, cfg)
    good = file_lines(path)
    stray = {**good[0], "key": "t999"}
    mistyped = {**good[1], "index": "1"}  # a trial field as a string
    bad_time = {**good[2], "wall_time_s": "fast"}
    path.write_text(
        "\n".join(json.dumps(r) for r in [mistyped, good[0], bad_time, good[3]])
        + "\n"
        + "\n".join([json.dumps(stray), "[1, 2]", "not json"])
        + "\n"
    )
    caplog.set_level(logging.WARNING)
    loaded = rowcheck.load_rows(path, "TOY", toy.trials(cfg))
    assert [r["key"] for r in loaded.rows] == ["t000", "t003"]
    assert [(s.line, s.field) for s in loaded.skipped] == [
        (1, "index"),
        (3, "wall_time_s"),
        (5, "key"),
        (6, None),
        (7, None),
    ]
    messages = _warnings(caplog)
    assert len(messages) == 5  # one warning per bad row
    assert messages[0].startswith(f"{path}:1: field 'index': ")
    assert "'t999' is not a trial of this config" in messages[2]

    caplog.clear()
    text = write_report(tmp_path).read_text()
    assert "2 of 4 trials stored" in text  # never "7 of 4"
    assert "5 rows skipped (line 1, field 'index'" in text
    assert any("5 rows skipped" in m for m in _warnings(caplog))

    calls = []

    def counting(config, trial):
        calls.append(trial["key"])
        return TOY.run_trial(config, trial)

    rows = run_experiment(
        dataclasses.replace(toy, run_trial=counting), cfg, tmp_path, progress=False
    )
    assert calls == ["t001", "t002"]  # run agrees with report: the skipped rows are redone
    assert [r["key"] for r in rows] == ["t000", "t001", "t002", "t003"]
    assert "4 of 4 trials stored" in write_report(tmp_path).read_text()


def test_row_schema_rejects_wrong_types_and_nan_errors():
    trials = rowcheck.trial_specs([{"key": "a", "seed": 0, "m": 8}])
    ok = {"key": "a", "seed": 0, "m": 8, "max_rel_error": 1e-12, "passed": True, "rank": 8}
    e5 = rowcheck.RESULT_TYPES["E5"]
    assert rowcheck.check_row(ok, trials, e5) is None
    assert rowcheck.check_row({**ok, "max_rel_error": math.inf}, trials, e5) is None
    assert rowcheck.check_row({**ok, "max_cond": math.nan}, trials, e5) is None  # NaN: "none"
    cases = {
        "rank": "8",
        "max_rel_error": math.nan,
        "max_abs_error": "0.1",
        "passed": 1,
        "m": "8",
        "seed": True,
        "error_bound": "x",
        "solvers": "lstsq",
    }
    for field, value in cases.items():
        problem = rowcheck.check_row({**ok, field: value}, trials, e5)
        assert problem is not None and problem[0] == field, (field, problem)
    assert rowcheck.check_row({**ok, "m": 8.0}, trials, e5) is None  # 8.0 == 8 in JSON
    assert rowcheck.check_row({k: v for k, v in ok.items() if k != "m"}, trials, e5)[0] == "m"
    assert rowcheck.check_row({**ok, "key": "b"}, trials, e5)[0] == "key"
    assert rowcheck.check_row(["a"], trials, e5) == (None, "not a JSON object but list")


def test_a_trial_returning_a_bad_row_fails_and_stores_nothing(tmp_path):
    def bad(config, trial):
        return {"index": str(trial["index"]), "value": 1.0}

    with pytest.raises(TrialsFailed, match=r"4 of 4 trials of TOY failed .*field 'index'"):
        run_experiment(dataclasses.replace(TOY, run_trial=bad), ToyConfig(), tmp_path)
    assert store.read_rows(rows_path(tmp_path, ToyConfig())) == []


def test_a_failing_summary_makes_report_exit_1_with_one_line(tmp_path, toy, capsys):
    run_experiment(toy, ToyConfig(), tmp_path, progress=False)

    def boom(config, rows):
        return "", f"{sum(r['value'] for r in rows) / 0}"

    registry.unregister("TOY")
    registry.register(dataclasses.replace(toy, summarize=boom))
    with pytest.raises(ReportError, match=r"TOY .*rows.jsonl\): the summary failed: Zero"):
        write_report(tmp_path)
    assert "**Summary failed:**" in (tmp_path / "report.md").read_text()
    assert cli.main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("normonly: error")]
    assert len(errors) == 1
    assert "ReportError: TOY" in errors[0]
    assert "ZeroDivisionError" in errors[0]


# --- 2. the config is the identity of a directory -------------------------------------------------


def test_replaced_config_is_refused_by_report_and_run(tmp_path, toy, capsys):
    small, large = ToyConfig(n_trials=2), ToyConfig(n_trials=4)
    run_experiment(toy, small, tmp_path, progress=False)
    run_experiment(toy, large, tmp_path, progress=False)
    small_dir = rows_path(tmp_path, small).parent
    large_dir = rows_path(tmp_path, large).parent
    (small_dir / "config.json").write_bytes((large_dir / "config.json").read_bytes())
    with pytest.raises(
        rundir.IdentityError, match=f"names digest {large_dir.name}.*{small_dir.name}"
    ):
        write_report(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert small_dir.name in capsys.readouterr().err
    with pytest.raises(rundir.IdentityError):
        run_experiment(toy, small, tmp_path, progress=False)

    legacy = json.loads((large_dir / "config.json").read_text())
    del legacy["digest"]  # as written before config.json recorded its digest
    (small_dir / "config.json").write_text(json.dumps(legacy))
    with pytest.raises(rundir.IdentityError, match=f"settings of digest {large_dir.name}"):
        write_report(tmp_path)


def test_missing_config_with_rows_is_an_error_until_run_restores_it(tmp_path, toy, capsys):
    cfg = ToyConfig(n_trials=3)
    run_experiment(toy, cfg, tmp_path, progress=False)
    run = rows_path(tmp_path, cfg).parent
    (run / "config.json").unlink()
    with pytest.raises(rundir.IdentityError, match="rows.jsonl holds rows but .*config.json is"):
        write_report(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "No results found" not in capsys.readouterr().out
    run_experiment(toy, cfg, tmp_path, progress=False)  # the directory name vouches for cfg
    assert "3 of 3 trials stored" in write_report(tmp_path).read_text()


# --- 3. one writer per directory ------------------------------------------------------------------


def test_second_writer_is_refused_at_once_with_the_holder(tmp_path, toy_config):
    run = store.ensure_run_dir(store.run_dir(tmp_path, "TOY", TOY.digest(toy_config)))
    with rundir.writer_lock(run):
        start = time.monotonic()
        with pytest.raises(rundir.RunLocked, match=rf"another run: PID {os.getpid()} on host"):
            run_experiment(TOY, toy_config, tmp_path, progress=False)
        assert time.monotonic() - start < 2
    assert not (run / "rows.jsonl").exists()
    run_experiment(TOY, toy_config, tmp_path, progress=False)  # free again after the block


def test_lock_of_a_killed_run_is_taken_over(tmp_path, toy_config, caplog):
    run = store.ensure_run_dir(store.run_dir(tmp_path, "TOY", TOY.digest(toy_config)))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / rundir.LOCK_FILE).write_text(
        json.dumps({"pid": dead.pid, "host": "here", "started": "2020-01-01T00:00:00+00:00"})
    )
    with caplog.at_level(logging.INFO, logger="normonly.experiments.rundir"):
        rows = run_experiment(TOY, toy_config, tmp_path, progress=False)
    assert len(rows) == 4
    assert f"taking over the lock of an ended run (PID {dead.pid}" in caplog.text


def _toy_argv(out: Path, *sets: str, jobs: int = 1) -> list[str]:
    argv = [*TOY_CLI, "run", "TOY", "--out", str(out), "--no-progress", "--jobs", str(jobs)]
    for item in sets:
        argv += ["--set", item]
    return argv


@pytest.mark.slow
def test_two_real_runs_on_one_directory_never_duplicate(tmp_path):
    argv = _toy_argv(tmp_path, "n_trials=6", "sleep=0.3")
    procs = [
        subprocess.Popen(
            argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "is being written by another run: PID" in refused
    assert "Traceback" not in refused
    keys = [row["key"] for row in file_lines(rows_path(tmp_path, ToyConfig(n_trials=6, sleep=0.3)))]
    assert sorted(keys) == [f"t{i:03d}" for i in range(6)]  # each trial exactly once


# --- 4. no orphans --------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _start_pooled_sweep(out: Path) -> tuple[subprocess.Popen, set[int]]:
    argv = _toy_argv(out, "n_trials=8", "sleep=3", jobs=2)
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    tree: set[int] = set()
    while time.monotonic() < deadline:  # forkserver, resource tracker and two workers
        tree = {p for p in _descendants(proc.pid) if _alive(p)}
        if len(tree) >= 4:
            time.sleep(0.5)  # let the workers start their trials
            return proc, {p for p in _descendants(proc.pid) if _alive(p)}
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    pytest.fail(f"the pool did not start: {tree}")


def _gone_within(pids: set[int], seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not any(_alive(p) for p in pids):
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"still running after {seconds} s: {sorted(p for p in pids if _alive(p))}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_stops_the_workers(tmp_path, sig, code):
    proc, tree = _start_pooled_sweep(tmp_path)
    start = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == code
    _gone_within(tree, 10)
    assert time.monotonic() - start < 10
    assert "Traceback" not in proc.stderr.read().decode()
    proc.stderr.close()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_the_sweep_takes_its_workers_along(tmp_path):
    proc, tree = _start_pooled_sweep(tmp_path)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stderr.close()
    _gone_within(tree, 10)


# --- 5. a torn last line is repaired by the next write --------------------------------------------


def test_torn_last_line_is_removed_by_the_next_run(tmp_path, toy_config, caplog):
    run_experiment(TOY, toy_config, tmp_path, progress=False)
    path = rows_path(tmp_path, toy_config)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:25])  # kill -9 in the middle of a write
    caplog.set_level(logging.WARNING)
    rows = run_experiment(TOY, toy_config, tmp_path, progress=False)
    assert [r["key"] for r in rows] == ["t000", "t001", "t002", "t003"]
    assert any("removed an unfinished last line" in m for m in _warnings(caplog))
    caplog.clear()
    assert len(store.read_rows(path)) == 4
    assert len(rowcheck.load_rows(path, "TOY", TOY.trials(toy_config)).rows) == 4
    assert _warnings(caplog) == []  # later reads are quiet
    assert len(file_lines(path)) == 4


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"key": "a", "seed": 0}\n{"key": "b", "seed": 1}')
    store.repair_rows(path)
    assert path.read_text().endswith('{"key": "b", "seed": 1}\n')
    assert [r["key"] for r in store.read_rows(path)] == ["a", "b"]


def test_a_refused_run_waits_for_the_holder_to_write_its_details(tmp_path):
    """The holder takes the lock, then writes its PID: a run refused in between still names it."""
    import fcntl
    import threading

    lock = tmp_path / rundir.LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, details not written yet
    details = {"pid": 4242, "host": "elsewhere", "started": "2026-12-02T00:00:00+00:00"}
    writer = threading.Timer(0.2, lambda: os.pwrite(fd, json.dumps(details).encode(), 0))
    writer.start()
    try:
        with pytest.raises(rundir.RunLocked, match="by another run: PID 4242 on host elsewhere"):
            with rundir.writer_lock(tmp_path):
                pass
    finally:
        writer.join()
        os.close(fd)
