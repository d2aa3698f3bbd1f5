"""Exactness spot checks behind the issue notes: max relative error (float64, 10,000 points in
the ball and on its sphere) of the constructions at the sizes the issues name.

Run: ``.venv/bin/python benchmarks/exactness.py`` (about 1 minute on 2 cores).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from normonly import TargetMLP, reconstruct


def report(label: str, rec, seconds: float) -> None:
    c = rec.certificate
    solvers = sorted({lc.solver for lc in c.layers})
    print(
        f"{label}: max rel {c.max_rel_error:.2e} (abs {c.max_abs_error:.2e}, sphere abs "
        f"{c.max_abs_error_sphere:.2e}) passed={c.passed} solvers={solvers} time={seconds:.1f}s",
        flush=True,
    )


def main() -> None:
    for R in (0.5, 1.0, 10.0):
        for widths, ov in [([32] * 5, 1.0), ([32, 24, 32, 16, 8], 1.0), ([64, 64, 64], 2.0)]:
            t = time.time()
            rec = reconstruct(TargetMLP.random(widths, seed=11), radius=R, overparam=ov)
            report(f"R={R:<5} widths={widths} overparam={ov}", rec, time.time() - t)
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5)
    )
    path = Path(tempfile.mkdtemp()) / "user_seq.safetensors"
    safetensors.torch.save_file(seq.state_dict(), str(path))  # what a user would write
    for R in (0.5, 1.0, 10.0):
        t = time.time()
        rec = reconstruct(TargetMLP.load(path, activation="relu"), radius=R)
        report(f"user nn.Sequential 20-32-16-5 from safetensors, R={R}", rec, time.time() - t)
    t = time.time()
    rec = reconstruct(TargetMLP.random([128, 128], seed=0), radius=1.0, overparam=2.0)
    report("one width-128 layer, overparam 2", rec, time.time() - t)


if __name__ == "__main__":
    main()
