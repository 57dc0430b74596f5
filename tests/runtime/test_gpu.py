"""The GPU probe against a fake driver and a fake cuda-python: a cuda-python too new for the
driver is named with the one that fits, and no suggested fix installs an extra (which could
put onnxruntime-gpu beside onnxruntime). And the extras: the GPU ones bring a cuda-python
that every CUDA 12 driver runs."""

import enum
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement

from mnt.runtime import gpu

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35


def _cudart(error: Err, count: int = 0) -> SimpleNamespace:
    return SimpleNamespace(cudaGetDeviceCount=lambda: (error, count))


def _machine(monkeypatch, driver: int | None, cuda_python: str | None, error=Err.cudaErrorInsufficientDriver):
    monkeypatch.setattr(gpu, "driver_cuda_version", lambda: driver)
    monkeypatch.setattr(gpu, "cuda_python_version", lambda: cuda_python)
    monkeypatch.setattr(gpu, "cuda_runtime", lambda: None if cuda_python is None else _cudart(error))


def test_cuda_python_13_on_a_jetpack_6_driver_names_the_one_that_fits(monkeypatch):
    _machine(monkeypatch, driver=12060, cuda_python="13.0.1")
    probe = gpu.probe_gpu()
    assert not probe.available
    assert probe.reason == ("cuda-python 13.0.1 needs a driver for CUDA 13 (580.65 or newer), this driver "
                            "supports CUDA 12.6: pip install 'cuda-python>=12.4,<13'")


def test_a_fitting_cuda_python_keeps_the_drivers_own_error(monkeypatch):
    _machine(monkeypatch, driver=13000, cuda_python="13.0.1")
    assert gpu.probe_gpu().reason == "no usable CUDA driver or GPU (cudaErrorInsufficientDriver)"
    assert gpu.cuda_mismatch(12080, "12.9.0") is None and gpu.cuda_mismatch(None, "13.0") is None


@pytest.mark.parametrize(("driver", "requirement"), [(12060, "cuda-python>=12.4,<13"),
                                                     (None, "cuda-python>=12.4,<13"),
                                                     (13010, "cuda-python>=12.4,<14")])
def test_without_cuda_python_the_fix_installs_cuda_python_alone(monkeypatch, driver, requirement):
    _machine(monkeypatch, driver=driver, cuda_python=None)
    reason = gpu.probe_gpu().reason
    assert reason == f"cuda-python is not installed (pip install '{requirement}')"
    assert "mnt[" not in reason  # an extra could bring onnxruntime-gpu beside onnxruntime


def test_the_driver_probe_never_raises():
    found = gpu.driver_cuda_version()
    assert found is None or found >= 10000
    release = gpu.driver_release()
    assert release is None or release[0].isdigit()


def _extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    return {name: [Requirement(r) for r in rows] for name, rows in project["optional-dependencies"].items()}


def test_every_gpu_extra_brings_a_cuda_python_that_cuda_12_drivers_run():
    extras = _extras()
    for name in ("gpu", "rtx"):
        (cuda,) = [r for r in extras[name] if r.name == "cuda-python"]
        assert cuda.specifier.contains("12.9.0") and not cuda.specifier.contains("13.0.0"), name
    assert not any(r.name == "onnxruntime" for r in extras["rtx"] + extras["gpu"])
