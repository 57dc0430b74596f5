"""CPU reference implementations of the custom ops `mnt::Warp` and `mnt::CrossAttention`
for ONNX Runtime. The op contract (domain, op type, inputs and outputs; no attributes) is
each op's kernels/<op>/spec.json, read through mnt.kernels.spec; the function bodies (the
decomposition into standard operators) are written here.

The plugin-variant graph on disk keeps bare `mnt::` nodes, which TensorRT maps to our
plugins. Before ONNX Runtime loads such a graph, `with_reference_ops` appends ONNX
FunctionProto definitions of both ops to the model bytes (in memory only): ONNX Runtime
inlines model-local functions, so it runs the reference decomposition below, built from
standard opset-18 operators with FP32 coordinates and softmax, as the contract asks.

Why this route: no new runtime dependency and nothing to compile. `onnx` is not a runtime
dependency, so the FunctionProtos are serialised here with a small protobuf writer
(protobuf's wire format merges concatenated messages, so appending field 25,
`ModelProto.functions`, to a serialised model adds the functions without parsing it).
The alternatives were worse for a lean runtime: onnxruntime-extensions' PyOp runs Python
per call and adds a package; a native custom-op library needs a compiler on every target.
tests/runtime/test_mnt_ops.py parses these bytes with `onnx` and checks them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

from mnt.kernels.spec import names, onnx_name, op_spec

OPSET = 18  # the opset the function bodies are written against (GridSample-16 "bilinear")

_FLOAT, _INT64 = 1, 7  # TensorProto.DataType
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_INTS = 1, 2, 3, 7  # AttributeProto.AttributeType
_MODEL_FUNCTIONS = 25  # ModelProto.functions


# --- protobuf wire format (only what these messages need) -------------------------------

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 negatives as two's complement, ten bytes
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode())


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _attribute(name: str, value: float | int | str | list[int]) -> bytes:
    """AttributeProto: name=1, f=2, i=3, s=4, ints=8, type=20."""
    out = _str(1, name)
    if isinstance(value, float):
        return out + _key(2, 5) + struct.pack("<f", value) + _int(20, _ATTR_FLOAT)
    if isinstance(value, int):
        return out + _int(3, value) + _int(20, _ATTR_INT)
    if isinstance(value, str):
        return out + _str(4, value) + _int(20, _ATTR_STRING)
    return out + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)


def _node(op_type: str, inputs: Iterable[str], outputs: Iterable[str],
          **attributes: float | int | str | list[int]) -> bytes:
    """NodeProto: input=1, output=2, op_type=4, attribute=5 (standard domain)."""
    return (b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
            + _str(4, op_type) + b"".join(_bytes(5, _attribute(k, v)) for k, v in attributes.items()))


def _function(spec: Mapping[str, Any], nodes: list[bytes]) -> bytes:
    """FunctionProto of the op `spec` describes: name=1, input=4, output=5, node=7,
    opset_import=9, domain=10."""
    opset = _str(1, "") + _int(2, OPSET)  # OperatorSetIdProto: domain=1, version=2
    return (_str(1, spec["op"]) + b"".join(_str(4, i) for i in names(spec["inputs"]))
            + b"".join(_str(5, o) for o in names(spec["outputs"])) + b"".join(_bytes(7, n) for n in nodes)
            + _bytes(9, opset) + _str(10, spec["domain"]))


# --- the two functions -------------------------------------------------------------------

def _const(name: str, value: float | int | list[int]) -> bytes:
    kind = {float: "value_float", int: "value_int", list: "value_ints"}[type(value)]
    return _node("Constant", [], [name], **{kind: value})


def warp_function() -> bytes:
    """Warp(features T[N,C,H,W], flow f32[N,2,fH,fW]) -> T[N,C,H,W]: flow averaged over
    f x f blocks (reshape to (N,2,H,f,W,f) and mean, so f is read from the shapes), added to
    the pixel-centre identity grid ((2i+1)/size - 1, as export/model/blocks.py), then
    GridSample bilinear / zeros / align_corners=0 on FP32 features, cast back to T."""
    spec = op_spec("warp")
    features, flow = names(spec["inputs"])
    (output,) = names(spec["outputs"])
    n = _node
    nodes = [
        _const("i0", 0), _const("i1", 1), _const("i2", 2), _const("i3", 3),
        _const("two", 2.0), _const("one", 1.0), _const("pool_axes", [3, 5]), _const("last", [-1]),
        _const("rows_axis", [1]),
        # f x f average pooling of the flow
        n("Shape", [features], ["feat_shape"]),
        n("Shape", [features], ["h1"], start=2, end=3),
        n("Shape", [features], ["w1"], start=3, end=4),
        n("Shape", [flow], ["fh1"], start=2, end=3),
        n("Shape", [flow], ["n2"], start=0, end=2),
        n("Div", ["fh1", "h1"], ["factor"]),
        n("Concat", ["n2", "h1", "factor", "w1", "factor"], ["blocks"], axis=0),
        n("Reshape", [flow, "blocks"], ["flow_blocks"]),
        n("ReduceMean", ["flow_blocks", "pool_axes"], ["pooled"], keepdims=0),
        # identity grid: x over width (channel 0), y over height (channel 1)
        n("Gather", ["feat_shape", "i2"], ["height"], axis=0),
        n("Gather", ["feat_shape", "i3"], ["width"], axis=0),
        n("Range", ["i0", "width", "i1"], ["col_index"]),
        n("Range", ["i0", "height", "i1"], ["row_index"]),
        n("Cast", ["col_index"], ["cols"], to=_FLOAT),
        n("Cast", ["row_index"], ["rows"], to=_FLOAT),
        n("Cast", ["width"], ["width_f"], to=_FLOAT),
        n("Cast", ["height"], ["height_f"], to=_FLOAT),
        n("Mul", ["cols", "two"], ["cols2"]), n("Add", ["cols2", "one"], ["cols21"]),
        n("Div", ["cols21", "width_f"], ["cols_n"]), n("Sub", ["cols_n", "one"], ["xs"]),
        n("Mul", ["rows", "two"], ["rows2"]), n("Add", ["rows2", "one"], ["rows21"]),
        n("Div", ["rows21", "height_f"], ["rows_n"]), n("Sub", ["rows_n", "one"], ["ys_flat"]),
        n("Unsqueeze", ["ys_flat", "rows_axis"], ["ys"]),  # (H, 1)
        n("Gather", ["pooled", "i0"], ["flow_x"], axis=1),  # (N, H, W)
        n("Gather", ["pooled", "i1"], ["flow_y"], axis=1),
        n("Add", ["xs", "flow_x"], ["grid_x"]),
        n("Add", ["ys", "flow_y"], ["grid_y"]),
        n("Unsqueeze", ["grid_x", "last"], ["grid_x1"]),
        n("Unsqueeze", ["grid_y", "last"], ["grid_y1"]),
        n("Concat", ["grid_x1", "grid_y1"], ["grid"], axis=-1),
        # bilinear sampling in FP32, stored as T
        n("Cast", [features], ["features_f"], to=_FLOAT),
        n("GridSample", ["features_f", "grid"], ["sampled"], mode="bilinear", padding_mode="zeros",
          align_corners=0),
        n("CastLike", ["sampled", features], [output]),
    ]
    return _function(spec, nodes)


def cross_attention_function() -> bytes:
    """CrossAttention(query T[B,Lq,D], keys T[B,Lk,D], values T[B,Lk,Dv]) -> T[B,Lq,Dv]
    = softmax(Q Kᵀ / √D) V with logits, softmax and the weighted sum in FP32."""
    spec = op_spec("cross_attention")
    query, keys, values = names(spec["inputs"])
    (output,) = names(spec["outputs"])
    n = _node
    nodes = [
        n("Cast", [query], ["q"], to=_FLOAT),
        n("Cast", [keys], ["k"], to=_FLOAT),
        n("Cast", [values], ["v"], to=_FLOAT),
        n("Transpose", ["k"], ["k_t"], perm=[0, 2, 1]),
        n("MatMul", ["q", "k_t"], ["products"]),
        n("Shape", [query], ["depth"], start=-1),
        n("Cast", ["depth"], ["depth_f"], to=_FLOAT),
        n("Sqrt", ["depth_f"], ["scale"]),
        n("Div", ["products", "scale"], ["logits"]),
        n("Softmax", ["logits"], ["weights"], axis=-1),
        n("MatMul", ["weights", "v"], ["attended"]),
        n("CastLike", ["attended", values], [output]),
    ]
    return _function(spec, nodes)


# Kernel op (its folder under kernels/) -> the function's builder. Read lazily: a standard
# graph never needs the specs.
_BUILDERS = {"warp": warp_function, "cross_attention": cross_attention_function}


@cache
def functions() -> dict[str, Callable[[], bytes]]:
    """Qualified op name ("mnt::Warp") -> its FunctionProto builder."""
    return {onnx_name(op_spec(op)): build for op, build in _BUILDERS.items()}


def reference_ops() -> tuple[str, ...]:
    """The custom ops this runtime has reference functions of, e.g. ('mnt::Warp', ...)."""
    return tuple(functions())


def with_reference_ops(model: bytes, ops: Iterable[str]) -> bytes:
    """`model` (a serialised ModelProto) with the reference functions of `ops` appended.
    Raises KeyError naming an op this runtime has no reference implementation of."""
    known = functions()
    unknown = sorted(set(ops) - set(known))
    if unknown:
        raise KeyError(f"no CPU reference implementation of {', '.join(unknown)}; known: {list(known)}")
    return model + b"".join(_bytes(_MODEL_FUNCTIONS, known[op]()) for op in sorted(set(ops)))
