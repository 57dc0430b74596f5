"""The backend registry (names, why a backend cannot run, what `auto` picks) and the
checks the backend base class does once for every backend."""

from dataclasses import replace

import numpy as np
import pytest

from mnt.runtime.backends import registry
from mnt.runtime.backends.base import Backend
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.backends.tensorrt import TensorRTBackend
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.gpu import GpuProbe
from mnt.runtime.manifest import EngineInfo, load_manifest
from tests.helpers import run_blocking


def test_names_start_with_auto_and_hold_every_kind():
    assert registry.names() == ("auto", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx",
                                "torch")


def test_unknown_backend_lists_the_choices():
    with pytest.raises(RuntimeStageError, match="unknown backend 'nope'; choose one of auto, onnx"):
        registry.kind("nope")
    assert registry.unavailable("nope").startswith("unknown backend")


def test_this_cpu_machine_runs_onnxruntime_cpu_and_auto_picks_it(tiny_artefacts):
    folder = tiny_artefacts("fp32")
    manifest = load_manifest(folder)
    assert registry.unavailable("onnxruntime-cpu") is None
    picked, passed = registry.pick_auto(folder, manifest)
    assert picked == "onnxruntime-cpu"
    assert "holds no TensorRT engines" in passed["tensorrt"] and f"--from {folder}" in passed["tensorrt"]
    assert passed["onnxruntime-cuda"]  # no CUDA provider (or no GPU) here
    auto = registry.make_backends(folder, manifest, "auto")
    assert all(isinstance(b, OnnxRuntimeBackend) and b.allow_fallback for b in auto.values())


def _with_engines(manifest, tensorrt="10.3.0", cc="8.7"):
    engine = EngineInfo("x.engine", "0" * 64, tensorrt, cc, None, "1" * 64, "native")
    components = {n: replace(c, engines={"tensorrt": engine}) for n, c in manifest.components.items()}
    return replace(manifest, components=components)


def test_auto_picks_tensorrt_only_for_engines_of_this_gpu_and_tensorrt(tiny_artefacts, monkeypatch):
    folder = tiny_artefacts("fp32")
    manifest = load_manifest(folder)
    monkeypatch.setattr(registry, "tensorrt_version", lambda module="tensorrt": "10.3.0")
    monkeypatch.setattr(registry, "probe_gpu", lambda: GpuProbe(1, "Orin", "8.7", 7.4))
    monkeypatch.setattr(registry, "_ort_providers", lambda: ["CPUExecutionProvider"])
    assert registry.pick_auto(folder, _with_engines(manifest)) == ("tensorrt", {})
    made = registry.make_backends(folder, _with_engines(manifest), "auto")
    assert all(isinstance(b, TensorRTBackend) for b in made.values())
    picked, passed = registry.pick_auto(folder, _with_engines(manifest, cc="8.9"))
    assert picked == "onnxruntime-cpu" and "compute capability 8.9" in passed["tensorrt"]
    picked, passed = registry.pick_auto(folder, _with_engines(manifest, tensorrt="10.9.0"))
    assert picked == "onnxruntime-cpu" and "TensorRT 10.9.0" in passed["tensorrt"]
    assert "no CUDA provider" in passed["onnxruntime-cuda"]


def test_without_a_folder_tensorrt_means_can_engines_be_built_here(monkeypatch):
    monkeypatch.setattr(registry, "tensorrt_version", lambda module="tensorrt": None)
    assert "TensorRT is not installed" in registry.unavailable("tensorrt")
    monkeypatch.setattr(registry, "tensorrt_version", lambda module="tensorrt": "10.3.0")
    monkeypatch.setattr(registry, "probe_gpu", lambda: GpuProbe(0, reason="no driver"))
    assert registry.unavailable("tensorrt") == "no GPU (no driver)"


def test_the_torch_kind_comes_from_its_entry_point_without_importing_torch():
    result = run_blocking(
        "from mnt.runtime.backends import registry\n"
        "kind = registry.kind('torch')\n"
        "assert isinstance(kind, registry.BackendKind), kind\n"
        "assert 'torch' not in sys.modules\n")
    assert result.returncode == 0, result.stderr
    assert registry.unavailable("torch") is None  # here it is installed


class Echo(Backend):
    """The smallest backend: what the base class checks, it need not."""

    def activate_impl(self) -> None:
        self.calls = 0

    def infer_impl(self, feeds, dims):
        self.calls += 1
        return {t.name: np.zeros(1, t.dtype) for t in self.component.outputs}

    def deactivate_impl(self) -> None:
        pass


def test_base_class_checks_activation_and_inputs_once_for_every_backend(tiny_artefacts):
    info = load_manifest(tiny_artefacts("fp32")).components["landmark_disentangler"]
    feeds = {"images": np.zeros((2, 3, 256, 256)), "landmark_offsets": np.zeros((2, 204))}
    backend = Echo(info)
    with pytest.raises(RuntimeStageError, match="used before activate"):
        backend.infer(feeds)
    with backend:
        backend.infer(feeds)
        with pytest.raises(RuntimeStageError, match="missing inputs"):
            backend.infer({"images": feeds["images"]})
        with pytest.raises(RuntimeStageError, match="N=9; expected one value in 1..8"):
            backend.infer({k: np.zeros((9, *v.shape[1:])) for k, v in feeds.items()})
        assert backend.calls == 1  # bad feeds never reach the implementation
    with pytest.raises(RuntimeStageError, match="used before activate"):
        backend.infer(feeds)
    backend.deactivate()  # twice is harmless
