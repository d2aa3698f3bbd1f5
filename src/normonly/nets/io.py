"""Reading a saved network back: safetensors tensors plus the architecture in JSON metadata."""

from __future__ import annotations

import json
import os

import torch

from normonly.nets.base import NormNetBase
from normonly.nets.residual import ResidualNormNet
from normonly.nets.wide import NormNet

__all__ = ["load_network"]


def load_network(path: str | os.PathLike) -> NormNetBase:
    """Rebuild a network saved by ``.save`` (NormNet, ResidualNormNet, NormCNN), without pickle."""
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
    from normonly.nets.normcnn import NormCNN

    return {"NormNet": NormNet, "ResidualNormNet": ResidualNormNet, "NormCNN": NormCNN}
