"""The CPU's INT8 path (runtime.cpu), the exact-products option on the sessions mnt makes where
that path saturates, and doctor's row."""

from __future__ import annotations

import pytest

from mnt.runtime import cpu
from mnt.runtime.backends import onnxruntime as ort_backend

AVX2 = {"sse4_1", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512dq", "avx512vl"}


@pytest.mark.parametrize(("flags", "machine", "name", "saturates"), [
    (AVX512 | {"avx512_vnni"}, "x86_64", "AVX-512 VNNI", False),
    (AVX2 | {"avx_vnni"}, "x86_64", "AVX-VNNI", False),
    (AVX512 | {"avx512_vnni", "amx_int8"}, "x86_64", "AMX", False),
    (AVX512, "x86_64", "AVX-512 without VNNI", True),
    (AVX2, "x86_64", "AVX2 only", True),  # the AMD EPYC of issue 31
    ({"fp", "asimd", "asimddp"}, "aarch64", "ARM dot-product", False),  # Jetson Orin's Cortex-A78AE
    ({"fp", "asimd"}, "aarch64", "ARM NEON (no dot-product)", False),
    (set(), "x86_64", "unknown", None),
])
def test_the_int8_path_follows_the_flags(flags, machine, name, saturates):
    path = cpu.int8_path_of(flags, machine)
    assert (path.name, path.saturates) == (name, saturates)


def test_cpuinfo_is_read_and_a_missing_one_is_unknown(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu sse4_1 avx avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu sse4_1 avx avx2 fma\n")
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    found = cpu.int8_path.__wrapped__(info)
    assert (found.name, found.saturates, found.cpu) == ("AVX2 only", True, "AMD EPYC 7763")
    missing = cpu.int8_path.__wrapped__(tmp_path / "absent")
    assert missing.saturates is None and "not read" in missing.describe()


def _entry(options, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # ONNX Runtime's answer for a key never set
        return None


@pytest.mark.parametrize(("path", "asked"), [
    (cpu.Int8Path("AVX2 only", True), True), (cpu.Int8Path("AVX-512 without VNNI", True), True),
    (cpu.Int8Path("unknown", None), True), (cpu.Int8Path("AVX-512 VNNI", False), False)])
def test_sessions_ask_for_exact_int8_products_where_the_kernels_saturate(monkeypatch, path, asked):
    import onnxruntime as ort

    monkeypatch.setattr(ort_backend, "int8_path", lambda: path)
    options = ort_backend.session_options(ort)
    key, value = ort_backend.INT8_EXACT
    assert _entry(options, key) == (value if asked else None)


def test_the_runtime_backend_and_the_calibration_search_use_those_options(monkeypatch, tmp_path):
    import numpy as np
    from onnx import TensorProto, helper

    from mnt.calibration.sensitivity import Evaluator
    from mnt.runtime.manifest import ComponentInfo, TensorInfo

    monkeypatch.setattr(ort_backend, "int8_path", lambda: cpu.Int8Path("AVX2 only", True))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path.write_bytes(model.SerializeToString())
    info = ComponentInfo("relu", "relu.onnx", "-", "fp32", "frame", (TensorInfo("x", "float32", (1, 4)),),
                         (TensorInfo("y", "float32", (1, 4)),), {}, {})
    backend = ort_backend.OnnxRuntimeBackend(info, tmp_path)
    backend.activate()
    key, value = ort_backend.INT8_EXACT
    sessions = [backend.session, Evaluator(path, [{"x": np.ones((1, 4), np.float32)}])._session(path)]
    for session in sessions:
        assert _entry(session.get_session_options(), key) == value


def test_doctor_names_the_int8_path(monkeypatch):
    from mnt.export import doctor

    monkeypatch.setattr(doctor, "int8_path", lambda: cpu.Int8Path("AVX2 only", True, "AMD EPYC 7763"))
    found = doctor.facts()
    assert found["cpu"] == {"model": "AMD EPYC 7763", "int8_path": "AVX2 only", "saturates": True,
                            "description": cpu.Int8Path("AVX2 only", True).describe()}
    line = next(x for x in doctor.format_facts(found).splitlines() if x.startswith("CPU:"))
    assert "AMD EPYC 7763" in line and "AVX2 only" in line and "saturating 16 bits" in line
