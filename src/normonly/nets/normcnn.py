"""The frozen random CNN whose only trainable numbers are BatchNorm scales and shifts.

For every conv layer of the target (``c_in → c_out`` channels, kernel ``kh × kw``) it holds::

    u ─► Conv2d B (c_in → m, same kernel/stride/padding/dilation, frozen) ─► BatchNorm2d(m)
      ─► ReLU ─► Conv2d A (1×1, m → c_out, frozen) ─► BatchNorm2d(c_out) ─► ReLU

and for every Linear layer the same with ``nn.Linear`` and ``BatchNorm1d`` (the wide MLP
construction); the target's AvgPool2d sit where the target has them, and the last layer has no
final ReLU. Every BatchNorm is in eval mode with running mean 0 and variance 1; its weight and
bias are the only trainable parameters (docs/theory.md#convolutional-networks). With
``density < 1`` each frozen weight is kept with that probability by a fixed mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normonly._checks import check_density, check_int
from normonly.nets.base import NormNetBase
from normonly.nets.cnn_layers import ConvGeometry, PoolSpec
from normonly.nets.layers import channel_block, random_linear

__all__ = ["NormCNN", "MaskedConv2d", "BlockedConv2d"]

_BN = nn.modules.batchnorm._BatchNorm


class BlockedConv2d(nn.Conv2d):
    """A frozen bias-free ``nn.Conv2d`` whose sums run over blocks of input channels.

    Same parameters and state_dict as ``nn.Conv2d``; the forward pass adds the convolutions
    of :func:`~normonly.nets.layers.channel_block` input channels at a time, so each output
    goes through at most :func:`~normonly.nets.layers.conv_summation_depth` roundings (the
    1×1 conv of m channels would otherwise sum m large always-on terms at once).
    """

    def _weight(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._weight()
        c_in, kk = w.shape[1], w.shape[2] * w.shape[3]
        cb = channel_block(c_in, kk)
        out = self._conv_forward(x[:, :cb], w[:, :cb], None)
        for s in range(cb, c_in, cb):
            part = self._conv_forward(x[:, s : s + cb], w[:, s : s + cb], None)
            if torch.is_grad_enabled():
                out = out + part
            else:
                out += part
        return out


class MaskedConv2d(BlockedConv2d):
    """A :class:`BlockedConv2d` whose weight is multiplied by a fixed 0/1 ``mask`` buffer."""

    def __init__(self, *args, mask: torch.Tensor, **kw) -> None:
        super().__init__(*args, bias=False, **kw)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def _weight(self) -> torch.Tensor:
        return self.weight * self.mask


def _random_conv(c_in: int, c_out: int, g: ConvGeometry, gen: torch.Generator, *,
                 density: float, dtype: torch.dtype) -> nn.Conv2d:  # fmt: skip
    """A frozen conv with N(0, 1/fan_in) weights (drawn as a (c_out, c_in·kh·kw) matrix)."""
    fan_in = c_in * g.kernel[0] * g.kernel[1]
    lin = random_linear(fan_in, c_out, gen, density=density, dtype=dtype)
    w = lin.weight.detach().reshape(c_out, c_in, *g.kernel)
    kw = {"kernel_size": g.kernel, **g.kwargs(), "dtype": dtype}
    mask = getattr(lin, "mask", None)
    conv = (MaskedConv2d(c_in, c_out, mask=mask.reshape(w.shape), **kw) if mask is not None
            else BlockedConv2d(c_in, c_out, bias=False, **kw))  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(w)
    return conv


def _batchnorm(kind: str, m: int, dtype: torch.dtype) -> nn.Module:
    bn = (nn.BatchNorm2d if kind == "conv" else nn.BatchNorm1d)(m, dtype=dtype)
    bn.eval()
    return bn


class NormCNN(NormNetBase):
    """Frozen random ReLU CNN with trainable per-channel BatchNorms.

    Parameters
    ----------
    input_shape : (C, H, W)
    plan : list of dict
        One per target layer: ``{"kind": "conv", "c_in", "width", "c_out", "geometry",
        "pools"}`` or ``{"kind": "linear", "d_in", "width", "d_out", "pools"}`` (``geometry``
        and ``pools`` as JSON, see :mod:`normonly.nets.cnn_layers`); ``width`` is m.
    density : float
    seed : int
    norm : {"batchnorm"}
    dtype : torch.dtype

    Example
    -------
    >>> g = {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    >>> net = NormCNN((1, 4, 4), [{"kind": "conv", "c_in": 1, "width": 18, "c_out": 2,
    ...                            "geometry": g, "pools": []}], seed=0)
    >>> net(torch.zeros(3, 1, 4, 4)).shape, net.parameter_counts()["trainable"]
    (torch.Size([3, 32]), 40)
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        plan: list[dict],
        *,
        density: float = 1.0,
        seed: int = 0,
        norm: str = "batchnorm",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if norm != "batchnorm":
            raise ValueError(f"a NormCNN uses norm='batchnorm' (BatchNorm2d/1d), got {norm!r}")
        self.norm = norm
        density = check_density(density)
        seed = check_int("seed", seed, minimum=0)
        shape = [check_int("input_shape", v, minimum=1) for v in input_shape]
        self.config = {"input_shape": shape, "plan": plan, "density": density, "seed": seed,
                       "norm": norm}  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        self.pools = nn.ModuleList()
        self.wide, self.narrow = nn.ModuleList(), nn.ModuleList()
        self.wide_norms, self.narrow_norms = nn.ModuleList(), nn.ModuleList()
        self.kinds: list[str] = []
        for p in plan:
            kind, m = p["kind"], int(p["width"])
            self.kinds.append(kind)
            self.pools.append(nn.Sequential(*[PoolSpec.from_json(q).module() for q in p["pools"]]))
            if kind == "conv":
                g = ConvGeometry.from_json(p["geometry"])
                one = ConvGeometry((1, 1))
                self.wide.append(_random_conv(p["c_in"], m, g, gen, density=density, dtype=dtype))
                self.narrow.append(_random_conv(m, p["c_out"], one, gen, density=density,
                                                dtype=dtype))  # fmt: skip
                c_out = p["c_out"]
            else:
                self.wide.append(random_linear(p["d_in"], m, gen, density=density, dtype=dtype))
                self.narrow.append(random_linear(m, p["d_out"], gen, density=density, dtype=dtype))
                c_out = p["d_out"]
            self.wide_norms.append(_batchnorm(kind, m, dtype))
            self.narrow_norms.append(_batchnorm(kind, c_out, dtype))
        self.meta = {}
        self.freeze_weights()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["input_shape"])  # type: ignore[return-value]

    @property
    def d_in(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    def norm_layers(self) -> list[nn.Module]:
        out: list[nn.Module] = []
        for a, b in zip(self.wide_norms, self.narrow_norms, strict=True):
            out += [a, b]
        return out

    def linear_layers(self) -> list[nn.Module]:  # convs too: parameter_counts counts them
        return [m for m in self.modules() if isinstance(m, nn.Linear | nn.Conv2d)]

    def frozen_matrices(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` of ``layer`` as matrices: A (c_out, m), B (m, c_in·kh·kw), masks applied."""

        def mat(mod: nn.Module) -> torch.Tensor:
            w = mod.weight.detach()
            mask = getattr(mod, "mask", None)
            w = w * mask if mask is not None else w
            return w.reshape(w.shape[0], -1)

        return mat(self.narrow[layer]), mat(self.wide[layer])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.ndim == 4 and tuple(x.shape[1:]) == self.input_shape:
            x = x.reshape(x.shape[0], -1)
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.d_in:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"input must have shape (N, {', '.join(map(str, self.input_shape))}) or "
                f"(N, {self.d_in}), got {got}"
            )
        h = self._checked_input(x).reshape(x.shape[0], *self.input_shape)
        last = len(self.kinds) - 1
        for l, kind in enumerate(self.kinds):
            h = self.pools[l](h)
            if kind == "linear":
                h = h.reshape(h.shape[0], -1)
            h = torch.relu(self.wide_norms[l](self.wide[l](h)))
            h = self.narrow_norms[l](self.narrow[l](h))
            if l < last:
                h = torch.relu(h)
        return h.reshape(h.shape[0], -1)

    def set_affine(self, layer: int, gamma: torch.Tensor, beta: torch.Tensor) -> None:
        """Make BatchNorm ``layer`` compute ``γ ⊙ z + β`` per channel (any running statistics)."""
        bn = self.norm_layers()[layer]
        with torch.no_grad():
            bn.weight.copy_(gamma * torch.sqrt(bn.running_var + bn.eps))
            bn.bias.copy_(beta + gamma * bn.running_mean)

    def effective_affine(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.norm_layers()[layer]
        with torch.no_grad():
            gamma = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            return gamma.clone(), (bn.bias - gamma * bn.running_mean).clone()

    def train(self, mode: bool = True) -> NormCNN:
        nn.Module.train(self, mode)
        if not getattr(self, "_bn_train", False):
            for n in self.norm_layers():
                n.eval()
        return self

