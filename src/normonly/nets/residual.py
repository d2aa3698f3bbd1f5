"""A frozen random network with skip connections whose only trainable numbers are normalizations.

``ResidualNormNet`` (docs/theory.md#residual-construction) carries a residual stream ``s`` of
width ``2·register`` (two registers of ``register`` coordinates each). It is an ordinary
``nn.Module`` built from standard parts: frozen ``nn.Linear(bias=False)`` weights,
per-coordinate normalizations (``nn.BatchNorm1d`` in eval mode or
:class:`~normonly.nets.layers.Affine`), ReLU, zero padding and slicing::

    x ─► N_lift ─► zero-pad to 2·register ─► s
    s ─► block_1 ─► ... ─► block_B ─► s[:, out_register slice][:, :d_out] ─► N_read ─► y

    block b (hidden width hidden[b]):
      s ─┬─► N_in ─► M_in (h×2r) ─► N_hid ─► σ ─► M_out (2r×h) ─► N_out ─┐
         └───────────────────────── skip ─────────────────────────────── + ─► σ ─► s

``N_lift`` has ``d_in`` units, ``N_in`` and ``N_out`` have ``2·register``, ``N_hid`` has
``hidden[b]`` and ``N_read`` has ``d_out``. Every weight matrix is drawn N(0, 1/fan_in) from a
private generator seeded by ``seed`` (``M_in`` then ``M_out``, block by block), optionally masked
with keep probability ``density`` (:func:`normonly.nets.layers.random_linear`).

Parameter counts (``r = register``, ``h_b = hidden[b]``)::

    trainable = 2·d_in + 2·d_out + Σ_b (8·r + 2·h_b)     (γ and β of every normalization)
    frozen    = 4·r · Σ_b h_b                             (M_in and M_out of every block)

:func:`normonly.construct.residual.build_residual` sets the normalizations so that the network
equals a target MLP on a ball.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normonly._checks import check_density, check_int
from normonly.nets.base import NormNetBase
from normonly.nets.layers import check_norm, norm_layer, random_linear

__all__ = ["ResidualNormNet", "ResidualBlock", "residual_parameter_counts"]


class ResidualBlock(nn.Module):
    """One residual block ``s ↦ σ(s + N_out(M_out σ(N_hid(M_in N_in(s)))))``.

    Parameters
    ----------
    stream : int
        Width of the residual stream (``2·register``).
    hidden : int
        Hidden width h.
    g : torch.Generator
        Source of the frozen weights (``M_in`` is drawn first, then ``M_out``).
    norm : {"batchnorm", "affine"}
    density : float
    dtype : torch.dtype
    """

    def __init__(
        self,
        stream: int,
        hidden: int,
        g: torch.Generator,
        *,
        norm: str,
        density: float,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.norm_in = norm_layer(norm, stream, dtype)
        self.linear_in = random_linear(stream, hidden, g, density=density, dtype=dtype)
        self.norm_hid = norm_layer(norm, hidden, dtype)
        self.linear_out = random_linear(hidden, stream, g, density=density, dtype=dtype)
        self.norm_out = norm_layer(norm, stream, dtype)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.norm_hid(self.linear_in(self.norm_in(s))))  # (n, h)
        return torch.relu(s + self.norm_out(self.linear_out(a)))  # (n, 2r)


def residual_parameter_counts(
    d_in: int, d_out: int, register: int, hidden: Sequence[int]
) -> dict[str, int]:
    """The trainable and frozen parameter counts of a ResidualNormNet (formula of the module).

    Example
    -------
    >>> residual_parameter_counts(3, 2, 4, [6, 6])
    {'trainable': 98, 'frozen': 192}
    """
    trainable = 2 * d_in + 2 * d_out + sum(8 * register + 2 * h for h in hidden)
    return {"trainable": trainable, "frozen": 4 * register * sum(hidden)}


class ResidualNormNet(NormNetBase):
    """Frozen random residual ReLU network with trainable per-coordinate normalizations.

    Parameters
    ----------
    d_in : int
        Input dimension (``d_in <= register``).
    d_out : int
        Output dimension (``d_out <= register``).
    register : int
        Width r of each of the two registers; the stream has ``2·r`` coordinates.
    hidden : sequence of int
        Hidden width of each block (one entry per block; may be empty).
    out_register : {0, 1}
        The register the output is read from (the input is written into register 0).
    norm : {"batchnorm", "affine"}
    density : float
        Probability of keeping each frozen weight (1 = dense).
    seed : int
        Seed of the frozen weights and masks (a private generator; same seed, same bytes).
    dtype : torch.dtype
        float64 for exact constructions.

    Raises
    ------
    ValueError
        ``d_in`` or ``d_out`` exceeds ``register``, a width is below 1, or bad norm/density.

    Example
    -------
    >>> net = ResidualNormNet(d_in=3, d_out=2, register=4, hidden=[6, 6], seed=0)
    >>> net(torch.zeros(5, 3, dtype=torch.float64)).shape
    torch.Size([5, 2])
    >>> net.parameter_counts()["trainable"]  # 2·3 + 2·2 + 2·(8·4 + 2·6)
    98
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        register: int,
        hidden: Sequence[int],
        *,
        out_register: int = 1,
        norm: str = "batchnorm",
        density: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        register = check_int("register", register, minimum=1)
        d_in = check_int("d_in", d_in, minimum=1, maximum=register)
        d_out = check_int("d_out", d_out, minimum=1, maximum=register)
        hidden = [check_int(f"hidden[{i}]", h, minimum=1) for i, h in enumerate(hidden)]
        out_register = check_int("out_register", out_register, minimum=0, maximum=1)
        self.norm = check_norm(norm)
        density = check_density(density)
        seed = check_int("seed", seed, minimum=0)
        self.config = {
            "d_in": d_in,
            "d_out": d_out,
            "register": register,
            "hidden": hidden,
            "out_register": out_register,
            "norm": norm,
            "density": density,
            "seed": seed,
        }
        g = torch.Generator().manual_seed(seed)
        stream = 2 * register
        self.lift = norm_layer(norm, d_in, dtype)
        self.blocks = nn.ModuleList(
            ResidualBlock(stream, h, g, norm=norm, density=density, dtype=dtype) for h in hidden
        )
        self.readout = norm_layer(norm, d_out, dtype)
        self.meta = {}
        self.freeze_weights()

    @property
    def d_in(self) -> int:
        return self.config["d_in"]

    @property
    def d_out(self) -> int:
        return self.config["d_out"]

    @property
    def register(self) -> int:
        return self.config["register"]

    @property
    def hidden(self) -> list[int]:
        return list(self.config["hidden"])

    @property
    def depth(self) -> int:
        """Number of residual blocks."""
        return len(self.blocks)

    def norm_layers(self) -> list[nn.Module]:
        """``[N_lift, N_in¹, N_hid¹, N_out¹, ..., N_in^B, N_hid^B, N_out^B, N_read]``."""
        out = [self.lift]
        for blk in self.blocks:
            out += [blk.norm_in, blk.norm_hid, blk.norm_out]
        return out + [self.readout]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.register
        x = self._checked_input(x)
        s = nn.functional.pad(self.lift(x), (0, 2 * r - self.d_in))  # (n, 2r)
        for blk in self.blocks:
            s = blk(s)
        start = self.config["out_register"] * r
        return self.readout(s[:, start : start + self.d_out])  # (n, d_out)
