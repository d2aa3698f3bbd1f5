"""E4 tables and the conclusion paragraph, computed from the rows."""

from __future__ import annotations

import math

from normonly.experiments._common import fmt, group, md_table
from normonly.experiments.e4 import select as sel
from normonly.experiments.e4.sweep import E4Config, err_value

__all__ = ["summarize", "conclusion"]

_MAIN_HEADS = ["overparam", "method", "optimizer", "lr grid", "chosen lr", "val rel err",
               "trainable", "test rel err", "spread", "time s", "seeds"]  # fmt: skip
_WHY_HEADS = ["overparam", "optimizer", "lr", "chosen", "ε", "start test err", "final test err",
              "lower", "final ‖θ−θ*‖/‖θ*‖"]  # fmt: skip
_GN_HEADS = ["overparam", "norm params P", "rank per seed", "λ_max", "smallest λ > 0",
             "cond (non-null)"]  # fmt: skip


def summarize(cfg: E4Config, rows: list[dict]) -> tuple[str, str]:
    table = []
    for o, methods in sel.methods_rows(rows).items():
        for m, rs in methods:
            lo, hi = sel.range_of(rs, "test_rel_error")
            fit = m != "construction"
            table.append([
                o, m, rs[0]["optimizer"] if fit else "—",
                sel.lrs(sel.grid(rows, o, m)) if fit else "—",
                rs[0]["lr"] if fit else "—", sel.med(rs, "val_rel_error"),
                rs[0]["n_trainable"] if fit else rs[0]["n_norm_params"],
                sel.med(rs, "test_rel_error"),
                f"{fmt(lo)}–{fmt(hi)}", sel.med(rs, "train_time_s"), len(rs),
            ])  # fmt: skip
    parts = [
        f"**Final test relative error** ‖ŷ−y‖/‖y‖ on {cfg.n_test} test points (median and "
        f"min–max over seeds) after {cfg.steps} steps; each method's lr is the one of its grid "
        f"with the lowest median *validation* error ({cfg.n_val} validation points, disjoint from "
        "the training and test points); time = optimizer (or construction) seconds:\n\n",
        md_table(_MAIN_HEADS, table),
    ]
    why = [r for r in rows if r["kind"] == "why"]
    if why:
        chosen = {k: rs[0]["lr"] for k, rs in sel.why_chosen(rows).items()}
        wt = [
            [o, opt, lr, "yes" if chosen.get((o, opt, eps)) == lr else "no", eps,
             sel.med(rs, "start_test_rel_error"), sel.med(rs, "test_rel_error"),
             f"{sum(err_value(r['test_rel_error']) < r['start_test_rel_error'] for r in rs)}"
             f"/{len(rs)}",
             sel.med(rs, "final_distance")]
            for (o, opt, lr, eps), rs in group(why, "overparam", "optimizer", "lr", "noise").items()
        ]  # fmt: skip
        parts += [
            f"\n\n**Why: the construction's θ* plus relative noise ε**, then {cfg.why_steps} steps "
            "at every lr of the optimizer's grid ('chosen' = the rate chosen on validation data "
            "for norm_<optimizer> above; only those rows enter the conclusion); 'lower' = seeds "
            "ending below the start error:\n\n",
            md_table(_WHY_HEADS, wt),
        ]
    ct = [
        [o, rs[0]["n_norm_params"], ", ".join(str(r["gn_rank"]) for r in rs),
         sel.med(rs, "gn_lambda_max"), sel.med(rs, "gn_lambda_min_nonzero"), sel.med(rs, "gn_cond")]
        for o, ((_, rs), *_) in sel.methods_rows(rows).items()
    ]  # fmt: skip
    if ct:
        parts += [
            f"\n\n**Conditioning at the construction's solution**: H = 2JᵀJ/N of the MSE w.r.t. "
            f"the norm parameters on {cfg.gn_points} test points (medians over seeds; numerical "
            "rank at λ_max·P·eps):\n\n",
            md_table(_GN_HEADS, ct),
        ]
    return "".join(parts), conclusion(rows)


def _spread(rs: list[dict], key: str) -> str:
    lo, hi = sel.range_of(rs, key)
    return f"{sel.med(rs, key):.1e} (range {lo:.1e}–{hi:.1e})"


def _factor(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def _restarts(rows: list[dict], o: float) -> list[str]:
    """One clause per optimizer: what the restarts from θ* + ε show at its chosen rate."""
    out = []
    by_opt: dict[str, list[tuple[float, list[dict]]]] = {}
    for (oo, opt, eps), rs in sel.why_chosen(rows).items():
        if oo == o:
            by_opt.setdefault(opt, []).append((eps, rs))
    for opt, cases in by_opt.items():
        lr = cases[0][1][0]["lr"]
        back = [
            eps for eps, rs in cases
            if all(err_value(r["test_rel_error"]) < r["start_test_rel_error"] for r in rs)
        ]  # fmt: skip
        away = [eps for eps, rs in cases if eps not in back]
        eps0, rs0 = min(cases, key=lambda c: c[0])
        start, end = sel.med(rs0, "start_test_rel_error"), sel.med(rs0, "test_rel_error")
        text = (
            f"{opt} (lr {lr:g}, its validation-chosen rate) from ε = {eps0:g} goes from "
            f"{start:.1e} to {end:.1e} "
        )
        if not away:
            text += "and ends below its start on every seed at every ε tried, so it returns "
            text += "towards θ* rather than drifting"
        elif not back:
            text += "and ends above its start on some seed at every ε tried: at its best rate "
            text += "it drifts away from θ*, so the shortfall is its step, not the landscape"
        else:
            text += (
                f"; it ends below its start on every seed for ε ∈ {{{sel.lrs(sorted(back))}}} "
                "but not "
                f"for ε ∈ {{{sel.lrs(sorted(away))}}}"
            )
        out.append(text)
    return out


def conclusion(rows: list[dict]) -> str:
    """The E4 conclusion, every number computed from ``rows`` (reads differently for others)."""
    methods = sel.methods_rows(rows)
    if not methods:
        return "No E4 rows to summarise."
    seeds = sorted({r["seed"] for r in rows})
    dtypes = sorted({r.get("dtype", "unknown") for r in rows})
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("construction", "fit", "why")}
    s = [
        f"E4 ran {len(rows)} trials ({kinds['construction']} constructions, {kinds['fit']} "
        f"gradient fits over their learning-rate grids, {kinds['why']} restarts from θ*) on "
        f"{len(seeds)} seeds in {'/'.join(dtypes)}; errors are median (range) over seeds of the "
        "test relative error, each gradient method at the rate of its grid with the lowest "
        "median validation error."
    ]
    for o, ((_, cons), *fits) in methods.items():
        ce, ct = sel.med(cons, "test_rel_error"), sel.med(cons, "train_time_s")
        text = f"At overparam {o:g} the construction reaches {_spread(cons, 'test_rel_error')} "
        text += f"in {ct:.2g} s"
        if not fits:
            s.append(text + ".")
            continue
        ranked = sorted(fits, key=lambda mr: sel.med(mr[1], "test_rel_error"))
        m, rs = ranked[0]
        fe, ft = sel.med(rs, "test_rel_error"), sel.med(rs, "train_time_s")
        text += (
            f"; the best gradient method is {m} ({rs[0]['optimizer']}, lr {rs[0]['lr']:g} of "
            f"{{{sel.lrs(sel.grid(rows, o, m))}}}) at {_spread(rs, 'test_rel_error')} "
            f"after {ft:.2g} s"
        )
        if fe > ce:
            text += (
                f", {_factor(fe, ce):.1e} times the construction's error while taking "
                f"{_factor(ft, ct):.2g} times its time"
            )
        else:
            text += (
                f", at or below the construction's error ({_factor(ce, fe):.2g} times lower) in "
                f"{_factor(ft, ct):.2g} times its time"
            )
        if len(ranked) > 1:
            m2, rs2 = ranked[1]
            text += (
                f"; the runner-up {m2} is at {sel.med(rs2, 'test_rel_error'):.1e} "
                f"({_factor(sel.med(rs2, 'test_rel_error'), fe):.2g} times the best)"
            )
        norm = [mr for mr in ranked if mr[0].startswith("norm_")]
        if norm and norm[0][0] != m:
            nm, nrs = norm[0]
            text += (
                f"; the best norm-only optimizer is {nm} (lr {nrs[0]['lr']:g}) at "
                f"{_spread(nrs, 'test_rel_error')} in {sel.med(nrs, 'train_time_s'):.2g} s"
            )
        if any(r.get("gn_rank") is not None for r in cons):
            ranks = sorted({r["gn_rank"] for r in cons})
            rank = f"{ranks[0]}" if len(ranks) == 1 else f"{ranks[0]}–{ranks[-1]}"
            text += (
                f"; the Hessian at θ* has rank {rank} of {cons[0]['n_norm_params']} (condition "
                f"number {sel.med(cons, 'gn_cond'):.1e} on its non-null part)"
            )
        restarts = _restarts(rows, o)
        if restarts:
            text += ". Restarts from θ* plus relative noise ε: " + "; ".join(restarts)
        s.append(text + ".")
    return " ".join(s)


# ---------------------------------------------------------------------------- figures
