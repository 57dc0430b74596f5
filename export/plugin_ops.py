"""The plugin-variant ONNX: warp and the attention core as custom-domain nodes.

The op contract (shared with kernels/ and the TensorRT plugins): ONNX domain "mnt",
version 1, no attributes.
- `mnt::Warp(features T[N,C,H,W], flow float32[N,2,fH,fW]) -> T[N,C,H,W]`, T float32 or
  float16, f >= 1 read from the shapes: the flow averaged over f x f blocks, added to the
  pixel-centre identity grid (x = channel 0), bilinear sampling, zeros padding,
  align_corners False; coordinates, weights and accumulation in FP32.
- `mnt::CrossAttention(query T[B,Lq,D], keys T[B,Lk,D], values T[B,Lk,Dv]) -> T[B,Lq,Dv]`
  = softmax(Q Kᵀ / √D) V with logits, softmax and the weighted sum in FP32.

While `plugin_ops()` (export/model/blocks.py) is active the model calls the torch custom ops
`mnt::warp` / `mnt::cross_attention` (reference maths inside); `TRANSLATIONS` turns each into
one ONNX node. ONNX Runtime runs the nodes through mnt.runtime.backends.mnt_ops.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema

import mnt.export.model.attention  # noqa: F401  (registers torch.ops.mnt.cross_attention)
import mnt.export.model.blocks  # noqa: F401  (registers torch.ops.mnt.warp)
from mnt.runtime.backends.mnt_ops import CROSS_ATTENTION, DOMAIN, VERSION, WARP

# Per component: the custom ops it holds and the standard ops they replace, which must
# then be gone from its graph.
PLUGIN_COMPONENTS = ("target_encoder", "generator")
REPLACED = {f"{DOMAIN}::{WARP}": "GridSample", f"{DOMAIN}::{CROSS_ATTENTION}": "Softmax"}


def _register_schemas() -> None:
    """ONNX schemas for both ops: the exporter's onnxscript needs one to emit a node, and
    they let onnx.checker and shape inference type the outputs."""
    param = OpSchema.FormalParameter
    storage = [("T", ["tensor(float)", "tensor(float16)"], "storage type")]
    schemas = [
        OpSchema(WARP, DOMAIN, VERSION, "Bilinear warp by a (pooled) flow: mnt op contract.",
                 inputs=[param("features", "T"), param("flow", "tensor(float)")],
                 outputs=[param("output", "T")], type_constraints=storage),
        OpSchema(CROSS_ATTENTION, DOMAIN, VERSION, "softmax(Q Kᵀ/√D) V in FP32: mnt op contract.",
                 inputs=[param("query", "T"), param("keys", "T"), param("values", "T")],
                 outputs=[param("output", "T")], type_constraints=storage),
    ]
    for schema in schemas:
        try:
            onnx.defs.get_schema(schema.name, VERSION, DOMAIN)
        except onnx.defs.SchemaError:
            onnx.defs.register_schema(schema)


_register_schemas()
_mnt = onnxscript.values.Opset(DOMAIN, VERSION)


def _warp(features: onnxscript.ir.Value, flow: onnxscript.ir.Value) -> onnxscript.ir.Value:
    return _mnt.Warp(features, flow)


def _cross_attention(query: onnxscript.ir.Value, keys: onnxscript.ir.Value,
                     values: onnxscript.ir.Value) -> onnxscript.ir.Value:
    return _mnt.CrossAttention(query, keys, values)


TRANSLATIONS = {
    torch.ops.mnt.warp.default: _warp,
    torch.ops.mnt.cross_attention.default: _cross_attention,
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
    found = {op: n for op, n in counts.items() if op.startswith(f"{DOMAIN}::")}
    left = sorted({REPLACED[op] for op in REPLACED if REPLACED[op] in counts})
    if left:
        raise ValueError(f"{path.name} still holds {', '.join(left)} beside its mnt:: ops")
    unknown = sorted(set(found) - set(REPLACED))
    if unknown:
        raise ValueError(f"{path.name} holds unknown custom ops {unknown}")
    return dict(sorted(found.items()))
