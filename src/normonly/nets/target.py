"""The target network: a fully connected ReLU MLP with biases (docs/theory.md#the-target-network).

``f(x) = W_L σ(... σ(W_1 x + b_1) ...) + b_L`` with σ = ReLU between layers and a linear last
layer. Widths may differ per layer. All arithmetic is float64.

The file format is exactly what ``safetensors.torch.save_file(seq.state_dict(), path)`` writes for
an ``nn.Sequential(Linear, ReLU, Linear, ..., Linear)``: keys ``0.weight``, ``0.bias``,
``2.weight``, ... so a user can bring a network trained with plain PyTorch.

A state_dict does not say which activation sat between the Linear layers (a Sigmoid network has
the same keys). :meth:`TargetMLP.save` therefore writes it into the file's metadata
(``normonly_target``: format version and activation); a bare state_dict file needs the activation
stated by the caller, ``TargetMLP.load(path, activation="relu")``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from normonly._checks import check_finite, check_int

__all__ = ["TargetMLP"]

_KEY = re.compile(r"^(\d+)\.(weight|bias)$")
FORMAT_VERSION = 1
_META_KEY = "normonly_target"


def check_activation(activation: object, source: str) -> None:
    """Accept only ``"relu"``; name anything else (normonly reconstructs ReLU networks only)."""
    if activation == "relu":
        return
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a string such as 'relu', got {activation!r}")
    raise ValueError(
        f"{source}: activation {activation!r} is not supported: normonly reconstructs ReLU "
        "networks only (a network with another activation cannot be rebuilt exactly)"
    )


class TargetMLP:
    """A ReLU MLP ``R^{d_in} -> R^{d_out}`` stored as float64 weight and bias tensors.

    Parameters
    ----------
    weights : sequence of tensors
        ``weights[l]`` has shape ``(widths[l+1], widths[l])``.
    biases : sequence of tensors
        ``biases[l]`` has shape ``(widths[l+1],)``.

    Raises
    ------
    ValueError
        No layers, mismatched consecutive widths, or non-finite entries.

    Example
    -------
    >>> f = TargetMLP.random([3, 5, 2], seed=0)
    >>> f(torch.zeros(4, 3)).shape
    torch.Size([4, 2])
    """

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> None:
        if len(weights) == 0:
            raise ValueError(
                "a target needs at least one Linear layer, got none; e.g. "
                "TargetMLP.random([d_in, d_out], seed=0)"
            )
        if len(weights) != len(biases):
            raise ValueError(f"got {len(weights)} weight matrices but {len(biases)} bias vectors")
        ws, bs = [], []
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            w = torch.as_tensor(w)
            b = torch.as_tensor(b)
            if not (w.is_floating_point() and b.is_floating_point()):
                raise TypeError(
                    f"layer {i}: weights and biases must be floating point, got {w.dtype} "
                    f"and {b.dtype}"
                )
            # own contiguous float64 copies (a transposed view, e.g. sklearn's coefs_[i].T,
            # would otherwise keep its strides into the solvers)
            w = w.detach().to("cpu", torch.float64).clone(memory_format=torch.contiguous_format)
            b = b.detach().to("cpu", torch.float64).clone(memory_format=torch.contiguous_format)
            if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
                raise ValueError(
                    f"layer {i}: weight must be a non-empty 2-D (d_out, d_in) matrix, "
                    f"got shape {tuple(w.shape)}"
                )
            if b.shape != (w.shape[0],):
                raise ValueError(
                    f"layer {i}: bias must have shape ({w.shape[0]},) to match weight "
                    f"{tuple(w.shape)}, got {tuple(b.shape)}"
                )
            if ws and ws[-1].shape[0] != w.shape[1]:
                raise ValueError(
                    f"layer {i} expects {w.shape[1]} inputs but layer {i - 1} has "
                    f"{ws[-1].shape[0]} outputs: consecutive widths must match"
                )
            check_finite(f"layer {i} weight", w)
            check_finite(f"layer {i} bias", b)
            ws.append(w)
            bs.append(b)
        self.weights: list[torch.Tensor] = ws
        self.biases: list[torch.Tensor] = bs

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(cls, widths: Sequence[int], *, seed: int, bias_scale: float = 0.5) -> TargetMLP:
        """A random target: weights N(0, 1/fan_in), biases N(0, bias_scale^2).

        Parameters
        ----------
        widths : sequence of int
            ``[d_in, h_1, ..., d_out]``, at least two entries, each >= 1.
        seed : int
            Seed of a private ``torch.Generator``; the same seed gives the same bytes.
        """
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError(
                f"widths must list at least [d_in, d_out], got {widths!r}; e.g. [8, 16, 4]"
            )
        widths = [check_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths)]
        g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
        ws, bs = [], []
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            ws.append(torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / d_in**0.5)
            bs.append(bias_scale * torch.randn(d_out, generator=g, dtype=torch.float64))
        return cls(ws, bs)

    @classmethod
    def from_torch(cls, module: nn.Module) -> TargetMLP:
        """Read an ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` (ReLU between Linears).

        Raises
        ------
        TypeError
            The module is not an ``nn.Sequential``, or holds a layer other than Linear/ReLU.
        ValueError
            The layers are not ``Linear (ReLU Linear)*`` (e.g. a trailing ReLU or two Linears in
            a row), or weights are not finite.
        """
        if isinstance(module, nn.Linear):
            module = nn.Sequential(module)
        if not isinstance(module, nn.Sequential):
            raise TypeError(
                f"from_torch expects an nn.Sequential of nn.Linear and nn.ReLU, got "
                f"{type(module).__name__}"
            )
        ws, bs = [], []
        expect_linear = True
        for name, layer in module.named_children():
            if type(layer) is nn.Linear:
                if not expect_linear:
                    raise ValueError(
                        f"layer {name!r}: two Linear layers in a row; a target must alternate "
                        "Linear and ReLU (merge the two matrices, or put a ReLU between them)"
                    )
                w = layer.weight.detach()
                b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0])
                ws.append(w)
                bs.append(b)
                expect_linear = False
            elif type(layer) is nn.ReLU:
                if expect_linear:
                    raise ValueError(
                        f"layer {name!r}: ReLU where a Linear layer was expected; a target is "
                        "Linear (ReLU Linear)* with a linear last layer"
                    )
                expect_linear = True
            else:
                raise TypeError(
                    f"layer {name!r} is {type(layer).__name__}: normonly targets are ReLU MLPs "
                    "made only of nn.Linear and nn.ReLU (no other activations, convolutions, "
                    "normalization or dropout); convert or remove that layer"
                )
        if not ws:
            raise ValueError("the nn.Sequential has no nn.Linear layer: nothing to reconstruct")
        if expect_linear:
            raise ValueError(
                "the nn.Sequential ends with a ReLU; normonly targets end with a Linear layer "
                "(drop the trailing ReLU: exact reconstruction of a non-negative output is not "
                "supported)"
            )
        return cls(ws, bs)

    @classmethod
    def from_sklearn(cls, estimator: object) -> TargetMLP:
        """A fitted ``MLPClassifier`` / ``MLPRegressor`` with ``activation="relu"``.

        The target is the network before its output activation: a classifier's logits (one
        logit for a binary classifier, whose ``predict`` is ``classes_[logit > 0]``; one per
        class otherwise, ``predict`` = ``classes_[argmax]``), a regressor's outputs.

        Raises
        ------
        TypeError
            Not a scikit-learn MLP.
        ValueError
            Not fitted, or another activation (named).
        """
        from normonly.nets.readers import weights_from_sklearn

        ws, bs = weights_from_sklearn(estimator)
        return cls([torch.from_numpy(w) for w in ws], [torch.from_numpy(b) for b in bs])

    @classmethod
    def from_onnx(cls, path: str | os.PathLike) -> TargetMLP:
        """The ReLU MLP of an ONNX file (Gemm or MatMul+Add, Relu; read, never run).

        The activation is read from the graph; float32 weights are converted exactly to float64.
        Any other operator is refused with its name and node (:mod:`normonly.nets.readers`).
        """
        from normonly.nets.readers import weights_from_onnx

        ws, bs = weights_from_onnx(path)
        try:
            return cls([torch.from_numpy(w) for w in ws], [torch.from_numpy(b) for b in bs])
        except (ValueError, TypeError) as e:
            raise type(e)(f"{path}: {e}") from None

    def to_torch(self, dtype: torch.dtype = torch.float64) -> nn.Sequential:
        """The equivalent ``nn.Sequential(Linear, ReLU, ..., Linear)``."""
        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            lin = nn.Linear(w.shape[1], w.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            layers.append(lin)
            if i < self.depth - 1:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the ``nn.Sequential`` state_dict layout in safetensors (atomic)."""
        from safetensors.torch import save

        from normonly._atomic import atomic_write_bytes

        tensors = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            tensors[f"{2 * i}.weight"] = w.contiguous()
            tensors[f"{2 * i}.bias"] = b.contiguous()
        meta = {"format_version": FORMAT_VERSION, "activation": "relu"}
        metadata = {"format": "pt", _META_KEY: json.dumps(meta)}
        atomic_write_bytes(Path(path), save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike, *, activation: str | None = None) -> TargetMLP:
        """Read a safetensors file of an ``nn.Sequential(Linear, ReLU, ..., Linear)``.

        The file is parsed by safetensors (no pickle, no code runs).

        Parameters
        ----------
        path : path-like
        activation : {"relu"}, optional
            The activation between the Linear layers. Files written by :meth:`save` record it;
            a bare state_dict file (``safetensors.torch.save_file(seq.state_dict(), path)``)
            does not, and then ``activation="relu"`` must be given.

        Raises
        ------
        ValueError
            Not safetensors; keys, shapes or dtypes that do not form such a network; no
            activation recorded or given; an activation other than ReLU (recorded or given); a
            recorded activation that contradicts the given one.
        """
        from normonly._files import read_safetensors

        tensors, metadata = read_safetensors(path, what="target network")
        target = cls._from_state_dict(tensors, source=str(path))  # structure first
        recorded = _recorded_activation(metadata, str(path))
        if recorded is None and activation is None:
            raise ValueError(
                f"{path}: the file does not say which activation the network uses (a bare "
                "state_dict has the same keys for ReLU, Sigmoid, Tanh, ...); if it is a ReLU "
                "network, load it with TargetMLP.load(path, activation='relu') "
                "(command line: --activation relu)"
            )
        if recorded is not None:
            check_activation(recorded, f"{path} (recorded in the file)")
            if activation is not None and activation != recorded:
                raise ValueError(
                    f"{path}: the file records activation {recorded!r}, but "
                    f"activation={activation!r} was given"
                )
        else:
            check_activation(activation, str(path))
        return target

    @classmethod
    def _from_state_dict(cls, tensors: dict[str, torch.Tensor], source: str) -> TargetMLP:
        layers: dict[int, dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            m = _KEY.match(key)
            if m is None:
                raise ValueError(
                    f"{source}: unexpected tensor {key!r}; a target file holds only "
                    "'<index>.weight' and '<index>.bias' of an nn.Sequential of Linear and ReLU "
                    "(e.g. '0.weight', '0.bias', '2.weight', '2.bias')"
                )
            if not t.is_floating_point():
                raise ValueError(f"{source}: tensor {key!r} has dtype {t.dtype}, need a float")
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = t
        if not layers:
            raise ValueError(f"{source}: the file holds no tensors, so no layers")
        idx = sorted(layers)
        expected = list(range(0, 2 * len(idx), 2))
        if idx != expected:
            raise ValueError(
                f"{source}: Linear layers at indices {idx}, expected {expected} "
                "(an nn.Sequential alternating Linear and ReLU, starting with a Linear)"
            )
        ws, bs = [], []
        for i in idx:
            if "weight" not in layers[i]:
                raise ValueError(f"{source}: missing tensor '{i}.weight'")
            w = layers[i]["weight"]
            if w.ndim != 2:
                raise ValueError(
                    f"{source}: '{i}.weight' must be 2-D (d_out, d_in), got shape {tuple(w.shape)}"
                )
            ws.append(w)
            bs.append(layers[i].get("bias", torch.zeros(w.shape[0], dtype=w.dtype)))
        try:
            return cls(ws, bs)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{source}: {e}") from None

    # ------------------------------------------------------------------ evaluation
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate on ``x`` of shape ``(n, d_in)``; returns ``(n, d_out)`` in float64."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"x must have shape (n, {self.d_in}), got {tuple(x.shape)}")
        h = x.to(torch.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T.to(h.device) + b.to(h.device)
            if i < self.depth - 1:
                h = torch.relu(h)
        return h

    @property
    def widths(self) -> list[int]:
        """``[d_in, h_1, ..., d_out]``."""
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def d_in(self) -> int:
        return self.weights[0].shape[1]

    @property
    def d_out(self) -> int:
        return self.weights[-1].shape[0]

    def num_parameters(self) -> int:
        """Number of weights and biases of the target."""
        return sum(w.numel() + b.numel() for w, b in zip(self.weights, self.biases, strict=True))

    def __repr__(self) -> str:
        return f"TargetMLP(widths={self.widths})"


def _recorded_activation(metadata: dict[str, str], source: str) -> str | None:
    """The activation recorded by :meth:`TargetMLP.save`, or None for a bare state_dict."""
    raw = metadata.get(_META_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        activation = meta["activation"]
        version = int(meta.get("format_version", 0))
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"{source}: the {_META_KEY} metadata is not valid JSON with an 'activation'"
        ) from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source}: written by a newer normonly (format version {version} > "
            f"{FORMAT_VERSION}); upgrade normonly to read it"
        )
    return activation
