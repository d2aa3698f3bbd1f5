"""The commands on network files: ``normonly reconstruct``, ``verify`` and ``export``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["cmd_reconstruct", "cmd_verify", "cmd_export"]

logger = logging.getLogger("normonly")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path | set | frozenset):
        return str(value) if isinstance(value, Path) else sorted(value)
    return str(value)


def _dump(data: Any) -> str:
    """Strict JSON: non-finite numbers are written as null (see Certificate.to_dict)."""
    from normonly.certificate.record import strict_json

    plain = json.loads(json.dumps(data, default=_json_default))
    return json.dumps(strict_json(plain), indent=2, allow_nan=False)


def _require_file(path: str, what: str) -> Path:
    from normonly._files import require_regular_file

    return require_regular_file(path, what)


def _report_certificate(cert: Any, as_json: bool, extra: dict[str, Any], table: bool) -> int:
    if as_json:
        print(_dump({**cert.to_dict(), **extra}))
    else:
        print(cert.to_table() if table else cert.summary())
    if not cert.passed:
        print(f"normonly: the certificate failed: {cert.reason}", file=sys.stderr)
        return 1
    return 0


def _load_target(args: argparse.Namespace) -> Any:
    from normonly.nets.target import TargetMLP, check_activation

    path = _require_file(args.target, "target")
    if path.suffix.lower() == ".onnx":  # the graph states its activation
        if args.activation is not None:
            check_activation(args.activation, str(path))
        return TargetMLP.from_onnx(path)
    return TargetMLP.load(path, activation=args.activation)


def _load_data(args: argparse.Namespace) -> Any:
    from normonly._files import load_points

    return None if args.data is None else load_points(args.data)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from normonly.api import reconstruct

    target = _load_target(args)
    data = _load_data(args)
    if args.radius is None and data is None:
        raise ValueError(
            "give the input domain: --radius R (exactness on ||x|| <= R) or --data X.npy|X.csv "
            "(your inputs; R becomes their largest norm + 1%); there is no default radius"
        )
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    rec = reconstruct(
        target,
        method=args.method,
        radius=args.radius,
        data=data,
        overparam=args.overparam,
        uniform_width=args.uniform_width,
        norm=args.norm,
        seed=args.seed,
        k=args.k,
        density=args.density,
    )
    if not rec.certificate.passed:
        print(rec.certificate.to_table())
        print(
            f"normonly: the certificate failed, network not saved: {rec.certificate.reason}",
            file=sys.stderr,
        )
        return 1
    rec.net.save(out)
    logger.info("network saved to %s", out)
    return _report_certificate(rec.certificate, args.json, {"net": str(out)}, table=True)


def cmd_verify(args: argparse.Namespace) -> int:
    from normonly.certificate.verify import verify
    from normonly.nets.io import load_network

    net = load_network(_require_file(args.net, "network"))
    target = _load_target(args)
    kwargs: dict[str, Any] = {"radius": args.radius, "seed": args.seed, "data": _load_data(args)}
    if args.n_points is not None:
        kwargs["n_points"] = args.n_points
    if args.rtol is not None:
        kwargs["rtol"] = args.rtol
    return _report_certificate(verify(net, target, **kwargs), args.json, {}, table=False)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a saved network as ONNX and check it: onnx.checker, then onnxruntime vs torch."""
    import torch

    from normonly.certificate.sampling import sample_ball
    from normonly.nets.export import export_onnx
    from normonly.nets.io import load_network

    net = load_network(_require_file(args.net, "network"))
    out = Path(args.onnx)
    if out.parent and not out.parent.exists():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    export_onnx(net, out, float32=args.float32)
    radius = float((net.meta or {}).get("radius", 1.0))
    inside, sphere = sample_ball(1000, net.d_in, radius, seed=0)
    x = torch.cat([inside, sphere])
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "checking the export needs onnxruntime: pip install 'normonly[onnx]'"
        ) from None

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    dtype = "float32" if args.float32 else "float64"
    (y_onnx,) = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(dtype)})
    with torch.no_grad(), net.unchecked_domain():
        y = net(x)
    diff = (torch.from_numpy(y_onnx).double() - y).abs().max()
    err = float(diff / y.abs().max().clamp_min(1e-300))
    print(
        f"exported {args.net} -> {out} ({dtype}); onnxruntime vs torch on 1,000 points of the "
        f"ball ||x|| <= {radius:g}: max relative difference {err:.2e}"
    )
    return 0
