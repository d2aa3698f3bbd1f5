"""The proven certificate bound: how tight it is, whether attacks beat it, and what it costs.

    python benchmarks/certificate.py            # grid + cost at width 128 (~2 min on 2 cores)
    python benchmarks/certificate.py --quick    # smaller grid, cost at width 64
    python benchmarks/certificate.py --random 150   # random targets, overparam 1 and 2 (~3 min)

Prints two markdown tables:

1. tightness/soundness: for targets of widths 8-32, depth 2-3, radius 1 and 10, overparam 2 and
   the three constructions (wide, residual k=4, sparse density 0.5), the proven bound relative to
   the output scale, the measured max relative error on 2,000 points, and the largest error found
   by projected gradient ascent (24 starts x 40 steps) — which must never exceed the bound;
2. cost: ``reconstruct`` end to end vs the time of the bound alone (one layer, overparam 2).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from normonly import TargetMLP, reconstruct  # noqa: E402
from normonly.certificate.bound import error_bound  # noqa: E402

F64 = torch.float64


def attack(net, f: TargetMLP, radius: float, starts: int = 24, steps: int = 40) -> float:
    """Projected gradient ascent on ‖net(x) − f(x)‖∞ over the ball."""
    ref = f.to_torch(F64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(starts, f.d_in, generator=g, dtype=F64)
    x = (x / x.norm(dim=1, keepdim=True) * radius * (1 - 1e-15)).requires_grad_(True)
    best = 0.0
    for _ in range(steps):
        err = (net(x) - ref(x)).abs().max(dim=1).values
        best = max(best, float(err.detach().max()))
        (grad,) = torch.autograd.grad(err.sum(), x)
        with torch.no_grad():
            x += 0.05 * radius * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-300)
            x *= torch.clamp(radius * (1 - 1e-15) / x.norm(dim=1, keepdim=True), max=1.0)
    return best


CONSTRUCTIONS = {
    "wide": {"method": "wide"},
    "residual k=4": {"method": "residual", "k": 4},
    "sparse p=0.5": {"method": "wide", "density": 0.5},
}


def tightness(widths_list: list[int], depths: list[int], radii: list[float]) -> list[str]:
    rows = ["| construction | widths | R | bound / scale | measured / scale | attack / bound |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    worst = 0.0
    for (name, kw), d, L, R in itertools.product(CONSTRUCTIONS.items(), widths_list, depths,
                                                 radii):  # fmt: skip
        f = TargetMLP.random([d] * (L + 1), seed=d + L)
        rec = reconstruct(f, radius=R, overparam=2.0, n_points=2000, seed=1, **kw)
        c = rec.certificate
        found = attack(rec.net, f, R)
        assert found <= c.error_bound, (name, d, L, R, found, c.error_bound)
        worst = max(worst, c.bound_rel)
        rows.append(f"| {name} | {[d] * (L + 1)} | {R:g} | {c.bound_rel:.2e} | "
                    f"{c.max_rel_error:.1e} | {found / c.error_bound:.1e} |")  # fmt: skip
    rows.append(f"\nworst bound / scale: {worst:.2e} (certificate tolerance 1e-9)")
    return rows


def cost(width: int) -> list[str]:
    f = TargetMLP.random([width, width], seed=0)
    t0 = time.perf_counter()
    rec = reconstruct(f, radius=1.0, overparam=2.0)
    total = time.perf_counter() - t0
    c = rec.certificate
    solve = sum(lc.wall_time_s for lc in c.layers)
    t0 = time.perf_counter()
    error_bound(rec.net, f, 1.0)
    again = time.perf_counter() - t0
    return [
        "| width | reconstruct s | solve s | bound s | bound / reconstruct | bound / scale |",
        "|---|---|---|---|---|---|",
        f"| {width} | {total:.2f} | {solve:.2f} | {again:.3f} | {again / total:.1%} | "
        f"{c.bound_rel:.2e} |",
    ]


def random_grid(n: int, seed: int = 1) -> list[str]:
    """Certificates of ``n`` random targets (widths 1-12, depth 1-4, R 0.05-20, BatchNorm or
    affine, uniform width or not), wide and residual, overparam 1 and 2: pass rate, worst
    bound / scale, and how often the sampled error exceeded the bound (must be never)."""
    import random

    rng = random.Random(seed)
    stats: dict[float, list[float]] = {1.0: [], 2.0: []}
    fails = {1.0: 0, 2.0: 0}
    violations = 0
    for _ in range(n):
        widths = [rng.randint(1, 12) for _ in range(rng.randint(2, 5))]
        s, radius = rng.randint(0, 10_000), rng.uniform(0.05, 20)
        norm, uniform = rng.choice(["batchnorm", "affine"]), rng.random() < 0.5
        f = TargetMLP.random(widths, seed=s)
        for method in ("wide", "residual"):
            for op in (1.0, 2.0):
                c = reconstruct(f, radius=radius, norm=norm, method=method, overparam=op,
                                uniform_width=uniform and method == "wide", seed=s,
                                n_points=200).certificate  # fmt: skip
                stats[op].append(c.bound_rel)
                fails[op] += not c.passed
                violations += c.max_abs_error > c.error_bound
    lines = [f"random targets: {n} x (wide, residual), seed {seed}",
             f"sampled error above the proven bound: {violations} times"]  # fmt: skip
    for op, vals in stats.items():
        lines.append(f"overparam {op:g}: {fails[op]} of {len(vals)} certificates fail at rtol "
                     f"1e-9; worst bound / scale {max(vals):.2e}")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--random", type=int, default=0, metavar="N",
                    help="only the random-target statistics, over N targets")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.random:
        print("\n".join(random_grid(args.random)))
        return
    if args.quick:
        lines = tightness([8, 16], [2], [1.0, 10.0]) + [""] + cost(64)
    else:
        lines = tightness([8, 16, 32], [2, 3], [1.0, 10.0]) + [""] + cost(128)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
