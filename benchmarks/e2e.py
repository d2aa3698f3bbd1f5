"""End-to-end benchmark of ``normonly.reconstruct``: what a user waits for, step by step.

One target layer ``f(x) = W x + b`` of width d (a ``TargetMLP`` of widths ``[d, d]``)
is rebuilt with ``reconstruct(f, radius=1, overparam=2)`` (default options: solver ``auto``,
certificate tolerance 1e-9) in a fresh subprocess per width, and timed as a whole and per step
(``Reconstruction.timings``: frozen weights, Khatri-Rao solve, the rest of the build, the
measured cross-check, the proven bound).

Every time is also given as a **ratio to one float64 application of K and Kᵀ** of the same
layer, measured in the same process just before (``(A * γ) @ B`` and ``((Aᵀ V) * B).sum(1)``
in torch, best of 3), so that runs on noisy shared machines compare. Other columns:

* **solve / flop bound**: the solve's time over ``iterations × 4·n·m`` flops at the machine's
  float32 matmul rate (``torch.mm``, same run; most CG iterations run in float32);
* **naive**: ``numpy.linalg.lstsq`` on the explicit K (n × m float64), for widths up to
  ``--naive-max-width`` (K is 4.3 GB at width 128);
* **err (indep.)**: ``max ‖net(x) − f(x)‖∞ / max ‖f(x)‖∞`` on 2,000 points drawn here (not by the
  certificate's sampler), half inside the ball and half on its sphere, float64;
* **peak RSS**: the worker process's peak resident set (``ru_maxrss``) after the
  reconstructions, imports included (the unit and the rates are measured after it).

Workers run with ``OMP_WAIT_POLICY=PASSIVE``, as the ``normonly`` command sets it (on a shared,
loaded machine OpenMP's spinning threads otherwise stall every parallel region).

Usage::

    python benchmarks/e2e.py                          # widths 64 128 256 on the CPU
    python benchmarks/e2e.py --widths 512 --reps 1    # the width-512 layer (minutes, ~7 GB)
    python benchmarks/e2e.py --device cuda --widths 128 256 512 1024

The markdown table is printed and written to ``--out`` (rows as JSON beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best(fn, device: str, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def _matmul_rate(device: str, dtype) -> float:
    """GFLOP/s of torch.mm (2048² on a CPU, 8192² on a GPU), best of 3."""
    import torch

    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, dtype=dtype, device=device)
    return 2 * n**3 / _best(lambda: a @ a, device) / 1e9


def _unit(width: int, overparam: float, device: str) -> float:
    """Seconds of one float64 application of K and Kᵀ of the layer (the ratio's unit)."""
    import torch

    m = round(overparam * width * width)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(width, m, generator=g, dtype=torch.float64).to(device)
    B = torch.randn(m, width, generator=g, dtype=torch.float64).to(device)
    gam = torch.randn(m, generator=g, dtype=torch.float64).to(device)
    V = torch.randn(width, width, generator=g, dtype=torch.float64).to(device)
    return _best(lambda: ((A * gam) @ B, ((A.T @ V) * B).sum(1)), device)


def _independent_error(net, target, radius: float, device: str) -> float:
    import torch

    g = torch.Generator().manual_seed(20261202)
    d = target.d_in
    z = torch.randn(2000, d, generator=g, dtype=torch.float64)
    z = z / z.norm(dim=1, keepdim=True) * radius  # 1,000 inside (scaled below), 1,000 on it
    z[:1000] *= torch.rand(1000, 1, generator=g, dtype=torch.float64) ** (1.0 / d)
    err, scale = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, 2000, 250):
            x = z[s : s + 250]
            y = net(x.to(device)).to("cpu", torch.float64)
            f = target(x)
            err = max(err, float((y - f).abs().max()))
            scale = max(scale, float(f.abs().max()))
    return err / scale


def _naive(width: int, overparam: float) -> float:
    import numpy as np
    import torch

    from normonly.linalg.khatri_rao import khatri_rao

    m = round(overparam * width * width)
    g = torch.Generator().manual_seed(1)
    A = torch.randn(width, m, generator=g, dtype=torch.float64)
    B = torch.randn(m, width, generator=g, dtype=torch.float64)
    W = torch.randn(width, width, generator=g, dtype=torch.float64)
    t = time.perf_counter()
    K = khatri_rao(A, B).numpy()  # (n, m)
    np.linalg.lstsq(K, W.reshape(-1).numpy(), rcond=None)
    return time.perf_counter() - t


def worker(args: argparse.Namespace) -> dict:
    import torch

    from normonly import reconstruct
    from normonly.nets.target import TargetMLP

    width, device = args.width, args.device
    row: dict = {"width": width, "overparam": args.overparam, "device": device}
    target = TargetMLP.random([width, width], seed=args.seed)
    best: dict | None = None
    rec = None
    for _ in range(args.reps):
        rec = None  # one network at a time: the peak memory is that of one reconstruct
        _sync(device)
        t = time.perf_counter()
        rec = reconstruct(target, radius=1.0, overparam=args.overparam, device=device,
                          seed=args.seed, solve_rtol=args.solve_rtol)  # fmt: skip
        _sync(device)
        total = time.perf_counter() - t
        cert, info = rec.certificate, rec.layers[0]
        if best is None or total < best["e2e_s"]:
            best = dict(
                e2e_s=total, steps={k: v for k, v in rec.timings.items() if k != "total"},
                n=info.shape[0], m=info.shape[1], solver=info.solver, method=info.rank_method,
                iterations=info.iterations, residual=info.rel_residual, passed=cert.passed,
                bound_rel=cert.bound_rel, points=cert.n_points,
            )  # fmt: skip
    row.update(best, err_indep=_independent_error(rec.net, target, 1.0, device))
    n, m = row["n"], row["m"]
    # the peak of the process so far: imports and reconstruct (the unit below allocates more)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del rec
    row["gflops_f64"] = _matmul_rate(device, torch.float64)
    row["gflops_f32"] = _matmul_rate(device, torch.float32)
    row["unit_s"] = _unit(width, args.overparam, device)
    row["flop_bound_s"] = row["iterations"] * 4 * n * m / (row["gflops_f32"] * 1e9)
    if width <= args.naive_max_width:
        row["naive_s"] = _naive(width, args.overparam)
    return row


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    steps = ["frozen_weights", "solve", "build", "measure", "bound"]
    head = ("| width | K (n × m) | unit s | end to end s | **÷ unit** | "
            + " | ".join(f"{s} s (÷ unit)" for s in steps)
            + " | solve ÷ flop bound | naive s | naive ÷ ours | iters | peak RSS MB | "
            "residual | err (indep.) | bound ÷ scale | verdict | points |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['width']} | failed: {r['error']} |")
            continue
        u = r["unit_s"]
        cells = [
            str(r["width"]), f"{r['n']:,} × {r['m']:,}", f"{u:.3f}", f"{r['e2e_s']:.2f}",
            f"**{r['e2e_s'] / u:.0f}**",
            *[f"{r['steps'].get(s, 0.0):.2f} ({r['steps'].get(s, 0.0) / u:.1f})"
              for s in steps],
            f"{r['steps']['solve'] / r['flop_bound_s']:.1f}",
            _fmt(r.get("naive_s")),
            "–" if "naive_s" not in r else f"{r['naive_s'] / r['e2e_s']:.1f}x",
            str(r["iterations"]), f"{r['peak_rss_mb']:.0f}", f"{r['residual']:.1e}",
            f"{r['err_indep']:.1e}",
            f"{r['bound_rel']:.1e}", "PASS" if r["passed"] else "FAIL", f"{r['points']:,}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=None)
    p.add_argument("--overparam", type=float, default=2.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=2, help="reconstructions per width; best kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solve-rtol", type=float, default=None,
                   help="reconstruct's solve_rtol (default: float64 round-off)")
    p.add_argument("--naive-max-width", type=int, default=64)
    p.add_argument("--out", type=Path, default=HERE / "e2e.md")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per width")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY of the workers, as the normonly CLI sets it ('' keeps "
                        "the OpenMP default; see 'Machine notes' in benchmarks/README.md)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        args.width = args.worker
        print(json.dumps(worker(args)))
        return 0
    widths = args.widths or ([64, 128, 256] if args.device == "cpu" else [128, 256, 512, 1024])
    rows = []
    t0 = time.time()
    load0 = os.getloadavg()[0]
    for w in widths:
        cmd = [sys.executable, __file__, "--worker", str(w), "--device", args.device,
               "--overparam", str(args.overparam), "--reps", str(args.reps),
               "--seed", str(args.seed),
               *([] if args.solve_rtol is None else ["--solve-rtol", str(args.solve_rtol)]),
               "--naive-max-width", str(args.naive_max_width)]  # fmt: skip
        try:
            env = dict(os.environ)
            if args.omp_wait_policy:
                env["OMP_WAIT_POLICY"] = args.omp_wait_policy
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                 env=env)  # fmt: skip
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({"width": w, "error": last[:200]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:
            rows.append({"width": w, "error": f"over {args.timeout:.0f} s"})
        print(f"width {w}: done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    ok = [r for r in rows if "error" not in r]
    rates = (f"float64 {ok[0]['gflops_f64']:.0f}, float32 {ok[0]['gflops_f32']:.0f} GFLOP/s"
             if ok else "–")  # fmt: skip
    head = (
        f"Command: `python benchmarks/e2e.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
        f"\n\nMachine: {platform.machine()}, {os.cpu_count()} cores, device {args.device}, "
        f"OMP_WAIT_POLICY={args.omp_wait_policy or 'default'}, "
        f"torch.mm {rates}; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        f"overparam {args.overparam:g}, solve_rtol {args.solve_rtol or 'default (round-off)'}, "
        f"best of {args.reps}; total {time.time() - t0:.0f} s.\n"
    )
    text = head + "\n" + table(rows) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
