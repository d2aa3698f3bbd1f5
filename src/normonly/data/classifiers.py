"""Ordinary PyTorch classifiers for the real-data experiments (E6, E7), and their training loop.

* :func:`mlp_classifier` — the plain ``Linear, ReLU, ..., Linear`` MLP (with biases) that E7 trains
  normally and then reconstructs exactly; its ``state_dict`` is the file format of
  :meth:`normonly.TargetMLP.load`.
* :func:`bn_mlp` and :func:`bn_cnn1d` — the frozen-random networks of E6: blocks
  ``Linear(bias=False) → BatchNorm1d → ReLU`` (or ``Conv1d(bias=False) → BatchNorm1d → ReLU``)
  whose weights keep PyTorch's default initialisation and are pruned by fixed random masks.
* :func:`fit_classifier` — the one seeded cross-entropy training loop (Adam or SGD with momentum,
  cosine learning-rate schedule) over the parameters it is given; :func:`train_target_mlp` uses
  it to train E7's target, :func:`normonly.train.bn_sparse.train_sparse` E6's networks.
* :data:`OPTIMIZERS` and :func:`make_optimizer` — the package's one table of optimizers, shared
  with the regression loop :func:`normonly.train.train_entries`.

PyTorch's default initialisation of ``Linear``/``Conv1d`` (``kaiming_uniform_(a=√5)``) is
``U(−1/√fan_in, 1/√fan_in)`` for weights and biases; :func:`default_init_` draws exactly that from
a private generator, so a seed reproduces a network without touching torch's global RNG.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from normonly._checks import check_density, check_int
from normonly.data.datasets import Dataset
from normonly.nets.layers import MaskedLinear

__all__ = [
    "FULL_BATCH_OPTIMIZERS",
    "OPTIMIZERS",
    "MaskedConv1d",
    "accuracy",
    "bn_cnn1d",
    "bn_mlp",
    "check_optimizer",
    "default_init_",
    "fit_classifier",
    "make_optimizer",
    "mlp_classifier",
    "train_target_mlp",
]

logger = logging.getLogger(__name__)

#: Every optimizer of every training loop in the package, by name: Adam, SGD with momentum, and
#: L-BFGS (one strong-Wolfe iteration per step).
OPTIMIZERS = ("adam", "sgd", "lbfgs")
#: Those that need the full training set at every step (a line search needs a deterministic loss),
#: so the mini-batch loop :func:`fit_classifier` does not take them.
FULL_BATCH_OPTIMIZERS = ("lbfgs",)
_MAX_LINE_SEARCH = 25  # torch's default max_ls


def check_optimizer(name: str, *, minibatch: bool = False, what: str = "optimizer") -> str:
    """``name`` if it is in :data:`OPTIMIZERS` (without the full-batch ones if ``minibatch``).

    Raises
    ------
    ValueError
        Another name; the message lists the allowed ones.
    """
    allowed = tuple(o for o in OPTIMIZERS if not (minibatch and o in FULL_BATCH_OPTIMIZERS))
    if name not in allowed:
        why = " (L-BFGS needs full-batch steps)" if name in FULL_BATCH_OPTIMIZERS else ""
        raise ValueError(f"{what} must be one of {allowed}, got {name!r}{why}")
    return name


def make_optimizer(
    name: str, params: list[torch.Tensor], lr: float, *, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer ``name`` (one of :data:`OPTIMIZERS`) over ``params``.

    ``"adam"``: Adam with torch's defaults; ``"sgd"``: SGD with ``momentum`` (Nesterov off);
    ``"lbfgs"``: L-BFGS doing one iteration per ``step(closure)``, strong-Wolfe line search
    (``lr`` is its initial step), history 20, tolerances 0 so that every requested step runs.
    Adam and SGD use torch's fused kernel where it exists (floating-point tensors on the CPU or
    a CUDA device): the same update, one call per step instead of several small ops per tensor
    (the per-tensor loop cost about a quarter of a small network's step).
    """
    check_optimizer(name)
    fused = {"fused": True} if _fusable(params) else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **fused)
    # One iteration per step; max_eval must leave room for the line search (torch passes
    # max_ls = max_eval - evaluations so far, and max_eval defaults to 1 when max_iter=1).
    # Tolerances 0: run every requested step (it still skips an exactly zero gradient).
    return torch.optim.LBFGS(
        params, lr=lr, max_iter=1, max_eval=1 + _MAX_LINE_SEARCH, history_size=20,
        line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0,
    )  # fmt: skip


def _fusable(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused Adam/SGD kernels take ``params`` (floating point, CPU or CUDA)."""
    return bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


class MaskedConv1d(nn.Conv1d):
    """``nn.Conv1d`` (no bias) whose weight is multiplied by a fixed 0/1 ``mask`` buffer."""

    def __init__(self, *args, mask: torch.Tensor, **kw) -> None:
        super().__init__(*args, bias=False, **kw)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, None)


def default_init_(module: nn.Module, g: torch.Generator) -> nn.Module:
    """Re-draw every Linear/Conv1d of ``module`` with PyTorch's default init, from ``g``.

    Weights and biases are ``U(−1/√fan_in, 1/√fan_in)`` (what ``reset_parameters`` draws); a
    mask buffer, if present, is applied to the new weight so pruned entries are exactly zero.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Conv1d):
                fan_in = m.weight[0].numel()  # in_features, or in_channels * kernel_size
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.uniform_(-bound, bound, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=g)
                if hasattr(m, "mask"):
                    m.weight.mul_(m.mask)
    return module


def mlp_classifier(
    widths: Sequence[int], *, seed: int, dtype: torch.dtype = torch.float32
) -> nn.Sequential:
    """A plain ReLU MLP ``Linear(bias) (ReLU Linear)*`` with widths ``[d_in, h_1, ..., n_classes]``.

    Example
    -------
    >>> mlp_classifier([64, 32, 10], seed=0)
    Sequential(
      (0): Linear(in_features=64, out_features=32, bias=True)
      (1): ReLU()
      (2): Linear(in_features=32, out_features=10, bias=True)
    )
    """
    widths = [check_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths)]
    if len(widths) < 2:
        raise ValueError(f"widths must list at least [d_in, n_classes], got {widths!r}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    return default_init_(nn.Sequential(*layers), g)


def _mask(shape: Sequence[int], density: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(*shape, generator=g) < density).float()  # Bernoulli(density), fixed


def _linear(a: int, b: int, density: float, g: torch.Generator) -> nn.Linear:
    if density < 1.0:
        return MaskedLinear(a, b, _mask((b, a), density, g))
    return nn.Linear(a, b, bias=False)


def bn_mlp(widths: Sequence[int], *, density: float = 1.0, seed: int = 0) -> nn.Sequential:
    """Frozen-random BatchNorm MLP of E6: ``[Linear(bias=False), BatchNorm1d, ReLU]*`` blocks.

    The last block is ``Linear(bias=False), BatchNorm1d`` (no ReLU), as in ``NormNet``
    (``docs/theory.md#the-networks``).
    Weights: PyTorch default init, each kept with probability ``density`` by a fixed mask (masks
    are drawn first, then the values, both from ``seed``).

    Parameters
    ----------
    widths : sequence of int
        ``[d_in, h_1, ..., n_classes]``.
    density : float
        Kept fraction of every weight matrix, in (0, 1].
    seed : int
        Seed of masks and weights.

    Example
    -------
    >>> net = bn_mlp([40, 16, 10], density=0.5, seed=0)
    >>> sum(p.numel() for p in net.parameters())  # weights 40*16 + 16*10, BN 2*(16 + 10)
    852
    """
    widths = [check_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths)]
    if len(widths) < 2:
        raise ValueError(f"widths must list at least [d_in, n_classes], got {widths!r}")
    density = check_density(density)
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += [_linear(a, b, density, g), nn.BatchNorm1d(b)]
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return default_init_(nn.Sequential(*layers), g)


def bn_cnn1d(
    length: int = 40,
    n_classes: int = 10,
    *,
    channels: int = 32,
    n_conv: int = 3,
    density: float = 1.0,
    seed: int = 0,
) -> nn.Sequential:
    """Frozen-random 1-D CNN of E6 for MNIST-1D signals ``(n, length)``.

    ``n_conv`` blocks ``Conv1d(kernel 5, stride 2, padding 1, bias=False) → BatchNorm1d → ReLU``
    (the shape of MNIST-1D's reference CNN), then ``Flatten → Linear(bias=False) → BatchNorm1d``.
    Masks and default-init weights as in :func:`bn_mlp`.

    Example
    -------
    >>> net = bn_cnn1d(40, 10, channels=8, seed=0)
    >>> net(torch.zeros(2, 40)).shape
    torch.Size([2, 10])
    """
    length = check_int("length", length, minimum=1)
    channels = check_int("channels", channels, minimum=1)
    n_conv = check_int("n_conv", n_conv, minimum=1)
    density = check_density(density)
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    layers: list[nn.Module] = [nn.Unflatten(1, (1, length))]  # (n, length) -> (n, 1, length)
    c_in, size = 1, length
    for _ in range(n_conv):
        kw = {"kernel_size": 5, "stride": 2, "padding": 1}
        if density < 1.0:
            mask = _mask((channels, c_in, 5), density, g)  # (C_out, C_in, kernel)
            conv: nn.Conv1d = MaskedConv1d(c_in, channels, mask=mask, **kw)
        else:
            conv = nn.Conv1d(c_in, channels, bias=False, **kw)
        layers += [conv, nn.BatchNorm1d(channels), nn.ReLU()]
        c_in, size = channels, (size + 2 - 5) // 2 + 1
        if size < 1:
            raise ValueError(f"length {length} is too short for {n_conv} stride-2 convolutions")
    layers += [nn.Flatten(), _linear(channels * size, n_classes, density, g)]  # (n, C*size)
    layers.append(nn.BatchNorm1d(n_classes))
    return default_init_(nn.Sequential(*layers), g)


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``X`` (n, ...) whose argmax logit equals ``y`` (n,), model in eval mode."""
    was = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    pred = model(X.to(dtype)).argmax(dim=1)
    model.train(was)
    return float((pred == y).double().mean())


def fit_classifier(
    model: nn.Module,
    data: Dataset,
    entries: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    epochs: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
    batch_size: int = 128,
    momentum: float = 0.9,
) -> list[float]:
    """Minimise cross-entropy on ``data``'s training split over the given entries only.

    Mini-batches are reshuffled every epoch from a private generator; the learning rate follows
    a cosine schedule from ``lr`` to 0 over all steps; no weight decay (so a parameter outside
    ``entries``, or an entry whose gradient is masked, never moves). BatchNorm runs in train mode
    (batch statistics, running statistics updated) and the model is left in eval mode. This is
    the classification twin of :func:`normonly.train.train_entries` (which fits by MSE).

    Parameters
    ----------
    model : nn.Module
        Maps ``(n, d_in)`` to ``(n, n_classes)`` logits.
    entries : sequence of (parameter, mask or None)
        The parameters to train (``requires_grad`` must be True); a 0/1 mask of the parameter's
        shape multiplies its gradient before every step, so only the selected entries move (the
        convention of :mod:`normonly.train`).
    epochs, lr, seed, batch_size
        Passes over the data, peak learning rate, shuffling seed, mini-batch size.
    optimizer : {"adam", "sgd"}
        Adam, or SGD with ``momentum`` (Nesterov off): see :func:`make_optimizer`.

    Returns
    -------
    list of float
        Mean training loss of every epoch.
    """
    epochs = check_int("epochs", epochs, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_optimizer(optimizer, minibatch=True)
    entries = list(entries)
    params = [p for p, _ in entries]
    if not params or not all(p.requires_grad for p in params):
        raise ValueError("entries must be a non-empty list of tensors with requires_grad=True")
    dtype = params[0].dtype
    X, y = data.X_train.to(dtype), data.y_train
    n = X.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    opt = make_optimizer(optimizer, params, lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    masked = [(p, m) for p, m in entries if m is not None]
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() < 2 and start > 0:  # a batch of one breaks BatchNorm's statistics
                continue
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p, m in masked:
                if p.grad is not None:
                    p.grad.mul_(m)
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / n)
    model.eval()
    return losses


def train_target_mlp(
    data: Dataset,
    hidden: Sequence[int],
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-2,
    batch_size: int = 64,
) -> nn.Sequential:
    """Train an ordinary ReLU MLP classifier ``[d_in, *hidden, n_classes]`` (E7's target).

    Adam with a cosine schedule, cross-entropy, float32, default PyTorch init from ``seed``
    (weights) and ``seed + 1`` (mini-batch order). Returns the ``nn.Sequential`` in eval mode.

    Example
    -------
    >>> from normonly.data import load_digits_split
    >>> net = train_target_mlp(load_digits_split(0), [16], epochs=1, seed=0)
    >>> type(net[0]).__name__
    'Linear'
    """
    model = mlp_classifier([data.d_in, *hidden, data.n_classes], seed=seed)
    losses = fit_classifier(
        model, data, [(p, None) for p in model.parameters()], epochs=epochs, lr=lr, seed=seed + 1,
        optimizer="adam", batch_size=batch_size,
    )  # fmt: skip
    logger.info("trained %s MLP %s: final loss %.4f", data.name, hidden, losses[-1])
    return model
