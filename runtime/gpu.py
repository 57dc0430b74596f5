"""Is there a CUDA GPU here, and which? A probe that never crashes.

It asks the CUDA runtime through cuda-python (`cudaGetDeviceCount`, which returns an error
code without a driver). Never probe by constructing a TensorRT runtime or builder or an
ONNX Runtime CUDA session: without a GPU the first can segfault, the second silently
falls back to the CPU.

cuda-python's major version is the CUDA it was built for, and its runtime needs a driver
of at least that CUDA (cuda-python 13 needs driver 580.65; JetPack 6 has 540, CUDA 12.6).
The driver's own CUDA version is asked of the driver library (`cuDriverGetVersion`
through ctypes), so a refusal can say which cuda-python fits it even when cuda-python is
missing or too new.
"""

from __future__ import annotations

import ctypes
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mnt.runtime.versions import installed_versions

# The oldest cuda-python mnt runs on (cuda.cudart; cuda.bindings.runtime from 12.6).
CUDA_PYTHON_MIN = "12.4"


@dataclass(frozen=True)
class GpuProbe:
    """What the probe found. `reason` says why there is no GPU (empty when there is one)."""

    count: int
    name: str = ""
    compute_capability: str = ""  # "8.7" (Jetson Orin), "8.9", "9.0", ...
    memory_gib: float = 0.0
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.count > 0


def cuda_runtime() -> ModuleType | None:
    """cuda-python's runtime module: `cuda.bindings.runtime` (cuda-python >= 12.6), else the
    older `cuda.cudart`; None when cuda-python is not installed."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def cuda_version(which: str = "driver") -> int | None:
    """The CUDA version of the installed driver ("driver") or of cuda-python's runtime
    ("runtime"), as CUDA writes it (12060 for 12.6); None without a driver or cuda-python."""
    cudart = cuda_runtime()
    if cudart is None:
        return None
    call = {"driver": "cudaDriverGetVersion", "runtime": "cudaRuntimeGetVersion"}[which]
    try:
        error, found = getattr(cudart, call)()
    except Exception:  # a broken CUDA install raises from inside the bindings
        return None
    return int(found) if int(error) == 0 and int(found) > 0 else None


def driver_cuda_version() -> int | None:
    """The CUDA version the installed driver supports (12060 for 12.6), from the driver
    library itself; None without a driver. Needs no cuda-python and never raises."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            library = ctypes.CDLL(name)
            found = ctypes.c_int(0)
            error = library.cuDriverGetVersion(ctypes.byref(found))
        except (OSError, AttributeError):
            continue
        return found.value if error == 0 and found.value > 0 else None
    return None


def driver_release() -> str | None:
    """The NVIDIA kernel driver's release ("540.4.0"), where Linux says it (not on a Jetson,
    whose driver is part of L4T, nor on Windows)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for [^ ]+)?\s+([0-9][0-9.]+)", text)
    return found.group(1) if found else None


def cuda_python_version() -> str | None:
    """cuda-python's version from metadata (its bindings' wheel first: cuda-python >= 12.6
    is a metapackage of cuda-bindings of the same version); None when not installed."""
    return next(iter(installed_versions(("cuda-bindings", "cuda-python")).values()), None)


def cuda_python_requirement(driver: int | None) -> str:
    """The cuda-python requirement that fits a driver of CUDA version `driver` (its major
    version at most; unknown driver: CUDA 12, which every driver since 525.60 runs)."""
    major = max(driver // 1000, 12) if driver else 12
    return f"cuda-python>={CUDA_PYTHON_MIN},<{major + 1}"


def install_cuda_python(driver: int | None) -> str:
    """The command that installs the fitting cuda-python (only it: never an extra, which
    could bring onnxruntime-gpu beside an installed onnxruntime)."""
    return f"pip install '{cuda_python_requirement(driver)}'"


def cuda_mismatch(driver: int | None = None, installed: str | None = None) -> str | None:
    """Why the installed cuda-python cannot run on this driver, with the fix; None when it
    fits or either is unknown. `driver`/`installed`: as found here when left out."""
    driver = driver_cuda_version() if driver is None else driver
    installed = cuda_python_version() if installed is None else installed
    if not driver or not installed:
        return None
    try:
        major = int(installed.split(".")[0])
    except ValueError:
        return None
    if major * 1000 <= driver:
        return None
    return (f"cuda-python {installed} needs a driver for CUDA {major}"
            f"{' (580.65 or newer)' if major == 13 else ''}, this driver supports CUDA "
            f"{driver // 1000}.{driver % 1000 // 10}: {install_cuda_python(driver)}")


def probe_gpu(device: int = 0) -> GpuProbe:
    cudart = cuda_runtime()
    if cudart is None:
        return GpuProbe(0, reason="cuda-python is not installed "
                                  f"({install_cuda_python(driver_cuda_version())})")
    try:
        error, count = cudart.cudaGetDeviceCount()
        if int(error) != 0:
            mismatch = cuda_mismatch()
            if mismatch:
                return GpuProbe(0, reason=mismatch)
            return GpuProbe(0, reason=f"no usable CUDA driver or GPU ({_error_name(error)})")
        if count < 1:
            return GpuProbe(0, reason="the CUDA driver sees no GPU")
        if device >= count:
            return GpuProbe(0, reason=f"GPU {device} requested, {count} present")
        error, props = cudart.cudaGetDeviceProperties(device)
        if int(error) != 0:
            return GpuProbe(0, reason=f"cannot read the properties of GPU {device} ({_error_name(error)})")
    except Exception as err:  # a broken CUDA install raises from inside the bindings
        return GpuProbe(0, reason=f"the CUDA runtime failed: {err}")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuProbe(count, name=name.strip("\0 "), compute_capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.totalGlobalMem / 2**30, 1))


def _error_name(error: object) -> str:
    return getattr(error, "name", None) or str(error)


def tensorrt_version(module: str = "tensorrt") -> str | None:
    """The installed TensorRT's version (or TensorRT-RTX's: module "tensorrt_rtx"), or None.
    Importing either is safe without a GPU; constructing its Runtime or Builder is not, so
    nothing is constructed here."""
    try:
        found = importlib.import_module(module)
    except ImportError:  # (or tensorrt-lean alone, whose module is tensorrt_lean)
        return None
    return str(found.__version__)
