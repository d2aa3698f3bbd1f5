"""Reading ReLU MLPs from other formats: fitted scikit-learn MLPs and ONNX graphs.

Both readers return ``(weights, biases)`` — ``weights[l]`` of shape ``(d_out, d_in)`` as float64
numpy arrays — for :class:`~normonly.nets.target.TargetMLP`, which refuses anything that is not
``Linear (ReLU Linear)*``.

scikit-learn
    ``MLPClassifier`` / ``MLPRegressor`` with ``activation="relu"``, fitted. The target is the
    network *before* the output activation: the logits of a classifier (softmax for several
    classes; one logit and a logistic for a binary classifier, whose ``predict`` is
    ``classes_[logit > 0]``), the outputs of a regressor.
ONNX
    The graph is read with the ``onnx`` package and never executed. Accepted operators: ``Gemm``
    (any ``transB``, ``alpha``, ``beta``; ``transA = 0`` since the data is the first input),
    ``MatMul`` followed by ``Add`` (or not), ``Relu``, ``Flatten`` / ``Reshape`` that keep the
    batch dimension, ``Identity``; weights from initializers or ``Constant`` nodes, in float16,
    float32 or float64 (every float16/float32 number is exactly a float64, so the conversion is
    exact; a ``Gemm``'s ``alpha``/``beta`` are float32 attributes, applied in float64). Any other
    operator is refused with its name and the node's name.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["weights_from_sklearn", "weights_from_onnx"]

_ONNX_EXTRA = "reading ONNX files needs the onnx package: pip install 'normonly[onnx]'"


def weights_from_sklearn(estimator: object) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights and biases of a fitted ReLU ``MLPClassifier`` / ``MLPRegressor``.

    Raises
    ------
    TypeError
        Not a scikit-learn MLP.
    ValueError
        Not fitted, or an activation other than ReLU.
    """
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if not isinstance(estimator, MLPClassifier | MLPRegressor):
        raise TypeError(
            "from_sklearn expects a fitted sklearn.neural_network.MLPClassifier or "
            f"MLPRegressor, got {type(estimator).__name__}"
        )
    name = type(estimator).__name__
    if not hasattr(estimator, "coefs_"):
        raise ValueError(f"this {name} is not fitted yet: call .fit(X, y) first")
    if estimator.activation != "relu":
        raise ValueError(
            f"this {name} uses activation={estimator.activation!r}: normonly reconstructs ReLU "
            "networks only; train it with activation='relu'"
        )
    weights = [np.ascontiguousarray(np.asarray(c, dtype=np.float64).T) for c in estimator.coefs_]
    biases = [np.ascontiguousarray(np.asarray(b, dtype=np.float64)) for b in estimator.intercepts_]
    return weights, biases


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise ModuleNotFoundError(_ONNX_EXTRA) from None
    return onnx


def _float_array(tensor, where: str) -> np.ndarray:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{where}: tensor {tensor.name!r} has dtype {arr.dtype}, need a float")
    return arr.astype(np.float64)  # exact: every float16/float32 value is a float64


def weights_from_onnx(path: str | os.PathLike) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights and biases of the ReLU MLP an ONNX file holds (read, never run).

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        The path does not name a file.
    ValueError
        Not an ONNX model, an unsupported operator (named, with its node), or a graph that is
        not ``Linear (ReLU Linear)*`` on one input.
    ModuleNotFoundError
        The ``onnx`` package is missing (the ``normonly[onnx]`` extra).
    """
    onnx = _onnx()
    from normonly._files import require_regular_file

    p = require_regular_file(path, "ONNX")
    try:
        model = onnx.load_model_from_string(p.read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"{p} is not a valid ONNX model ({type(e).__name__}: {e})") from None
    graph = model.graph
    if not graph.node:
        raise ValueError(f"{p}: the ONNX graph has no nodes")
    return _Chain(graph, str(p)).read()


class _Chain:
    """Walks an ONNX graph as one chain ``x → (Linear → Relu)* → Linear → y``."""

    def __init__(self, graph, where: str) -> None:
        self.where = where
        self.consts = {t.name: t for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ValueError(f"{where}: the graph must have exactly one data input, got {inputs}")
        if len(graph.output) != 1:
            raise ValueError(f"{where}: the graph must have exactly one output")
        self.graph = graph
        self.current = inputs[0]
        self.output = graph.output[0].name
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.pending = False  # a Linear whose bias may still come (MatMul, then Add)
        self.after_relu = True  # a Linear may come next

    def _const(self, name: str, node) -> np.ndarray | None:
        t = self.consts.get(name)
        return None if t is None else _float_array(t, f"{self.where}, node {node.name!r}")

    def _data_and_const(self, node) -> tuple[np.ndarray, int]:
        if len(node.input) != 2:
            raise ValueError(f"{self.where}: node {node.name!r} ({node.op_type}) needs 2 inputs")
        for i, j in ((0, 1), (1, 0)):
            if node.input[i] == self.current:
                c = self._const(node.input[j], node)
                if c is not None:
                    return c, i
        raise ValueError(
            f"{self.where}: node {node.name!r} ({node.op_type}) must combine the running value "
            f"{self.current!r} with a constant weight or bias"
        )

    def _linear(self, node, W: np.ndarray, b: np.ndarray | None) -> None:
        if not self.after_relu:
            raise ValueError(
                f"{self.where}: node {node.name!r}: two linear layers in a row; a target "
                "alternates Linear and Relu (merge the two matrices, or put a Relu between)"
            )
        if W.ndim != 2:
            raise ValueError(f"{self.where}: node {node.name!r}: the weight must be 2-D")
        self.weights.append(np.ascontiguousarray(W))
        self.biases.append(np.zeros(W.shape[0]) if b is None else b.reshape(-1))
        self.after_relu = False

    def read(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        for node in self.graph.node:
            if node.op_type == "Constant":
                attr = {a.name: a for a in node.attribute}
                if "value" not in attr:
                    raise ValueError(f"{self.where}: Constant node {node.name!r} has no tensor")
                self.consts[node.output[0]] = attr["value"].t
                continue
            if self.current not in node.input:
                raise ValueError(
                    f"{self.where}: node {node.name!r} ({node.op_type}) is off the main chain; "
                    "a target graph is one chain of Gemm/MatMul+Add and Relu"
                )
            self._step(node)
            self.current = node.output[0]
        if self.current != self.output:
            raise ValueError(f"{self.where}: the graph output is not the end of the chain")
        if not self.weights:
            raise ValueError(f"{self.where}: the graph has no Gemm or MatMul: nothing to rebuild")
        if self.after_relu:
            raise ValueError(
                f"{self.where}: the graph ends with a Relu; normonly targets end with a linear "
                "layer (drop the trailing Relu)"
            )
        return self.weights, self.biases

    def _step(self, node) -> None:
        op = node.op_type
        attr = {a.name: a for a in node.attribute}
        if op == "Gemm":
            if attr.get("transA") is not None and attr["transA"].i:
                raise ValueError(f"{self.where}: Gemm node {node.name!r} with transA=1 is refused")
            if node.input[0] != self.current:
                raise ValueError(f"{self.where}: Gemm node {node.name!r}: data must be input A")
            B = self._const(node.input[1], node)
            if B is None:
                raise ValueError(f"{self.where}: Gemm node {node.name!r}: B must be a constant")
            alpha = float(attr["alpha"].f) if "alpha" in attr else 1.0
            beta = float(attr["beta"].f) if "beta" in attr else 1.0
            trans_b = bool(attr["transB"].i) if "transB" in attr else False
            W = (B if trans_b else B.T) * alpha  # (d_out, d_in)
            C = self._const(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
            b = None if C is None else np.broadcast_to(C * beta, (1, W.shape[0]))[0].copy()
            self._linear(node, W, b)
        elif op == "MatMul":
            B, i = self._data_and_const(node)
            if i != 0:
                raise ValueError(f"{self.where}: MatMul node {node.name!r}: data must come first")
            self._linear(node, B.T, None)
            self.pending = True
        elif op == "Add":
            if not self.pending:
                raise ValueError(
                    f"{self.where}: Add node {node.name!r} is not the bias of a MatMul"
                )
            c, _ = self._data_and_const(node)
            d_out = self.weights[-1].shape[0]
            self.biases[-1] = self.biases[-1] + np.broadcast_to(c, (1, d_out))[0]
            self.pending = False
        elif op == "Relu":
            if self.after_relu:
                raise ValueError(
                    f"{self.where}: Relu node {node.name!r} where a linear layer was expected"
                )
            self.after_relu = True
            self.pending = False
        elif op in ("Identity",):
            pass
        elif op in ("Flatten", "Reshape"):
            if self.weights:
                raise ValueError(
                    f"{self.where}: {op} node {node.name!r} between layers is refused (only the "
                    "input may be flattened)"
                )
            if op == "Flatten" and "axis" in attr and attr["axis"].i != 1:
                raise ValueError(f"{self.where}: Flatten node {node.name!r} must keep axis 1")
        else:
            raise ValueError(
                f"{self.where}: operator {op} (node {node.name!r}) is not supported: a target "
                "graph holds only Gemm, MatMul, Add, Relu, Flatten, Reshape and Identity "
                "(normonly reconstructs ReLU MLPs)"
            )
        if op != "MatMul":
            self.pending = self.pending and op == "Identity"
