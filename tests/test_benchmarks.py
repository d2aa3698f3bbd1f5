"""The benchmark scripts run: the end-to-end benchmark and the GPU check (on the CPU here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    out = subprocess.run(
        [str(ROOT / "benchmarks" / "device_check.sh"), "--device", "cpu", "--widths", "8", "12"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    table = (tmp_path / "device_check.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 8 ") or
            line.startswith("| 12 ")]  # fmt: skip
    assert len(rows) == 2 and all("PASS" in r for r in rows), table
    assert "passed" in out.stdout  # the device tests ran (on the CPU)


def test_device_check_refuses_unknown_arguments():
    out = subprocess.run([str(ROOT / "benchmarks" / "device_check.sh"), "--fast"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "unknown argument --fast" in out.stderr


def test_e2e_table_shows_the_ratio_and_failures():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import e2e
    finally:
        sys.path.pop(0)
    row = {"width": 16, "n": 256, "m": 512, "unit_s": 0.002, "e2e_s": 0.05,
           "steps": {"frozen_weights": 0.001, "solve": 0.02, "build": 0.001, "measure": 0.02,
                     "bound": 0.008},
           "flop_bound_s": 0.01, "iterations": 100, "peak_rss_mb": 300.0, "residual": 1e-14,
           "err_indep": 3e-15, "bound_rel": 1e-12, "passed": True, "points": 10_000}  # fmt: skip
    text = e2e.table([row, {"width": 32, "error": "over 240 s"}])
    assert "**25**" in text  # 0.05 / 0.002
    assert "| 32 | failed: over 240 s |" in text
