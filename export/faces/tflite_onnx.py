"""A converter from TFLite flatbuffers to ONNX, for the handful of ops that mediapipe's
BlazeFace and face mesh use (CONV_2D, DEPTHWISE_CONV_2D, ADD, RELU, PRELU, PAD,
MAX_POOL_2D, RESHAPE, CONCATENATION, DEQUANTIZE of float16 weights).

TFLite is NHWC, ONNX's convolutions NCHW: the graph transposes its NHWC input once, runs
every 4-D tensor as NCHW and transposes back only where the NHWC order is observable (a
RESHAPE, a 4-D output). Weights are read exactly as stored: float16 constants become
float32 by the (exact) widening the model's DEQUANTIZE ops do, or stay float16 in the FP16
variant, which thus rounds no weight at all. Anything else in a model is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mnt.export.errors import ExportError

OPSET = 18
TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}
ONNX_DTYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)
PADDING_SAME, PADDING_VALID = 0, 1
ACTIVATIONS = {0: None, 1: "Relu", 3: "Relu6"}


def _tflite():
    try:
        import tflite
    except ImportError as err:
        raise ExportError("converting mediapipe's face models needs the tflite package",
                          hint="pip install 'mnt[faces]'") from err
    return tflite


@dataclass
class _Graph:
    """The ONNX graph under construction, and per TFLite tensor its ONNX name and whether
    that ONNX value is NCHW (a 4-D activation) or in TFLite's own order."""

    dtype: type
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    nchw: dict[int, bool] = field(default_factory=dict)
    constants: dict[int, np.ndarray] = field(default_factory=dict)
    counter: int = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def constant(self, array: np.ndarray, stem: str) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: object) -> str:
        out = self.fresh(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


class _Model:
    """The parsed flatbuffer: tensors, buffers, operators of subgraph 0."""

    def __init__(self, data: bytes, source: str) -> None:
        tflite = _tflite()
        self.tflite, self.source = tflite, source
        self.model = tflite.Model.GetRootAsModel(data, 0)
        if self.model.SubgraphsLength() != 1:
            raise ExportError(f"{source}: {self.model.SubgraphsLength()} subgraphs, expected 1")
        self.graph = self.model.Subgraphs(0)
        codes = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.op_names = []
        for i in range(self.model.OperatorCodesLength()):
            code = self.model.OperatorCodes(i)
            self.op_names.append(codes.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?"))

    def tensor(self, index: int):
        return self.graph.Tensors(index)

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(v) for v in self.tensor(index).ShapeAsNumpy())

    def name(self, index: int) -> str:
        return self.tensor(index).Name().decode()

    def data(self, index: int) -> np.ndarray | None:
        tensor = self.tensor(index)
        raw = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(raw, int) or raw.size == 0:
            return None
        dtype = TFLITE_DTYPES.get(tensor.Type())
        if dtype is None:
            raise ExportError(f"{self.source}: tensor {self.name(index)!r} has TFLite type "
                              f"{tensor.Type()}, which this converter does not read")
        return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(self.shape(index))

    def options(self, op, kind: str):
        table = op.BuiltinOptions()
        options = getattr(self.tflite, kind)()
        if table is None:
            raise ExportError(f"{self.source}: an operator lacks its {kind}")
        options.Init(table.Bytes, table.Pos)
        return options


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite's SAME padding: the total split with the extra pixel after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _spatial_pads(m: _Model, input_index: int, kernel: tuple[int, int], stride: tuple[int, int],
                  padding: int, dilation: tuple[int, int] = (1, 1)) -> list[int]:
    _, height, width, _ = m.shape(input_index)
    if padding == PADDING_VALID:
        return [0, 0, 0, 0]
    top, bottom = _same_pads(height, kernel[0], stride[0], dilation[0])
    left, right = _same_pads(width, kernel[1], stride[1], dilation[1])
    return [top, left, bottom, right]


def _activation(g: _Graph, value: str, code: int, what: str) -> str:
    if code not in ACTIVATIONS:
        raise ExportError(f"{what}: fused activation {code} is not supported")
    if ACTIVATIONS[code] is None:
        return value
    if ACTIVATIONS[code] == "Relu6":
        low, high = (g.constant(np.array(v, dtype=g.dtype), "clip") for v in (0.0, 6.0))
        return g.node("Clip", [value, low, high], "relu6")
    return g.node("Relu", [value], "relu")


def _weight(m: _Model, g: _Graph, index: int) -> np.ndarray:
    """A constant operand: its stored data, or the float16 source of the DEQUANTIZE that
    produced it, widened exactly (or kept as float16 for the FP16 variant)."""
    array = g.constants.get(index)
    if array is None:
        array = m.data(index)
    if array is None:
        raise ExportError(f"{m.source}: operand {m.name(index)!r} is not a constant")
    return array.astype(g.dtype) if array.dtype.kind == "f" else array


def _conv(m: _Model, g: _Graph, op, depthwise: bool) -> str:
    kind = "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions"
    o = m.options(op, kind)
    x, w, b = (op.Inputs(i) for i in range(3))
    weight = _weight(m, g, w)  # conv: (O, kh, kw, I); depthwise: (1, kh, kw, C*mult)
    kh, kw = weight.shape[1:3]
    if depthwise:
        channels = m.shape(x)[3]
        if weight.shape[3] != channels * o.DepthMultiplier():
            raise ExportError(f"{m.source}: depthwise weights {weight.shape} for {channels} channels")
        onnx_weight, group = weight.transpose(3, 0, 1, 2), channels
    else:
        onnx_weight, group = weight.transpose(0, 3, 1, 2), 1
    dilation = (o.DilationHFactor(), o.DilationWFactor())
    stride = (o.StrideH(), o.StrideW())
    pads = _spatial_pads(m, x, (kh, kw), stride, o.Padding(), dilation)
    inputs = [g.names[x], g.constant(onnx_weight, "w")]
    if b >= 0:
        inputs.append(g.constant(_weight(m, g, b), "b"))
    out = g.node("Conv", inputs, "conv", kernel_shape=[kh, kw], strides=list(stride), pads=pads,
                 dilations=list(dilation), group=group)
    return _activation(g, out, o.FusedActivationFunction(), m.source)


def _max_pool(m: _Model, g: _Graph, op) -> str:
    o = m.options(op, "Pool2DOptions")
    x = op.Inputs(0)
    kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
    pads = _spatial_pads(m, x, kernel, stride, o.Padding())
    out = g.node("MaxPool", [g.names[x]], "pool", kernel_shape=list(kernel), strides=list(stride),
                 pads=pads)
    return _activation(g, out, o.FusedActivationFunction(), m.source)


def _add(m: _Model, g: _Graph, op) -> str:
    a, b = op.Inputs(0), op.Inputs(1)
    if m.shape(a) != m.shape(b) or g.nchw.get(a) != g.nchw.get(b):
        raise ExportError(f"{m.source}: ADD of {m.shape(a)} and {m.shape(b)}: broadcasting is not supported")
    out = g.node("Add", [g.names[a], g.names[b]], "add")
    return _activation(g, out, m.options(op, "AddOptions").FusedActivationFunction(), m.source)


def _pad(m: _Model, g: _Graph, op) -> str:
    x, p = op.Inputs(0), op.Inputs(1)
    paddings = m.data(p)  # (4, 2): before/after per NHWC axis
    if paddings is None or paddings.shape != (4, 2):
        raise ExportError(f"{m.source}: PAD with paddings {None if paddings is None else paddings.shape}")
    order = TO_NCHW if g.nchw[x] else (0, 1, 2, 3)
    pads = [int(paddings[a, 0]) for a in order] + [int(paddings[a, 1]) for a in order]
    return g.node("Pad", [g.names[x], g.constant(np.array(pads, dtype=np.int64), "pads")], "pad")


def _prelu(m: _Model, g: _Graph, op) -> str:
    x, alpha = op.Inputs(0), op.Inputs(1)
    slope = _weight(m, g, alpha)  # broadcast against NHWC: (1, 1, C) or (C,)
    channels = m.shape(x)[3]
    if slope.size != channels:
        raise ExportError(f"{m.source}: PRELU slope of shape {slope.shape} for {channels} channels")
    return g.node("PRelu", [g.names[x], g.constant(slope.reshape(channels, 1, 1), "slope")], "prelu")


def _reshape(m: _Model, g: _Graph, op) -> str:
    x, out = op.Inputs(0), op.Outputs(0)
    value = g.names[x]
    if g.nchw.get(x):  # the flattening order is NHWC's
        value = g.node("Transpose", [value], "nhwc", perm=list(TO_NHWC))
    shape = g.constant(np.array(m.shape(out), dtype=np.int64), "shape")
    return g.node("Reshape", [value, shape], "reshape")


def _concat(m: _Model, g: _Graph, op) -> str:
    o = m.options(op, "ConcatenationOptions")
    inputs = [op.Inputs(i) for i in range(op.InputsLength())]
    rank = len(m.shape(inputs[0]))
    axis = o.Axis() % rank
    layouts = {bool(g.nchw.get(i)) for i in inputs}
    if len(layouts) != 1:
        raise ExportError(f"{m.source}: CONCATENATION of mixed layouts")
    if layouts == {True}:
        axis = TO_NCHW.index(axis)
    out = g.node("Concat", [g.names[i] for i in inputs], "concat", axis=axis)
    return _activation(g, out, o.FusedActivationFunction(), m.source)


def _relu(m: _Model, g: _Graph, op) -> str:
    return g.node("Relu", [g.names[op.Inputs(0)]], "relu")


CONVERTERS: dict[str, Callable[[_Model, _Graph, object], str]] = {
    "CONV_2D": lambda m, g, op: _conv(m, g, op, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda m, g, op: _conv(m, g, op, depthwise=True),
    "MAX_POOL_2D": _max_pool, "ADD": _add, "PAD": _pad, "PRELU": _prelu, "RESHAPE": _reshape,
    "CONCATENATION": _concat, "RELU": _relu,
}


@dataclass(frozen=True)
class Converted:
    model: onnx.ModelProto
    ops: dict[str, int]  # TFLite op -> count, what the file held


def convert(path: Path, input_name: str, output_names: dict[str, str],
            output_shapes: dict[str, tuple[int, ...]], fp16: bool = False) -> Converted:
    """The TFLite model at `path` as an ONNX graph with one float32 NHWC input
    `input_name` and float32 outputs; `output_names` maps TFLite output names to the ONNX
    ones, each reshaped to `output_shapes`. `fp16`: weights and activations in float16
    (the stored weights exactly), with the input and outputs cast at the graph's edges."""
    try:
        m = _Model(Path(path).read_bytes(), str(path))
    except OSError as err:
        raise ExportError(f"cannot read {path}: {err.strerror}") from err
    dtype = np.float16 if fp16 else np.float32
    g = _Graph(dtype)
    sg = m.graph
    if sg.InputsLength() != 1:
        raise ExportError(f"{path}: {sg.InputsLength()} inputs, expected 1")
    x = sg.Inputs(0)
    in_shape = m.shape(x)
    value = input_name
    if fp16:
        value = g.node("Cast", [value], "half", to=TensorProto.FLOAT16)
    g.names[x], g.nchw[x] = g.node("Transpose", [value], "nchw", perm=list(TO_NCHW)), True
    ops: dict[str, int] = {}
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        kind = m.op_names[op.OpcodeIndex()]
        ops[kind] = ops.get(kind, 0) + 1
        out = op.Outputs(0)
        if kind == "DEQUANTIZE":
            source = m.data(op.Inputs(0))
            if source is None or source.dtype != np.float16:
                raise ExportError(f"{path}: DEQUANTIZE of {m.name(op.Inputs(0))!r}: only float16 "
                                  "constants are supported (no integer quantisation)")
            g.constants[out] = source
            continue
        if kind not in CONVERTERS:
            raise ExportError(f"{path}: TFLite op {kind} is not supported by this converter "
                              f"(it converts {', '.join(sorted(CONVERTERS))}, DEQUANTIZE)")
        g.names[out] = CONVERTERS[kind](m, g, op)
        g.nchw[out] = len(m.shape(out)) == 4 and kind != "RESHAPE"
    outputs = []
    for j in range(sg.OutputsLength()):
        index = sg.Outputs(j)
        tflite_name = m.name(index)
        if tflite_name not in output_names:
            raise ExportError(f"{path}: unexpected output {tflite_name!r}; expected {sorted(output_names)}")
        value = g.names[index]
        if g.nchw.get(index):
            value = g.node("Transpose", [value], "nhwc", perm=list(TO_NHWC))
        name = output_names[tflite_name]
        shape = output_shapes[name]
        if int(np.prod(shape)) != int(np.prod(m.shape(index))):
            raise ExportError(f"{path}: output {tflite_name!r} of shape {m.shape(index)} cannot be {shape}")
        value = g.node("Reshape", [value, g.constant(np.array(shape, dtype=np.int64), "shape")], "out")
        cast = ("Cast", {"to": TensorProto.FLOAT}) if fp16 else ("Identity", {})
        g.nodes.append(helper.make_node(cast[0], [value], [name], name=name, **cast[1]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(g.nodes, Path(path).stem,
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(in_shape))],
                              outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mnt.export.faces")
    model.ir_version = 9
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        first = str(err).splitlines()[0]
        raise ExportError(f"{path}: the converted graph is not valid ONNX: {first}") from err
    return Converted(model, ops)
