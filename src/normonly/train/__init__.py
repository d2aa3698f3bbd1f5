"""Gradient training of normalization parameters only, and its baselines.

* :func:`freeze_all_but_norm` — for any PyTorch model, leave only norm-layer γ, β trainable.
* :func:`fit_norm_only` — fit them by Adam, SGD or L-BFGS to a target on the ball or to data
  (:func:`normonly.data.regression.regression_data` builds the splits).
* :func:`fit_all_weights`, :func:`fit_last_layer`, :func:`fit_random_weights` — the baselines a
  reader expects beside it, with the same interface and the same logged history.
* :func:`gauss_newton_spectrum`, :func:`perturb_parameters` — the local geometry of the loss at a
  solution (E4's "why" study).
* :mod:`normonly.train.bn_sparse` — BatchNorm-only training of sparse random classifiers on real
  data (E6), by the classifier loop of :mod:`normonly.data.classifiers`.

Layering: this package imports :mod:`normonly.data` (data sets, classifiers, the optimizer table
:data:`OPTIMIZERS`), never the other way round.
"""

from __future__ import annotations

from normonly.data.classifiers import OPTIMIZERS
from normonly.train.baselines import (
    count_norm_parameters,
    fit_all_weights,
    fit_last_layer,
    fit_random_weights,
)
from normonly.train.conditioning import (
    GaussNewtonSpectrum,
    gauss_newton_spectrum,
    perturb_parameters,
)
from normonly.train.fit import BN_MODES, FitResult, fit_norm_only, train_entries
from normonly.train.freeze import (
    DEFAULT_KINDS,
    NORM_KINDS,
    FreezeSummary,
    freeze_all_but_norm,
    norm_kind,
)

__all__ = [
    "BN_MODES",
    "DEFAULT_KINDS",
    "NORM_KINDS",
    "OPTIMIZERS",
    "FitResult",
    "FreezeSummary",
    "GaussNewtonSpectrum",
    "count_norm_parameters",
    "fit_all_weights",
    "fit_last_layer",
    "fit_norm_only",
    "fit_random_weights",
    "freeze_all_but_norm",
    "gauss_newton_spectrum",
    "norm_kind",
    "perturb_parameters",
    "train_entries",
]
