"""Certificates: what a reconstructed network is proven to do, and what was measured.

A :class:`Certificate` states the domain (the ball ``‖x‖₂ ≤ R``), the dtype, and

* ``error_bound``: a **proven** upper bound on ``‖net(x) − f(x)‖∞`` for *every* ``x`` in the
  ball, computed from the network's own current parameters (:mod:`normonly.certificate.bound`);
* ``max_abs_error``: the largest error measured on seeded points inside the ball, on its sphere
  and on the user's data — a cross-check that can never exceed the bound (if it does, that is a
  bug in normonly and :func:`verify` raises);
* ``passed``: the verdict, decided by the bound alone — ``error_bound ≤ rtol · output_scale`` in
  float64, and every data point inside the ball. ``reason`` says why in one sentence.

``output_scale`` is the largest ``‖f(x)‖∞`` seen on the measured points (a lower bound on the
target's scale on the ball, so the relative tolerance errs on the strict side).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from normonly._checks import check_int, check_radius, check_rtol
from normonly.certificate.record import Certificate
from normonly.certificate.sampling import sample_ball
from normonly.construct.record import LayerCertificate
from normonly.errors import CertificateError
from normonly.nets.target import TargetMLP

__all__ = ["verify", "DEFAULT_RTOL", "default_points"]

# The verdict: the proven bound may not exceed DEFAULT_RTOL times the target's output scale.
DEFAULT_RTOL = 1e-9
_CHUNK = 2048  # points per forward pass at most (wide nets hold (chunk, m) activations)
ACTIVATION_BUDGET = 128 * 2**20  # bytes of one (chunk, widest layer) activation tensor
# The measured cross-check's default number of points: POINTS_MAX, fewer for networks so wide
# that one pass costs more than SAMPLE_FLOPS (about a tenth of a second of float64 matmul on two
# CPU cores, a small share of the solve for them), but never fewer than POINTS_MIN.
POINTS_MAX, POINTS_MIN, SAMPLE_FLOPS = 10_000, 1_000, 5e9


def default_points(net: nn.Module) -> int:
    """The default ``n_points`` of :func:`verify` for ``net`` (see ``SAMPLE_FLOPS``).

    ``POINTS_MAX`` (10,000) for all but very wide networks; for them as many as
    ``SAMPLE_FLOPS`` floating-point operations of forward passes buy, at least ``POINTS_MIN``
    (1,000): a width-64 layer rebuilt at overparam 2 gets 2,384 points, width 128 and up 1,000.
    The verdict never depends on it (it comes from the proven bound); the points are the
    independent cross-check that the bound is never beaten.
    """
    per_point = 2 * sum(m.in_features * m.out_features for m in net.modules()
                        if isinstance(m, nn.Linear))  # fmt: skip
    if per_point == 0:
        return POINTS_MAX
    return int(min(POINTS_MAX, max(POINTS_MIN, SAMPLE_FLOPS // per_point)))


def _max_error(net: nn.Module, target: TargetMLP, x: torch.Tensor) -> tuple[float, float]:
    """Max ``‖net(x) − f(x)‖_∞`` and max ``‖f(x)‖_∞`` over the rows of x, in chunks.

    The points are cast to the network's dtype first and the target is evaluated (in float64)
    at the cast points, so a low-precision network is compared on the inputs it really saw.
    """
    p = next(net.parameters())
    err, scale = 0.0, 0.0
    chunk = _chunk_size(net)
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            xc = x[s : s + chunk].to(p.device, p.dtype)
            y = _forward_inside(net, xc).to("cpu", torch.float64)
            f = target(xc.to("cpu", torch.float64))
            scale = max(scale, float(f.abs().max()))
            if not torch.isfinite(y).all():
                return math.inf, scale
            err = max(err, float((y - f).abs().max()))
    return err, scale


def _chunk_size(net: nn.Module, budget_bytes: int = ACTIVATION_BUDGET) -> int:
    """Points per forward pass so that one activation tensor stays within ``budget_bytes``.

    A wide layer's forward pass holds two such tensors (the product and the normalized one,
    the ReLU works in place), so measuring costs at most about twice the budget, whatever m.
    """
    widest = max((m.out_features for m in net.modules() if isinstance(m, nn.Linear)), default=1)
    return max(16, min(_CHUNK, budget_bytes // (8 * widest)))


def _forward_inside(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` without the outside-the-ball warning (the caller checked the points)."""
    unchecked = getattr(net, "unchecked_domain", None)
    if unchecked is None:
        return net(x)
    with unchecked():
        return net(x)


def verify(
    net: nn.Module,
    target: TargetMLP,
    *,
    radius: float | None = None,
    data: object | None = None,
    n_points: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    layers: list[LayerCertificate] | None = None,
    method: str | None = None,
) -> Certificate:
    """Prove and measure how well ``net`` reproduces ``target`` on the ball ``‖x‖ ≤ radius``.

    Parameters
    ----------
    net : NormNet or ResidualNormNet (any module mapping (n, d_in) -> (n, d_out) is measured,
        but only these two get a proven bound, so only they can pass)
    target : TargetMLP
    radius : float, optional
        Radius R of the ball. Default: the radius the net was built for (``net.meta["radius"]``);
        a larger one is refused, since exactness holds only there.
    data : tensor or array of shape (n, d_in), optional
        The user's inputs: each must lie in the ball (else the certificate fails, saying how
        many lie outside and the radius they need); the error is also measured on them.
    n_points : int, optional
        Seeded points for the measured cross-check, half inside the ball, half on its sphere;
        default :func:`default_points` (10,000, down to 1,000 for very wide networks).
    seed : int
        Seed of the points.
    rtol : float
        The verdict: PASS iff the proven bound ≤ ``rtol · output_scale`` (float64 only).
    layers : list of LayerCertificate, optional
        The construction's per-layer diagnostics (default: those saved in ``net.meta``).

    Raises
    ------
    CertificateError
        ``radius`` exceeds the certified radius, or no radius is known.
    ValueError, TypeError
        Input dimensions of net and target differ, or bad radius/data/n_points/rtol.
    RuntimeError
        The measured error exceeds the proven bound: a bug in normonly, please report it.
    """
    import time

    from normonly._checks import check_data
    from normonly.certificate.bound import error_bound
    from normonly.nets.cnn import TargetCNN

    if isinstance(target, TargetCNN):  # hook: convolutional targets (certificate.cnn)
        from normonly.certificate.cnn import cnn_error_bound as error_bound
        from normonly.certificate.cnn import flat_data

        data = flat_data(data, target)

    t0 = time.perf_counter()
    if n_points is None:
        n_points = default_points(net)
    n_points = check_int("n_points", n_points, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    rtol = check_rtol(rtol)
    if not isinstance(target, TargetMLP | TargetCNN):
        raise TypeError(f"target must be a TargetMLP, got {type(target).__name__}")
    meta = getattr(net, "meta", {}) or {}
    built_for = meta.get("radius")
    if radius is None:
        if built_for is None:
            raise CertificateError(
                "no radius: this network does not record the ball it was built for; pass "
                "radius=R (the largest input norm you need)"
            )
        radius = float(built_for)
    radius = check_radius(radius)
    if built_for is not None and radius > float(built_for) * (1 + 1e-12):
        raise CertificateError(
            f"radius {radius:g} exceeds the radius {float(built_for):g} the network was "
            f"constructed for: exactness is only certified for ||x|| <= {float(built_for):g} "
            f"(ReLUs kept 'always on' may switch off outside); reconstruct with radius={radius:g}"
        )
    widths = meta.get("target_widths")
    if widths is not None and list(widths) != target.widths:
        raise ValueError(
            f"this network was built for a target with widths {widths}, got a target with "
            f"widths {target.widths}"
        )
    p = next(net.parameters())
    d_in = getattr(net, "d_in", None) or _input_dim(net)
    if d_in is not None and d_in != target.d_in:
        raise ValueError(f"the network takes {d_in} inputs but the target takes {target.d_in}")
    X = None if data is None else check_data(data, target.d_in)
    if layers is None:
        layers = [
            LayerCertificate(**{**c, "shape": tuple(c["shape"])}) for c in meta.get("layers", [])
        ]
    inside, sphere = sample_ball(n_points, target.d_in, radius, seed=seed)
    e_in, s_in = _max_error(net, target, inside)
    e_sp, s_sp = _max_error(net, target, sphere)
    abs_err, scale = max(e_in, e_sp), max(s_in, s_sp)
    data_fields: dict = {}
    if X is not None:
        norms = X.norm(dim=1)
        outside = int((norms > radius * (1 + 1e-12)).sum())
        inside_rows = X[norms <= radius * (1 + 1e-12)]
        e_data, s_data = (0.0, 0.0)
        if inside_rows.shape[0]:
            e_data, s_data = _max_error(net, target, inside_rows)
        scale = max(scale, s_data)
        data_fields = {
            "data_points": int(X.shape[0]),
            "data_outside": outside,
            "data_max_norm": float(norms.max()),
            "max_abs_error_data": e_data,
        }
    rel_err = abs_err / scale if scale > 0 else abs_err
    t1 = time.perf_counter()
    measure_time = t1 - t0
    notes: list[str] = []
    try:
        eb = error_bound(net, target, radius)
    except (TypeError, ValueError) as e:
        eb = None
        notes.append(f"no proven bound: {e}")
    bound_time = time.perf_counter() - t1
    float64 = p.dtype == torch.float64
    if not float64:
        notes.append(
            f"{p.dtype} is below float64: exactness is certified for float64 only, so this "
            "certificate fails whatever the error (its bound uses "
            f"{str(p.dtype).replace('torch.', '')} rounding)"
        )
    if eb is not None and float64 and math.isfinite(eb.bound):
        worst = max(abs_err, data_fields.get("max_abs_error_data", 0.0))
        if worst > eb.bound:
            raise RuntimeError(
                f"internal error: the measured error {worst:.3e} exceeds the proven bound "
                f"{eb.bound:.3e}; this is a bug in normonly, please report it with the network "
                "and target files"
            )
    diagnostics = [("max_abs_error", abs_err), ("output_scale", scale)] + [
        (f"layer {c.layer} block {c.block} rel_residual", c.rel_residual) for c in layers
    ]
    passed, reason = _verdict(
        eb, scale, rtol, float64, p.dtype, data_fields, radius, diagnostics
    )
    relu = eb.relu if eb is not None else []
    margins = [s["margin"] for s in relu if s["on"] and math.isfinite(s["margin"])]
    counts = net.parameter_counts() if hasattr(net, "parameter_counts") else {}
    return Certificate(
        method=method or meta.get("method", "unknown"),
        radius=radius,
        dtype=str(p.dtype).replace("torch.", ""),
        norm=getattr(net, "norm", "unknown"),
        n_points=n_points,
        seed=seed,
        max_abs_error=abs_err,
        max_rel_error=rel_err,
        max_abs_error_sphere=e_sp,
        output_scale=scale,
        tolerance=rtol,
        passed=passed,
        error_bound=None if eb is None else eb.bound,
        bound_rel=None if eb is None else (eb.bound / scale if scale > 0 else eb.bound),
        bound_weights=None if eb is None else eb.weights,
        bound_rounding=None if eb is None else eb.rounding + eb.target_rounding,
        relu_proven=None if eb is None else sum(s["on"] for s in eb.relu),
        relu_unproven=None if eb is None else eb.unproven_relus,
        relu_margin=min(margins) if margins else None,
        reason=reason,
        domain=str(meta.get("domain", "")),
        **data_fields,
        counts=counts,
        layers=list(layers),
        target_widths=target.widths,
        wall_time_s=time.perf_counter() - t0,
        bound_time_s=bound_time,
        measure_time_s=measure_time,
        notes=notes,
    )


def _verdict(
    eb, scale, rtol, float64, dtype, data_fields, radius, diagnostics=()
) -> tuple[bool, str]:
    """PASS/FAIL and the one-sentence reason."""
    outside = data_fields.get("data_outside", 0)
    if outside:
        return False, (
            f"{outside} of {data_fields['data_points']} data points lie outside the certified "
            f"ball ||x|| <= {radius:g} (largest norm {data_fields['data_max_norm']:.4g}); "
            "reconstruct with data=X (or radius >= that norm)"
        )
    if eb is None:
        return False, "no proven bound for this network, so nothing is certified"
    bad = [n for n, v in diagnostics if not math.isfinite(v)]
    if bad:
        return False, f"non-finite diagnostics ({', '.join(bad)}): nothing is certified"
    if not float64:
        return False, (
            f"the network is {str(dtype).replace('torch.', '')}: exactness is certified in "
            f"float64 only (its proven bound with {str(dtype).replace('torch.', '')} rounding "
            f"is {eb.bound:.2e})"
        )
    limit = rtol * scale
    if not math.isfinite(eb.bound):
        return False, "the bound is not finite (overflow or NaN in the network's parameters)"
    if eb.bound <= limit:
        return True, (
            f"proven bound {eb.bound:.2e} <= {rtol:g} x output scale = {limit:.2e} for every "
            f"||x|| <= {radius:g}"
        )
    if eb.unproven_relus:
        part = (
            f"{eb.unproven_relus} ReLUs meant to stay always on (or off) are not proven to be "
            "over the ball"
        )
    elif eb.weights > eb.rounding:
        part = "the effective weights and shifts differ from the target's"
    else:
        part = (
            "the float64 rounding of the large always-on shifts is too large (a larger "
            "overparam, e.g. 2, gives smaller shifts)"
        )
    return False, f"proven bound {eb.bound:.2e} > {rtol:g} x output scale = {limit:.2e}: {part}"


def _input_dim(net: nn.Module) -> int | None:
    for m in net.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    return None
