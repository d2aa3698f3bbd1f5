"""Real classification data that ships offline: scikit-learn's digits and MNIST-1D.

Neither loader touches the network or writes a file:

* :func:`load_digits_split` reads the 8×8 digits bundled inside scikit-learn (1797 images, 64
  pixel features in 0..16, divided by 16 so every feature lies in [0, 1]) and splits them with a
  seeded, class-stratified split (75 % train / 25 % test by default);
* :func:`load_mnist1d` *generates* MNIST-1D with the generator of the ``mnist1d`` package
  (:func:`mnist1d.data.make_dataset` with the package's default arguments: 5000 signals of length
  40, 80 % train). The package's ``get_dataset`` is never called, because by default it downloads
  a pickle from GitHub and writes it into the working directory. ``make_dataset`` seeds NumPy's and
  Python's *global* random generators; this module restores both afterwards so that loading data
  never changes anyone else's random stream.

The default MNIST-1D seed 42 is the package's default, i.e. the benchmark whose published
baselines (logistic regression ≈ 32 %, MLP ≈ 68 %, CNN ≈ 94 % test accuracy) experiment E6 draws
beside its results (see ``docs/theory.md#experiments``).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np
import torch

from normonly._checks import check_int

__all__ = ["Dataset", "load_digits_split", "load_mnist1d", "load_dataset", "DATASETS"]

DATASETS = ("digits", "mnist1d")

#: The MNIST-1D generator's own default seed (the published benchmark).
MNIST1D_SEED = 42


@dataclass(frozen=True)
class Dataset:
    """A train/test split of a classification data set.

    Attributes
    ----------
    name : str
        ``"digits"`` or ``"mnist1d"``.
    X_train : torch.Tensor
        ``(n_train, d_in)`` float64 features.
    y_train : torch.Tensor
        ``(n_train,)`` int64 labels in ``0 .. n_classes-1``.
    X_test : torch.Tensor
        ``(n_test, d_in)`` float64 features.
    y_test : torch.Tensor
        ``(n_test,)`` int64 labels.
    n_classes : int
        Number of classes (10 for both data sets).
    seed : int
        The data seed (digits: the split; MNIST-1D: the generator's seed).
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    seed: int

    @property
    def d_in(self) -> int:
        """Number of input features."""
        return int(self.X_train.shape[1])

    def max_input_norm(self) -> float:
        """``max ‖x‖₂`` over train and test inputs: the radius R of a ball holding all the data."""
        X = torch.cat([self.X_train, self.X_test])  # (n_train + n_test, d_in)
        return float(X.norm(dim=1).max())

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.X_train.shape)}, "
            f"test={tuple(self.X_test.shape)}, n_classes={self.n_classes}, seed={self.seed})"
        )


def _dataset(name: str, seed: int, Xtr, ytr, Xte, yte) -> Dataset:
    as_x = lambda a: torch.tensor(np.array(a, dtype=np.float64))  # noqa: E731  (copies)
    as_y = lambda a: torch.tensor(np.array(a, dtype=np.int64))  # noqa: E731
    y_tr, y_te = as_y(ytr), as_y(yte)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(name, as_x(Xtr), y_tr, as_x(Xte), y_te, n_classes, seed)


def load_digits_split(seed: int = 0, *, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's bundled 8×8 digits, pixels scaled to [0, 1], seeded stratified split.

    Parameters
    ----------
    seed : int
        Seed of the train/test split (the same seed gives the same split).
    test_fraction : float
        Fraction of the 1797 images held out for testing, in (0, 1).

    Returns
    -------
    Dataset
        ``X_train`` ``(1347, 64)``, ``X_test`` ``(450, 64)`` float64 in [0, 1] with the default
        fraction; labels int64 in 0..9.

    Raises
    ------
    ValueError
        ``test_fraction`` outside (0, 1) or a negative seed.

    Example
    -------
    >>> data = load_digits_split(0)
    >>> data.X_train.shape, data.X_test.shape
    (torch.Size([1347, 64]), torch.Size([450, 64]))
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    seed = check_int("seed", seed, minimum=0)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be in (0, 1) (the share of images held out), got "
            f"{test_fraction!r}; e.g. 0.25"
        )
    X, y = load_digits(return_X_y=True)  # (1797, 64) in 0..16, bundled with scikit-learn
    Xtr, Xte, ytr, yte = train_test_split(
        X / 16.0, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return _dataset("digits", seed, Xtr, ytr, Xte, yte)


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int, num_samples: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # the package defaults (the published benchmark at seed 42)
    args.seed = seed
    args.num_samples = num_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset seeds and draws from the global generators: put them back afterwards
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = (d["x"], d["y"], d["x_test"], d["y_test"])
    for a in arrays:
        a.setflags(write=False)
    return arrays


def load_mnist1d(seed: int = MNIST1D_SEED, *, num_samples: int = 5000) -> Dataset:
    """MNIST-1D generated offline by the ``mnist1d`` package (never downloaded).

    Parameters
    ----------
    seed : int
        Seed of the generator; the default 42 gives the published benchmark.
    num_samples : int
        Total number of signals (80 % train, 20 % test); a multiple of 10 keeps the classes
        balanced. The benchmark uses 5000 (4000 train / 1000 test).

    Returns
    -------
    Dataset
        ``X_train`` ``(4000, 40)``, ``X_test`` ``(1000, 40)`` float64 (standardised by the
        generator: zero mean, unit standard deviation overall); labels int64 in 0..9.

    Raises
    ------
    ValueError
        A negative seed or fewer than 10 samples.

    Example
    -------
    >>> data = load_mnist1d(num_samples=500)
    >>> data.X_train.shape, data.X_test.shape
    (torch.Size([400, 40]), torch.Size([100, 40]))
    """
    seed = check_int("seed", seed, minimum=0)
    num_samples = check_int("num_samples", num_samples, minimum=10)
    Xtr, ytr, Xte, yte = _mnist1d_arrays(seed, num_samples)
    return _dataset("mnist1d", seed, Xtr, ytr, Xte, yte)


def load_dataset(name: str, seed: int | None = None) -> Dataset:
    """Load ``"digits"`` or ``"mnist1d"`` by name (``seed=None``: the loader's default seed).

    Raises
    ------
    ValueError
        An unknown name; the message lists the known ones.
    """
    if name == "digits":
        return load_digits_split(0 if seed is None else seed)
    if name == "mnist1d":
        return load_mnist1d(MNIST1D_SEED if seed is None else seed)
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
