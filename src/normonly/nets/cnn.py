"""The convolutional target: a ReLU CNN of conv, average-pooling and linear layers.

``TargetCNN`` holds float64 copies of the weights of an ``nn.Sequential`` read by
:func:`~normonly.nets.cnn_layers.read_sequential` (BatchNorm2d folded into its conv) and
evaluates it on ``(N, C, H, W)`` or flattened ``(N, C·H·W)`` inputs; its output is always flat,
``(N, d_out)``. :meth:`TargetCNN.to_mlp` gives the same function as a :class:`TargetMLP` on
flattened inputs: every conv unfolded into its dense matrix, every AvgPool2d folded into the
linear map that follows it (docs/theory.md#convolutional-networks).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from normonly._checks import check_finite
from normonly.nets.cnn_layers import ConvGeometry, PoolSpec, read_sequential
from normonly.nets.target import TargetMLP

__all__ = ["TargetCNN", "conv_matrix", "pool_matrix"]

FORMAT_VERSION = 1
_META_KEY = "normonly_target_cnn"


def conv_matrix(weight: torch.Tensor, geometry: ConvGeometry, in_shape) -> torch.Tensor:
    """The dense matrix of a bias-free convolution on flattened (C, H, W) inputs.

    Built by convolving the standard basis, so every entry is a copy of a kernel weight (or 0):
    exact. Shape ``(c_out·H'·W', C·H·W)``, rows and columns in ``flatten`` order.
    """
    d = int(torch.tensor(in_shape).prod())
    eye = torch.eye(d, dtype=weight.dtype, device=weight.device).reshape(d, *in_shape)
    out = F.conv2d(eye, weight, **geometry.kwargs())  # (d, c_out, H', W')
    return out.reshape(d, -1).T.contiguous()


def pool_matrix(pool: PoolSpec, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The dense matrix of an AvgPool2d on flattened inputs, entries ``fl(1/divisor)`` or 0."""
    d = int(torch.tensor(pool.in_shape).prod())
    eye = torch.eye(d, dtype=dtype).reshape(d, *pool.in_shape)
    return pool.apply(eye).reshape(d, -1).T.contiguous()  # (d_out, d)


class TargetCNN:
    """A ReLU CNN ``R^{C×H×W} -> R^{d_out}`` stored as float64 tensors.

    Build it with :meth:`from_torch`. ``layers[l]`` describes layer ``l`` (``"conv"`` or
    ``"linear"``, geometry, shapes, the AvgPool2d applied to its input); ``weights[l]`` and
    ``biases[l]`` are its float64 parameters.

    Example
    -------
    >>> seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    >>> f = TargetCNN.from_torch(seq, input_shape=(1, 4, 4))
    >>> f(torch.zeros(5, 1, 4, 4)).shape, f.to_mlp().widths
    (torch.Size([5, 3]), [16, 8, 3])
    """

    def __init__(self, input_shape, layers: list[dict], weights, biases) -> None:
        self.input_shape = tuple(int(v) for v in input_shape)
        self.layers = layers
        self.weights = [w.detach().to("cpu", torch.float64).contiguous() for w in weights]
        self.biases = [b.detach().to("cpu", torch.float64).contiguous() for b in biases]
        for l, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            check_finite(f"layer {l} weight", w)
            check_finite(f"layer {l} bias", b)
        self._mlp: TargetMLP | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_torch(
        cls, module: nn.Module, *, input_shape: Sequence[int] | None = None
    ) -> TargetCNN:
        """Read an ``nn.Sequential`` of Conv2d, (BatchNorm2d,) ReLU, AvgPool2d, Flatten, Linear.

        Parameters
        ----------
        module : nn.Sequential
        input_shape : (C, H, W)
            The shape of one input image (required: a conv layer does not record it).

        Raises
        ------
        TypeError
            Not an nn.Sequential, or a layer that is not supported (named: Sigmoid, MaxPool2d...).
        ValueError
            input_shape missing or inconsistent with the layers; a grouped conv, a padding mode
            other than zeros, a BatchNorm2d in training mode; layers not in ``linear (ReLU
            linear)*`` order.
        """
        if input_shape is None:
            raise ValueError(
                "input_shape=(C, H, W) is required: a Conv2d does not record the image size it "
                "was trained on (e.g. input_shape=(1, 8, 8) for sklearn's digits)"
            )
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in shape):
            raise ValueError(f"input_shape must be three positive integers (C, H, W), got {shape}")
        layers, ws, bs = read_sequential(module, shape)
        return cls(shape, layers, ws, bs)

    @classmethod
    def random(
        cls, input_shape: Sequence[int], channels: Sequence[int], *, seed: int,
        d_out: int | None = None, kernel=3, stride=1, padding=1, dilation=1,
        pool: int | None = None, bias: bool = True, bias_scale: float = 0.5,
    ) -> TargetCNN:  # fmt: skip
        """A random CNN: convs ``C → channels[0] → ...`` (ReLU between), then
        ``Flatten, Linear(·, d_out)`` if ``d_out`` is given.

        ``kernel``, ``stride``, ``padding``, ``dilation`` are one value or one per conv;
        ``pool`` adds ``AvgPool2d(pool)`` after every ReLU that has room for it. Weights
        N(0, 1/fan_in), biases N(0, bias_scale²), from a private generator seeded by ``seed``.
        """
        from normonly._checks import check_int

        g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
        n = len(channels)

        def per(v, i):
            return v[i] if isinstance(v, list | tuple) else v

        mods: list[nn.Module] = []
        c, h, w = input_shape
        for i, c_out in enumerate(channels):
            conv = nn.Conv2d(c, c_out, per(kernel, i), stride=per(stride, i),
                             padding=per(padding, i), dilation=per(dilation, i), bias=bias,
                             dtype=torch.float64)  # fmt: skip
            mods.append(conv)
            probe = nn.Sequential(*mods)(torch.zeros(1, *input_shape, dtype=torch.float64))
            c, h, w = probe.shape[1:]
            if i < n - 1 or d_out is not None:
                mods.append(nn.ReLU())
                if pool is not None and min(h, w) >= pool:
                    mods.append(nn.AvgPool2d(pool))
                    h, w = h // pool, w // pool
        if d_out is not None:
            mods += [nn.Flatten(), nn.Linear(c * h * w, d_out, dtype=torch.float64)]
        seq = nn.Sequential(*mods)
        with torch.no_grad():
            for m in seq:
                if isinstance(m, nn.Conv2d | nn.Linear):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64)
                                   / fan_in**0.5)  # fmt: skip
                    if m.bias is not None:
                        m.bias.copy_(bias_scale * torch.randn(m.bias.shape, generator=g,
                                                              dtype=torch.float64))  # fmt: skip
        return cls.from_torch(seq, input_shape=tuple(input_shape))

    # ------------------------------------------------------------------ facts
    @property
    def d_in(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def widths(self) -> list[int]:
        """Flattened widths ``[d_in, d_1, ..., d_out]`` (those of :meth:`to_mlp`)."""
        out = [self.d_in]
        for layer, w in zip(self.layers, self.weights, strict=True):
            if layer["kind"] == "conv":
                c, h, ww = layer["out_shape"]
                out.append(c * h * ww)
            else:
                out.append(w.shape[0])
        return out

    @property
    def d_out(self) -> int:
        return self.widths[-1]

    def kernel_matrix(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s weights as the matrix the construction reproduces, (d_out, d_in).

        A conv's kernel flattened to ``(c_out, c_in·kh·kw)``; a Linear's weight as it is.
        """
        w = self.weights[layer]
        return w.reshape(w.shape[0], -1)

    # ------------------------------------------------------------------ evaluation
    def _as_images(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 2 and x.shape[1] == self.d_in:
            return x.reshape(x.shape[0], *self.input_shape)
        if x.ndim == 4 and tuple(x.shape[1:]) == self.input_shape:
            return x
        raise ValueError(
            f"input must have shape (N, {', '.join(map(str, self.input_shape))}) or "
            f"(N, {self.d_in}), got {tuple(x.shape)}"
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` in float64, shape ``(N, d_out)``."""
        h = self._as_images(x).to(torch.float64)
        for l, (layer, w, b) in enumerate(zip(self.layers, self.weights, self.biases, strict=True)):
            for p in layer["pools"]:
                h = p.apply(h)
            if layer["kind"] == "conv":
                h = F.conv2d(h, w, b, **layer["geometry"].kwargs())
            else:
                h = F.linear(h.reshape(h.shape[0], -1), w, b)
            if l < self.depth - 1:
                h = torch.relu(h)
        return h.reshape(h.shape[0], -1)

    def dense_layers(self) -> list[tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]]:
        """Per layer ``(C, pools, b)``: the dense map on the pooled input, the dense pools
        (in the order applied), and the bias repeated over positions."""
        out = []
        for layer, w, b in zip(self.layers, self.weights, self.biases, strict=True):
            pools = [pool_matrix(p) for p in layer["pools"]]
            if layer["kind"] == "conv":
                C = conv_matrix(w, layer["geometry"], layer["in_shape"])
                _, h, ww = layer["out_shape"]
                out.append((C, pools, b.repeat_interleave(h * ww)))
            else:
                out.append((w, pools, b))
        return out

    def to_mlp(self) -> TargetMLP:
        """The same function as a :class:`TargetMLP` on flattened inputs (float64).

        Conv layers become their dense matrices (exact); the pools in front of a layer are
        multiplied into its matrix (rounded once per product; with non-overlapping pools whose
        window has a power-of-two area, exact).
        """
        if self._mlp is None:
            ws, bs = [], []
            for C, pools, b in self.dense_layers():
                for P in pools[::-1]:
                    C = C @ P
                ws.append(C)
                bs.append(b)
            self._mlp = TargetMLP(ws, bs)
        return self._mlp

    def to_torch(self) -> nn.Sequential:
        """The equivalent float64 ``nn.Sequential`` (BatchNorm2d folded)."""
        mods: list[nn.Module] = []
        flat = False
        for l, (layer, w, b) in enumerate(zip(self.layers, self.weights, self.biases, strict=True)):
            mods += [p.module() for p in layer["pools"]]
            if layer["kind"] == "conv":
                g = layer["geometry"]
                m: nn.Module = nn.Conv2d(w.shape[1], w.shape[0], g.kernel, **g.kwargs(),
                                         dtype=torch.float64)  # fmt: skip
            else:
                if not flat:
                    mods.append(nn.Flatten())
                    flat = True
                m = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
            with torch.no_grad():
                m.weight.copy_(w)
                m.bias.copy_(b)
            mods.append(m)
            if l < self.depth - 1:
                mods.append(nn.ReLU())
        if not flat:
            mods.append(nn.Flatten())
        return nn.Sequential(*mods)

    # ------------------------------------------------------------------ files
    def _layers_json(self) -> list[dict]:
        out = []
        for layer in self.layers:
            d = {"kind": layer["kind"], "in_shape": list(layer["in_shape"]),
                 "pools": [p.to_json() for p in layer["pools"]]}  # fmt: skip
            if layer["kind"] == "conv":
                d["geometry"] = layer["geometry"].to_json()
                d["out_shape"] = list(layer["out_shape"])
            out.append(d)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights (safetensors) and the layer structure (JSON metadata); no pickle."""
        from safetensors.torch import save

        from normonly._atomic import atomic_write_bytes

        tensors = {}
        for l, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            tensors[f"{l}.weight"] = w.contiguous()
            tensors[f"{l}.bias"] = b.contiguous()
        meta = {"format_version": FORMAT_VERSION, "activation": "relu",
                "input_shape": list(self.input_shape), "layers": self._layers_json()}  # fmt: skip
        atomic_write_bytes(Path(path), save(tensors, metadata={"format": "pt",
                                                               _META_KEY: json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TargetCNN:
        """Read a file written by :meth:`save` (parsed by safetensors: no pickle, no code runs).

        Raises
        ------
        ValueError
            Not such a file (no CNN metadata), or tensors that do not match the layers.
        """
        from normonly._files import read_safetensors

        tensors, metadata = read_safetensors(path, what="target CNN")
        if _META_KEY not in metadata:
            raise ValueError(
                f"{path}: no {_META_KEY!r} metadata, so not a file written by TargetCNN.save "
                "(for an MLP use TargetMLP.load)"
            )
        try:
            meta = json.loads(metadata[_META_KEY])
            layers = []
            for d in meta["layers"]:
                layer = {"kind": d["kind"], "in_shape": tuple(d["in_shape"]),
                         "pools": [PoolSpec.from_json(p) for p in d["pools"]]}  # fmt: skip
                if d["kind"] == "conv":
                    layer["geometry"] = ConvGeometry.from_json(d["geometry"])
                    layer["out_shape"] = tuple(d["out_shape"])
                layers.append(layer)
            ws = [tensors[f"{l}.weight"] for l in range(len(layers))]
            bs = [tensors[f"{l}.bias"] for l in range(len(layers))]
            target = cls(meta["input_shape"], layers, ws, bs)
            target(torch.zeros(1, target.d_in, dtype=torch.float64))  # shapes agree
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{path}: the tensors do not form the recorded CNN ({e})") from None
        return target
