"""E3 — how sparse may the frozen random weights be? (Theorem 3)

The construction with sparse frozen weights is ``docs/theory.md#sparse-frozen-weights``, the
threshold and the three laws compared with it are ``docs/theory.md#density-thresholds``. Two
kinds of trials (:mod:`.sweep`):

``rank``
    One (d, overparam, block of draws). For each seeded draw of masked A (d × m) and B (m × d),
    m = overparam·d², the first density of a geometric grid at which K has full row rank — the
    exact generic rank of the mask (:mod:`normonly.linalg.full_rank_probability`). A draw's
    masks are nested in p, so a few rank checks per draw give P(full rank) at every grid
    density.
``recon``
    One (d, overparam, density, seed): reconstruct a random width-d depth-2 target with sparse
    frozen weights; the certificate's row fields, or the RankDeficientError the construction
    raised; frozen non-zeros against the target's parameter count.

The threshold p* is the density where P(full rank) reaches ``level`` (0.9), interpolated in log p
between grid points, and is compared with √(ln d / d), ln d / d and 2 ln d / d
(:mod:`.stats`). The modules import one way: ``plots`` and ``summary`` use ``stats``; ``stats``
and ``sweep`` use neither.
"""

from __future__ import annotations

from normonly.experiments.base import Experiment
from normonly.experiments.e3.plots import figures
from normonly.experiments.e3.stats import LAWS, curves, law_fits, threshold, wilson_range
from normonly.experiments.e3.summary import summarize
from normonly.experiments.e3.sweep import E3Config, densities, recon_density, run_trial, trials

__all__ = [
    "EXPERIMENT",
    "E3Config",
    "LAWS",
    "curves",
    "densities",
    "law_fits",
    "recon_density",
    "threshold",
    "trials",
    "wilson_range",
]

EXPERIMENT = Experiment(
    name="E3",
    title="Sparse random networks: the density threshold for exact reconstruction",
    question="How sparse can the frozen random weights be before the Khatri-Rao system "
    "loses full rank, and which law (√(ln d/d), ln d/d, 2 ln d/d) does the threshold follow?",
    config_cls=E3Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
