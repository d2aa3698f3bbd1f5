"""Export a frozen norm-only network to ONNX, keeping its structure and its float64 exactness.

:func:`export_onnx` writes a :class:`~normonly.nets.wide.NormNet` or a
:class:`~normonly.nets.residual.ResidualNormNet` as an ONNX model with one input ``x`` of shape
``[N, d_in]`` (``N`` symbolic) and one output ``y`` of shape ``[N, d_out]``. The graph mirrors the
torch modules node for node, each node named after its module path::

    wide:      x ─► MatMul linears.0 ─► Mul norms.0.scale ─► Add norms.0.shift ─► Relu relu.0 ─► ...
    residual:  x ─► lift.scale/shift ─► Pad lift.pad ─► blocks.b.{norm_in, linear_in, norm_hid,
               relu_hid, linear_out, norm_out} ─► Add blocks.b.skip ─► Relu blocks.b.relu ─► ...
               ─► Slice readout.slice ─► readout.scale/shift ─► y

* one ``MatMul`` per frozen linear, its initializer the transposed weight (``weight·mask`` for a
  sparse :class:`~normonly.nets.layers.MaskedLinear`);
* every normalization as a ``Mul`` (per-unit scale γ) and an ``Add`` (per-unit shift β), so the
  trained numbers are exactly the ``*.gamma`` and ``*.beta`` initializers;
* ``Relu``; for the residual network ``Pad`` (the zero lift), ``Add`` (the skip), ``Slice``
  (the output register).

Why not ``torch.onnx.export``: tracing would also record the input cast and the certified-ball
check of :meth:`~normonly.nets.base.NormNetBase._checked_input` (data-dependent Python control
flow and a warning), and the exporter decides for itself how to lower BatchNorm and whether to
fold constants. Building the graph by hand controls every node and every number.

Why no ONNX ``BatchNormalization``: its ``epsilon`` attribute is a float32, and the construction
relies on large shifts that cancel exactly; rounding ε alone costs ~1e-12 of relative error. An
eval-mode BatchNorm is a per-unit affine map, so it is exported as one, computed in float64 with
:func:`~normonly.nets.layers.norm_affine`'s formula ``γ = weight/√(running_var+ε)``,
``β = bias − γ·running_mean``. A BatchNorm in training mode (batch statistics) is refused.

The default export is float64 (DOUBLE tensors), the dtype exactness is certified in; ONNX Runtime
reproduces the torch network to ~1e-15 of the output scale. ``float32=True`` writes FLOAT
tensors for runtimes without double kernels: that model is **not certified** — its error is the
float32 rounding of weights and cancelling shifts, typically 1e-6–1e-4 of the output scale.

The exported model does **not** check that inputs lie in the certified ball (ONNX has no
warnings); the radius is recorded in the model's metadata (``normonly_radius``) for the caller.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from normonly.nets.layers import Affine, MaskedLinear

__all__ = ["export_onnx"]

MIN_OPSET = 13  # Slice/Pad with tensor inputs, Relu on double


def _import_onnx():  # the onnx module
    try:
        import onnx
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "exporting to ONNX needs the optional 'onnx' package: pip install 'normonly[onnx]'",
            name=e.name,
        ) from e
    return onnx


def norm_scale_shift(layer: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The per-unit ``(γ, β)`` a normalization computes, in float64 numpy.

    Same formula as :func:`normonly.nets.layers.norm_affine`, evaluated in float64 whatever the
    layer's dtype.

    Raises
    ------
    ValueError
        A BatchNorm in training mode, or one without running statistics (both use batch
        statistics, which no per-unit affine map reproduces).
    TypeError
        Any other kind of normalization.
    """
    with torch.no_grad():
        if isinstance(layer, nn.BatchNorm1d):
            if layer.training:
                raise ValueError(
                    "cannot export a BatchNorm in training mode (it normalises with batch "
                    "statistics): call net.eval() or net.set_batchnorm_train(False) first"
                )
            if layer.running_mean is None or layer.running_var is None:
                raise ValueError(
                    "cannot export a BatchNorm without running statistics "
                    "(track_running_stats=False uses batch statistics)"
                )
            ones = torch.ones(layer.num_features, dtype=torch.float64)
            w = ones if layer.weight is None else _f64(layer.weight)  # affine=False: γ=1, β=0
            b = 0 * ones if layer.bias is None else _f64(layer.bias)
            gamma = w / torch.sqrt(_f64(layer.running_var) + layer.eps)
            beta = b - gamma * _f64(layer.running_mean)
        elif isinstance(layer, Affine):
            gamma, beta = _f64(layer.weight), _f64(layer.bias)
        else:
            raise TypeError(
                f"cannot export normalization {type(layer).__name__}: only eval-mode "
                "BatchNorm1d and Affine are per-unit affine maps"
            )
    return gamma.numpy(), beta.numpy()


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


class _Graph:
    """Collects nodes and initializers; each helper returns the name of the value it produced."""

    def __init__(self, onnx, np_dtype: type) -> None:
        self.onnx, self.np_dtype = onnx, np_dtype
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, value: np.ndarray, *, cast: bool = True) -> str:
        arr = np.ascontiguousarray(value.astype(self.np_dtype) if cast else value)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name=name))
        return name

    def node(self, op: str, name: str, inputs: list[str], **attrs: object) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(self, h: str, lin: nn.Module, path: str) -> str:
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"{path}: expected nn.Linear, got {type(lin).__name__}")
        if lin.bias is not None:
            raise ValueError(f"{path}: a frozen linear of a norm-only network has no bias")
        with torch.no_grad():
            w = _f64(lin.weight)
            if isinstance(lin, MaskedLinear):
                w = w * _f64(lin.mask)
        return self.node("MatMul", path, [h, self.const(f"{path}.weight_t", w.T.numpy())])

    def norm(self, h: str, layer: nn.Module, path: str) -> str:
        gamma, beta = norm_scale_shift(layer)
        h = self.node("Mul", f"{path}.scale", [h, self.const(f"{path}.gamma", gamma)])
        return self.node("Add", f"{path}.shift", [h, self.const(f"{path}.beta", beta)])


def _wide(g: _Graph, net: nn.Module, x: str) -> tuple[str, int, int]:
    h, last = x, len(net.linears) - 1
    for i, (lin, norm) in enumerate(zip(net.linears, net.norms, strict=True)):
        h = g.norm(g.linear(h, lin, f"linears.{i}"), norm, f"norms.{i}")
        if i < last:
            h = g.node("Relu", f"relu.{i}", [h])
    return h, net.linears[0].in_features, net.linears[-1].out_features


def _residual(g: _Graph, net: nn.Module, x: str) -> tuple[str, int, int]:
    r, d_in, d_out = net.register, net.d_in, net.d_out
    s = g.norm(x, net.lift, "lift")
    pads = g.const("lift.pads", np.array([0, 0, 0, 2 * r - d_in], dtype=np.int64), cast=False)
    s = g.node("Pad", "lift.pad", [s, pads], mode="constant")  # zeros after the d_in units
    for b, blk in enumerate(net.blocks):
        p = f"blocks.{b}"
        a = g.norm(s, blk.norm_in, f"{p}.norm_in")
        a = g.norm(g.linear(a, blk.linear_in, f"{p}.linear_in"), blk.norm_hid, f"{p}.norm_hid")
        a = g.node("Relu", f"{p}.relu_hid", [a])
        a = g.norm(g.linear(a, blk.linear_out, f"{p}.linear_out"), blk.norm_out, f"{p}.norm_out")
        s = g.node("Relu", f"{p}.relu", [g.node("Add", f"{p}.skip", [s, a])])
    start = net.config["out_register"] * r
    i64 = {"cast": False}
    y = g.node("Slice", "readout.slice", [
        s,
        g.const("readout.starts", np.array([start], dtype=np.int64), **i64),
        g.const("readout.ends", np.array([start + d_out], dtype=np.int64), **i64),
        g.const("readout.axes", np.array([1], dtype=np.int64), **i64),
    ])  # fmt: skip
    return g.norm(y, net.readout, "readout"), d_in, d_out


def export_onnx(
    net: nn.Module, path: str | os.PathLike, *, float32: bool = False, opset: int = 17
) -> None:
    """Write ``net`` (NormNet or ResidualNormNet) to ``path`` as an ONNX model.

    Parameters
    ----------
    net : NormNet or ResidualNormNet
        The network; BatchNorms must be in eval mode (the default for these networks).
    path : str or PathLike
        Destination file (written atomically; its directory must exist).
    float32 : bool
        Write FLOAT tensors instead of DOUBLE. Not certified: expect ~1e-6–1e-4 relative error.
    opset : int
        ONNX opset of the default domain (13 up to the installed onnx's newest).

    Raises
    ------
    ModuleNotFoundError
        ``onnx`` is not installed (``pip install 'normonly[onnx]'``).
    TypeError
        ``net`` is not a NormNet or ResidualNormNet, or holds an unknown layer kind.
    ValueError
        A BatchNorm in training mode or without running statistics, a linear with a bias, or
        an unsupported opset.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from normonly import NormNet
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "net.onnx"
    >>> export_onnx(NormNet([3, 12, 2], seed=0), p)
    >>> p.stat().st_size > 0
    True
    """
    onnx = _import_onnx()
    from normonly._atomic import atomic_write_bytes
    from normonly.nets.residual import ResidualNormNet
    from normonly.nets.wide import NormNet

    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be between {MIN_OPSET} and {newest}, got {opset}")
    helper, TP = onnx.helper, onnx.TensorProto
    elem, np_dtype = (TP.FLOAT, np.float32) if float32 else (TP.DOUBLE, np.float64)
    g = _Graph(onnx, np_dtype)
    if isinstance(net, NormNet):
        _, d_in, d_out = _wide(g, net, "x")
    elif isinstance(net, ResidualNormNet):
        _, d_in, d_out = _residual(g, net, "x")
    else:
        raise TypeError(f"net must be a NormNet or ResidualNormNet, got {type(net).__name__}")
    g.nodes[-1].output[0] = "y"  # the last node (readout/last shift) produces the output
    graph = helper.make_graph(
        g.nodes,
        f"normonly_{type(net).__name__}",
        [helper.make_tensor_value_info("x", elem, ["N", d_in])],
        [helper.make_tensor_value_info("y", elem, ["N", d_out])],
        initializer=g.inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="normonly",
        doc_string=(
            "Frozen random network whose only trained numbers are per-unit normalization "
            "scales (*.gamma) and shifts (*.beta). "
            + ("float32: NOT certified." if float32 else "float64.")
        ),
    )
    meta = dict(getattr(net, "meta", None) or {})
    props = {
        "normonly_class": type(net).__name__,
        "normonly_config": json.dumps(net.config),
        "normonly_dtype": "float32" if float32 else "float64",
    }
    if meta.get("radius") is not None:
        props["normonly_radius"] = repr(float(meta["radius"]))
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    atomic_write_bytes(path, model.SerializeToString())
