"""One conversion from a certificate to the flat keys of a stored row.

Every experiment that certifies a network (E1, E2, E3, E5) stores what its
:class:`~normonly.certificate.record.Certificate` says with :func:`certificate_row`, under the
one set of keys documented there, and adds its own keys on top. Summaries and figures read these
names; what the certificate proves is explained in ``docs/theory.md#certificates``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from normonly.certificate.record import Certificate

__all__ = ["CERTIFICATE_KEYS", "certificate_row", "prediction_row"]

#: The keys :func:`certificate_row` writes, in order.
CERTIFICATE_KEYS: tuple[str, ...] = (
    "passed",
    "reason",
    "radius",
    "dtype",
    "n_points",
    "tolerance",
    "output_scale",
    "max_abs_error",
    "max_abs_error_sphere",
    "max_rel_error",
    "error_bound",
    "bound_rel",
    "relu_unproven",
    "min_relu_margin",
    "max_cond",
    "max_rel_residual",
    "solvers",
    "construct_time_s",
    "trainable",
    "frozen",
    "frozen_nonzero",
)


def _worst(values: list[float], pick: Any) -> float:
    return float(pick(values)) if values else math.nan


def certificate_row(cert: Certificate) -> dict[str, Any]:
    """The certificate of one trial as flat, JSON-ready row fields.

    Parameters
    ----------
    cert : Certificate
        What :func:`normonly.reconstruct` or :func:`normonly.certificate.verify.verify`
        returned.

    Returns
    -------
    dict
        These keys (:data:`CERTIFICATE_KEYS`), the same for every experiment:

        ====================  ==============  ===================================================
        key                   type            meaning
        ====================  ==============  ===================================================
        passed                bool            the verdict: proven bound <= tolerance x output
                                              scale, in float64, all data inside the ball
        reason                str             why it passed or failed, one sentence
        radius                float           R of the certified ball ``‖x‖ <= R``
        dtype                 str             dtype of the network (only float64 can pass)
        n_points              int             seeded points of the measured error, half inside
                                              the ball and half on its sphere
        tolerance             float           rtol of the verdict
        output_scale          float           largest ``‖f(x)‖∞`` of the target on the points
        max_abs_error         float           measured max ``‖net(x) − f(x)‖∞`` on the points
        max_abs_error_sphere  float           the same on the sphere points only
        max_rel_error         float           ``max_abs_error / output_scale``
        error_bound           float or None   proven bound on ``‖net(x) − f(x)‖∞`` over the
                                              whole ball (None: no bound could be proven)
        bound_rel             float or None   ``error_bound / output_scale``
        relu_unproven         int or None     always-on ReLUs the bound could not prove on
        min_relu_margin       float           smallest always-on margin the construction
                                              reported over its solved systems (NaN: none)
        max_cond              float           worst condition estimate of a Khatri-Rao system
                                              K (NaN: no system solved)
        max_rel_residual      float           worst relative residual of those solves (NaN:
                                              none)
        solvers               list of str     the solvers used, sorted
        construct_time_s      float           wall time of the solves, summed
        trainable             int             normalization parameters (γ and β); None when the
                                              network does not count its parameters
        frozen                int             frozen random weights, masked ones included
        frozen_nonzero        int             frozen weights the sparse mask kept
        ====================  ==============  ===================================================

    Examples
    --------
    >>> from normonly import TargetMLP, reconstruct
    >>> rec = reconstruct(TargetMLP.random([2, 3, 2], seed=0), radius=1.0, n_points=100)
    >>> row = certificate_row(rec.certificate)
    >>> tuple(row) == CERTIFICATE_KEYS, row["passed"], row["radius"], row["n_points"]
    (True, True, 1.0, 100)
    """
    layers = list(cert.layers)
    counts = cert.counts or {}
    return {
        "passed": bool(cert.passed),
        "reason": cert.reason,
        "radius": float(cert.radius),
        "dtype": cert.dtype,
        "n_points": int(cert.n_points),
        "tolerance": float(cert.tolerance),
        "output_scale": float(cert.output_scale),
        "max_abs_error": float(cert.max_abs_error),
        "max_abs_error_sphere": float(cert.max_abs_error_sphere),
        "max_rel_error": float(cert.max_rel_error),
        "error_bound": None if cert.error_bound is None else float(cert.error_bound),
        "bound_rel": None if cert.bound_rel is None else float(cert.bound_rel),
        "relu_unproven": None if cert.relu_unproven is None else int(cert.relu_unproven),
        "min_relu_margin": _worst([lc.relu_margin for lc in layers], min),
        "max_cond": _worst([lc.cond for lc in layers], max),
        "max_rel_residual": _worst([lc.rel_residual for lc in layers], max),
        "solvers": sorted({lc.solver for lc in layers}),
        "construct_time_s": float(sum(lc.wall_time_s for lc in layers)),
        **{key: _count(counts, key) for key in ("trainable", "frozen", "frozen_nonzero")},
    }


def _count(counts: dict[str, int], key: str) -> int | None:
    return None if counts.get(key) is None else int(counts[key])


def prediction_row(logits_target, logits_rebuilt, logits_float32, labels) -> dict[str, Any]:
    """The row keys of a rebuilt classifier on its test set (E7, E8).

    ``test_acc_float32`` (the model as trained), ``test_acc_original`` (the target in float64),
    ``test_acc_reconstructed``, ``identical_predictions`` (fraction of argmax agreements
    between target and rebuilt network), ``max_logit_error_test`` and
    ``max_rel_logit_error_test`` (over the largest target logit).
    """
    pred_t, pred_r = logits_target.argmax(1), logits_rebuilt.argmax(1)
    err = float((logits_rebuilt - logits_target).abs().max())

    def acc(pred) -> float:
        return float((pred == labels).double().mean())

    return {
        "n_test": int(labels.numel()),
        "test_acc_float32": acc(logits_float32.argmax(1)),
        "test_acc_original": acc(pred_t),
        "test_acc_reconstructed": acc(pred_r),
        "identical_predictions": float((pred_t == pred_r).double().mean()),
        "max_logit_error_test": err,
        "max_rel_logit_error_test": err / float(logits_target.abs().max()),
    }
