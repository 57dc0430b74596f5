"""Explicit INT8 quantisation (Q/DQ) of one FP32 ONNX component with ONNX Runtime's static
quantiser, and the layer groups the sensitivity search keeps in higher precision.

Settings, for TensorRT's explicit quantisation (strongly typed networks, TensorRT 10/11):
symmetric int8 activations and weights (TensorRT takes zero points of 0 only), weights per
output channel, Q/DQ only around Conv, MatMul and Gemm (everything else, normalisation,
softmax, sampling grids and GridSample included, stays FP32). Activation ranges are
MinMax over the calibration sample: ONNX Runtime's histogram calibrators (Percentile,
Entropy) keep every activation of every sample in memory and refuse batches whose K
differs; on the tiny model they gave no better frames (16-18 dB all-INT8 either way).
The ranges are computed once and cached (quantize_static's calibration cache), so the
search re-quantises with other excluded layers without re-running the calibration.
"""

from __future__ import annotations

import ast
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from mnt.calibration.data import Feeds

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # written by torch.onnx.export (dynamo)


@dataclass(frozen=True)
class Group:
    """Quantisable nodes of one block of the model (a module path such as
    generator.decoder.blocks.0): the unit kept in higher precision or not."""

    name: str
    nodes: tuple[str, ...]


def _module_path(node: onnx.NodeProto) -> str:
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = [s for s in ast.literal_eval(meta.get(SCOPES_KEY, "[]"))[:-1] if s]
    except (ValueError, SyntaxError):
        scopes = []
    return scopes[-1] if scopes else node.name


def block_of(path: str) -> str:
    """The block a module path belongs to: cut after its first numeric part (down.0,
    blocks.2, stages.1); flow heads stay on their own, since their output becomes sampling
    coordinates rather than features."""
    parts = path.split(".")
    if "flow" in parts:
        return ".".join(parts[:parts.index("flow") + 1])
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return path


def node_groups(model_path: Path) -> list[Group]:
    """The quantisable nodes of a graph, grouped by block, in graph order."""
    model = onnx.load(str(model_path), load_external_data=False)
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            groups.setdefault(block_of(_module_path(node)), []).append(node.name)
    return [Group(name, tuple(nodes)) for name, nodes in groups.items()]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """quantize_static logs a pre-processing advice through the root logger on every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._feeds, None)


def quantize(fp32: Path, out: Path, cache: Path, exclude: tuple[str, ...] = (),
             feeds: list[Feeds] | None = None) -> None:
    """Write the Q/DQ INT8 graph of `fp32` to `out`, the nodes in `exclude` left in FP32.
    Ranges come from `cache` when it exists, else from `feeds` (and are cached there)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reader = None
    if feeds is not None and not cache.is_file():
        reader = type("Reader", (_Reader, CalibrationDataReader), {})(feeds)
    with _quiet():
        quantize_static(
            str(fp32), str(out), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=cache,
            # Biases stay float: TensorRT's (and TensorRT-RTX's) parser takes Q/DQ of 8-bit
            # types only and refuses an int32 bias DequantizeLinear.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})


def qdq_counts(path: Path) -> dict[str, int]:
    """How many QuantizeLinear / DequantizeLinear nodes and quantised ops a graph holds."""
    model = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"),
            "DequantizeLinear": ops.count("DequantizeLinear")}
