"""Is there a CUDA GPU here, and which? A probe that never crashes.

It asks the CUDA runtime through cuda-python (`cudaGetDeviceCount`, which returns an error
code without a driver). Never probe by constructing a TensorRT runtime or builder or an
ONNX Runtime CUDA session: without a GPU the first can segfault, the second silently
falls back to the CPU.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


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


def probe_gpu(device: int = 0) -> GpuProbe:
    cudart = cuda_runtime()
    if cudart is None:
        return GpuProbe(0, reason="cuda-python is not installed (pip install 'mnt[gpu]')")
    try:
        error, count = cudart.cudaGetDeviceCount()
        if int(error) != 0:
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
