"""TensorRT backend: one component's engine on one CUDA stream, through cuda-python.

An engine is valid only for the TensorRT version and GPU compute capability it was built
for; `check_engine` refuses any other before TensorRT is touched, naming the command that
rebuilds it. Buffers (device, and pinned host memory for the copies) are allocated once
per binding of the dynamic axes (K = 1..8) and reused; with `cuda_graph` the enqueue of
each binding is captured once into a CUDA graph and replayed.

tensorrt and cuda-python are imported on activate(), never at import time.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnt.runtime.backends.base import Backend
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import sha256_file
from mnt.runtime.gpu import GpuProbe, cuda_runtime, probe_gpu, tensorrt_version
from mnt.runtime.manifest import ComponentInfo, EngineInfo

if TYPE_CHECKING:
    import tensorrt as trt


def rebuild_hint(folder: str | Path) -> str:
    return (f"rebuild the engines on this machine with `mnt-export build --from {folder}` "
            f"(or use --backend onnxruntime-cuda)")


def check_engine(info: ComponentInfo, folder: str | Path, gpu: GpuProbe,
                 installed_tensorrt: str | None) -> EngineInfo:
    """The component's engine entry if it can run here, else RuntimeStageError naming the
    mismatch (no engine, no GPU, no TensorRT, another GPU or another TensorRT)."""
    engine = info.engine
    hint = rebuild_hint(folder)
    if engine is None:
        raise RuntimeStageError(f"{folder}: {info.name} has no TensorRT engine", hint=hint)
    if not gpu.available:
        raise RuntimeStageError(f"the TensorRT backend needs a CUDA GPU: {gpu.reason}",
                                hint="use --backend onnxruntime-cpu")
    if installed_tensorrt is None:
        raise RuntimeStageError("the TensorRT backend needs TensorRT's Python module `tensorrt`",
                                hint="on a Jetson it comes with JetPack (python3-libnvinfer); "
                                     "elsewhere pip install tensorrt")
    if engine.compute_capability != gpu.compute_capability:
        raise RuntimeStageError(
            f"{Path(folder) / engine.file}: engine built "
            f"for GPU compute capability {engine.compute_capability}, this GPU ({gpu.name}) is "
            f"{gpu.compute_capability}", hint=hint)
    if engine.tensorrt_version != installed_tensorrt:
        raise RuntimeStageError(
            f"{Path(folder) / engine.file}: engine built with TensorRT {engine.tensorrt_version}, "
            f"this machine has TensorRT {installed_tensorrt}", hint=hint)
    return engine


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values): raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeStageError(f"CUDA {what} failed: {getattr(error, 'name', error)}")
    return values[0] if len(values) == 1 else values


@dataclass
class _Binding:
    """Buffers of one binding of the dynamic axes, and its captured graph if any."""

    host: dict[str, np.ndarray]
    device: dict[str, int]
    host_pointers: list[int]
    graph: Any = None
    graph_exec: Any = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class TensorRTBackend(Backend):
    def __init__(self, component: ComponentInfo, folder: str | Path, cuda_graph: bool = False,
                 device: int = 0) -> None:
        super().__init__(component)
        self.folder, self.cuda_graph, self.device = Path(folder), cuda_graph, device
        self.engine: trt.ICudaEngine | None = None
        self.context: trt.IExecutionContext | None = None
        self._runtime: trt.Runtime | None = None
        self._cudart: Any = None
        self._stream: Any = None
        self._bindings: dict[tuple[tuple[str, int], ...], _Binding] = {}

    def activate_impl(self) -> None:
        entry = check_engine(self.component, self.folder, probe_gpu(self.device), tensorrt_version())
        path = self.folder / entry.file
        if not path.is_file() or sha256_file(path) != entry.sha256:
            raise RuntimeStageError(f"{path} is missing or changed since the build",
                                    hint=rebuild_hint(self.folder))
        import tensorrt as trt

        self._cudart = cuda_runtime()
        _check(self._cudart.cudaSetDevice(self.device), "cudaSetDevice")
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeStageError(f"TensorRT could not load {path} (its log above says why)",
                                    hint=rebuild_hint(self.folder))
        self._check_io(trt, self.engine)
        self.context = self.engine.create_execution_context()
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _check_io(self, trt: Any, engine: trt.ICudaEngine) -> None:
        got = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            got[name] = (mode, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
        want = {t.name: ("input", t.dtype) for t in self.component.inputs}
        want.update({t.name: ("output", t.dtype) for t in self.component.outputs})
        if got != want:
            raise RuntimeStageError(f"{self.component.name}: the engine's tensors {got} differ from the "
                                    f"manifest's {want}", hint=rebuild_hint(self.folder))

    def infer_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        key = tuple(sorted(dims.items()))
        binding = self._bindings.get(key) or self._bind(key, ready)
        cudart, stream = self._cudart, self._stream
        h2d, d2h = (cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                    cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        for name, array in ready.items():
            np.copyto(binding.host[name], array)
            _check(cudart.cudaMemcpyAsync(binding.device[name], binding.host[name].ctypes.data,
                                          array.nbytes, h2d, stream), "copy to the GPU")
        if binding.graph_exec is not None:
            _check(cudart.cudaGraphLaunch(binding.graph_exec, stream), "cudaGraphLaunch")
        else:
            self._enqueue(binding)
        for name, array in binding.outputs.items():
            _check(cudart.cudaMemcpyAsync(array.ctypes.data, binding.device[name], array.nbytes, d2h,
                                          stream), "copy from the GPU")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return binding.outputs

    def _enqueue(self, binding: _Binding) -> None:
        assert self.context is not None
        for name, pointer in binding.device.items():
            self.context.set_tensor_address(name, pointer)
        for t in self.component.inputs:
            self.context.set_input_shape(t.name, binding.host[t.name].shape)
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeStageError(f"{self.component.name}: TensorRT failed to enqueue the engine")

    def _bind(self, key: tuple[tuple[str, int], ...], ready: Mapping[str, np.ndarray]) -> _Binding:
        """Allocate the buffers of one binding of the dynamic axes (and capture its graph)."""
        assert self.context is not None
        cudart = self._cudart
        shapes = {name: array.shape for name, array in ready.items()}
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise RuntimeStageError(f"{self.component.name}: the engine rejects input {name} of "
                                        f"shape {shape} (outside its optimisation profile)",
                                        hint=rebuild_hint(self.folder))
        for t in self.component.outputs:
            dims = self.context.get_tensor_shape(t.name)
            shapes[t.name] = tuple(int(dims[i]) for i in range(len(dims)))
        binding = _Binding(host={}, device={}, host_pointers=[])
        dtypes = {t.name: np.dtype(t.dtype) for t in (*self.component.inputs, *self.component.outputs)}
        for name, shape in shapes.items():
            nbytes = int(np.prod(shape)) * dtypes[name].itemsize
            binding.device[name] = int(_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))
            pointer = int(_check(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))  # pinned: async copies
            binding.host_pointers.append(pointer)
            raw = (ctypes.c_byte * nbytes).from_address(pointer)
            binding.host[name] = np.frombuffer(memoryview(raw).cast("B"), dtype=dtypes[name]).reshape(shape)
        binding.outputs = {t.name: binding.host[t.name] for t in self.component.outputs}
        self._bindings[key] = binding
        if self.cuda_graph:
            self._capture(binding)
        return binding

    def _capture(self, binding: _Binding) -> None:
        """Record one enqueue into a CUDA graph. TensorRT asks for one plain enqueue after a
        shape change before capturing, so its deferred set-up work stays out of the graph."""
        cudart, stream = self._cudart, self._stream
        self._enqueue(binding)
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        try:
            self._enqueue(binding)
        finally:
            binding.graph = _check(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        binding.graph_exec = _check(cudart.cudaGraphInstantiate(binding.graph, 0), "cudaGraphInstantiate")

    def deactivate_impl(self) -> None:
        cudart = self._cudart
        if cudart is not None:
            if self._stream is not None:
                cudart.cudaStreamSynchronize(self._stream)
            for binding in self._bindings.values():
                if binding.graph_exec is not None:
                    cudart.cudaGraphExecDestroy(binding.graph_exec)
                if binding.graph is not None:
                    cudart.cudaGraphDestroy(binding.graph)
                for pointer in binding.device.values():
                    cudart.cudaFree(pointer)
                for pointer in binding.host_pointers:
                    cudart.cudaFreeHost(pointer)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._bindings.clear()
        self._stream = None
        self.context = None  # the context before the engine, the engine before the runtime
        self.engine = None
        self._runtime = None
