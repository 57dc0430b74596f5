"""What a benchmark needs to know about the machine: the processor, its theoretical FP32
peak, a measured matrix-multiply rate per backend and precision, versions and memory."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnt.runtime.gpu import probe_gpu
from mnt.runtime.versions import installed_versions

FMA_UNITS = 2  # per core: Zen 1-5 and Intel's server cores since Skylake-SP (gold/platinum)
MATMUL_SIZE = 2048  # 17.2 GFLOP per product: long enough to time, short enough for CI
PACKAGES = ("mnt", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "mediapipe", "numpy")


def _cpuinfo() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _max_clock_ghz(info: dict[str, str]) -> tuple[float | None, str]:
    """The highest advertised clock (cpufreq's maximum), else the one /proc/cpuinfo reports
    (a VM's nominal clock: boost may run above it)."""
    scaling = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(scaling.read_text()) / 1e6, "cpufreq maximum"
    except (OSError, ValueError):
        pass
    try:
        return float(info["cpu MHz"]) / 1e3, "/proc/cpuinfo (nominal; boost may exceed it)"
    except (KeyError, ValueError):
        return None, "unknown"


def cpu_facts() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ghz, clock_source = _max_clock_ghz(info)
    peak = cores * FMA_UNITS * lanes * 2 * ghz if ghz else None
    return {
        "model": info.get("model name", platform.processor() or platform.machine()),
        "cores": cores,
        "simd": "avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse",
        "clock_ghz": round(ghz, 3) if ghz else None,
        "clock_source": clock_source,
        "fp32_peak_gflops": round(peak, 1) if peak else None,
        "peak_formula": f"{cores} cores x {FMA_UNITS} FMA units x {lanes} lanes x 2 x clock",
    }


def gpu_facts() -> dict[str, Any] | None:
    """Name, compute capability and memory of GPU 0, or None (runtime.gpu's safe probe)."""
    gpu = probe_gpu()
    if not gpu.available:
        return None
    return {"name": gpu.name, "compute_capability": gpu.compute_capability, "memory_gib": gpu.memory_gib}


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), **installed_versions(PACKAGES)}


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc/self/status."""
    values = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) / 1024  # kB
    except OSError:
        pass
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def _best_rate(run, flop: float, repeats: int = 5) -> float:
    run()  # warm-up: thread pools, packing buffers
    best = min(_timed(run) for _ in range(repeats))
    return flop / best / 1e9


def _timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def torch_matmul_gflops(threads: int, n: int = MATMUL_SIZE) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return _best_rate(lambda: torch.mm(a, b), 2.0 * n**3)


def onnxruntime_matmul_gflops(device: str, dtype: str, threads: int, n: int = MATMUL_SIZE) -> float | None:
    """The rate of one MatMul node in ONNX Runtime on `device` in `dtype`; None when the
    provider is not there (a figure from another device would mislead)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info(x, elem, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", elem, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider])
    if provider not in session.get_providers():
        return None
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((n, n)).astype(dtype) for x in ("a", "b")}
    return _best_rate(lambda: session.run(None, feeds), 2.0 * n**3)
