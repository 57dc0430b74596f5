"""The CPU reference functions of mnt::Warp / mnt::CrossAttention (runtime/backends/mnt_ops.py):
well-formed ONNX named by the op specs, and how the runtime attaches them. Their maths in
ONNX Runtime is tested per op with the other implementations: tests/kernels/test_warp.py
and tests/kernels/test_cross_attention.py."""

import onnx
import pytest
from onnx import TensorProto, helper

from mnt.kernels.spec import names, op_spec
from mnt.runtime import RuntimeStageError
from mnt.runtime.backends.mnt_ops import (
    cross_attention_function,
    reference_ops,
    warp_function,
    with_reference_ops,
)
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.manifest import ComponentInfo, TensorInfo

ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def one_node_component(folder, op: str, inputs: list[tuple[str, str, tuple]], output: tuple,
                       dtype: str, custom_ops: dict[str, int] | None = None) -> ComponentInfo:
    """A graph of a single mnt:: node, saved as a bare custom node (as the build writes it)."""
    domain, name = op.split("::")
    values = [helper.make_tensor_value_info(n, ONNX_TYPES[t], list(s)) for n, t, s in inputs]
    out = helper.make_tensor_value_info("output", ONNX_TYPES[dtype], list(output))
    graph = helper.make_graph([helper.make_node(name, [n for n, _, _ in inputs], ["output"], domain=domain)],
                              name, values, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid(domain, 1)])
    onnx.save(model, str(folder / f"{name}.onnx"))
    return ComponentInfo(name, f"{name}.onnx", "-", "fp32", "frame",
                         tuple(TensorInfo(n, t, s) for n, t, s in inputs),
                         (TensorInfo("output", dtype, output),), {"K": (1, 8), "L": (1, 1024)}, {},
                         custom_ops={op: 1} if custom_ops is None else custom_ops)


def test_functions_are_valid_onnx_that_onnx_itself_parses():
    for make, op, name, inputs in ((warp_function, "warp", "Warp", ["features", "flow"]),
                                   (cross_attention_function, "cross_attention", "CrossAttention",
                                    ["query", "keys", "values"])):
        function = onnx.FunctionProto.FromString(make())
        spec = op_spec(op)
        assert (function.domain, function.name, list(function.input)) == ("mnt", name, inputs)
        assert (function.domain, function.name, list(function.input), list(function.output)) == (
            spec["domain"], spec["op"], names(spec["inputs"]), names(spec["outputs"]))
        assert [(o.domain, o.version) for o in function.opset_import] == [("", 18)]
        assert not function.attribute  # the contract: no attributes
    graph = helper.make_graph([helper.make_node("Warp", ["x", "f"], ["y"], domain="mnt")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4]),
                               helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("mnt", 1)])
    merged = onnx.load_from_string(with_reference_ops(model.SerializeToString(), reference_ops()))
    onnx.checker.check_model(merged, full_check=True)
    assert sorted(f.name for f in merged.functions) == ["CrossAttention", "Warp"]
    assert merged.graph == model.graph  # appended, nothing else touched


def test_a_custom_graph_needs_its_functions_and_unknown_ops_are_named(tmp_path):
    inputs = [("query", "float32", (1, 4, 8)), ("keys", "float32", (1, "L", 8)),
              ("values", "float32", (1, "L", 8))]
    bare = one_node_component(tmp_path, "mnt::CrossAttention", inputs, (1, 4, 8), "float32",
                              custom_ops={})
    with pytest.raises(RuntimeStageError, match="cannot load"):  # ONNX Runtime has no mnt::
        OnnxRuntimeBackend(bare, tmp_path).activate()
    unknown = one_node_component(tmp_path, "mnt::CrossAttention", inputs, (1, 4, 8), "float32",
                                 custom_ops={"mnt::Blur": 1})
    with pytest.raises(RuntimeStageError, match="no CPU reference implementation of mnt::Blur"):
        OnnxRuntimeBackend(unknown, tmp_path).activate()
