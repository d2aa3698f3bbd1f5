"""The frozen random network whose only trainable numbers are normalization scales and shifts.

``NormNet`` (SPEC §1.1) is an ordinary ``nn.Module`` built from standard parts: each layer is
``nn.Linear(bias=False)`` with frozen random weights, then a normalization layer, then ReLU (no
ReLU after the last layer)::

    x ─► Linear₁ (frozen) ─► Norm₁ (γ₁, β₁) ─► ReLU ─► ... ─► Linear_L (frozen) ─► Norm_L ─► y

Normalization modes:

``"batchnorm"``
    ``nn.BatchNorm1d`` in eval mode: ``weight·(z − μ)/√(var+ε) + bias`` with fixed running
    statistics (saved with the network). A per-unit affine map ``a·z + b`` is realised exactly by
    ``weight = a·√(var+ε)``, ``bias = b + a·μ`` (:meth:`NormNet.set_affine`).
``"affine"``
    :class:`Affine`, a plain per-unit ``γ·z + β``.

With ``density < 1`` each frozen weight is kept with that probability by a fixed Bernoulli mask
(SPEC §4), stored as a buffer with the network; kept values stay continuous.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from normonly._checks import check_density, check_int

__all__ = ["NormNet", "Affine", "MaskedLinear", "NORMS", "load_network"]

NORMS = ("batchnorm", "affine")


class Affine(nn.Module):
    """Per-unit affine normalization ``γ ⊙ z + β`` (γ = ``weight``, β = ``bias``)."""

    def __init__(self, num_features: int, *, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_features, dtype=dtype))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}"


class MaskedLinear(nn.Linear):
    """``nn.Linear`` (no bias) whose weight is multiplied by a fixed 0/1 ``mask`` buffer.

    The mask keeps pruned weights at zero even if a baseline later trains the weights.
    """

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, **kw) -> None:
        super().__init__(in_features, out_features, bias=False, **kw)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask)


def _norm_layer(norm: str, m: int, dtype: torch.dtype) -> nn.Module:
    if norm == "batchnorm":
        bn = nn.BatchNorm1d(m, dtype=dtype)
        bn.eval()
        return bn
    return Affine(m, dtype=dtype)


def random_linear(
    d_in: int, d_out: int, g: torch.Generator, *, density: float, dtype: torch.dtype
) -> nn.Linear:
    """A frozen ``nn.Linear(d_in, d_out, bias=False)`` with N(0, 1/d_in) weights.

    The weight is drawn first, then (only if ``density < 1``) the mask, so dense networks are
    byte-identical whatever the density code path.
    """
    w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / d_in**0.5
    if density < 1.0:
        mask = (torch.rand(d_out, d_in, generator=g, dtype=torch.float64) < density).to(dtype)
        lin: nn.Linear = MaskedLinear(d_in, d_out, mask, dtype=dtype)
        w = w * mask
    else:
        lin = nn.Linear(d_in, d_out, bias=False, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
    lin.weight.requires_grad_(False)
    return lin


def check_norm(norm: str) -> str:
    if norm == "layernorm":
        raise ValueError(
            "norm='layernorm' cannot give an exact construction: LayerNorm normalises each sample "
            "across units, so it is not a per-unit affine map (SPEC §1.1); use norm='batchnorm' "
            "(eval mode) or norm='affine', or fit a LayerNorm model by gradient with "
            "normonly.fit_norm_only"
        )
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


class _NormNetBase(nn.Module):
    """Shared plumbing: input checks, norm access, counts, save/load (safetensors + JSON).

    Inputs of another floating dtype (e.g. float32 data) are cast to the network's dtype, and
    the output has the network's dtype (float64 for a rebuilt network). A network that records
    the ball it is certified on (``meta["radius"]``, set by :func:`normonly.reconstruct`) checks
    every input against it: the first call with a point outside warns with
    :class:`~normonly.errors.OutsideBallWarning`; with ``strict_domain = True`` it raises
    :class:`~normonly.errors.OutsideBallError` instead.
    """

    norm: str
    config: dict
    meta: dict  # free-form JSON-able facts saved with the net (e.g. the certified radius)
    strict_domain: bool = False
    _domain_warned: bool = False
    _domain_unchecked: int = 0

    def _checked_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` cast to the network's dtype, checked against the certified ball."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        dtype = next(self.parameters()).dtype
        if x.dtype != dtype:
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"input must hold real numbers, got dtype {x.dtype}")
            x = x.to(dtype)
        radius = (getattr(self, "meta", None) or {}).get("radius")
        if radius is None or self._domain_unchecked or x.ndim != 2 or x.shape[0] == 0:
            return x
        with torch.no_grad():
            norms = x.detach().norm(dim=1)
            outside = int((norms > float(radius) * (1 + 1e-12)).sum())
        if outside:
            from normonly.errors import OutsideBallError, OutsideBallWarning

            msg = (
                f"{outside} of {x.shape[0]} inputs lie outside the ball ||x|| <= {radius:g} this "
                f"network is certified on (largest norm {float(norms.max()):.4g}): there it may "
                "differ from the target by any amount; reconstruct with data=X or a larger radius"
            )
            if self.strict_domain:
                raise OutsideBallError(msg)
            if not self._domain_warned:
                self._domain_warned = True
                warnings.warn(msg, OutsideBallWarning, stacklevel=5)
        return x

    @contextmanager
    def unchecked_domain(self) -> Iterator[None]:
        """Within this block the input check against the certified ball is skipped."""
        self._domain_unchecked += 1
        try:
            yield
        finally:
            self._domain_unchecked -= 1

    def norm_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    def set_affine(self, layer: int, gamma: torch.Tensor, beta: torch.Tensor) -> None:
        """Make normalization ``layer`` compute exactly ``γ ⊙ z + β`` (SPEC §1.1 mapping)."""
        set_norm_affine(self.norm_layers()[layer], gamma, beta)

    def effective_affine(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-unit ``(γ, β)`` that normalization ``layer`` currently computes."""
        return norm_affine(self.norm_layers()[layer])

    def parameter_counts(self) -> dict[str, int]:
        """Trainable (normalization) vs frozen (random weight) counts.

        ``frozen_nonzero`` counts the frozen weights a sparse mask kept.
        """
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        nonzero = sum(int((lin.weight != 0).sum()) for lin in self.linear_layers())
        return {"trainable": trainable, "frozen": frozen, "frozen_nonzero": nonzero}

    def freeze_weights(self) -> None:
        """Only normalization parameters keep ``requires_grad`` (the paper's setting)."""
        for p in self.parameters():
            p.requires_grad_(False)
        for n in self.norm_layers():
            for p in n.parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True) -> _NormNetBase:
        # BatchNorm stays in eval mode unless asked explicitly (see set_batchnorm_train)
        super().train(mode)
        if not getattr(self, "_bn_train", False):
            for n in self.norm_layers():
                if isinstance(n, nn.BatchNorm1d):
                    n.eval()
        return self

    def set_batchnorm_train(self, flag: bool) -> None:
        """Let BatchNorm use batch statistics in train mode (not exact; for gradient studies)."""
        self._bn_train = flag
        self.train(self.training)

    def save(self, path: str | os.PathLike, **extra_metadata: str) -> None:
        """Write ``state_dict`` (frozen weights, masks, γ, β, running statistics) to safetensors.

        The architecture goes into the file's metadata as JSON, so :func:`load_network` can
        rebuild it without unpickling anything.
        """
        from safetensors.torch import save

        from normonly._atomic import atomic_write_bytes

        meta = {
            "normonly": json.dumps({"class": type(self).__name__, **self.config}),
            "normonly_meta": json.dumps(getattr(self, "meta", {})),
        }
        meta.update(extra_metadata)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(path, save(state, metadata=meta))


def set_norm_affine(layer: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    """Write the per-unit affine map ``γ ⊙ z + β`` into a BatchNorm1d (eval) or Affine layer."""
    with torch.no_grad():
        if isinstance(layer, nn.BatchNorm1d):
            std = torch.sqrt(layer.running_var + layer.eps)
            layer.weight.copy_(gamma * std)
            layer.bias.copy_(beta + gamma * layer.running_mean)
        else:
            layer.weight.copy_(gamma)
            layer.bias.copy_(beta)


def norm_affine(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-unit ``(γ, β)`` a BatchNorm1d (eval) or Affine layer computes."""
    with torch.no_grad():
        if isinstance(layer, nn.BatchNorm1d):
            gamma = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            return gamma.clone(), (layer.bias - gamma * layer.running_mean).clone()
        return layer.weight.clone(), layer.bias.clone()


class NormNet(_NormNetBase):
    """Frozen random ReLU network with trainable per-unit normalizations (SPEC §1.1).

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
    ) -> None:
        super().__init__()
        widths = [check_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths)]
        if len(widths) < 2:
            raise ValueError(f"widths must list at least [d_in, m_1], got {widths!r}")
        self.norm = check_norm(norm)
        density = check_density(density)
        seed = check_int("seed", seed, minimum=0)
        self.config = {"widths": widths, "norm": norm, "density": density, "seed": seed}
        g = torch.Generator().manual_seed(seed)
        self.linears = nn.ModuleList(
            random_linear(a, b, g, density=density, dtype=dtype)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.norms = nn.ModuleList(_norm_layer(norm, m, dtype) for m in widths[1:])
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
            if i < last:
                h = torch.relu(h)
        return h

    def randomize_running_stats(self, seed: int) -> None:
        """Give every BatchNorm non-trivial running mean/var (to test the §1.1 mapping)."""
        g = torch.Generator().manual_seed(seed)
        for n in self.norms:
            if isinstance(n, nn.BatchNorm1d):
                m = n.num_features
                n.running_mean.copy_(torch.randn(m, generator=g, dtype=torch.float64))
                n.running_var.copy_(0.1 + 2 * torch.rand(m, generator=g, dtype=torch.float64))


def load_network(path: str | os.PathLike) -> _NormNetBase:
    """Rebuild a network saved by ``.save`` (NormNet or ResidualNormNet), without pickle."""
    from normonly._files import read_safetensors

    tensors, meta = read_safetensors(path, what="normonly network")
    if "normonly" not in meta:
        raise ValueError(
            f"{path} has no normonly metadata: it is not a network written by NormNet.save "
            "(to load a target MLP, use TargetMLP.load)"
        )
    try:
        cfg = json.loads(meta["normonly"])
        cls_name = cfg.pop("class")
    except (ValueError, KeyError, AttributeError, TypeError):
        raise ValueError(
            f"{path}: the normonly metadata is not valid JSON with a 'class'"
        ) from None
    classes = _network_classes()
    if cls_name not in classes:
        raise ValueError(f"{path}: unknown network class {cls_name!r}; known: {sorted(classes)}")
    try:
        dtype = next(iter(tensors.values())).dtype if tensors else torch.float64
        net = classes[cls_name](**cfg, dtype=dtype)
        net.load_state_dict(tensors, strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: tensors do not match the stored architecture: {e}") from None
    try:
        net.meta = json.loads(meta.get("normonly_meta", "{}"))
    except ValueError:
        raise ValueError(f"{path}: the normonly_meta metadata is not valid JSON") from None
    net.freeze_weights()
    return net


def _network_classes() -> dict[str, type]:
    from normonly.residual_network import ResidualNormNet  # imported late: it imports us

    return {"NormNet": NormNet, "ResidualNormNet": ResidualNormNet}
