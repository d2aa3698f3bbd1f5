"""E4 — the construction vs gradient descent on the same frozen network.

Targets and frozen networks are E1's: ``TargetMLP.random(target_widths, seed=s)`` and the wide
BatchNorm ``NormNet`` of :func:`~normonly.construct.wide.wide_widths` (weights seeded by ``s``)
per overparameterization. Per seed, on one seeded data set (i.i.d. uniform in the ball, from
:func:`~normonly.data.regression.regression_data`; fixed training set, separate validation and test
sets), the trial kinds are:

* ``construction`` — :func:`~normonly.construct.wide.build_wide`: wall time, test error, and the
  Gauss-Newton spectrum ``H = 2JᵀJ/N`` of the MSE w.r.t. the norm parameters at its solution
  (residual 0, so H is the Hessian there);
* ``fit`` — ``norm_adam``, ``norm_sgd``, ``norm_lbfgs`` (:func:`~normonly.train.fit_norm_only`
  from γ=1, β=0) and the baselines ``all_weights``, ``last_layer``, ``random_weights`` (Adam, the
  last two with as many trained entries as there are norm parameters), one run per learning rate;
* ``why`` — the construction's θ* plus a seeded perturbation of relative size ε, then training
  with each learning rate of that optimizer's grid: does the error come back down?

Each method's learning rate is chosen per overparameterization from its grid by the median (over
seeds) final *validation* error; tables and figures report the test error at that rate, and
the ``why`` restarts are read at the rate chosen for the same optimizer on the norm parameters
(``norm_<optimizer>``), so no optimizer is judged at a rate that is not its best. The question
and the design are in ``docs/theory.md#experiments``.
"""

from __future__ import annotations

from normonly.experiments.base import Experiment
from normonly.experiments.e4.plots import figures
from normonly.experiments.e4.summary import conclusion, summarize
from normonly.experiments.e4.sweep import FIT_METHODS, E4Config, lr_grid, run_trial, trials

__all__ = ["EXPERIMENT", "E4Config", "FIT_METHODS", "conclusion", "lr_grid", "run_trial", "trials"]

EXPERIMENT = Experiment(
    name="E4",
    title="Construction vs gradient descent on the norm parameters",
    question="How close do Adam, SGD and L-BFGS on γ, β (and the usual baselines) get to the "
    "construction's exact solution, at what time cost, and why do they fall short?",
    config_cls=E4Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
