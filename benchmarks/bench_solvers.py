"""Benchmark of the Khatri-Rao scale solvers (issue 8): naive dense vs ours vs Adam.

One target layer ``f(x) = W x + b`` of width d (d_in = d_out = d) is rebuilt by the wide
NormNet ``[d, m, d]`` (m = ceil(overparam · d²), norm="affine", float64) three ways:

(a) **naive**: form K explicitly and call ``numpy.linalg.lstsq`` (LAPACK gelsd), skipped with a
    note where its estimated memory (> ``--naive-max-gb``) or time (> ``--naive-max-s``, scaled
    from the largest naive run so far as n² m) is too large;
(b) **ours**: ``solve_scales(A, B, W)`` with ``solver="auto"`` at the default rtol (64 eps), and
    again at rtol = 1e-10;
(c) **Adam** on all normalization parameters (float32, fresh batches from the ball ‖x‖ ≤ 1)
    until the relative error is ≤ 1e-3 or a time cap.

Every measurement runs in a fresh subprocess; its peak memory is the process's peak resident
set (``ru_maxrss``, which sees torch's allocations, unlike tracemalloc), read right after the
solve (before the error evaluation). The error of all three is the same end-to-end number:
``max ‖net(x) − f(x)‖_∞ / max ‖f(x)‖_∞`` over seeded points inside the ball and on its sphere.
FLOPs of ours are ``iterations × 4 · d_out · m · d_in`` (one ``K Kᵀ`` product per CG iteration)
against the machine's measured dense matmul rate (``torch.mm`` 2048², same run).

Usage::

    python benchmarks/bench_solvers.py            # full: widths 16..256, overparam 1 and 2
    python benchmarks/bench_solvers.py --quick    # widths 16..128, shorter Adam cap (~2-3 min)

The markdown table is printed and written to ``benchmarks/results.md`` (rows also as JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WAIT_POLICY = "PASSIVE"  # set by --omp-wait-policy; see benchmarks/README.md
NAIVE_MEM_FACTOR = 2.2  # gelsd holds K, a Fortran copy of it and its workspace (measured ~2x)


# ----------------------------------------------------------------------------- workers
def _problem(width: int, overparam: float, seed: int, dtype=None):
    import torch

    from normonly.nets.target import TargetMLP
    from normonly.nets.wide import NormNet

    m = math.ceil(overparam * width * width - 1e-9)
    target = TargetMLP.random([width, width], seed=seed)
    net = NormNet([width, m, width], norm="affine", seed=seed, dtype=dtype or torch.float64)
    return target, net


def _set_scales(net, target, gamma, radius: float = 1.0) -> None:
    """The wide construction of one layer (always-on shifts, bias cancellation) for scales γ."""
    import torch

    from normonly.construct.wide import relu_on_shift

    B, A = net.weight(0), net.weight(1)  # (m, d_in), (d_out, m)
    beta = relu_on_shift(gamma, B, radius)
    net.set_affine(0, gamma, beta)
    b = target.biases[0].to(A)
    net.set_affine(1, torch.ones_like(b), b - A @ beta)


def _rel_error(net, target, n_points: int, seed: int = 1) -> float:
    import torch

    from normonly.certificate.sampling import sample_ball

    p = next(net.parameters())
    inside, sphere = sample_ball(n_points, target.d_in, 1.0, seed=seed)
    x = torch.cat([inside, sphere])
    err, scale = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(x), 64):  # (64, m) activations at a time
            xs = x[s : s + 64]
            fx = target(xs)
            out = net(xs.to(device=p.device, dtype=p.dtype)).double().cpu()
            err = max(err, float((out - fx).abs().max()))
            scale = max(scale, float(fx.abs().max()))
    return err / scale


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def work_rate(cfg: dict) -> dict:
    import torch

    out = {}
    dev = torch.device(cfg.get("device", "cpu"))
    size = 2048 if dev.type == "cpu" else 8192
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for name, dt in (("float64", torch.float64), ("float32", torch.float32)):
        a = torch.randn(size, size, dtype=dt, device=dev)
        b = torch.randn(size, size, dtype=dt, device=dev)
        torch.mm(a, b)
        sync()
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync()
            best = min(best, time.perf_counter() - t0)
        out[f"gflops_{name}"] = 2 * size**3 / best / 1e9
    return out


def work_baseline(cfg: dict) -> dict:
    _problem(cfg["width"], cfg["overparam"], cfg["seed"])
    return {"peak_mb": _peak_mb()}


def work_naive(cfg: dict) -> dict:
    import numpy as np
    import torch

    from normonly.linalg.khatri_rao import khatri_rao

    target, net = _problem(cfg["width"], cfg["overparam"], cfg["seed"])
    A, B, W = net.weight(1), net.weight(0), target.weights[0]
    np.linalg.lstsq(np.eye(8) + 1.0, np.ones(8), rcond=None)  # warm-up: LAPACK, threads
    t0 = time.perf_counter()
    K = khatri_rao(A, B).numpy()  # (n, m)
    gamma = np.linalg.lstsq(K, W.reshape(-1).numpy(), rcond=None)[0]
    wall = time.perf_counter() - t0
    peak = _peak_mb()
    res = float(np.linalg.norm(K @ gamma - W.reshape(-1).numpy()) / np.linalg.norm(W.numpy()))
    del K
    _set_scales(net, target, torch.from_numpy(gamma))
    err = _rel_error(net, target, cfg["n_eval"])
    return {"time_s": wall, "peak_mb": peak, "rel_residual": res, "max_rel_error": err}


def work_ours(cfg: dict) -> dict:
    from normonly.linalg.solve import solve_scales

    target, net = _problem(cfg["width"], cfg["overparam"], cfg["seed"])
    net = net.to(cfg.get("device", "cpu"))
    A, B, W = net.weight(1), net.weight(0), target.weights[0].to(cfg.get("device", "cpu"))
    for solver, m in (("svd", 8), ("lu", 4), ("mixed", 8)):  # warm-up: LAPACK, BLAS, threads
        solve_scales(A[:2, :m], B[:m, :2], W[:2, :2], solver=solver, allow_rank_deficient=True)
    load = os.getloadavg()[0]
    gamma, info = solve_scales(A, B, W, solver=cfg["solver"])
    out = {
        "time_s": info.wall_time_s,
        "solver": info.solver,
        "iterations": info.iterations,
        "rel_residual": info.rel_residual,
        "cond": info.cond,
        "method": info.rank_method,
        "load": load,
    }
    if cfg.get("rtol_loose"):
        _, loose = solve_scales(A, B, W, solver=cfg["solver"], rtol=cfg["rtol_loose"])
        out.update(time_loose_s=loose.wall_time_s, rel_residual_loose=loose.rel_residual,
                   iterations_loose=loose.iterations)  # fmt: skip
    out["peak_mb"] = _peak_mb()
    _set_scales(net, target, gamma)
    out["max_rel_error"] = _rel_error(net, target, cfg["n_eval"])
    return out


def work_adam(cfg: dict) -> dict:
    import torch

    from normonly.certificate.sampling import sample_ball

    target, net = _problem(cfg["width"], cfg["overparam"], cfg["seed"], dtype=torch.float32)
    dev = torch.device(cfg.get("device", "cpu"))
    net = net.to(dev)
    net.freeze_weights()
    d = target.d_in
    best = {"max_rel_error": math.inf, "time_s": math.nan, "steps": 0, "lr": math.nan}
    budget = cfg["adam_cap_s"]  # per learning rate
    init = {k: v.clone() for k, v in net.state_dict().items()}
    for lr in cfg["adam_lrs"]:
        net.load_state_dict(init)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        t0, step, err, next_eval = time.perf_counter(), 0, math.inf, 0.0
        while True:
            elapsed = time.perf_counter() - t0
            if elapsed >= next_eval:  # evaluate about once a second (not counted as training)
                te = time.perf_counter()
                err = _rel_error(net, target, cfg["n_eval"])
                t0 += time.perf_counter() - te
                next_eval = elapsed + 1.0
                if err <= 1e-3 or elapsed >= budget:
                    break
            inside, sphere = sample_ball(cfg["adam_batch"], d, 1.0, seed=10_000 + step)
            x = torch.cat([inside, sphere])
            y = target(x).to(device=dev, dtype=torch.float32)
            loss = torch.nn.functional.mse_loss(net(x.to(device=dev, dtype=torch.float32)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if err < best["max_rel_error"]:
            best = {"max_rel_error": err, "time_s": elapsed, "steps": step, "lr": lr}
    best["reached"] = best["max_rel_error"] <= 1e-3
    best["peak_mb"] = _peak_mb()
    return best


WORKERS = {"rate": work_rate, "baseline": work_baseline, "naive": work_naive,
           "ours": work_ours, "adam": work_adam}  # fmt: skip


# ----------------------------------------------------------------------------- driver
def run_worker(
    kind: str, cfg: dict, threads: int | None, timeout: float, blas_threads: int | None = None
) -> dict:
    """Run one measurement in a fresh interpreter; returns its JSON (or an error note)."""
    env = dict(os.environ)
    if blas_threads:
        env["OPENBLAS_NUM_THREADS"] = str(blas_threads)  # numpy's LAPACK (the naive solve)
    if WAIT_POLICY:
        env["OMP_WAIT_POLICY"] = WAIT_POLICY
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(cfg)]
    if threads:
        cmd += ["--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"killed after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"skipped": f"failed: {last[:160]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(x, spec=".3g", none="–"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def _ratio(x, prefix: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{prefix}{x:.0f}x" if x >= 10 else f"{prefix}{x:.1f}x"


def table(rows: list[dict]) -> str:
    head = ("| width | over | K (n × m) | naive s | naive MB | naive err | ours | ours s "
            "(1e-14) | s to 1e-10 | iters | residual | ours MB | ours err | naive/ours | "
            "GFLOP/s (% mm) | Adam s | Adam err | Adam/ours | load |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        nv, ou, ad = r["naive"], r["ours"], r["adam"]
        n_s = _fmt(nv.get("time_s"), ".2f", nv.get("skipped", "–"))
        if "blas_threads" in nv and "time_s" in nv:
            n_s += f" ({nv['blas_threads']}t)"
        sp = nv.get("time_s", math.nan) / ou.get("time_s", math.nan) if "time_s" in ou else None
        ad_s = _fmt(ad.get("time_s"), ".1f") + ("" if ad.get("reached") else " (cap)")
        ad_ratio = (ad.get("time_s", math.nan) / ou["time_s"]) if "time_s" in ou else None
        ad_gt = "" if ad.get("reached") or ad_ratio is None else ">"
        iterative = ou.get("solver") in ("mixed", "cg", "lsqr")
        flops = 4 * r["n"] * r["m"] * ou.get("iterations", 0)  # one K Kᵀ (or K, Kᵀ) per it.
        rate = flops / ou["time_s"] / 1e9 if iterative and ou.get("time_s") else None
        pct = f"{rate:.0f} ({100 * rate / r['mm_gflops']:.0f}%)" if rate else "–"
        lines.append(
            f"| {r['width']} | {r['overparam']:g} | {r['n']} × {r['m']} | {n_s} | "
            f"{_fmt(nv.get('peak_mb'), '.0f')} | {_fmt(nv.get('max_rel_error'), '.1e')} | "
            f"{ou.get('solver', ou.get('skipped', '–'))} | {_fmt(ou.get('time_s'), '.3f')} | "
            f"{_fmt(ou.get('time_loose_s'), '.3f')} | {ou.get('iterations', '–')} | "
            f"{_fmt(ou.get('rel_residual'), '.1e')} | {_fmt(ou.get('peak_mb'), '.0f')} | "
            f"{_fmt(ou.get('max_rel_error'), '.1e')} | {_ratio(sp)} | {pct} | {ad_s} | "
            f"{_fmt(ad.get('max_rel_error'), '.1e')} | {_ratio(ad_ratio, ad_gt)} | "
            f"{_fmt(ou.get('load'), '.1f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="widths up to 128, naive cap 15 s, Adam cap 8 s")  # fmt: skip
    p.add_argument("--widths", type=int, nargs="+")
    p.add_argument("--overparams", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--solver", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads in the workers")
    p.add_argument("--device", default="cpu", help="device of ours and Adam (naive: CPU)")
    p.add_argument("--naive-max-gb", type=float, default=6.0)
    p.add_argument("--naive-blas-threads", type=int, nargs="+",
                   help="OpenBLAS thread counts tried for naive, fastest kept (default 1 2; "
                   "quick: 1)")  # fmt: skip
    p.add_argument("--naive-max-s", type=float, help="default 600 (quick: 15)")
    p.add_argument("--ours-max-s", type=float, default=400.0)
    p.add_argument("--max-dense-gb", type=float, default=1.0, help="for the square rows' note")
    p.add_argument("--adam-cap-s", type=float)
    p.add_argument("--adam-lrs", type=float, nargs="+", help="default 1e-2 (each gets the cap)")
    p.add_argument("--no-adam", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results.md")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY of the workers ('' keeps the OpenMP default)")  # fmt: skip
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(WORKERS[args.worker[0]](json.loads(args.worker[1]))))
        return 0

    global WAIT_POLICY
    WAIT_POLICY = args.omp_wait_policy
    widths = args.widths or ([16, 32, 64, 128] if args.quick else [16, 32, 64, 128, 256])
    naive_max_s = args.naive_max_s or (15.0 if args.quick else 600.0)
    adam_cap = args.adam_cap_s or (8.0 if args.quick else 30.0)
    adam_lrs = args.adam_lrs or [1e-2]
    naive_threads = args.naive_blas_threads or ([1] if args.quick else [1, 2])
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    rate = run_worker("rate", {"device": args.device}, args.threads, 120)
    base = run_worker("baseline", {"width": 16, "overparam": 1.0, "seed": 0}, args.threads, 120)
    mm = rate.get("gflops_float32", math.nan)
    print(f"dense matmul (torch.mm, best of 3, threads={args.threads or 'default'}): "
          f"{rate.get('gflops_float64', math.nan):.1f} GFLOP/s float64, {mm:.1f} float32; "
          f"empty worker peak RSS {base.get('peak_mb', math.nan):.0f} MB", flush=True)  # fmt: skip
    rows, naive_ref = [], None  # (n² m, seconds) of the largest naive run so far
    for over in args.overparams:
        for w in widths:
            n = w * w
            m = math.ceil(over * n - 1e-9)
            cfg = {"width": w, "overparam": over, "seed": args.seed, "solver": args.solver,
                   "n_eval": 512 if w >= 128 else 2000, "rtol_loose": 1e-10,
                   "adam_cap_s": adam_cap, "adam_lrs": adam_lrs, "adam_batch": 256,
                   "device": args.device}  # fmt: skip
            row = {"width": w, "overparam": over, "n": n, "m": m, "mm_gflops": mm}
            # (a) naive
            mem_gb = NAIVE_MEM_FACTOR * n * m * 8 / 1e9
            # time ~ n² m (gelsd); scaled from the largest naive run with n >= 1024 (smaller
            # ones are overhead-bound and would overestimate); always run below that
            est_s = naive_ref[1] * n * n * m / naive_ref[0] if naive_ref and n >= 1024 else 0.0
            if mem_gb > args.naive_max_gb:
                row["naive"] = {"skipped": f"skip: ~{mem_gb:.0f} GB"}
            elif est_s > naive_max_s:
                row["naive"] = {"skipped": f"skip: ~{est_s:.0f} s"}
            else:
                tries = []  # OpenBLAS threads: the faster of each count (see the README)
                for bt in naive_threads:
                    res = run_worker("naive", cfg, args.threads, 2 * naive_max_s, bt)
                    tries.append({**res, "blas_threads": bt})
                done = [t for t in tries if "time_s" in t]
                row["naive"] = min(done, key=lambda t: t["time_s"]) if done else tries[0]
                row["naive_tries"] = tries
                t_naive = row["naive"].get("time_s")
                if t_naive and n >= 1024 and (not naive_ref or n * n * m > naive_ref[0]):
                    naive_ref = (n * n * m, t_naive)
            # (b) ours
            square_big = m < 1.5 * n and n * m * 8 > args.max_dense_gb * 2**30
            if square_big and args.solver == "auto":
                row["ours"] = {"skipped": f"n/a: K {n * m * 8 / 2**30:.0f} GiB > dense limit"}
            else:
                row["ours"] = run_worker("ours", cfg, args.threads, args.ours_max_s)
            # (c) Adam
            if args.no_adam:
                row["adam"] = {"skipped": "not run"}
            else:
                cap_all = (adam_cap + 30) * len(adam_lrs) + 120
                row["adam"] = run_worker("adam", cfg, args.threads, cap_all)
            rows.append(row)
            print(json.dumps(row), flush=True)
    load1 = os.getloadavg()
    total_s = time.perf_counter() - t_start
    md = "\n".join([
        f"Command: `{' '.join(['python benchmarks/bench_solvers.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device "
        f"{args.device}, torch "
        f"threads {args.threads or 'default'}, OMP_WAIT_POLICY={WAIT_POLICY or 'unset'}; "
        f"load average {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end; dense matmul {rate.get('gflops_float64', math.nan):.1f} "
        f"GFLOP/s float64, {mm:.1f} GFLOP/s float32 (torch.mm 2048² on a CPU, 8192² on a "
        f"GPU, best of 3); empty worker "
        f"peak RSS {base.get('peak_mb', math.nan):.0f} MB; total {total_s:.0f} s.",
        "",
        table(rows),
        "",
    ])  # fmt: skip
    print(md)
    from normonly._atomic import atomic_write_text

    atomic_write_text(args.out, md)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
