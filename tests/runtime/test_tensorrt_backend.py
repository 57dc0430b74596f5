"""The TensorRT backend without TensorRT: the engine checks that refuse another GPU or
TensorRT version (no TensorRT object is constructed), the GPU probe, the backend choice
and the import guard. Running engines is tested in tests/export/tensorrt/test_builder.py (marked
`tensorrt`)."""

import subprocess
import sys
from dataclasses import replace

import pytest

from mnt.runtime.backends.registry import make_backends, names, unavailable
from mnt.runtime.backends.tensorrt import check_engine
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.gpu import GpuProbe, probe_gpu
from mnt.runtime.manifest import ComponentInfo, EngineInfo, TensorInfo

ORIN = GpuProbe(1, "Orin", "8.7", 7.4)
ENGINE = EngineInfo(file="generator.engine", sha256="0" * 64, tensorrt_version="10.3.0",
                    compute_capability="8.7", plugin_library_sha256=None, build_key="1" * 64, ops="native")
INFO = ComponentInfo(name="generator", file="generator.onnx", sha256="2" * 64, precision="fp16",
                     phase="frame", inputs=(TensorInfo("x", "float16", ("K", 3)),),
                     outputs=(TensorInfo("y", "float16", (1, 3)),), dims={"K": (1, 8)}, accuracy={},
                     engines={"tensorrt": ENGINE})


def test_an_engine_for_this_gpu_and_tensorrt_is_accepted():
    assert check_engine(INFO, "art", ORIN, "10.3.0") == ENGINE


@pytest.mark.parametrize(("gpu", "version", "message"), [
    (GpuProbe(1, "RTX 4090", "8.9"), "10.3.0", "compute capability 8.7, this GPU (RTX 4090) is 8.9"),
    (ORIN, "10.13.0", "built with TensorRT 10.3.0, this machine has TensorRT 10.13.0"),
])
def test_an_engine_for_another_gpu_or_tensorrt_is_refused_with_the_rebuild_command(gpu, version, message):
    with pytest.raises(RuntimeStageError) as err:
        check_engine(INFO, "art", gpu, version)
    assert message in str(err.value) and "generator.engine" in str(err.value)
    assert "mnt-export build --from art" in err.value.hint


def test_missing_engine_gpu_or_tensorrt_are_refused():
    with pytest.raises(RuntimeStageError, match="has no TensorRT engine") as err:
        check_engine(replace(INFO, engines={}), "art", ORIN, "10.3.0")
    assert "mnt-export build --from art" in err.value.hint
    with pytest.raises(RuntimeStageError, match="needs a CUDA GPU: no driver"):
        check_engine(INFO, "art", GpuProbe(0, reason="no driver"), "10.3.0")
    with pytest.raises(RuntimeStageError, match="needs TensorRT"):
        check_engine(INFO, "art", ORIN, None)


def test_gpu_probe_reports_no_gpu_here_without_crashing():
    probe = probe_gpu()
    if probe.available:
        pytest.skip(f"a GPU is here: {probe.name}")
    assert probe.count == 0 and probe.reason and not probe.compute_capability
    # and in a fresh process, where a crash would kill the interpreter
    code = "from mnt.runtime.gpu import probe_gpu; p = probe_gpu(); print(p.count, p.reason)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("0 "), result.stderr


def test_tensorrt_is_a_backend_choice_and_auto_skips_it_without_engines(tiny_artefacts):
    from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from mnt.runtime.backends.tensorrt import TensorRTBackend
    from mnt.runtime.manifest import load_manifest

    folder = tiny_artefacts("fp32")
    manifest = load_manifest(folder)
    assert "tensorrt" in names()
    assert "holds no TensorRT engines" in unavailable("tensorrt", folder, manifest)
    auto = make_backends(folder, manifest, "auto")
    assert all(isinstance(b, OnnxRuntimeBackend) for b in auto.values())
    chosen = make_backends(folder, manifest, "tensorrt")
    assert all(isinstance(b, TensorRTBackend) for b in chosen.values())
    with pytest.raises(RuntimeStageError, match="has no TensorRT engine") as err:
        chosen["generator"].activate()
    assert f"mnt-export build --from {folder}" in err.value.hint


def test_importing_the_backend_imports_neither_tensorrt_nor_cuda():
    # Not the bare `cuda` namespace: cuda-bindings 12.x installs a .pth file
    # (_cuda_bindings_redirector) that imports it at every interpreter's start-up.
    code = ("import sys, mnt.runtime.backends.tensorrt, mnt.runtime.gpu, mnt.runtime.reenactor;"
            "bad = [m for m in ('tensorrt', 'cuda.bindings', 'cuda.bindings.runtime', 'torch')"
            " if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
