"""`mnt-export doctor --target`: every reason a machine would not run mnt on a target, each
with its fix, on described machines (an RTX PC, a Jetson, Triton's image) and on this one."""

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.export.targets import Machine, problems
from mnt.runtime.gpu import GpuProbe

RTX_PC = Machine("Windows", "AMD64", (3, 12), 12080, None, "12.9.0", GpuProbe(1, "RTX 4090", "8.9", 24.0),
                 frozenset({"tensorrt_rtx", "onnxruntime", "dlib"}), None, None, None, None)
ORIN = Machine("Linux", "aarch64", (3, 10), 12060, None, "12.6.2", GpuProbe(1, "Orin", "8.7", 61.4),
               frozenset({"tensorrt", "onnxruntime", "dlib"}), "10.3.0", "# R36 (release), REVISION: 4.3",
               None, None)
TRITON = Machine("Linux", "x86_64", (3, 12), 12080, "570.86.15", None, GpuProbe(0, reason="no cuda-python"),
                 frozenset({"dlib"}), None, None, "/opt/tritonserver/bin/tritonserver", None)


def _fixes(target, machine):
    return {p.problem.split(" (")[0].split(":")[0]: p.fix for p in problems(target, machine)}


def test_ready_machines_have_nothing_missing():
    assert problems("rtx", RTX_PC) == [] and problems("jetson", ORIN) == []
    assert problems("triton", TRITON) == []


def test_an_rtx_pc_after_the_old_install_is_told_each_fix():
    # the rtx extra before issue 29: no cuda-python; and an unbounded one: 13.x on a 560 driver
    assert _fixes("rtx", replace(RTX_PC, cuda_python=None, modules=frozenset())) == {
        "TensorRT-RTX is not installed": "pip install 'mnt[rtx]'",
        "cuda-python is not installed": "pip install 'cuda-python>=12.4,<13'"}
    (problem,) = problems("rtx", replace(RTX_PC, cuda_python="13.0.1", driver=12060))
    assert problem.problem.startswith("cuda-python 13.0.1 needs a driver for CUDA 13 (580.65 or newer)")
    assert problem.fix == "pip install 'cuda-python>=12.4,<13'"
    (problem,) = problems("rtx", replace(RTX_PC, gpu=GpuProbe(1, "H200", "9.0")))
    assert "is no GPU TensorRT-RTX runs on" in problem.problem and "--backend tensorrt" in problem.fix


def test_a_jetson_with_a_pip_python_and_cuda_python_13_is_told_each_fix():
    machine = replace(ORIN, python=(3, 12), modules=frozenset({"onnxruntime"}), cuda_python="13.0.1")
    fixes = _fixes("jetson", machine)
    assert fixes["Python 3.12"] == "/usr/bin/python3 -m venv --system-site-packages .venv"
    assert fixes["TensorRT's Python module does not import here"].startswith(
        "sudo apt-get install python3-libnvinfer")
    assert fixes["cuda-python 13.0.1 needs a driver for CUDA 13"] == "pip install 'cuda-python>=12.4,<13'"
    assert fixes["dlib is not installed"] == "pip install 'mnt[human-check]'"
    assert len(fixes) == 4
    assert _fixes("jetson", RTX_PC) == {"this is no Jetson": "run this check on the Jetson"}


def test_tritons_image_without_headless_opencv_is_told_to_swap_it():
    machine = replace(TRITON, opencv_error="libGL.so.1: cannot open shared object file")
    (problem,) = problems("triton", machine)
    assert "libGL.so.1" in problem.problem
    assert problem.fix.endswith("pip install 'opencv-contrib-python-headless>=4.9,<4.12'")


def test_doctor_target_rtx_here_says_what_is_missing_and_exits_1():
    result = CliRunner().invoke(main, ["doctor", "--target", "rtx", "--json"])
    found = json.loads(result.output)
    if found["ready"]:
        pytest.skip("this machine runs TensorRT-RTX")
    assert result.exit_code == 1 and found["target"] == "rtx"
    assert all(p["problem"] and p["fix"] for p in found["problems"])
    text = CliRunner().invoke(main, ["doctor", "--target", "rtx"]).output
    assert text.startswith(f"--target rtx: {len(found['problems'])} reason(s)") and "fix: " in text


def test_doctor_names_the_driver_and_cuda_python_it_sees_and_what_to_install(monkeypatch):
    from mnt.export import doctor
    from mnt.runtime import gpu

    for module in (gpu, doctor):
        monkeypatch.setattr(module, "driver_cuda_version", lambda: 12060)  # JetPack 6's driver
        monkeypatch.setattr(module, "cuda_python_version", lambda: "13.0.1")
    monkeypatch.setattr(doctor, "driver_release", lambda: "540.4.0")
    found = doctor.facts()
    assert found["gpu"]["driver"] == "12.6" and found["gpu"]["cuda_python"] == "13.0.1"
    text = doctor.format_facts(found)
    assert "CUDA driver 12.6 (540.4.0), cuda-python 13.0.1" in text
    assert "needs a driver for CUDA 13 (580.65 or newer), this driver supports CUDA 12.6: pip install " \
           "'cuda-python>=12.4,<13'" in text
