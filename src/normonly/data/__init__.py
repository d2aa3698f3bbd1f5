"""Every data set of normonly, the classifiers trained on them, and their one training loop.

* :mod:`normonly.data.datasets` — real classification data that ships offline (scikit-learn's
  digits, MNIST-1D generated locally): :func:`load_dataset`, :class:`Dataset`.
* :mod:`normonly.data.regression` — regression splits for norm-only gradient fitting, sampled
  from a target on the ball ``‖x‖ ≤ R`` or split from a user's ``(X, Y)``:
  :func:`~normonly.data.regression.regression_data`.
* :mod:`normonly.data.classifiers` — plain and frozen-random BatchNorm classifiers, the
  cross-entropy loop :func:`~normonly.data.classifiers.fit_classifier`, and the package's one
  table of optimizers, :data:`~normonly.data.classifiers.OPTIMIZERS`.

Layering: :mod:`normonly.train` imports from here, never the other way round.
"""

from __future__ import annotations

from normonly.data.datasets import (
    DATASETS,
    Dataset,
    load_dataset,
    load_digits_split,
    load_mnist1d,
)

__all__ = ["DATASETS", "Dataset", "load_dataset", "load_digits_split", "load_mnist1d"]
