"""What every frozen norm-only network shares: input checks, norm access, counts, saving.

The concrete networks are :class:`~normonly.nets.wide.NormNet` and
:class:`~normonly.nets.residual.ResidualNormNet`. Their only trainable numbers are the γ and β of
their normalization layers; saving writes the ``state_dict`` (frozen weights, masks, γ, β,
running statistics) to safetensors with the architecture as JSON metadata, read back by
:func:`normonly.nets.io.load_network` without unpickling anything.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from normonly.nets.layers import norm_affine, set_norm_affine

__all__ = ["NormNetBase"]


class NormNetBase(nn.Module):
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
        """Make normalization ``layer`` compute exactly ``γ ⊙ z + β``.

        For an eval BatchNorm: ``weight = γ·√(var+ε)``, ``bias = β + γ·μ``
        (docs/theory.md#normalization-semantics).
        """
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

    def train(self, mode: bool = True) -> NormNetBase:
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
