"""The CUDA kernels' timings on a GPU against PyTorch, through the loader and ctypes on
torch CUDA tensors; written to the JSON file named by $MNT_KERNEL_TIMINGS when it is set.
Their maths (against PyTorch and the host reference) is tested per op in test_warp.py and
test_cross_attention.py.

The library comes from $MNT_KERNELS_DIR, else it is built here with nvcc."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mnt.export.model.blocks import warp
from mnt.kernels.loader import DeviceKernels
from tests.kernels.implementations import device_kernels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

DTYPES = {"float32": torch.float32, "float16": torch.float16}
# Model-sized cases for timing: warp (N, C, H, W, f); attention (B, Lq, K, tokens, D).
WARP_TIMED = [(1, 64, 128, 128, 2), (1, 256, 32, 32, 8), (1, 512, 16, 16, 16), (8, 64, 64, 64, 4)]
ATTN_TIMED = [(1, 256, k, 256, 256) for k in (1, 4, 8)] + [(1, 64, k, 64, 512) for k in (1, 8)]
TIMINGS: list[dict] = []


@pytest.fixture(scope="module")
def kernels() -> DeviceKernels:
    return device_kernels()


@pytest.fixture(scope="module", autouse=True)
def write_timings():
    yield
    path = os.environ.get("MNT_KERNEL_TIMINGS")
    if path and TIMINGS:
        info = {"device": torch.cuda.get_device_name(),
                "capability": list(torch.cuda.get_device_capability()), "torch": torch.__version__,
                "cuda": torch.version.cuda, "timings": TIMINGS}
        Path(path).write_text(json.dumps(info, indent=2) + "\n")


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def run_warp(kernels: DeviceKernels, features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    dtype = {torch.float32: "float32", torch.float16: "float16"}[features.dtype]
    out = torch.empty_like(features)
    kernels.warp(dtype, features.data_ptr(), flow.data_ptr(), out.data_ptr(), tuple(features.shape),
                 tuple(flow.shape[2:]), _stream())
    return out


def run_attention(kernels: DeviceKernels, query: torch.Tensor, keys: torch.Tensor,
                  values: torch.Tensor) -> torch.Tensor:
    dtype = {torch.float32: "float32", torch.float16: "float16"}[query.dtype]
    (b, lq, d), lk, dv = query.shape, keys.shape[1], values.shape[2]
    out = torch.empty((b, lq, dv), dtype=query.dtype, device=query.device)
    kernels.cross_attention(dtype, query.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(),
                            b, lq, lk, d, dv, _stream())
    return out


def _time_us(fn, repeats: int = 20) -> tuple[float, float | None]:
    """(eager, graph) microseconds per call. Eager includes the Python/ctypes launch cost, so
    small kernels measure the host; replaying a CUDA graph of `repeats` calls measures the
    GPU alone (as TensorRT runs them). Graph is None where capture fails."""
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    eager = start.elapsed_time(end) * 1000.0 / repeats
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(repeats):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        return eager, start.elapsed_time(end) * 1000.0 / repeats
    except RuntimeError:
        torch.cuda.synchronize()
        return eager, None


def _record(op: str, dtype: str, shape: dict, ours: tuple[float, float | None],
            theirs: tuple[float, float | None], out: torch.Tensor, ref: torch.Tensor) -> None:
    graph_speedup = round(theirs[1] / ours[1], 2) if ours[1] and theirs[1] else None
    TIMINGS.append({"op": op, "dtype": dtype, "shape": shape,
                    "ours_graph_us": ours[1] and round(ours[1], 2),
                    "pytorch_graph_us": theirs[1] and round(theirs[1], 2), "graph_speedup": graph_speedup,
                    "ours_eager_us": round(ours[0], 2), "pytorch_eager_us": round(theirs[0], 2),
                    "max_abs_vs_pytorch": (out.float() - ref.float()).abs().max().item()})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", WARP_TIMED, ids=lambda s: "x".join(map(str, s)))
def test_warp_timing(kernels, shape, dtype):
    n, c, height, width, factor = shape
    features = torch.randn((n, c, height, width), device="cuda").to(DTYPES[dtype])
    flow = torch.randn((n, 2, height * factor, width * factor), device="cuda") * 0.2
    out = run_warp(kernels, features, flow)
    ref = warp(features, flow)
    ours = _time_us(lambda: run_warp(kernels, features, flow))
    theirs = _time_us(lambda: warp(features, flow))
    _record("warp", dtype, {"N": n, "C": c, "H": height, "W": width, "f": factor}, ours, theirs, out, ref)
    assert ours[0] > 0 and theirs[0] > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ATTN_TIMED, ids=lambda s: "-".join(map(str, s)))
def test_attention_timing(kernels, shape, dtype):
    b, lq, k, tokens, d = shape
    query = torch.randn((b, lq, d), device="cuda").to(DTYPES[dtype])
    keys = torch.randn((b, k * tokens, d), device="cuda").to(DTYPES[dtype])
    values = torch.randn((b, k * tokens, d), device="cuda").to(DTYPES[dtype])
    out = run_attention(kernels, query, keys, values)
    ref = F.scaled_dot_product_attention(query, keys, values)
    ours = _time_us(lambda: run_attention(kernels, query, keys, values))
    theirs = _time_us(lambda: F.scaled_dot_product_attention(query, keys, values))
    _record("cross_attention", dtype, {"B": b, "Lq": lq, "K": k, "tokens": tokens, "D": d}, ours, theirs,
            out, ref)
    assert ours[0] > 0 and theirs[0] > 0


# Launch the op PTX's kernels directly, as TensorRT's AOT plugins do (no host launcher, no
# host shape check), with shapes the contract refuses; in a subprocess, so a kernel that
# never finishes fails the test by its timeout instead of hanging the run.
_UNCHECKED = r'''
import ctypes, sys
import torch
try:
    from cuda.bindings import driver as cu
except ImportError:
    from cuda import cuda as cu

def ok(result):
    if int(result[0]) != 0:
        raise SystemExit(f"CUDA driver call failed: {result[0]}")
    return result[1] if len(result) > 1 else None

folder, case = sys.argv[1], sys.argv[2]
torch.zeros(1, device="cuda")  # the primary context, current on this thread
P, I = ctypes.c_void_p, ctypes.c_int
if case.startswith("attention"):
    d, dv = {"attention_no_tile": (4100, 4100), "attention_513": (513, 8)}[case]
    b, lq, lk = 1, 4, 4
    q, k, v = (torch.randn(s, device="cuda") for s in ((b, lq, d), (b, lk, d), (b, lk, dv)))
    out = torch.zeros((b, lq, dv), device="cuda")
    ptx, name, grid, block = "cross_attention.ptx", "mnt_cross_attention_kernel_f32", (1, b, 1), 128
    values = (q.data_ptr(), k.data_ptr(), v.data_ptr(), b, lq, lk, d, dv, out.data_ptr())
    args = (values, (P, P, P, I, I, I, I, I, P))
else:  # w != f * W
    features, flow = torch.randn((1, 2, 4, 4), device="cuda"), torch.zeros((1, 2, 8, 6), device="cuda")
    out = torch.zeros_like(features)
    ptx, name, grid, block = "warp.ptx", "mnt_warp_kernel_f32", (1, 1, 1), 256
    values = (features.data_ptr(), flow.data_ptr(), 1, 2, 4, 4, 8, 6, out.data_ptr())
    args = (values, (P, P, I, I, I, I, I, I, P))
module = ok(cu.cuModuleLoadData(open(f"{folder}/{ptx}", "rb").read() + b"\0"))
function = ok(cu.cuModuleGetFunction(module, name.encode()))
ok(cu.cuLaunchKernel(function, *grid, block, 1, 1, 0, 0, args, 0))
torch.cuda.synchronize()
print("all-nan" if bool(torch.isnan(out).all()) else f"not nan: {out.flatten()[:8].tolist()}")
'''


@pytest.mark.parametrize("case", ["attention_no_tile", "attention_513", "warp_w_not_f_times_W"])
def test_kernels_refuse_unchecked_shapes_with_nan(case):
    import importlib.util
    import subprocess
    import sys

    from tests.kernels.implementations import kernel_library

    if importlib.util.find_spec("cuda") is None:
        pytest.skip("launching PTX directly needs cuda-python")
    try:
        result = subprocess.run([sys.executable, "-c", _UNCHECKED, str(kernel_library()), case],
                                capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: the kernel did not finish within 120 s (a tile loop that never advances?)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "all-nan", result.stdout
