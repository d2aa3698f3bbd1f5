"""The wide frozen random network whose only trainable numbers are normalization scales and shifts.

``NormNet`` is an ordinary ``nn.Module`` built from standard parts: each layer is
``nn.Linear(bias=False)`` with frozen random weights, then a normalization layer, then ReLU (no
ReLU after the last layer)::

    x ─► Linear₁ (frozen) ─► Norm₁ (γ₁, β₁) ─► ReLU ─► ... ─► Linear_L (frozen) ─► Norm_L ─► y

Normalizations are ``nn.BatchNorm1d`` in eval mode or :class:`~normonly.nets.layers.Affine`; with
``density < 1`` each frozen weight is kept with that probability by a fixed Bernoulli mask,
stored as a buffer with the network (``docs/theory.md#the-networks``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normonly._checks import check_density, check_int
from normonly.nets.base import NormNetBase
from normonly.nets.layers import check_norm, norm_layer, random_linear

__all__ = ["NormNet"]


class NormNet(NormNetBase):
    """Frozen random ReLU network with trainable per-unit normalizations.

    Parameters
    ----------
    widths : sequence of int
        ``[d_in, m_1, ..., m_L]``; layer l maps ``m_{l-1} -> m_l``.
    norm : {"batchnorm", "affine"}
    density : float
        Probability of keeping each frozen weight (1 = dense).
    seed : int
        Seed of the frozen weights and masks (a private generator; same seed, same bytes).
    dtype : torch.dtype
        float64 for exact constructions.
    device : str or torch.device, optional
        Where the frozen weights are drawn and kept (default: the CPU). A CUDA generator is
        another random stream: the same seed gives the same bytes on the same kind of device,
        not across CPU and GPU.

    Example
    -------
    >>> net = NormNet([3, 12, 2], seed=0)
    >>> net.parameter_counts()["trainable"]   # 2 * (12 + 2)
    28
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        norm: str = "batchnorm",
        density: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        widths = [check_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths)]
        if len(widths) < 2:
            raise ValueError(f"widths must list at least [d_in, m_1], got {widths!r}")
        self.norm = check_norm(norm)
        density = check_density(density)
        seed = check_int("seed", seed, minimum=0)
        self.config = {"widths": widths, "norm": norm, "density": density, "seed": seed}
        g = torch.Generator(device=device or "cpu").manual_seed(seed)
        self.linears = nn.ModuleList(
            random_linear(a, b, g, density=density, dtype=dtype)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.norms = nn.ModuleList(norm_layer(norm, m, dtype) for m in widths[1:])
        self.meta = {}
        self.freeze_weights()

    @property
    def widths(self) -> list[int]:
        return list(self.config["widths"])

    @property
    def d_in(self) -> int:
        return self.config["widths"][0]

    def norm_layers(self) -> list[nn.Module]:
        return list(self.norms)

    def weight(self, layer: int) -> torch.Tensor:
        """The frozen (masked) weight matrix of ``layer``, shape ``(m_l, m_{l-1})``."""
        return self.linears[layer].weight.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._checked_input(x)
        last = len(self.linears) - 1
        for i, (lin, norm) in enumerate(zip(self.linears, self.norms, strict=True)):
            h = norm(lin(h))
            if i < last:  # in place when no graph is recorded: one (n, m) tensor less
                h = torch.relu(h) if torch.is_grad_enabled() else h.relu_()
        return h

    def randomize_running_stats(self, seed: int) -> None:
        """Give every BatchNorm non-trivial running mean/var (to test the §1.1 mapping)."""
        g = torch.Generator().manual_seed(seed)
        for n in self.norms:
            if isinstance(n, nn.BatchNorm1d):
                m = n.num_features
                n.running_mean.copy_(torch.randn(m, generator=g, dtype=torch.float64))
                n.running_var.copy_(0.1 + 2 * torch.rand(m, generator=g, dtype=torch.float64))
