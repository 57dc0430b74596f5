"""TensorRT's known defects that touch this model, checked at build time: GridSample at
opset 20 (mode "linear", which onnx-tensorrt reads as nearest) stops the build, through
TensorRT-RTX's real parser on this CPU; an FP32 grid sample in an FP16 engine warns on
TensorRT 10.14.1.48 and newer."""

import onnx
import pytest
from onnx import TensorProto, helper

from mnt.export.errors import ExportError
from mnt.export.tensorrt.builder import BuildTarget, EngineSettings, build_engine, check_known_defects
from mnt.runtime.gpu import tensorrt_version
from mnt.runtime.manifest import ComponentInfo, TensorInfo

RTX = tensorrt_version("tensorrt_rtx")
INFO = ComponentInfo(name="warp", file="warp.onnx", sha256="0" * 64, precision="fp32", phase="frame",
                     inputs=(TensorInfo("x", "float32", ("K", 2, 8, 8)),
                             TensorInfo("grid", "float32", ("K", 8, 8, 2))),
                     outputs=(TensorInfo("y", "float32", ("K", 2, 8, 8)),), dims={"K": (1, 8)}, accuracy={})


def _grid_sample(path, opset: int) -> None:
    mode = "linear" if opset >= 20 else "bilinear"
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, align_corners=0)
    shapes = {t.name: ["K", *t.shape[1:]] for t in (*INFO.inputs, *INFO.outputs)}
    value = {n: helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in shapes.items()}
    graph = helper.make_graph([node], "warp", [value["x"], value["grid"]], [value["y"]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.skipif(RTX is None, reason="needs TensorRT-RTX (pip install 'mnt[rtx]')")
@pytest.mark.parametrize("opset", [18, 20])
def test_a_grid_sample_at_opset_20_stops_the_build(tmp_path, monkeypatch, opset):
    monkeypatch.setenv("MNT_CACHE_DIR", str(tmp_path / "cache"))
    _grid_sample(tmp_path / "warp.onnx", opset)
    target = BuildTarget(str(RTX), "8.6", runtime="tensorrt-rtx")
    settings = EngineSettings(runtime="tensorrt-rtx", compute_capabilities=("8.6",))
    build = lambda: build_engine(tmp_path / "warp.onnx", INFO, settings, target,  # noqa: E731
                                 tmp_path / "warp.rtx.engine", log=lambda _: None, opset=opset)
    if opset < 20:
        assert build().tensorrt_version == RTX  # the same graph at opset 18 builds
        return
    with pytest.raises(ExportError, match="GridSample at opset 20, whose mode 'linear' TensorRT-RTX") as err:
        build()
    assert "export at opset 18 or 19" in err.value.hint and not (tmp_path / "warp.rtx.engine").exists()


@pytest.mark.parametrize(("version", "precision", "inputs", "warned"), [
    ("10.14.1.48", "fp16", ["float"], True),
    ("10.15.0.1", "fp16", ["half", "float"], True),
    ("10.14.1.47", "fp16", ["float"], False),  # before the defect
    ("10.14.1.48", "fp16", ["half"], False),  # no FP32 island around the grid sample
    ("10.14.1.48", "fp32", ["float"], False),  # no FP16 engine
])
def test_an_fp32_grid_sample_in_an_fp16_engine_warns_from_tensorrt_10_14_1_48(version, precision, inputs,
                                                                              warned):
    from dataclasses import replace

    lines: list[str] = []
    info = replace(INFO, precision=precision)
    check_known_defects(info, BuildTarget(version, "8.9"), 18, inputs, lines.append)
    assert bool(lines) == warned
    if warned:
        assert "pytorch/TensorRT 4074" in lines[0] and lines[0].startswith("warp: warning:")
