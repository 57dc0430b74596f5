"""A numpy model of ONNX Runtime's x86 INT8 kernels, to measure on any CPU what the 16-bit
saturation of AVX2 / AVX-512-without-VNNI (`vpmaddubsw`) does to a Q/DQ graph.

On x86, ONNX Runtime turns INT8 activations into uint8 (zero point 128) and fuses
DequantizeLinear -> Conv / MatMul / Gemm -> QuantizeLinear into QLinearConv, QLinearMatMul,
QGemm. Their u8 x s8 kernels without VNNI add each pair of adjacent products along K (the
packed order: input channels within a kernel position, for a convolution) in a saturating
int16, then the pairs in int32; VNNI adds every product in int32, and with
`session.x64quantprecision` the weights become uint8 and the u8 x u8 kernels widen to 16 bits
first: both exact. The fused nodes are read from ONNX Runtime's own optimised graph; each one's
output becomes a graph input, computed here from its uint8 activations and int8 weights in
topological order, the rest of the graph run by ONNX Runtime without fusions (float maths)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT16 = (-32768, 32767)
INTEGER_OPS = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "MatMulIntegerToFloat": 1}


def pair_dot(a: np.ndarray, b: np.ndarray, saturate: bool) -> tuple[np.ndarray, int]:
    """a [M, K] uint8 values, b [N, K] int8 values -> (a @ b.T as int64, saturated pairs):
    with `saturate`, each adjacent pair along K is summed in int16 first (vpmaddubsw)."""
    a, b = a.astype(np.int32), b.astype(np.int32)
    if not saturate:
        return a.astype(np.int64) @ b.T.astype(np.int64), 0
    if a.shape[1] % 2:  # MLAS pads K with zeros
        a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 0), (0, 1)))
    out = np.empty((a.shape[0], b.shape[0]), np.int64)
    rows = max(1, 4_000_000 // (b.shape[0] * a.shape[1]))
    saturated = 0
    for r in range(0, a.shape[0], rows):
        c = slice(r, r + rows)
        pairs = a[c, None, 0::2] * b[None, :, 0::2] + a[c, None, 1::2] * b[None, :, 1::2]
        clipped = np.clip(pairs, *INT16)
        saturated += int(np.count_nonzero(clipped != pairs))
        out[c] = clipped.sum(-1, dtype=np.int64)
    return out, saturated


@dataclass
class _Node:
    op: str
    output: str
    activation: str  # the int8 tensor its activation DequantizeLinear reads
    x_scale: float
    w: np.ndarray  # int8
    w_scale: np.ndarray
    bias: np.ndarray | None
    attrs: dict


@dataclass
class Emulation:
    outputs: list[np.ndarray]
    unfused: list[np.ndarray]  # the graph's outputs in float maths (DequantizeLinear, then float ops)
    saturated: dict[str, int] = field(default_factory=dict)  # per node: saturated pairs
    pairs: dict[str, int] = field(default_factory=dict)


def integer_weights(path: Path) -> set[str]:
    """The int8 weight initialisers that ONNX Runtime's CPU provider runs in integer kernels
    (its optimised graph, without the exact-products option)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    int8 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    return {n.input[INTEGER_OPS[n.op_type]] for n in model.graph.node
            if n.op_type in INTEGER_OPS and n.input[INTEGER_OPS[n.op_type]] in int8}


def _nodes(model: onnx.ModelProto, weights: set[str]) -> list[_Node]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    found = []
    for n in model.graph.node:  # graph order is topological
        if n.op_type not in ("Conv", "MatMul", "Gemm") or len(n.input) < 2:
            continue
        x_dq, w_dq = made.get(n.input[0]), made.get(n.input[1])
        if w_dq is None or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in weights:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("group", 1) != 1 or attrs.get("transA", 0) or x_dq is None:
            raise ValueError(f"{n.name}: not modelled (group, transA or no activation DequantizeLinear)")
        zero_points = [inits[d.input[2]] for d in (x_dq, w_dq) if len(d.input) > 2 and d.input[2]]
        if any(np.any(z != 0) for z in zero_points):
            raise ValueError(f"{n.name}: asymmetric quantisation is not modelled")
        bias = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else None
        found.append(_Node(n.op_type, n.output[0], x_dq.input[0], float(inits[x_dq.input[1]]),
                           inits[w_dq.input[0]], inits[w_dq.input[1]].astype(np.float64), bias, attrs))
    return found


def _conv(u: np.ndarray, w: np.ndarray, attrs: dict) -> tuple[np.ndarray, np.ndarray, tuple]:
    """im2col in the kernels' K order (kernel position, then input channel)."""
    n, c, h, wd = u.shape
    o, _, kh, kw = w.shape
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    sy, sx = attrs.get("strides", [1, 1])
    dy, dx = attrs.get("dilations", [1, 1])
    u = np.pad(u, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=128)  # real zero
    ho, wo = (h + pt + pb - dy * (kh - 1) - 1) // sy + 1, (wd + pl + pr - dx * (kw - 1) - 1) // sx + 1
    cols = [u[:, :, ky * dy: ky * dy + sy * (ho - 1) + 1: sy, kx * dx: kx * dx + sx * (wo - 1) + 1: sx]
            for ky in range(kh) for kx in range(kw)]
    a = np.stack(cols, 1).transpose(0, 3, 4, 1, 2).reshape(n * ho * wo, kh * kw * c)
    return a, w.transpose(0, 2, 3, 1).reshape(o, -1), (n, ho, wo, o)


def _compute(node: _Node, q: np.ndarray, saturate: bool) -> tuple[np.ndarray, int, int]:
    u = q.astype(np.int32) + 128  # ONNX Runtime's int8 -> uint8 activations
    if node.op == "Conv":
        a, b, shape = _conv(u, node.w, node.attrs)
    elif node.op == "Gemm":
        a, b = u, (node.w if node.attrs.get("transB", 0) else node.w.T)
        shape = (a.shape[0], b.shape[0])
    else:  # MatMul: x [..., K] @ w [K, N]
        a, b = u.reshape(-1, u.shape[-1]), node.w.T
        shape = (*u.shape[:-1], b.shape[0])
    acc, saturated = pair_dot(a, b, saturate)
    acc = acc - 128 * b.astype(np.int64).sum(1)  # the zero point's share
    y = node.x_scale * node.w_scale * acc
    if node.bias is not None:
        y = y + node.bias
    y = y.reshape(shape)
    if node.op == "Conv":
        y = y.transpose(0, 3, 1, 2)
    return y.astype(np.float32), saturated, a.shape[0] * b.shape[0] * ((a.shape[1] + 1) // 2)


class Emulator:
    """One INT8 graph, run with its integer nodes modelled (saturating or exact)."""

    def __init__(self, path: Path) -> None:
        model = onnx.load(str(path))
        self.nodes = _nodes(model, integer_weights(path))
        self.outputs = [o.name for o in model.graph.output]
        float_model = onnx.ModelProto()
        float_model.CopyFrom(model)  # the graph as written, its modelled nodes' outputs shown
        float_model.graph.output.extend(helper.make_tensor_value_info(n.output, onnx.TensorProto.FLOAT, None)
                                        for n in self.nodes)
        self.float_session = _session(float_model)
        emulated = {n.output for n in self.nodes}
        for node in model.graph.node:  # each modelled node's output becomes a graph input
            node.output[:] = [f"{o}__ort" if o in emulated else o for o in node.output]
        model.graph.input.extend(helper.make_tensor_value_info(n.output, onnx.TensorProto.FLOAT, None)
                                 for n in self.nodes)
        model.graph.output.extend(helper.make_tensor_value_info(n.activation, onnx.TensorProto.INT8, None)
                                  for n in self.nodes)
        self.session = _session(model)

    def __call__(self, feeds: dict[str, np.ndarray], saturate: bool) -> Emulation:
        # start from the float graph's values (right shapes; a node only reads nodes before it)
        first = self.float_session.run(self.outputs + [n.output for n in self.nodes], feeds)
        values = {n.output: v for n, v in zip(self.nodes, first[len(self.outputs):], strict=True)}
        result = Emulation([], first[:len(self.outputs)])
        for node in self.nodes:
            (q,) = self.session.run([node.activation], {**feeds, **values})
            values[node.output], result.saturated[node.output], result.pairs[node.output] = _compute(
                node, q, saturate)
        result.outputs = self.session.run(self.outputs, {**feeds, **values})
        return result


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusions
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
