"""The implementations of each custom op, for the per-op test modules (test_warp.py,
test_cross_attention.py) and the GPU timings: the host reference (the C++ host build),
the ONNX function (runtime/backends/mnt_ops.py in ONNX Runtime, on a one-node model), the
CUDA kernel (a GPU) and the TensorRT plugin (TensorRT and a GPU). Each runs numpy inputs in
spec order and returns the numpy output; one that cannot run here skips with the reason.

Only numpy, torch and mnt.kernels at import: tests/kernels/gpu_check.sh collects these
modules on a GPU machine that may lack onnx, onnxruntime or TensorRT.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mnt.kernels.spec import check_shapes, dtypes, launch, names, onnx_name, op_spec, shape_symbols
from tests.tolerances import KERNEL_GPU_FACTOR

NAMES = ("host", "onnx", "cuda", "tensorrt")
Run = Callable[[str, Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Implementation:
    name: str
    run: Run  # (kernel op, inputs in spec order) -> output
    fp32_factor: float  # on the FP32 bounds: CUDA's expf on the GPU (tests/tolerances.py)
    close: Callable[[], None] = lambda: None


def params() -> list[Any]:
    """The implementations as pytest params, the GPU ones marked (gpu_check.sh selects them)."""
    return [pytest.param("host", id="host"), pytest.param("onnx", id="onnx"),
            pytest.param("cuda", id="cuda", marks=pytest.mark.gpu),
            pytest.param("tensorrt", id="tensorrt", marks=pytest.mark.tensorrt)]


def implementation(name: str, folder: Path, bounds: dict[str, dict[str, int]]) -> Implementation:
    """`name` ready to run (or pytest.skip), writing its files under `folder`. `bounds`: per
    kernel op, the largest value of each shape symbol the tests use (TensorRT's profile)."""
    if name == "host":
        from mnt.kernels.loader import host_library

        host = host_library()
        return Implementation(name, lambda op, inputs: host.run(op, *inputs), 1.0)
    if name == "onnx":
        return Implementation(name, _onnx_runner(folder), 1.0)
    if name == "cuda":
        return Implementation(name, _cuda_runner(), KERNEL_GPU_FACTOR)
    if name == "tensorrt":  # the same kernels, launched by TensorRT from their PTX
        run, close = _tensorrt_runner(folder, bounds)
        return Implementation(name, run, KERNEL_GPU_FACTOR, close)
    raise ValueError(f"unknown implementation {name!r}")


def symbol_bounds(op: str, cases: Iterable[Sequence[Sequence[int]]]) -> dict[str, int]:
    """Symbol -> its largest value over `cases` (each the op's input shapes)."""
    spec, bounds = op_spec(op), {}
    for shapes in cases:
        for symbol, value in shape_symbols(spec, shapes).items():
            bounds[symbol] = max(bounds.get(symbol, 1), int(value))
    return bounds


def _storage(spec: dict[str, Any], inputs: Sequence[np.ndarray]) -> str:
    storage = inputs[0].dtype.name
    assert storage in dtypes(spec), storage
    return storage


def _tensor_infos(spec: dict[str, Any], side: str, storage: str) -> tuple:
    """The manifest's view of the op's inputs or outputs, every axis its spec symbol."""
    from mnt.runtime.manifest import TensorInfo

    return tuple(TensorInfo(t["name"], storage if t["dtype"] in spec["type_constraints"] else t["dtype"],
                            tuple(t["shape"])) for t in spec[side])


def _one_node_component(folder: Path, op: str, storage: str, dims: dict[str, tuple[int, int]]) -> Any:
    """A graph of the op's single custom node, saved bare (as the plugin build writes it),
    and its manifest entry; every axis named by a spec symbol is dynamic over `dims`."""
    import onnx
    from onnx import TensorProto, helper

    from mnt.runtime.manifest import ComponentInfo

    spec = op_spec(op)
    onnx_types = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}

    inputs, outputs = _tensor_infos(spec, "inputs", storage), _tensor_infos(spec, "outputs", storage)
    node = helper.make_node(spec["op"], names(spec["inputs"]), names(spec["outputs"]), domain=spec["domain"])
    graph = helper.make_graph([node], spec["op"],
                              [helper.make_tensor_value_info(t.name, onnx_types[t.dtype], list(t.shape))
                               for t in inputs],
                              [helper.make_tensor_value_info(t.name, onnx_types[t.dtype], list(t.shape))
                               for t in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid(spec["domain"], spec["version"])])
    name = f"{op}_{storage}_{len(list(folder.glob('*.onnx')))}"
    onnx.save(model, str(folder / f"{name}.onnx"))
    return ComponentInfo(name, f"{name}.onnx", "-", "fp16" if storage == "float16" else "fp32", "frame",
                         inputs, outputs, dims, {}, custom_ops={onnx_name(spec): 1})


def _onnx_runner(folder: Path) -> Run:
    pytest.importorskip("onnx", reason="the ONNX function test builds its model with onnx")
    pytest.importorskip("onnxruntime", reason="the ONNX function runs in onnxruntime")
    from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend

    def run(op: str, inputs: Sequence[np.ndarray]) -> np.ndarray:
        spec = op_spec(op)
        # Every axis a dynamic symbol, as in the exported graphs (K, keys): the function
        # reads its sizes (Warp's pooling factor) from the shapes at run time.
        symbols = shape_symbols(spec, [x.shape for x in inputs])
        info = _one_node_component(folder, op, _storage(spec, inputs), {s: (1, 2**31 - 1) for s in symbols})
        feeds = dict(zip(names(spec["inputs"]), inputs, strict=True))
        with OnnxRuntimeBackend(info, folder) as backend:
            return backend.infer(feeds)[spec["outputs"][0]["name"]]

    return run


_library: list[Path] = []  # one kernel library per process: TensorRT registers one folder only


def kernel_library() -> Path:
    """$MNT_KERNELS_DIR, else a library built here with nvcc (once per process)."""
    if os.environ.get("MNT_KERNELS_DIR"):
        return Path(os.environ["MNT_KERNELS_DIR"])
    if not _library:
        from mnt.kernels.build import build_kernels

        folder = Path(tempfile.mkdtemp(prefix="mnt-kernels-")) / "lib"
        build_kernels(folder, log=lambda line: None)
        _library.append(folder)
    return _library[0]


def _needs_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")


def device_kernels() -> Any:
    _needs_gpu()
    from mnt.kernels.loader import device_library

    return device_library(kernel_library())


def _cuda_runner() -> Run:
    kernels = device_kernels()

    def run(op: str, inputs: Sequence[np.ndarray]) -> np.ndarray:
        spec = op_spec(op)
        storage = _storage(spec, inputs)
        planned = launch(spec, storage, [x.shape for x in inputs])  # the plugin's view of the launch
        symbols = check_shapes(spec, [x.shape for x in inputs])
        device = [torch.from_numpy(np.ascontiguousarray(x)).cuda() for x in inputs]
        (output,) = spec["outputs"]
        out = torch.empty([symbols[s] if isinstance(s, str) else s for s in output["shape"]],
                          dtype=device[0].dtype, device="cuda")
        kernels.launch(op, storage, [x.data_ptr() for x in device] + [out.data_ptr()], list(planned.scalars),
                       torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        return out.cpu().numpy()

    return run


def _tensorrt_runner(folder: Path, bounds: dict[str, dict[str, int]]) -> tuple[Run, Callable[[], None]]:
    try:
        from mnt.export.tensorrt.builder import engines_unavailable
    except ImportError as err:
        pytest.skip(f"needs TensorRT and a GPU: the TensorRT builder does not import ({err})")
    reason = engines_unavailable()
    if reason:
        pytest.skip(f"needs TensorRT and a GPU: {reason}")
    pytest.importorskip("onnx", reason="the TensorRT plugin test builds its model with onnx")
    from dataclasses import replace

    from mnt.export.tensorrt.builder import EngineSettings, build_engine, current_target
    from mnt.export.tensorrt.plugins import load_plugin_kernels, register_plugins
    from mnt.runtime.backends.tensorrt import TensorRTBackend

    library = load_plugin_kernels(kernel_library())
    target = current_target()
    backends: dict[tuple[str, str], Any] = {}

    def run(op: str, inputs: Sequence[np.ndarray]) -> np.ndarray:
        spec = op_spec(op)
        storage = _storage(spec, inputs)
        if (op, storage) not in backends:  # one engine per op and dtype, dynamic over the tests' shapes
            info = _one_node_component(folder, op, storage, {s: (1, v) for s, v in bounds[op].items()})
            entry = build_engine(folder / info.file, info, EngineSettings(ops="plugins"), target,
                                 folder / f"{info.name}.engine", library.sha256,
                                 lambda: register_plugins(library), log=lambda line: None)
            backend = TensorRTBackend(replace(info, engines={"tensorrt": entry}), folder)
            backend.activate()
            backends[op, storage] = backend
        feeds = dict(zip(names(spec["inputs"]), inputs, strict=True))
        return backends[op, storage].infer(feeds)[spec["outputs"][0]["name"]]

    def close() -> None:
        for backend in backends.values():
            backend.deactivate()

    return run, close


# --- comparisons ------------------------------------------------------------------------------

def f16_excess_ulp(out: np.ndarray, ref: np.ndarray, f32_abs: float) -> float:
    """Max of |out - ref| in FP16 steps of ref, after allowing the FP32 bound."""
    ref = ref.astype(np.float64)
    step = np.spacing(np.abs(ref).astype(np.float16)).astype(np.float64)
    excess = np.maximum(np.abs(out.astype(np.float64) - ref) - f32_abs, 0.0) / step
    return float(excess.max())


def max_abs(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max())
