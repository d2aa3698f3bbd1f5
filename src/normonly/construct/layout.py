"""The shapes of the constructions, computed once: wide widths, residual blocks, partition sizes.

Experiments and benchmarks ask these functions for widths instead of recomputing them.

* :func:`scaled_width` — ``⌈overparam·n⌉``, the one width formula (``docs/theory.md#counting``);
* :func:`wide_widths` — the ``NormNet`` widths of the wide construction (Theorem 1);
* :func:`check_k`, :func:`residual_layout` — partition sizes and blocks of the residual one
  (Theorem 2, ``docs/theory.md#residual-construction``).
"""

from __future__ import annotations

import math
from numbers import Integral

from normonly.errors import InfeasibleError
from normonly.nets.target import TargetMLP

__all__ = ["scaled_width", "wide_widths", "check_k", "residual_layout", "frozen_count"]


def scaled_width(overparam: float, n: int) -> int:
    """``⌈overparam · n⌉``: the width that gives ``overparam`` times the minimum ``n``.

    ``1e-9`` is subtracted first so that a product that should be an integer but rounds a hair
    above it (``1.1 * 30 = 33.000000000000004``) is not bumped to the next width.

    Example
    -------
    >>> scaled_width(1.1, 30), scaled_width(2.0, 25), scaled_width(1.5, 5)
    (33, 50, 8)
    """
    return math.ceil(overparam * n - 1e-9)


def wide_widths(
    target: TargetMLP,
    *,
    overparam: float,
    width: int | None,
    uniform_width: bool,
    least_squares: bool = False,
) -> list[int]:
    """NormNet widths ``[d_in, m_1, d_1, ..., m_L, d_L]`` (or uniform ``[d_in, M, ..., M, d_L]``).

    Raises
    ------
    InfeasibleError
        ``width`` is below ``d_in*d_out`` of some target layer.
    """
    need = [w.shape[0] * w.shape[1] for w in target.weights]
    if width is not None:
        worst = max(range(len(need)), key=lambda i: need[i])
        if width < need[worst] and not least_squares:
            d_out, d_in = target.weights[worst].shape
            raise InfeasibleError(
                f"width {width} is too small to reproduce the {d_out}x{d_in} target layer "
                f"{worst} exactly: need width >= {need[worst]} (d_in*d_out), or leave width "
                "unset and use overparam >= 1"
            )
        wide = [width] * len(need)
    else:
        wide = [scaled_width(overparam, n) for n in need]
    if uniform_width:
        M = max(max(wide), max(target.widths[1:-1], default=0))
        return [target.d_in] + [M] * (2 * target.depth - 1) + [target.d_out]
    out = [target.d_in]
    for m, w in zip(wide, target.weights, strict=True):
        out += [m, w.shape[0]]
    return out


def check_k(k: object, target: TargetMLP) -> list[int]:
    """Per-layer partition sizes: ``k`` clipped to each layer's ``d_in`` (None: ``d_in``).

    Raises
    ------
    TypeError
        ``k`` is not an integer.
    ValueError
        ``k`` is outside ``[1, max_l d_in_l]``.
    """
    d_ins = [w.shape[1] for w in target.weights]
    if k is None:
        return d_ins
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(
            f"k (partition size) must be an integer or None, got {type(k).__name__} {k!r}"
        )
    k = int(k)
    if not 1 <= k <= max(d_ins):
        raise ValueError(
            f"k (partition size) must be an integer in [1, {max(d_ins)}] (1 <= k <= the largest "
            f"d_in of the target's layers {d_ins}; it is clipped to each layer's d_in), got {k}; "
            "k=None uses each layer's d_in (one block per layer)"
        )
    return [min(k, d) for d in d_ins]


def residual_layout(
    target: TargetMLP, *, k: int | None, overparam: float
) -> tuple[dict, list[tuple[int, int, int, int]]]:
    """The ResidualNormNet configuration for ``target`` and the input chunk of each block.

    Returns
    -------
    config : dict
        Keyword arguments of :class:`ResidualNormNet` (without norm, density, seed):
        ``d_in, d_out, register = max(widths), hidden, out_register = depth mod 2``; a layer
        with partition size k_l has ``⌈d_in/k_l⌉`` blocks, block j of width
        ``⌈overparam·d_out·|J_j|⌉`` (``|J_j| = k_l`` but for a shorter last chunk).
    blocks : list of (layer, block index within the layer, start, stop)
        Block j of layer l handles the inputs ``J_j = range(start, stop)`` of that layer.

    Example
    -------
    >>> cfg, blocks = residual_layout(TargetMLP.random([4, 3, 2], seed=0), k=2, overparam=1.0)
    >>> cfg["hidden"], blocks
    ([6, 6, 4, 2], [(0, 0, 0, 2), (0, 1, 2, 4), (1, 0, 0, 2), (1, 1, 2, 3)])
    """
    ks = check_k(k, target)
    hidden: list[int] = []
    blocks: list[tuple[int, int]] = []
    for l, (w, kl) in enumerate(zip(target.weights, ks, strict=True)):
        d_out, d_in = w.shape
        for j, start in enumerate(range(0, d_in, kl)):
            size = min(kl, d_in - start)  # |J_j|
            hidden.append(scaled_width(overparam, d_out * size))
            blocks.append((l, j, start, start + size))
    config = {
        "d_in": target.d_in,
        "d_out": target.d_out,
        "register": max(target.widths),
        "hidden": hidden,
        "out_register": target.depth % 2,
    }
    return config, blocks


def frozen_count(
    target: TargetMLP, *, method: str, overparam: float, width: int | None = None,
    uniform_width: bool = False, k: int | None = None,
) -> int:
    """How many frozen weights the network of a construction holds (before building it).

    Example
    -------
    >>> frozen_count(TargetMLP.random([3, 5, 2], seed=0), method="wide", overparam=1.0)
    190
    """  # fmt: skip
    if method == "wide":
        widths = wide_widths(target, overparam=overparam, width=width,
                             uniform_width=uniform_width, least_squares=True)  # fmt: skip
        return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    config, _ = residual_layout(target, k=k, overparam=overparam)
    return 4 * config["register"] * sum(config["hidden"])
