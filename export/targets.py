"""`mnt-export doctor --target rtx|jetson|triton`: every reason this machine would not run
mnt on that target, each with the command that fixes it (docs/deploy.md has the recipes).

Safe without a GPU, torch-free, and it never builds an engine: the driver is asked through
its library (`mnt.runtime.gpu`), packages through metadata or a module lookup."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnt.runtime import gpu

TARGETS = ("rtx", "jetson", "triton")
RTX_GPUS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")  # what TensorRT-RTX compiles for
TEGRA_RELEASE = Path("/etc/nv_tegra_release")  # L4T: "# R36 (release), REVISION: 4.0, ..."
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"
NO_FIX = "(none on this machine)"


@dataclass(frozen=True)
class Problem:
    problem: str
    fix: str


@dataclass(frozen=True)
class Machine:
    """What the checks read; `found()` is this machine (tests give others)."""

    system: str  # platform.system(): Linux, Windows
    arch: str  # platform.machine(): x86_64, AMD64, aarch64
    python: tuple[int, int]
    driver: int | None  # the driver's CUDA version (12060), None without a driver
    driver_release: str | None
    cuda_python: str | None
    gpu: gpu.GpuProbe
    modules: frozenset[str]  # of the modules the checks ask about, those found
    tensorrt: str | None
    tegra: str | None  # /etc/nv_tegra_release's first line
    tritonserver: str | None  # its path
    opencv_error: str | None  # why cv2 does not import (None: it does)

    @classmethod
    def found(cls) -> Machine:
        modules = frozenset(m for m in ("tensorrt_rtx", "tensorrt", "onnxruntime", "dlib") if _has(m))
        return cls(platform.system(), platform.machine(), sys.version_info[:2], gpu.driver_cuda_version(),
                   gpu.driver_release(), gpu.cuda_python_version(), gpu.probe_gpu(), modules,
                   gpu.tensorrt_version("tensorrt") if "tensorrt" in modules else None, _tegra(),
                   shutil.which("tritonserver") or _file("/opt/tritonserver/bin/tritonserver"), _opencv())


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _file(path: str) -> str | None:
    return path if Path(path).is_file() else None


def _tegra() -> str | None:
    try:
        return TEGRA_RELEASE.read_text(errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def _opencv() -> str | None:
    from mnt.runtime.errors import MntError
    from mnt.runtime.serve.bls import import_opencv

    try:
        import_opencv()
    except MntError as err:
        return str(err.__cause__ or err)
    return None


def _cuda(machine: Machine, what: str) -> list[Problem]:
    """The driver, cuda-python fitting it, and a GPU: what the GPU backends all need."""
    if machine.driver is None:
        library = "nvcuda.dll" if machine.system == "Windows" else "libcuda"
        found = [Problem(f"no NVIDIA driver here (no {library}): {what} runs on an NVIDIA GPU",
                         "install NVIDIA's driver for CUDA 12 or newer (525.60 or newer; JetPack brings "
                         "its own), then rerun this check")]
        if machine.cuda_python is None or not machine.cuda_python.startswith("12."):
            found.append(Problem(f"cuda-python {machine.cuda_python or 'is not installed'}: mnt's GPU "
                                 "extras take 12.x, which every CUDA 12 driver runs (13 needs 580.65 "
                                 "or newer)", gpu.install_cuda_python(None)))
        return found
    problems = []
    mismatch = gpu.cuda_mismatch(machine.driver, machine.cuda_python) if machine.cuda_python else None
    if machine.cuda_python is None:
        problems.append(Problem("cuda-python is not installed (the GPU probe and the TensorRT backends "
                                "use it)", gpu.install_cuda_python(machine.driver)))
    elif mismatch:
        problem, fix = mismatch.rsplit(": ", 1)
        problems.append(Problem(problem, fix))
    elif not machine.gpu.available:
        problems.append(Problem(f"no usable GPU: {machine.gpu.reason}", "check `nvidia-smi` (on a Jetson, "
                                "`tegrastats`) and that this user may use the GPU"))
    return problems


def _rtx(machine: Machine) -> list[Problem]:
    problems = []
    if machine.system not in ("Windows", "Linux") or machine.arch.lower() not in ("x86_64", "amd64"):
        problems.append(Problem(f"TensorRT-RTX runs on x86-64 Windows and Linux, this is {machine.system} "
                                f"{machine.arch}", NO_FIX))
    if "tensorrt_rtx" not in machine.modules:
        problems.append(Problem("TensorRT-RTX is not installed", "pip install 'mnt[rtx]'"))
    problems += _cuda(machine, "TensorRT-RTX")
    cc = machine.gpu.compute_capability
    if machine.gpu.available and cc not in RTX_GPUS:
        problems.append(Problem(f"{machine.gpu.name} (compute capability {cc}) is no GPU TensorRT-RTX runs "
                                f"on ({', '.join(RTX_GPUS)}: RTX Turing to Blackwell)",
                                "use --backend tensorrt (TensorRT) or onnxruntime-cuda on it"))
    return problems


def _jetson(machine: Machine) -> list[Problem]:
    if machine.tegra is None or machine.arch != "aarch64":
        return [Problem(f"this is no Jetson ({machine.system} {machine.arch}, no {TEGRA_RELEASE})",
                        "run this check on the Jetson")]
    problems = []
    if not machine.tegra.startswith("# R36"):
        problems.append(Problem(f"JetPack 6 (Jetson Linux R36) expected, found {machine.tegra!r}",
                                "flash JetPack 6.1 or 6.2 with NVIDIA's SDK Manager"))
    if machine.python != (3, 10):
        version = ".".join(map(str, machine.python))
        problems.append(Problem(f"Python {version}: JetPack 6's TensorRT module is for its Python 3.10",
                                "/usr/bin/python3 -m venv --system-site-packages .venv"))
    if "tensorrt" not in machine.modules:
        problems.append(Problem("TensorRT's Python module does not import here",
                                "sudo apt-get install python3-libnvinfer, in a venv made with "
                                "`/usr/bin/python3 -m venv --system-site-packages`"))
    problems += _cuda(machine, "TensorRT")
    if "onnxruntime" not in machine.modules:
        problems.append(Problem("ONNX Runtime is not installed (build --from checks the goldens with it)",
                                "pip install 'mnt[cpu]'"))
    if "dlib" not in machine.modules:
        problems.append(Problem("dlib is not installed (the human-face check)",
                                "pip install 'mnt[human-check]'"))
    return problems


def _triton(machine: Machine) -> list[Problem]:
    from mnt.runtime.serve.bls import HEADLESS_OPENCV

    problems = []
    if machine.tritonserver is None:
        problems.append(Problem("no tritonserver here: the repository is served from NVIDIA's image",
                                f"docker run --gpus all -it -v $PWD:/models {TRITON_IMAGE} (and run this "
                                "check inside it)"))
    if machine.opencv_error:
        problems.append(Problem(f"OpenCV does not import ({machine.opencv_error})", HEADLESS_OPENCV))
    if "dlib" not in machine.modules:
        problems.append(Problem("dlib is not installed (the stateful model's human-face check)",
                                "pip install 'mnt[human-check]'"))
    if machine.driver is None:
        problems.append(Problem("no NVIDIA driver visible: the components' KIND_GPU instances cannot load",
                                "start the container with --gpus all (or export with --kind cpu)"))
    return problems


def problems(target: str, machine: Machine | None = None) -> list[Problem]:
    """Every reason `machine` (this one by default) would not run mnt on `target`."""
    check = {"rtx": _rtx, "jetson": _jetson, "triton": _triton}[target]
    return check(machine or Machine.found())


def report(target: str, found: list[Problem]) -> dict[str, Any]:
    return {"target": target, "ready": not found, "problems": [asdict(p) for p in found]}


def format_report(target: str, found: list[Problem]) -> str:
    if not found:
        return f"--target {target}: nothing missing on this machine"
    lines = [f"--target {target}: {len(found)} reason(s) this machine would not run it:"]
    for p in found:
        lines += [f"  - {p.problem}", f"    fix: {p.fix}"]
    return "\n".join(lines)
