"""Norm-only gradient training: fit γ, β of a frozen network by minimising the MSE.

:func:`fit_norm_only` freezes everything but the normalization layers
(:func:`~normonly.train.freeze.freeze_all_but_norm`) and runs Adam, SGD with momentum or L-BFGS
(the package's one table of optimizers, :data:`normonly.data.classifiers.OPTIMIZERS`) on a fixed
training set (:mod:`normonly.data.regression`). The same loop (:func:`train_entries`) trains
any chosen set of parameter entries, which is how the baselines of
:mod:`normonly.train.baselines` are built, so every method is timed and logged the same way.

Protocol of one fit:

* Adam and SGD take one minibatch of ``batch_size`` rows per step, drawn with replacement from the
  training set by a private generator seeded with ``seed``; L-BFGS takes one iteration (strong
  Wolfe line search) per step on the full training set, since its line search needs a
  deterministic loss.
* ``bn_mode="eval"``: the model is in eval mode throughout (BatchNorm uses its running statistics,
  so it is exactly a per-unit affine map, ``docs/theory.md#the-networks``). ``bn_mode="train"``:
  the model trains in train mode (BatchNorm normalises by batch statistics and updates its running
  statistics); errors are always measured in eval mode, as a user would deploy the model.
* The history is logged at step 0, at ``log_every`` steps (default: ~40 log-spaced steps) and at
  the last step. ``wall_time_s`` counts optimizer time only, not the logging evaluations.
  ``log_splits`` chooses the splits measured at the logged steps (default all three); the last
  row always has every split, so the final train, validation and test errors are always there.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from normonly._checks import check_int
from normonly.data.classifiers import FULL_BATCH_OPTIMIZERS, check_optimizer, make_optimizer
from normonly.data.regression import SPLITS, RegressionData, regression_data
from normonly.train.freeze import DEFAULT_KINDS, freeze_all_but_norm

__all__ = ["fit_norm_only", "train_entries", "FitResult", "BN_MODES"]

logger = logging.getLogger(__name__)

BN_MODES = ("eval", "train")
_N_LOGS = 40


@dataclass
class FitResult:
    """What a fit returns.

    Attributes
    ----------
    method : str
        ``"norm_only"``, ``"all_weights"``, ``"last_layer"`` or ``"random_weights"``.
    history : list of dict
        Rows ``{step, wall_time_s, train_rel_error, train_mse, val_rel_error, val_mse,
        test_rel_error, test_mse}`` (the logged steps before the last hold only the splits in
        ``log_splits``).
    stopped : str
        ``"steps"``, ``"time_limit"`` or ``"diverged"`` (non-finite loss or parameters).
    n_trainable : int
        Scalar parameter entries that were trained.
    """

    method: str
    optimizer: str
    lr: float
    steps: int
    steps_done: int
    batch_size: int
    bn_mode: str
    seed: int
    n_train: int
    n_trainable: int
    stopped: str
    wall_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    freeze: dict | None = None

    @property
    def final(self) -> dict[str, float]:
        """The last history row."""
        return self.history[-1]

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


def _check_lr(lr: object) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(
            f"lr must be a finite number > 0, got {lr!r}; e.g. lr=1e-2 for Adam, 1e-1 for SGD, "
            "1.0 for L-BFGS (the initial step of its line search)"
        )
    return float(lr)


def _log_steps(steps: int, log_every: int | None) -> set[int]:
    if log_every is None:  # log-spaced, for plots with a log step axis
        grid = np.unique(np.round(np.geomspace(1, max(steps, 1), _N_LOGS)).astype(int))
        return {0, steps, *map(int, grid)}
    every = check_int("log_every", log_every, minimum=1)
    return {0, steps, *range(every, steps + 1, every)}


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    if isinstance(splits, str) or not set(splits) <= set(SPLITS):
        raise ValueError(f"log_splits must be a sequence of {SPLITS}, got {splits!r}")
    return tuple(s for s in SPLITS if s in splits)


@torch.no_grad()
def _all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite (one check on their concatenation)."""
    return bool(torch.isfinite(torch.cat([p.reshape(-1) for p in params])).all())


def _set_mode(net: nn.Module, bn_mode: str) -> None:
    """Put ``net`` in the training mode ``bn_mode`` asks for."""
    if hasattr(net, "set_batchnorm_train"):  # NormNet keeps BN in eval unless told otherwise
        net.set_batchnorm_train(bn_mode == "train")
    net.train(bn_mode == "train")


def train_entries(
    net: nn.Module,
    data: RegressionData,
    entries: list[tuple[nn.Parameter, torch.Tensor | None]],
    *,
    method: str,
    optimizer: str = "adam",
    lr: float = 1e-2,
    steps: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
    bn_mode: str = "eval",
    momentum: float = 0.9,
    log_every: int | None = None,
    log_splits: Sequence[str] = SPLITS,
    time_limit_s: float | None = None,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train the given parameter entries of ``net`` by MSE on ``data`` (the shared loop).

    Parameters
    ----------
    net : nn.Module
        Maps (n, d_in) -> (n, d_out); trained in place.
    data : RegressionData
    entries : list of (parameter, mask or None)
        The parameters to train; a 0/1 ``mask`` of the parameter's shape restricts training to
        its nonzero entries (the gradient is multiplied by it, so no optimizer can move the
        others). Every other parameter is frozen for the fit and gets its ``requires_grad`` flag
        back afterwards.
    method : str
        Label stored in the result.
    optimizer, lr, steps, batch_size, seed, bn_mode, momentum, log_every, log_splits,
    time_limit_s, device
        See :func:`fit_norm_only`.

    Returns
    -------
    FitResult
    """
    check_optimizer(optimizer)
    if bn_mode not in BN_MODES:
        raise ValueError(
            f"bn_mode must be one of {BN_MODES} (BatchNorm with running or with batch "
            f"statistics), got {bn_mode!r}"
        )
    lr = _check_lr(lr)
    steps = check_int("steps", steps, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if time_limit_s is not None and not time_limit_s > 0:
        raise ValueError(f"time_limit_s must be > 0 seconds or None, got {time_limit_s!r}")
    if not entries:
        raise ValueError("entries is empty: there is nothing to train")
    logs = _log_steps(steps, log_every)
    log_splits = _check_splits(log_splits)

    net = net.to(device)
    p0 = next(net.parameters())
    data = data.to(p0.device, p0.dtype)
    params = [p for p, _ in entries]
    flags = {id(p): p.requires_grad for p in net.parameters()}
    was_training = net.training
    bn_train_before = (
        bool(getattr(net, "_bn_train", False)) if hasattr(net, "set_batchnorm_train") else None
    )
    hooks = []
    for p in net.parameters():
        p.requires_grad_(False)
        p.grad = None
    n_trainable = 0
    for p, mask in entries:
        p.requires_grad_(True)
        if mask is None:
            n_trainable += p.numel()
        else:
            mask = mask.to(p.device, p.dtype)
            hooks.append(p.register_hook(lambda grad, m=mask: grad * m))
            n_trainable += int((mask != 0).sum())
    opt = make_optimizer(optimizer, params, lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    full_batch = optimizer in FULL_BATCH_OPTIMIZERS or batch_size >= data.n_train

    def evaluate(step: int, t: float, splits: Sequence[str] = log_splits) -> dict[str, float]:
        net.eval()
        row: dict[str, float] = {"step": step, "wall_time_s": t}
        for s in splits:
            row[f"{s}_rel_error"], row[f"{s}_mse"] = data.errors(net, s)
        _set_mode(net, bn_mode)
        return row

    history, stopped, t_train, step = [], "steps", 0.0, 0
    try:
        _set_mode(net, bn_mode)
        history.append(evaluate(0, 0.0, SPLITS if steps == 0 else log_splits))
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            if full_batch:
                xb, yb = x, y
            else:
                idx = torch.randint(0, data.n_train, (batch_size,), generator=g)
                xb, yb = x[idx.to(x.device)], y[idx.to(x.device)]

            def closure(xb=xb, yb=yb) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(net(xb), yb)
                loss.backward()
                return loss

            loss = opt.step(closure)
            t_train += time.perf_counter() - t0
            if not (math.isfinite(float(loss.detach())) and _all_finite(params)):
                stopped = "diverged"
            elif time_limit_s is not None and t_train >= time_limit_s:
                stopped = "time_limit"
            last = stopped != "steps" or step == steps
            if last or step in logs:
                history.append(evaluate(step, t_train, SPLITS if last else log_splits))
            if stopped != "steps":
                logger.info("%s/%s stopped at step %d: %s", method, optimizer, step, stopped)
                break
    finally:
        for h in hooks:
            h.remove()
        for p in net.parameters():
            p.requires_grad_(flags[id(p)])
        if bn_train_before is not None:
            net.set_batchnorm_train(bn_train_before)
        net.train(was_training)
    return FitResult(
        method=method, optimizer=optimizer, lr=lr, steps=steps, steps_done=step,
        batch_size=data.n_train if full_batch else batch_size, bn_mode=bn_mode, seed=seed,
        n_train=data.n_train, n_trainable=n_trainable, stopped=stopped, wall_time_s=t_train,
        history=history,
    )  # fmt: skip


def fit_norm_only(
    net: nn.Module,
    target_or_data,
    *,
    optimizer: str = "adam",
    lr: float = 1e-2,
    steps: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
    radius: float = 1.0,
    n_train: int | None = None,
    n_val: int | float = 1024,
    n_test: int | float = 4096,
    bn_mode: str = "eval",
    momentum: float = 0.9,
    kinds=DEFAULT_KINDS,
    log_every: int | None = None,
    log_splits: Sequence[str] = SPLITS,
    time_limit_s: float | None = None,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Fit only the normalization parameters of ``net`` to a target or a dataset.

    The network is frozen with :func:`freeze_all_but_norm` (this stays in place after the fit)
    and its γ, β are trained in place by minimising the MSE on a fixed training set.

    Parameters
    ----------
    net : nn.Module
        Any model mapping (n, d_in) -> (n, d_out) with normalization layers, e.g. a NormNet.
    target_or_data : TargetMLP, nn.Sequential, (X, Y) tensors or RegressionData
        What to fit; see :func:`normonly.data.regression.regression_data`.
    optimizer : {"adam", "sgd", "lbfgs"}
        Adam; SGD with ``momentum``; L-BFGS (one strong-Wolfe iteration per step, full batch).
    lr : float
        Learning rate (> 0); for L-BFGS the initial step of its line search.
    steps : int
        Optimizer steps.
    batch_size : int
        Minibatch rows per step for Adam/SGD (with replacement; full batch if >= n_train).
    seed : int
        Seed of the data (when sampled here) and of the minibatches.
    radius : float
        Ball radius for a target.
    n_train, n_val, n_test : int
        Split sizes (see :func:`~normonly.data.regression.regression_data`).
    bn_mode : {"eval", "train"}
        BatchNorm with running statistics (exactly a per-unit affine map) or batch statistics.
    momentum : float
        SGD momentum.
    kinds : sequence of str
        Norm kinds to train (see :func:`freeze_all_but_norm`).
    log_every : int, optional
        Log every this many steps; default ~40 log-spaced steps.
    log_splits : sequence of {"train", "val", "test"}
        Splits whose errors are measured at the logged steps (default all); the last history
        row always has all three. A caller that keeps only the test curve passes ``("test",)``
        and skips two thirds of the logging evaluations.
    time_limit_s : float, optional
        Stop once the optimizer time exceeds this many seconds.
    device : str or torch.device
        Where to train (the network is moved there).

    Returns
    -------
    FitResult
        With the history and ``freeze`` (the :class:`FreezeSummary` as a dict).

    Raises
    ------
    ValueError
        No norm layers, unknown optimizer or bn_mode, lr <= 0 or not finite, bad sizes.

    Example
    -------
    >>> from normonly import NormNet, TargetMLP
    >>> f = TargetMLP.random([2, 3, 1], seed=0)
    >>> net = NormNet([2, 6, 3, 6, 1], seed=0)
    >>> res = fit_norm_only(net, f, lr=1e-2, steps=20, n_train=64, n_val=16, n_test=16)
    >>> res.n_trainable, res.final["test_rel_error"] < res.history[0]["test_rel_error"]
    (32, True)
    """
    check_optimizer(optimizer)  # fail before sampling anything
    _check_lr(lr)
    data = regression_data(
        target_or_data, radius=radius, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed
    )
    summary = freeze_all_but_norm(net, kinds=kinds)
    entries = [(p, None) for p in net.parameters() if p.requires_grad]
    result = train_entries(
        net, data, entries, method="norm_only", optimizer=optimizer, lr=lr, steps=steps,
        batch_size=batch_size, seed=seed, bn_mode=bn_mode, momentum=momentum,
        log_every=log_every, log_splits=log_splits, time_limit_s=time_limit_s, device=device,
    )  # fmt: skip
    result.freeze = summary.to_dict()
    return result
