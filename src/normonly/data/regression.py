"""Regression data for gradient fitting: samples of the domain ball, or a user's (X, Y) tensors.

A fit minimises the mean squared error on a **fixed training set** drawn once from the seed (not
fresh samples per step): every optimizer then sees the same finite problem, L-BFGS gets the
deterministic loss its line search needs, and validation/test sets are disjoint draws from the
same distribution.

Inputs for a target are i.i.d. uniform in the ball ``‖x‖₂ ≤ R`` (the domain on which the
constructions are exact, ``docs/theory.md#the-domain``). They come from the package's one ball
sampler, :func:`normonly.certificate.sampling.sample_ball`: one seeded call returns
``n_train + n_val + n_test + 1`` uniform inside points; the first of them, which that sampler
always sets to the origin, is dropped so that every training, validation and test point is an
i.i.d. uniform draw, and the rest are cut into the three splits in that order. The sampler's
points on the sphere are not used.

Errors are reported as the relative error ``‖ŷ − y‖_F / ‖y‖_F`` over a split and as the MSE
``mean((ŷ − y)²)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from normonly._checks import check_int, check_radius
from normonly.certificate.sampling import sample_ball
from normonly.nets.target import TargetMLP

__all__ = ["RegressionData", "regression_data", "SPLITS"]

SPLITS = ("train", "val", "test")
N_TRAIN_TARGET = 4096  # default training-set size when sampling a target


@dataclass
class RegressionData:
    """Train/validation/test splits ``x_*`` of shape (n_*, d_in) and ``y_*`` of shape (n_*, d_out).

    Attributes
    ----------
    source : str
        ``"target"`` (sampled from a TargetMLP on the ball) or ``"data"`` (a given dataset).
    radius : float or None
        The ball radius for a target.
    seed : int
        Seed of the sampling or of the split.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    radius: float | None
    seed: int

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of split ``name`` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def to(self, device: str | torch.device, dtype: torch.dtype) -> RegressionData:
        """A copy with every tensor on ``device`` in ``dtype``."""
        moved = {
            f"{a}_{s}": getattr(self, f"{a}_{s}").to(device=device, dtype=dtype)
            for s in SPLITS
            for a in ("x", "y")
        }
        return RegressionData(**moved, source=self.source, radius=self.radius, seed=self.seed)

    @torch.no_grad()
    def errors(self, net: nn.Module, name: str) -> tuple[float, float]:
        """``(relative error, MSE)`` of ``net`` on split ``name`` (call ``net.eval()`` first)."""
        x, y = self.split(name)
        pred = net(x)
        diff = (pred - y).double()
        scale = y.double().norm()
        rel = float(diff.norm() / scale) if scale > 0 else float(diff.norm())
        return rel, float(diff.pow(2).mean())


def _count(name: str, value: int | float, n: int) -> int:
    """An int count, or a float fraction of ``n`` rows."""
    if isinstance(value, float) and 0.0 < value < 1.0:
        return max(1, math.floor(value * n))
    return check_int(name, value, minimum=1)


def regression_data(
    target_or_data: TargetMLP | nn.Module | tuple[torch.Tensor, torch.Tensor] | RegressionData,
    *,
    radius: float = 1.0,
    n_train: int | None = None,
    n_val: int | float = 1024,
    n_test: int | float = 4096,
    seed: int = 0,
) -> RegressionData:
    """Build seeded train/validation/test splits (float64, CPU).

    Parameters
    ----------
    target_or_data : TargetMLP, nn.Sequential of Linear/ReLU, (X, Y) tensors, or RegressionData
        A target is evaluated on i.i.d. uniform points of the ball ``‖x‖ ≤ radius`` (train,
        then val, then test, from one seeded draw; see the module docstring). ``X`` of shape
        (n, d_in) and ``Y`` of shape (n, d_out) are split by a seeded permutation. A
        RegressionData is returned as is.
    radius : float
        Ball radius R (targets only).
    n_train : int, optional
        Training-set size; default 4096 for a target, all remaining rows for a dataset.
    n_val, n_test : int or float
        Sizes of the validation and test splits (a float in (0, 1) is a fraction of the rows of
        a dataset).
    seed : int
        Seed of the sampling or of the permutation.

    Returns
    -------
    RegressionData

    Raises
    ------
    ValueError
        Bad sizes, mismatched or non-2-D tensors, too few rows for the requested splits.
    TypeError
        An input of another type.

    Example
    -------
    >>> f = TargetMLP.random([3, 4, 2], seed=0)
    >>> data = regression_data(f, n_train=64, n_val=16, n_test=16, seed=0)
    >>> data.x_train.shape, data.y_test.shape
    (torch.Size([64, 3]), torch.Size([16, 2]))
    """
    if isinstance(target_or_data, RegressionData):
        return target_or_data
    seed = check_int("seed", seed, minimum=0)
    if isinstance(target_or_data, nn.Module):
        target_or_data = TargetMLP.from_torch(target_or_data)
    if isinstance(target_or_data, TargetMLP):
        f = target_or_data
        radius = check_radius(radius)
        sizes = [
            check_int("n_train", N_TRAIN_TARGET if n_train is None else n_train, minimum=1),
            check_int("n_val", n_val, minimum=1),
            check_int("n_test", n_test, minimum=1),
        ]
        # sample_ball(2m) gives m inside points, the first the origin: drop it (module docstring)
        inside, _ = sample_ball(2 * (sum(sizes) + 1), f.d_in, radius, seed=seed)
        xs = [x.clone() for x in inside[1:].split(sizes)]  # float64, uniform in the ball
        ys = [f(x) for x in xs]
        return RegressionData(
            xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], source="target", radius=radius, seed=seed
        )
    if not isinstance(target_or_data, tuple | list) or len(target_or_data) != 2:
        raise TypeError(
            "target_or_data must be a TargetMLP, an nn.Sequential of Linear/ReLU, an (X, Y) pair "
            f"of tensors or a RegressionData, got {type(target_or_data).__name__}"
        )
    x, y = (torch.as_tensor(t) for t in target_or_data)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y must be 2-D with the same number of rows, (n, d_in) and (n, d_out); got "
            f"shapes {tuple(x.shape)} and {tuple(y.shape)} (reshape a 1-D Y with Y[:, None])"
        )
    if not (x.is_floating_point() and y.is_floating_point()):
        raise TypeError(f"X and Y must be floating point, got {x.dtype} and {y.dtype}")
    n = x.shape[0]
    nv, nt = _count("n_val", n_val, n), _count("n_test", n_test, n)
    rest = n - nv - nt
    ntr = rest if n_train is None else check_int("n_train", n_train, minimum=1)
    if rest < 1 or ntr > rest:
        raise ValueError(
            f"the dataset has {n} rows, too few for n_val={nv} + n_test={nt} + n_train={ntr}: "
            "pass smaller n_val/n_test (ints or fractions such as 0.1) or n_train"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, test, train = perm[:nv], perm[nv : nv + nt], perm[nv + nt : nv + nt + ntr]
    x, y = x.detach().double(), y.detach().double()
    return RegressionData(
        x[train], y[train], x[val], y[val], x[test], y[test], source="data", radius=None, seed=seed
    )
