"""The CPU reference functions of mnt::Warp / mnt::CrossAttention (runtime/backends/mnt_ops.py):
well-formed ONNX, and in ONNX Runtime equal to PyTorch float64 for both storage types."""

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from mnt.runtime import RuntimeStageError
from mnt.runtime.backends.mnt_ops import OPS, cross_attention_function, warp_function, with_reference_ops
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.manifest import ComponentInfo, TensorInfo
from tests.tolerances import MNT_OPS_FP16_MAX_REL, MNT_OPS_FP32_MAX_ABS

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


def assert_close(got: np.ndarray, reference: np.ndarray, dtype: str) -> None:
    error = np.abs(got.astype(np.float64) - reference).max()
    if dtype == "float32":
        assert error < MNT_OPS_FP32_MAX_ABS, error
    else:
        assert error <= MNT_OPS_FP16_MAX_REL * np.abs(reference).max(), error


def test_functions_are_valid_onnx_that_onnx_itself_parses():
    for make, name, inputs in ((warp_function, "Warp", ["features", "flow"]),
                               (cross_attention_function, "CrossAttention", ["query", "keys", "values"])):
        function = onnx.FunctionProto.FromString(make())
        assert (function.domain, function.name, list(function.input)) == ("mnt", name, inputs)
        assert [(o.domain, o.version) for o in function.opset_import] == [("", 18)]
        assert not function.attribute  # the contract: no attributes
    graph = helper.make_graph([helper.make_node("Warp", ["x", "f"], ["y"], domain="mnt")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4]),
                               helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("mnt", 1)])
    merged = onnx.load_from_string(with_reference_ops(model.SerializeToString(), OPS))
    onnx.checker.check_model(merged, full_check=True)
    assert sorted(f.name for f in merged.functions) == ["CrossAttention", "Warp"]
    assert merged.graph == model.graph  # appended, nothing else touched


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("factor", [1, 2, 8])
def test_warp_matches_torch_float64_with_flows_outside_the_image(tmp_path, dtype, factor):
    from mnt.export.model import warp

    rng = np.random.default_rng(factor)
    features = rng.standard_normal((3, 5, 8, 12)).astype(dtype)
    # Large offsets, constant over each f x f cell plus noise: pooling keeps some beyond ±1.
    coarse = 0.8 * np.tanh(rng.standard_normal((3, 2, 8, 12)))
    flow = np.repeat(np.repeat(coarse, factor, axis=2), factor, axis=3)
    flow = (flow + 0.01 * rng.standard_normal(flow.shape)).astype(np.float32)
    info = one_node_component(tmp_path, "mnt::Warp", [("features", dtype, ("K", 5, 8, 12)),
                                                      ("flow", "float32", ("K", 2, 8 * factor, 12 * factor))],
                              ("K", 5, 8, 12), dtype)
    with OnnxRuntimeBackend(info, tmp_path) as backend:
        got = backend.infer({"features": features, "flow": flow})["output"]
    assert got.dtype == np.dtype(dtype)
    reference = warp(torch.from_numpy(features).double(), torch.from_numpy(flow).double()).numpy()
    assert (reference == 0).any()  # some samples came from outside the image
    assert_close(got, reference, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("k", [1, 8])
def test_cross_attention_matches_torch_float64(tmp_path, dtype, k):
    rng = np.random.default_rng(k)
    tokens, depth = 16, 32
    # Logits of a few units (sharp attention) so the softmax is far from uniform.
    query = (3 * rng.standard_normal((1, 64, depth))).astype(dtype)
    keys = rng.standard_normal((1, k * tokens, depth)).astype(dtype)
    values = rng.standard_normal((1, k * tokens, depth)).astype(dtype)
    info = one_node_component(tmp_path, "mnt::CrossAttention",
                              [("query", dtype, (1, 64, depth)), ("keys", dtype, (1, "L", depth)),
                               ("values", dtype, (1, "L", depth))], (1, 64, depth), dtype)
    with OnnxRuntimeBackend(info, tmp_path) as backend:
        got = backend.infer({"query": query, "keys": keys, "values": values})["output"]
    q, kk, v = (torch.from_numpy(a).double() for a in (query, keys, values))
    reference = (torch.softmax(q @ kk.transpose(1, 2) / math.sqrt(depth), dim=-1) @ v).numpy()
    assert_close(got, reference, dtype)


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
