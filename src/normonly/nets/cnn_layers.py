"""The layers of a convolutional target, read from an ``nn.Sequential``.

See ``docs/theory.md#convolutional-networks``.

A target CNN is a list of *layers*, each a linear map followed by a ReLU (all but the last):

* a **conv layer**: ``Conv2d`` (any kernel, stride, zero padding, dilation; ``groups=1``; with or
  without bias), optionally followed by an eval-mode ``BatchNorm2d`` that is folded into it;
* a **linear layer**: ``Linear`` on the flattened input (after ``Flatten``).

``AvgPool2d`` may follow a ReLU; it is kept with the layer it feeds (``pools``), because it is a
fixed linear map between two ReLUs. Everything else is refused by name: other activations
(``Sigmoid``, ...), ``MaxPool2d`` (a max over a window is a ReLU network, but of more than one
ReLU stage per layer, which the one-layer-per-layer construction does not cover), grouped or
depthwise convolutions, non-zero padding modes, BatchNorm in training mode, Dropout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvGeometry", "PoolSpec", "read_sequential", "conv_out_hw"]

Pair = tuple[int, int]


def _pair(v: object) -> Pair:
    if isinstance(v, int):
        return (v, v)
    a, b = v  # type: ignore[misc]
    return (int(a), int(b))


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride, zero padding and dilation of a convolution (each (h, w))."""

    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)

    def kwargs(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def to_json(self) -> dict:
        return {k: list(getattr(self, k)) for k in ("kernel", "stride", "padding", "dilation")}

    @classmethod
    def from_json(cls, d: dict) -> ConvGeometry:
        return cls(**{k: _pair(d[k]) for k in ("kernel", "stride", "padding", "dilation")})


def conv_out_hw(hw: Pair, g: ConvGeometry) -> Pair:
    """Output (height, width) of a convolution with geometry ``g`` on an ``hw`` input."""
    return tuple(  # type: ignore[return-value]
        (hw[i] + 2 * g.padding[i] - g.dilation[i] * (g.kernel[i] - 1) - 1) // g.stride[i] + 1
        for i in range(2)
    )


@dataclass(frozen=True)
class PoolSpec:
    """An ``AvgPool2d``: its options, and the (C, H, W) shapes it maps between."""

    kernel: Pair
    stride: Pair
    padding: Pair
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int] = field(default=(0, 0, 0))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (N, C, H, W) pooled (torch's own AvgPool2d arithmetic)."""
        return F.avg_pool2d(
            x, self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
            self.divisor_override,
        )  # fmt: skip

    def module(self) -> nn.AvgPool2d:
        return nn.AvgPool2d(self.kernel, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)  # fmt: skip

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> PoolSpec:
        d = dict(d)
        for k in ("kernel", "stride", "padding"):
            d[k] = _pair(d[k])
        for k in ("in_shape", "out_shape"):
            d[k] = tuple(int(v) for v in d[k])
        return cls(**d)

    @classmethod
    def from_module(cls, pool: nn.AvgPool2d, in_shape: tuple[int, int, int]) -> PoolSpec:
        stride = pool.stride if pool.stride is not None else pool.kernel_size
        spec = cls(_pair(pool.kernel_size), _pair(stride), _pair(pool.padding),
                   bool(pool.ceil_mode), bool(pool.count_include_pad), pool.divisor_override,
                   in_shape)  # fmt: skip
        out = spec.apply(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1:]
        return cls(**{**spec.__dict__, "out_shape": tuple(int(v) for v in out)})


_REFUSED = {
    "MaxPool2d": "MaxPool2d is not supported: normonly refuses max pooling (a max over a window "
    "is a ReLU network, but not one conv+ReLU layer, so the construction does not cover it); "
    "use nn.AvgPool2d",
    "AdaptiveMaxPool2d": "AdaptiveMaxPool2d is not supported (max pooling); use nn.AvgPool2d",
}


def _refuse(name: str, layer: nn.Module) -> None:
    kind = type(layer).__name__
    if kind in _REFUSED:
        raise TypeError(f"layer {name!r}: {_REFUSED[kind]}")
    raise TypeError(
        f"layer {name!r} is {kind}: normonly reconstructs ReLU CNNs made only of Conv2d, "
        "BatchNorm2d (eval, right after a Conv2d), ReLU, AvgPool2d, Flatten and Linear; "
        f"{kind} cannot be rebuilt exactly, convert or remove it"
    )


def _conv_geometry(name: str, conv: nn.Conv2d) -> ConvGeometry:
    if conv.groups != 1:
        raise ValueError(
            f"layer {name!r}: Conv2d with groups={conv.groups} (grouped or depthwise) is not "
            "supported yet; use groups=1"
        )
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"layer {name!r}: Conv2d padding_mode={conv.padding_mode!r} is not supported; only "
            "zero padding (padding_mode='zeros') keeps every patch inside the input ball"
        )
    kernel, dilation = _pair(conv.kernel_size), _pair(conv.dilation)
    padding = conv.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = [dilation[i] * (kernel[i] - 1) for i in range(2)]
        if any(t % 2 for t in total):
            raise ValueError(
                f"layer {name!r}: padding='same' with an even effective kernel pads unevenly; "
                "give integer padding instead"
            )
        padding = (total[0] // 2, total[1] // 2)
    return ConvGeometry(kernel, _pair(conv.stride), _pair(padding), dilation)


def _fold_batchnorm(name: str, bn: nn.BatchNorm2d, w: torch.Tensor, b: torch.Tensor):
    """``bn(conv(x)) = conv'(x)`` with ``w' = s w``, ``b' = s (b − μ) + β``, ``s = γ/√(var+ε)``."""
    if bn.training or bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"layer {name!r}: BatchNorm2d in training mode (or without running statistics) "
            "depends on the batch; call module.eval() first so it can be folded into the conv"
        )
    if bn.num_features != w.shape[0]:
        raise ValueError(
            f"layer {name!r}: BatchNorm2d has {bn.num_features} channels, the conv before it "
            f"{w.shape[0]}"
        )
    mean = bn.running_mean.detach().to(torch.float64)
    var = bn.running_var.detach().to(torch.float64)
    gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)  # (c_out,)
    return w * s[:, None, None, None], s * (b - mean) + beta


def read_sequential(module: nn.Module, input_shape: Sequence[int]) -> tuple[list[dict], list, list]:
    """Parse ``module`` into layer records, float64 weights and float64 biases.

    Returns
    -------
    layers : list of dict
        ``{"kind": "conv", "geometry", "in_shape", "out_shape", "pools"}`` or
        ``{"kind": "linear", "pools", "in_shape"}``; ``pools`` are the AvgPool2d applied to
        the layer's input.
    weights, biases : lists of float64 tensors
        Conv weights (c_out, c_in, kh, kw) with any BatchNorm2d folded in; Linear (d_out, d_in).
    """
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"TargetCNN.from_torch expects an nn.Sequential of Conv2d, ReLU, AvgPool2d, Flatten "
            f"and Linear, got {type(module).__name__}"
        )
    shape: tuple[int, ...] = tuple(int(v) for v in input_shape)
    layers: list[dict] = []
    weights: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    pools: list[PoolSpec] = []
    state = "start"  # start | linear (awaiting ReLU or end) | relu (after a ReLU)
    flat = False
    children = list(module.named_children())
    for idx, (name, layer) in enumerate(children):
        kind = type(layer)
        if kind in (nn.Conv2d, nn.Linear):
            if state == "linear":
                raise ValueError(
                    f"layer {name!r}: two linear maps in a row ({type(layer).__name__} right "
                    "after a Conv2d/Linear); put a ReLU between them"
                )
            w = layer.weight.detach().to("cpu", torch.float64).clone()
            b = (layer.bias.detach().to("cpu", torch.float64).clone() if layer.bias is not None
                 else torch.zeros(w.shape[0], dtype=torch.float64))  # fmt: skip
            if kind is nn.Conv2d:
                if flat:
                    raise ValueError(f"layer {name!r}: Conv2d after Flatten; convolve first")
                g = _conv_geometry(name, layer)
                if shape[0] != layer.in_channels:
                    raise ValueError(
                        f"layer {name!r}: Conv2d expects {layer.in_channels} input channels, "
                        f"the input to it has shape {shape} (from input_shape={tuple(input_shape)})"
                    )
                hw = conv_out_hw((shape[1], shape[2]), g)
                if min(hw) < 1:
                    raise ValueError(
                        f"layer {name!r}: Conv2d with kernel {g.kernel} does not fit its input "
                        f"of shape {shape}; use a larger input_shape or padding"
                    )
                nxt = children[idx + 1][1] if idx + 1 < len(children) else None
                if type(nxt) is nn.BatchNorm2d:
                    w, b = _fold_batchnorm(children[idx + 1][0], nxt, w, b)
                out_shape = (layer.out_channels, *hw)
                layers.append({"kind": "conv", "geometry": g, "in_shape": shape,
                               "out_shape": out_shape, "pools": pools})  # fmt: skip
                shape = out_shape
            else:
                if not flat and len(shape) != 1:
                    raise ValueError(
                        f"layer {name!r}: Linear on a (C, H, W) tensor; put nn.Flatten() before it"
                    )
                if layer.in_features != shape[0]:
                    raise ValueError(
                        f"layer {name!r}: Linear has in_features={layer.in_features}, but its "
                        f"input has {shape[0]} features (input_shape={tuple(input_shape)}); the "
                        "input_shape or the Linear is wrong"
                    )
                layers.append({"kind": "linear", "in_shape": shape, "pools": pools})
                shape = (layer.out_features,)
            weights.append(w)
            biases.append(b)
            pools = []
            state = "linear"
        elif kind is nn.BatchNorm2d:
            prev = children[idx - 1][1] if idx > 0 else None
            if type(prev) is not nn.Conv2d:
                raise ValueError(
                    f"layer {name!r}: BatchNorm2d is supported only right after a Conv2d (it is "
                    "folded into it)"
                )
        elif kind is nn.ReLU:
            if state != "linear":
                raise ValueError(
                    f"layer {name!r}: ReLU where a Conv2d or Linear was expected; a target "
                    "alternates linear maps and ReLUs"
                )
            state = "relu"
        elif kind is nn.AvgPool2d:
            if state != "relu" or flat:
                raise ValueError(
                    f"layer {name!r}: AvgPool2d is supported only after a ReLU, before the "
                    "next Conv2d/Flatten (pool the hidden feature maps)"
                )
            if len(shape) != 3:
                raise ValueError(f"layer {name!r}: AvgPool2d on a flat input of shape {shape}")
            p = PoolSpec.from_module(layer, shape)  # type: ignore[arg-type]
            if min(p.out_shape) < 1:
                raise ValueError(f"layer {name!r}: AvgPool2d does not fit its input {shape}")
            pools.append(p)
            shape = p.out_shape
        elif kind is nn.Flatten:
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise ValueError(f"layer {name!r}: only nn.Flatten() (start_dim=1) is supported")
            flat = True
            shape = (int(torch.tensor(shape).prod()),)
        else:
            _refuse(name, layer)
    if not layers:
        raise ValueError("the nn.Sequential has no Conv2d or Linear layer: nothing to reconstruct")
    if state == "relu":
        raise ValueError(
            "the nn.Sequential ends with a ReLU; a target ends with a Conv2d or Linear layer "
            "(drop the trailing ReLU)"
        )
    if pools:
        raise ValueError("AvgPool2d after the last layer is not supported; pool before it")
    return layers, weights, biases
