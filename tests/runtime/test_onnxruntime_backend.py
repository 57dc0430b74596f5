"""The ONNX Runtime backend on a small real graph (no export needed)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mnt.runtime import RuntimeStageError
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.manifest import ComponentInfo, TensorInfo


@pytest.fixture()
def component(tmp_path):
    # y = x * 2 over (K, 3), K dynamic 1..8
    node = helper.make_node("Mul", ["x", "two"], ["y"])
    graph = helper.make_graph(
        [node], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["K", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["K", 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              str(tmp_path / "double.onnx"))
    info = ComponentInfo("double", "double.onnx", "-", "fp32", "frame",
                         (TensorInfo("x", "float32", ("K", 3)),),
                         (TensorInfo("y", "float32", ("K", 3)),), {"K": (1, 8)}, {})
    return info, tmp_path


def test_infer_reuses_its_output_buffers_per_k(component):
    info, folder = component
    with OnnxRuntimeBackend(info, folder) as backend:
        first = backend.infer({"x": np.ones((2, 3))})["y"]  # float64 feeds are cast
        assert np.array_equal(first, np.full((2, 3), 2.0, np.float32))
        second = backend.infer({"x": np.full((2, 3), 3.0)})["y"]
        assert second is first and second[0, 0] == 6.0
        assert backend.infer({"x": np.ones((5, 3))})["y"].shape == (5, 3)
        assert backend.providers == ["CPUExecutionProvider"]


def test_bad_feeds_are_named(component):
    info, folder = component
    with OnnxRuntimeBackend(info, folder) as backend:
        with pytest.raises(RuntimeStageError, match="missing inputs"):
            backend.infer({})
        with pytest.raises(RuntimeStageError, match="K=9"):
            backend.infer({"x": np.ones((9, 3))})
        with pytest.raises(RuntimeStageError, match="expected"):
            backend.infer({"x": np.ones((2, 4))})


def test_cuda_without_a_gpu_is_refused_unless_fallback_is_allowed(component):
    info, folder = component
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has onnxruntime-gpu; the silent fallback cannot be provoked")
    with pytest.raises(RuntimeStageError, match="could not use CUDAExecutionProvider"):
        OnnxRuntimeBackend(info, folder, device="cuda").activate()
    with OnnxRuntimeBackend(info, folder, device="cuda", allow_fallback=True) as backend:
        assert backend.providers == ["CPUExecutionProvider"]


def test_unreadable_model_is_named(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"nonsense")
    info = ComponentInfo("bad", "bad.onnx", "-", "fp32", "frame", (), (), {}, {})
    with pytest.raises(RuntimeStageError, match="cannot load .*bad.onnx"):
        OnnxRuntimeBackend(info, tmp_path).activate()
