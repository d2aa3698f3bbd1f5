"""Deep construction with skip connections (Theorem 2 of Giannou, Rajput, Papailiopoulos;
docs/theory.md#residual-construction).

Width is traded for depth: with partition size k, target layer ``u ↦ σ(W u + b)``
(``W ∈ R^{d_out×d_in}``) is rebuilt by ``⌈d_in/k⌉`` residual blocks, block j adding the chunk
``W[:, J_j] u_{J_j}`` (``J_j`` = inputs ``jk .. min((j+1)k, d_in) − 1``) into a register of a
:class:`~normonly.nets.residual.ResidualNormNet`. Block j has hidden width
``⌈overparam·d_out·|J_j|⌉``: ``⌈overparam·d_out·k⌉`` for every block but a shorter last chunk,
which gets the smaller width it needs. ``k = d_in`` gives one block of the wide construction's
width ``⌈overparam·d_in·d_out⌉``; ``k = 1`` gives ``d_in`` blocks of width
``⌈overparam·d_out⌉``. ``k`` is clipped to each layer's ``d_in``.

The stream has two registers of width ``r = max(target widths)``. Target layer l reads its input
from register ``l mod 2`` (the *source*) and writes ``σ(W u + b)`` into register ``(l+1) mod 2``
(the *destination*); the roles swap from layer to layer. The readout takes the destination of the
last layer (register ``L mod 2``)::

    (registers drawn as [ src | dst ]; in the stream they alternate between [0, r) and [r, 2r))

    x ──► N_lift: x + c ──► pad ──► [ src: x+c | dst: 0 ]
                                        │ block (l, j):  Δ = N_out(M_out σ(N_hid(M_in N_in(s))))
                                        ▼                s ← σ(s + Δ)
        j = 1:     [ src | dst: C + W_J1 u_J1 ]
        j:         [ src | dst: C + Σ_{j'≤j} W_Jj' u_Jj' ]            (always ≥ 0: σ = identity)
        j = last:  [ 0   | dst: σ(W u + b) ]   (src cleared by a large negative shift)
                                        │ next layer: registers swap roles
        last layer, last block: dst = W u + b + C_out ≥ 0, then N_read subtracts C_out ──► y

Block (l, j), with ``u`` the layer's input (true values, ``‖u‖ ≤ R_in``):

1. ``N_in``: γ = 1, β = −c on the source coordinates of ``J_j`` (undoing the input lift c, which
   is 0 after the first layer since ``u = σ(·) ≥ 0``), γ = β = 0 elsewhere: output ``u_{J_j}``.
2. ``N_hid``: γ solves the Khatri-Rao system ``M_out[dst,:] diag(γ) M_in[:, J_j] = W[:, J_j]``
   (:func:`normonly.linalg.solve_scales`), β = :func:`~normonly.construct.wide.relu_on_shift`
   (which uses ``u ≥ 0`` after the first layer)
   with the bound ``‖u_{J_j}‖ ≤ R_in`` keeps every hidden ReLU on.
3. ``N_out``: γ = 1 on the destination coordinates ``0..d_out-1``, 0 elsewhere;
   β = −M_out[dst,:] β_hid (cancels the hidden offset), plus the lift ``C_i = (1+margin)‖W_i‖R_in``
   in the first block (partial sums then stay ≥ 0 and survive the post-add ReLU), plus
   ``b − C`` in the last block (its ReLU is the target's ReLU). The last block also adds
   ``−(1+margin)(R_in + c)`` to every source coordinate, so the post-add ReLU clears the source
   register for reuse. A one-block layer adds just ``b``.
4. The last target layer has no ReLU: its last block adds
   ``C_out,i = (1+margin)(‖W_i‖R_in + |b_i|)``, so ``W u + b + C_out ≥ 0`` passes the ReLU
   unchanged, and ``N_read`` (γ = 1, β = −C_out) removes it. ``N_lift`` (γ = 1,
   β = c = (1+margin)·R) makes raw inputs of either sign ≥ 0.

Size. With ``r = max(widths)`` and ``h_b`` the hidden width of block b: depth
``Σ_l ⌈d_in,l / k_l⌉`` blocks, frozen ``4r·Σ_b h_b`` weights, trainable
``2·d_in + 2·d_out + Σ_b (8r + 2h_b)`` normalization parameters
(:func:`~normonly.nets.residual.residual_parameter_counts`). Since ``Σ_j |J_j| = d_in``, at
``overparam = 1`` the frozen count is ``4r·Σ_l d_in,l·d_out,l`` for every k: from ``k = d_in`` to
``k = 1`` the hidden width shrinks by the factor d_in while the depth grows by the same factor;
only the ``8r`` stream normalization parameters per block grow with the depth.

Radii propagate with :func:`~normonly.construct.wide.next_radius`. Each block reports a
:class:`~normonly.construct.record.LayerCertificate` whose ``relu_margin`` is the smallest
bound, over the ball, of that block's always-on pre-activations (hidden units, lifted partial
sums, lifted input, lifted output).
"""

from __future__ import annotations

import torch

from normonly.construct.layout import residual_layout
from normonly.construct.record import LayerCertificate, construction_meta
from normonly.construct.spec import ConstructionSpec
from normonly.construct.wide import RELU_MARGIN, next_radius, relu_on_need
from normonly.linalg.solve import solve_scales
from normonly.linalg.sparse_check import require_full_row_rank
from normonly.nets.layers import set_norm_affine
from normonly.nets.residual import ResidualNormNet
from normonly.nets.target import TargetMLP

__all__ = ["build_residual"]


def build_residual(
    target: TargetMLP,
    spec: ConstructionSpec | None = None,
    *,
    net: ResidualNormNet | None = None,
    **options: object,
) -> tuple[ResidualNormNet, list[LayerCertificate]]:
    """Set the normalizations of a frozen random ``ResidualNormNet`` to reproduce ``target``.

    Parameters
    ----------
    target : TargetMLP
    spec : ConstructionSpec, optional
        The validated options; without it, ``options`` (the keywords of
        :func:`normonly.reconstruct`: radius, overparam — hidden width relative to the minimum
        ``d_out·k`` —, k — partition size, ``1 <= k <= max_l d_in_l``, clipped per layer —,
        norm, density, seed, solver, device) are validated into one.
    net : ResidualNormNet, optional
        Your own network of the layout :func:`residual_layout` gives (e.g. with BatchNorm
        running statistics of its own).

    Returns
    -------
    net : ResidualNormNet (float64, on ``device``)
    layers : list of LayerCertificate, one per block (``layer``, ``block`` = index in the layer)

    Raises
    ------
    ValueError, TypeError
        Bad k (see :func:`normonly.construct.layout.check_k`), radius, overparam, or a ``net``
        of another layout.
    RankDeficientError
        A block's Khatri-Rao system lacks full rank (e.g. a very sparse ``density``).

    Example
    -------
    >>> f = TargetMLP.random([3, 4, 2], seed=0)
    >>> net, certs = build_residual(f, radius=1.0, k=1)
    >>> len(certs), net.hidden
    (7, [4, 4, 4, 2, 2, 2, 2])
    """
    if spec is None:
        spec = ConstructionSpec.make(target, method="residual", **options)
    elif options:
        raise TypeError(f"give a spec or options, not both (got {sorted(options)})")
    k, overparam, radius = spec.k, spec.overparam, spec.radius
    norm, density, seed = spec.norm, spec.density, spec.seed
    solver, device = spec.solver, spec.device
    config, blocks = residual_layout(target, k=k, overparam=overparam)
    if net is None:
        net = ResidualNormNet(**config, norm=norm, density=density, seed=seed)
    elif not isinstance(net, ResidualNormNet) or any(
        net.config[key] != value for key, value in config.items()
    ):
        have = getattr(net, "config", type(net).__name__)
        raise ValueError(
            f"the given net has configuration {have}, but this target with k={k} and "
            f"overparam={overparam} needs a ResidualNormNet with {config}"
        )
    net = net.to(device=device, dtype=torch.float64)
    dev = torch.device(device)
    r = net.register
    # N_lift: raw inputs of either sign become x + c >= 0 (c = (1+margin) R >= |x_i|)
    lift_src = torch.full((target.d_in,), (1 + RELU_MARGIN) * radius, dtype=torch.float64)
    _set(net.lift, torch.ones_like(lift_src), lift_src)
    certs: list[LayerCertificate] = []
    radius_in = radius
    for l, (W, b) in enumerate(zip(target.weights, target.biases, strict=True)):
        W, b, lift_src = W.to(dev), b.to(dev), lift_src.to(dev)
        d_out, d_in = W.shape
        src, dst = (l % 2) * r, ((l + 1) % 2) * r  # register offsets in the stream
        last_layer = l == target.depth - 1
        ids = [i for i, (bl, *_) in enumerate(blocks) if bl == l]
        C = (1 + RELU_MARGIN) * W.norm(dim=1) * radius_in  # (d_out,) partial-sum lift
        C_out = (1 + RELU_MARGIN) * (W.norm(dim=1) * radius_in + b.abs())  # (d_out,)
        for j, idx in enumerate(ids):
            J = torch.arange(*blocks[idx][2:], device=dev)  # chunk J_j
            blk = net.blocks[idx]
            first, last = j == 0, j == len(ids) - 1
            # N_in: pass u_J (undo the input lift), zero elsewhere
            g_in = torch.zeros(2 * r, dtype=W.dtype, device=dev)
            b_in = torch.zeros_like(g_in)
            g_in[src + J] = 1.0
            b_in[src + J] = -lift_src[J]
            _set(blk.norm_in, g_in, b_in)
            # N_hid: Khatri-Rao scales, always-on shifts
            M_in = blk.linear_in.weight.detach()[:, src + J]  # (h, |J|)
            M_out = blk.linear_out.weight.detach()[dst : dst + d_out]  # (d_out, h)
            if bool((M_out == 0).any()) or bool((M_in == 0).any()):
                require_full_row_rank(M_out, M_in, layer=l)  # sparse: raises with the fix
            gamma, info = solve_scales(M_out, M_in, W[:, J], solver=solver, rtol=spec.solve_rtol)
            need = relu_on_need(gamma, M_in, radius_in, nonneg=l > 0)  # u = σ(·) >= 0
            beta = (1.0 + RELU_MARGIN) * need  # = relu_on_shift, the need computed once
            _set(blk.norm_hid, gamma, beta)
            margins = [beta - need]
            # N_out: destination gets the chunk's product; lifts, bias and clearing as documented
            shift = -(M_out @ beta)  # (d_out,)
            if first and not last:
                shift = shift + C
            if last:
                shift = shift + (b if first else b - C)
                if last_layer:
                    shift = shift + C_out
            g_out = torch.zeros(2 * r, dtype=W.dtype, device=dev)
            b_out = torch.zeros_like(g_out)
            g_out[dst : dst + d_out] = 1.0
            b_out[dst : dst + d_out] = shift
            if last:
                clear = torch.zeros(r, dtype=W.dtype, device=dev)
                clear[:d_in] = (1 + RELU_MARGIN) * (radius_in + lift_src)
                b_out[src : src + r] = -clear
            _set(blk.norm_out, g_out, b_out)
            margins += _stream_margins(W, b, J, C, C_out, lift_src, radius_in, first, last,
                                       last_layer)  # fmt: skip
            margin = float(torch.cat([m.reshape(-1) for m in margins]).min())
            certs.append(
                LayerCertificate.from_solve(
                    info, layer=l, block=j, relu_margin=margin, radius_in=radius_in
                )
            )
        lift_src = torch.zeros(d_out, dtype=torch.float64)  # σ(·) ≥ 0 needs no lift
        radius_in = next_radius(W, b, radius_in)
    _set(net.readout, torch.ones_like(C_out), -C_out)  # N_read removes the output lift
    net.meta = construction_meta("residual", radius, target.widths, certs)
    return net, certs


def _set(layer: torch.nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    p = layer.weight
    set_norm_affine(layer, gamma.to(p.device, p.dtype), beta.to(p.device, p.dtype))


def _stream_margins(
    W: torch.Tensor,
    b: torch.Tensor,
    J: torch.Tensor,
    C: torch.Tensor,
    C_out: torch.Tensor,
    lift_src: torch.Tensor,
    radius_in: float,
    first: bool,
    last: bool,
    last_layer: bool,
) -> list[torch.Tensor]:
    """Lower bounds over the ball of the block's always-on stream pre-activations."""
    out = [lift_src[J] - radius_in] if bool((lift_src > 0).any()) else []  # lifted raw input
    if not last:  # lifted partial sum C + Σ_{j' ≤ j} W[:, J_j'] u_J_j'
        done = int(J[-1]) + 1
        out.append(C - W[:, :done].norm(dim=1) * radius_in)
    elif last_layer:  # lifted output W u + b + C_out
        out.append(C_out - W.norm(dim=1) * radius_in - b.abs())
    return out
