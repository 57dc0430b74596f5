"""The plugin-variant ONNX: warp and the attention core as custom-domain nodes.

- `mnt::Warp(features T[N,C,H,W], flow float32[N,2,fH,fW]) -> T[N,C,H,W]`: the flow averaged
  over f x f blocks, added to the pixel-centre identity grid (x = channel 0), bilinear
  sampling, zeros padding, align_corners False; coordinates, weights and accumulation in FP32.
- `mnt::CrossAttention(query T[B,Lq,D], keys T[B,Lk,D], values T[B,Lk,Dv]) -> T[B,Lq,Dv]`
  = softmax(Q Kᵀ / √D) V with logits, softmax and the weighted sum in FP32.

The op contract (shared with kernels/, the TensorRT plugins and the runtime's reference
functions) is each op's kernels/<op>/spec.json: the schemas below are built from it (domain,
version, op type, inputs, outputs, type constraints; no attributes). While `plugin_ops()`
(export/model/blocks.py) is active the model calls the torch custom ops `mnt::warp` /
`mnt::cross_attention` (reference maths inside); `TRANSLATIONS` turns each into one ONNX
node. ONNX Runtime runs the nodes through mnt.runtime.backends.mnt_ops.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema

import mnt.export.model.attention  # noqa: F401  (registers torch.ops.mnt.cross_attention)
import mnt.export.model.blocks  # noqa: F401  (registers torch.ops.mnt.warp)
from mnt.kernels.spec import OPS, onnx_name, op_spec, torch_name

ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)"}
# Per component: the custom ops it holds and the standard ops they replace, which must
# then be gone from its graph.
PLUGIN_COMPONENTS = ("target_encoder", "generator")
REPLACED = {onnx_name(op_spec("warp")): "GridSample", onnx_name(op_spec("cross_attention")): "Softmax"}
DOMAINS = sorted({op_spec(op)["domain"] for op in OPS})


def schema(spec: dict[str, Any]) -> OpSchema:
    """The ONNX schema of an op spec: the exporter's onnxscript needs one to emit a node, and
    it lets onnx.checker and shape inference type the outputs."""
    constraints = spec["type_constraints"]

    def param(tensor: dict[str, Any]) -> OpSchema.FormalParameter:
        kind = tensor["dtype"] if tensor["dtype"] in constraints else ONNX_TYPES[tensor["dtype"]]
        return OpSchema.FormalParameter(tensor["name"], kind)

    return OpSchema(spec["op"], spec["domain"], spec["version"], spec["summary"],
                    inputs=[param(t) for t in spec["inputs"]], outputs=[param(t) for t in spec["outputs"]],
                    type_constraints=[(name, [ONNX_TYPES[t] for t in types], "storage type")
                                      for name, types in constraints.items()])


def _register_schemas() -> None:
    for op in OPS:
        spec = op_spec(op)
        try:
            onnx.defs.get_schema(spec["op"], spec["version"], spec["domain"])
        except onnx.defs.SchemaError:
            onnx.defs.register_schema(schema(spec))


_register_schemas()


def _node(op: str) -> Any:
    """The onnxscript op that emits the custom node of kernel op `op`."""
    spec = op_spec(op)
    return getattr(onnxscript.values.Opset(spec["domain"], spec["version"]), spec["op"])


def _torch_op(op: str) -> Any:
    namespace, name = torch_name(op).split("::")
    return getattr(getattr(torch.ops, namespace), name).default


_WARP, _CROSS_ATTENTION = _node("warp"), _node("cross_attention")


# The exporter reads the inputs from these signatures: one parameter per spec input.
def _warp(features: onnxscript.ir.Value, flow: onnxscript.ir.Value) -> onnxscript.ir.Value:
    return _WARP(features, flow)


def _cross_attention(query: onnxscript.ir.Value, keys: onnxscript.ir.Value,
                     values: onnxscript.ir.Value) -> onnxscript.ir.Value:
    return _CROSS_ATTENTION(query, keys, values)


TRANSLATIONS = {
    _torch_op("warp"): _warp,
    _torch_op("cross_attention"): _cross_attention,
}


def op_counts(path: Path) -> dict[str, int]:
    """Node count per op type of a graph ("mnt::Warp", "GridSample", ...)."""
    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                        for n in model.graph.node))


def custom_ops(path: Path) -> dict[str, int]:
    """The custom (mnt::) nodes of a graph, counted; raises ValueError when a standard op
    they replace is still in it (the exporter decomposed a custom op after all)."""
    counts = op_counts(path)
    found = {op: n for op, n in counts.items() if "::" in op and op.partition("::")[0] in DOMAINS}
    left = sorted({REPLACED[op] for op in REPLACED if REPLACED[op] in counts})
    if left:
        raise ValueError(f"{path.name} still holds {', '.join(left)} beside its mnt:: ops")
    unknown = sorted(set(found) - set(REPLACED))
    if unknown:
        raise ValueError(f"{path.name} holds unknown custom ops {unknown}")
    return dict(sorted(found.items()))
