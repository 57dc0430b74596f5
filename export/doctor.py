"""`mnt-export doctor`: what this machine offers mnt, as data (`facts`) and as text.

Torch-free and safe without a GPU: versions come from package metadata, torch and
mediapipe are never imported, the GPU is asked through cuda-python only (never by making
a TensorRT or ONNX Runtime CUDA object), and every probe reports what it could not find
instead of failing, so that the command runs on a broken machine too."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnt.runtime.backends import registry
from mnt.runtime.cpu import int8_path
from mnt.runtime.gpu import (
    cuda_mismatch,
    cuda_python_version,
    cuda_version,
    driver_cuda_version,
    driver_release,
    probe_gpu,
    tensorrt_version,
)
from mnt.runtime.manifest import Manifest, load_manifest
from mnt.runtime.versions import installed_versions

NVCC_TIMEOUT_S = 20
# Package -> the distributions that may provide it (the first one installed is reported).
DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-lean"),
    "tensorrt_rtx": ("tensorrt-rtx-cu12", "tensorrt_rtx", "tensorrt-rtx"),
    "cuda-python": ("cuda-python", "cuda-bindings"),
    "mediapipe": ("mediapipe",),
    "dlib": ("dlib-bin", "dlib"),
}


def _distribution(names: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(distribution, version) of the first of `names` installed, else (None, None)."""
    return next(iter(installed_versions(names).items()), (None, None))


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # (a blocked or half-installed package)
        return False


def _attempt(probe: Callable[[], Any], fallback: Any) -> tuple[Any, str | None]:
    """(what `probe` returned, None), or (fallback, why it failed)."""
    try:
        return probe(), None
    except Exception as err:
        return fallback, f"{type(err).__name__}: {' '.join(str(err).split())}"


def _package(package: str, module: str | None = None) -> dict[str, Any]:
    """installed and version from metadata; `module`: also whether that module can be found
    (found, never imported)."""
    dist, found = _distribution(DISTRIBUTIONS[package])
    data: dict[str, Any] = {"installed": found is not None, "version": found, "distribution": dist}
    if module is not None:
        data["module_found"] = _has_module(module)
        data["installed"] = data["installed"] or data["module_found"]
    return data


def _onnxruntime() -> dict[str, Any]:
    data = _package("onnxruntime", "onnxruntime")
    data["providers"] = []
    if data["module_found"]:
        def ask() -> tuple[str, list[str]]:
            import onnxruntime as ort

            return str(ort.__version__), list(ort.get_available_providers())

        (found, providers), problem = _attempt(ask, (data["version"], []))
        data.update(version=found, providers=providers)
        if problem:
            data["problem"] = problem
    return data


def _tensorrt(module: str) -> dict[str, Any]:
    """TensorRT's or TensorRT-RTX's package (metadata) and module (imported: it constructs
    nothing, so this is safe without a GPU)."""
    data = _package(module)
    found, problem = _attempt(lambda: tensorrt_version(module), None)
    data.update(installed=data["installed"] or found is not None, importable=found is not None,
                version=found or data["version"])
    if problem:
        data["problem"] = problem
    return data


def _cuda_version(number: int | None) -> str | None:
    return f"{number // 1000}.{number % 1000 // 10}" if number else None


def _gpu() -> dict[str, Any]:
    probe, problem = _attempt(probe_gpu, None)
    data: dict[str, Any] = {"available": False, "count": 0, "name": "", "compute_capability": "",
                            "memory_gib": 0.0, "reason": problem or "", "driver": None, "runtime": None}
    if probe is not None:
        data.update(available=probe.available, count=probe.count, name=probe.name,
                    compute_capability=probe.compute_capability, memory_gib=probe.memory_gib,
                    reason=probe.reason)
    for which in ("driver", "runtime"):
        data[which] = _cuda_version(cuda_version(which))
    # the driver asked directly too: known without cuda-python, and when cuda-python is too new
    data["driver"] = data["driver"] or _cuda_version(_attempt(driver_cuda_version, None)[0])
    data["driver_release"] = _attempt(driver_release, None)[0]
    data["cuda_python"] = _attempt(cuda_python_version, None)[0]
    data["cuda_mismatch"] = _attempt(cuda_mismatch, None)[0]  # what to install when they disagree
    return data


def _cpu() -> dict[str, Any]:
    """ONNX Runtime's INT8 kernels on this CPU (runtime.cpu; /proc/cpuinfo on Linux)."""
    path = int8_path()
    return {"model": path.cpu, "int8_path": path.name, "saturates": path.saturates,
            "description": path.describe()}


def _nvcc() -> dict[str, Any]:
    from mnt.kernels.build import find_nvcc
    from mnt.kernels.errors import KernelError

    try:
        path = find_nvcc()
    except KernelError as err:
        return {"path": None, "release": None, "reason": str(err)}
    data: dict[str, Any] = {"path": str(path), "release": None, "reason": None}
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              timeout=NVCC_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        data["reason"] = f"`{path} --version` failed: {err}"
        return data
    lines = [line.strip() for line in done.stdout.splitlines() if "release" in line]
    if lines:
        data["release"] = lines[0]  # "Cuda compilation tools, release 12.6, V12.6.68"
    else:
        data["reason"] = f"`{path} --version` printed no release line (exit {done.returncode})"
    return data


def _backends(folder: Path | None, manifest: Manifest | None) -> dict[str, dict[str, Any]]:
    found = {}
    for name in registry.names()[1:]:
        reason, problem = _attempt(lambda n=name: registry.unavailable(n, folder, manifest), None)
        summary, _ = _attempt(lambda n=name: registry.kind(n).summary, None)
        reason = f"cannot tell ({problem})" if problem else reason
        found[name] = {"available": reason is None, "reason": reason, "summary": summary}
    return found


def _auto(folder: Path | None, manifest: Manifest | None) -> dict[str, Any]:
    (pick, passed), problem = _attempt(lambda: registry.pick_auto(folder, manifest), (None, {}))
    data = {"artifacts": None if folder is None else str(folder), "pick": pick, "passed_over": passed}
    if problem:
        data["problem"] = problem
    return data


def facts(artifacts: Path | None = None) -> dict[str, Any]:
    """Everything `doctor` reports. `artifacts`: a folder to judge the backends for (an
    unreadable one is an MntError: the user's argument is wrong)."""
    manifest = load_manifest(artifacts) if artifacts is not None else None
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "mnt": {"version": _distribution(("mnt",))[1]},
        "packages": {
            "numpy": _package("numpy"),
            "onnxruntime": _onnxruntime(),
            "torch": _package("torch"),  # metadata only: importing torch is what doctor must not do
            "onnx": _package("onnx"),
            "tensorrt": _tensorrt("tensorrt"),
            "tensorrt_rtx": _tensorrt("tensorrt_rtx"),
            "cuda-python": _package("cuda-python"),
            "mediapipe": _package("mediapipe", "mediapipe"),
            "dlib": _package("dlib", "dlib"),
        },
        "gpu": _gpu(),
        "cpu": _cpu(),
        "nvcc": _attempt(_nvcc, {"path": None, "release": None, "reason": "probe failed"})[0],
        "backends": _backends(artifacts, manifest),
        "auto": _auto(artifacts, manifest),
    }


def _package_line(name: str, data: dict[str, Any]) -> str:
    if not data["installed"]:
        text = "not installed"
    else:
        text = data["version"] or "installed (version unknown)"
        if data.get("providers"):
            text += f" (providers: {', '.join(data['providers'])})"
        if name == "torch":
            text += " (not imported)"
        if data.get("importable") is False:
            text += " (does not import)"
    if data.get("problem"):
        text += f"; {data['problem']}"
    return f"  {name:<14}{text}"


def format_facts(found: dict[str, Any]) -> str:
    python, gpu, nvcc, auto = found["python"], found["gpu"], found["nvcc"], found["auto"]
    lines = [f"mnt {found['mnt']['version'] or '(not installed)'} on Python {python['version']} "
             f"({python['executable']})", "packages:"]
    lines += [_package_line(name, data) for name, data in found["packages"].items()]
    if gpu["available"]:
        card = (f"{gpu['name']} (compute capability {gpu['compute_capability']}, "
                f"{gpu['memory_gib']} GiB; {gpu['count']} GPU(s))")
    else:
        card = f"none ({gpu['reason']})"
    release = f" ({gpu['driver_release']})" if gpu.get("driver_release") else ""
    lines.append(f"GPU: {card}; CUDA driver {gpu['driver'] or 'none'}{release}, cuda-python "
                 f"{gpu.get('cuda_python') or 'not installed'} (CUDA runtime {gpu['runtime'] or 'none'})")
    if gpu.get("cuda_mismatch"):
        lines.append(f"  {gpu['cuda_mismatch']}")
    lines.append(f"CPU: {found['cpu']['model'] or 'unnamed'}; INT8 path {found['cpu']['description']}")
    if nvcc["release"]:
        lines.append(f"nvcc: {nvcc['path']}, {nvcc['release']}")
    else:
        reason = f" ({nvcc['reason']})" if nvcc["reason"] else ""
        lines.append(f"nvcc: {nvcc['path'] or 'not found'}{reason}")
    lines.append("backends:")
    width = max(map(len, found["backends"]), default=0) + 2
    for name, data in found["backends"].items():
        lines.append(f"  {name:<{width}}" + ("available" if data["available"] else f"no: {data['reason']}"))
    where = f"for {auto['artifacts']}" if auto["artifacts"] else "without a folder"
    if auto["pick"] is None:
        lines.append(f"--backend auto ({where}): cannot tell ({auto.get('problem')})")
    else:
        lines.append(f"--backend auto ({where}) picks {auto['pick']}"
                     + ("; passed over:" if auto["passed_over"] else ""))
        lines += [f"  {name}: {reason}" for name, reason in auto["passed_over"].items()]
    return "\n".join(lines)
