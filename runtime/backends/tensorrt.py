"""TensorRT backend: one component's engine on one CUDA stream, through cuda-python.

An engine is valid only for the TensorRT version and GPU compute capability it was built
for; `check_engine` refuses any other before TensorRT is touched, naming the command that
rebuilds it. Buffers (device, and pinned host memory for the copies) are allocated once
per binding of the dynamic axes (K = 1..8) and reused; with `cuda_graph` the enqueue of
each binding is captured once into a CUDA graph and replayed. A graph replays the state its
execution context had at capture, so then each binding owns a context (all of them on one
shared device-memory allocation: they run one at a time on one stream), and a binding whose
capture fails runs plain enqueues instead, as trtexec does. (TensorRT-RTX captures whole
graphs itself: its backend sets that strategy instead of capturing.) An engine with several
optimisation profiles (K ranges) runs each binding on the profile whose range holds it.

The engine is shared; everything above is per stream (`_Lane`: its CUDA stream, context,
bindings and buffers), so streams with states of their own (`new_state`) run concurrently.
A state's resident inputs (a target state) are copied to the device once per binding, never
per call.

tensorrt and cuda-python are imported on activate(), never at import time.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnt.runtime.backends.base import Backend, BackendState
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import sha256_file
from mnt.runtime.gpu import GpuProbe, cuda_runtime, probe_gpu, tensorrt_version
from mnt.runtime.manifest import ComponentInfo, EngineInfo

if TYPE_CHECKING:
    import tensorrt as trt


# runtime -> (its Python module, how users name it, how to install it)
RUNTIMES = {
    "tensorrt": ("tensorrt", "TensorRT", "on a Jetson it comes with JetPack (python3-libnvinfer); "
                                         "elsewhere pip install tensorrt"),
    "tensorrt-rtx": ("tensorrt_rtx", "TensorRT-RTX", "pip install 'mnt[rtx]'"),
}


def rebuild_hint(folder: str | Path, runtime: str = "tensorrt") -> str:
    if runtime == "tensorrt-rtx":
        return (f"rebuild them for this GPU with `mnt-export build --from {folder} --engines tensorrt-rtx "
                f"--compute-capabilities CC` (on any machine)")
    return (f"rebuild the engines on this machine with `mnt-export build --from {folder}` "
            f"(or use --backend onnxruntime-cuda)")


def check_engine(info: ComponentInfo, folder: str | Path, gpu: GpuProbe,
                 installed: str | None, runtime: str = "tensorrt") -> EngineInfo:
    """The component's engine for `runtime` if it can run here, else RuntimeStageError
    naming the mismatch (no engine, no GPU, no TensorRT, another GPU or another version).
    `installed`: the version of the runtime's module here, or None."""
    _, label, install = RUNTIMES[runtime]
    engine = info.engines.get(runtime)
    hint = rebuild_hint(folder, runtime)
    if engine is None:
        raise RuntimeStageError(f"{folder}: {info.name} has no {label} engine", hint=hint)
    if not gpu.available:
        raise RuntimeStageError(f"the {label} backend needs a CUDA GPU: {gpu.reason}",
                                hint="use --backend onnxruntime-cpu")
    if installed is None:
        raise RuntimeStageError(f"the {label} backend needs {label}'s Python module `{RUNTIMES[runtime][0]}`",
                                hint=install)
    path = Path(folder) / engine.file
    if runtime == "tensorrt-rtx":
        if gpu.compute_capability not in engine.compute_capabilities:
            raise RuntimeStageError(
                f"{path}: engine built for GPUs of compute capability "
                f"{', '.join(engine.compute_capabilities)}; this GPU ({gpu.name}) is "
                f"{gpu.compute_capability}",
                hint=hint.replace("CC", gpu.compute_capability.replace(".", "")))
    elif engine.compute_capability != gpu.compute_capability:
        raise RuntimeStageError(
            f"{path}: engine built for GPU compute capability {engine.compute_capability}, this GPU "
            f"({gpu.name}) is {gpu.compute_capability}", hint=hint)
    if engine.tensorrt_version != installed:
        raise RuntimeStageError(
            f"{path}: engine built with {label} {engine.tensorrt_version}, this machine has {label} "
            f"{installed}", hint=hint)
    return engine


_log = logging.getLogger(__name__)


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values): raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeStageError(f"CUDA {what} failed: {getattr(error, 'name', error)}")
    return values[0] if len(values) == 1 else values


@dataclass
class _Binding:
    """Buffers of one binding of the dynamic axes; with CUDA graphs also its own execution
    context (its shapes never change) and its captured graph, or why the capture failed."""

    host: dict[str, np.ndarray]
    device: dict[str, int]
    host_pointers: list[int]
    context: Any = None  # None: the lane's one context (no manual CUDA graph capture)
    profile: int = 0  # the engine's optimisation profile whose ranges hold these shapes
    graph: Any = None
    graph_exec: Any = None
    capture_error: str | None = None  # the capture failed: plain enqueues on this binding
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    uploaded: set[str] = field(default_factory=set)  # resident inputs already on the device


@dataclass
class _Lane:
    """One stream's share of the engine: a CUDA stream, an execution context (None with
    CUDA graphs: then each binding has its own, on the lane's device memory) and bindings."""

    stream: Any
    context: Any = None
    bindings: dict[tuple[tuple[str, int], ...], _Binding] = field(default_factory=dict)
    context_memory: int | None = None  # what the bindings' contexts share (cuda_graph)
    context_memory_size: int = 0
    keep: list[Any] = field(default_factory=list)  # what its contexts need alive (runtime configs)


class TensorRTBackend(Backend):
    RUNTIME = "tensorrt"  # which engine of the component, and which module runs it (RUNTIMES)
    STATEFUL = True
    RUNTIME_CAPTURES_GRAPHS = False  # True: cuda_graph is the runtime's own strategy, not a capture here

    def __init__(self, component: ComponentInfo, folder: str | Path, cuda_graph: bool = False,
                 device: int = 0) -> None:
        super().__init__(component)
        self.folder, self.cuda_graph, self.device = Path(folder), cuda_graph, device
        self.engine: trt.ICudaEngine | None = None
        self._runtime: trt.Runtime | None = None
        self._cudart: Any = None
        self._lane: _Lane | None = None  # for calls without a state
        self._lanes_lock = threading.Lock()
        self._trt: Any = None  # the module that loaded the engine

    @property
    def _manual_capture(self) -> bool:
        return self.cuda_graph and not self.RUNTIME_CAPTURES_GRAPHS

    @property
    def _bindings(self) -> dict[tuple[tuple[str, int], ...], _Binding]:
        return self._lane.bindings if self._lane is not None else {}

    def activate_impl(self) -> None:
        module, label, _ = RUNTIMES[self.RUNTIME]
        entry = check_engine(self.component, self.folder, probe_gpu(self.device), tensorrt_version(module),
                             self.RUNTIME)
        path = self.folder / entry.file
        if not path.is_file() or sha256_file(path) != entry.sha256:
            raise RuntimeStageError(f"{path} is missing or changed since the build",
                                    hint=rebuild_hint(self.folder, self.RUNTIME))
        trt = importlib.import_module(module)

        self._cudart = cuda_runtime()
        _check(self._cudart.cudaSetDevice(self.device), "cudaSetDevice")
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeStageError(f"{label} could not load {path} (its log above says why)",
                                    hint=rebuild_hint(self.folder, self.RUNTIME))
        self._check_io(trt, self.engine)
        self._trt = trt
        self._lane = self._new_lane()

    def _new_lane(self) -> _Lane:
        assert self.engine is not None
        with self._lanes_lock:  # (TensorRT-RTX's contexts share one runtime cache, made on first use)
            _check(self._cudart.cudaSetDevice(self.device), "cudaSetDevice")  # (the calling thread's)
            lane = _Lane(stream=_check(self._cudart.cudaStreamCreate(), "cudaStreamCreate"))
            # With captured graphs each binding gets its own context instead (_binding_context).
            if not self._manual_capture:
                lane.context = self._create_context(self.engine, lane.keep)
            return lane

    def new_state_impl(self, state: BackendState) -> _Lane:
        return self._new_lane()

    def release_state_impl(self, state: BackendState) -> None:
        self._release_lane(state.impl)

    def _create_context(self, engine: Any, keep: list[Any]) -> Any:
        """An execution context of the engine (TensorRT-RTX adds its runtime config here, and
        puts it in `keep`, which lives as long as the context)."""
        return engine.create_execution_context()

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
                                    f"manifest's {want}", hint=rebuild_hint(self.folder, self.RUNTIME))

    def infer_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        assert self._lane is not None
        return self._run(ready, dims, self._lane, frozenset())

    def infer_state_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int],
                         state: BackendState) -> dict[str, np.ndarray]:
        return self._run(ready, dims, state.impl, frozenset(state.resident))

    def _run(self, ready: dict[str, np.ndarray], dims: dict[str, int], lane: _Lane,
             resident: frozenset[str]) -> dict[str, np.ndarray]:
        key = tuple(sorted(dims.items()))
        cudart, stream = self._cudart, lane.stream
        _check(cudart.cudaSetDevice(self.device), "cudaSetDevice")  # (per thread: streams run on any)
        binding = lane.bindings.get(key) or self._bind(lane, key, ready)
        h2d, d2h = (cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                    cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        for name, array in ready.items():
            if name in binding.uploaded:
                continue  # a resident input: on the device since this binding's first call
            np.copyto(binding.host[name], array)
            _check(cudart.cudaMemcpyAsync(binding.device[name], binding.host[name].ctypes.data,
                                          array.nbytes, h2d, stream), "copy to the GPU")
            if name in resident:
                binding.uploaded.add(name)
        if binding.graph_exec is not None:
            _check(cudart.cudaGraphLaunch(binding.graph_exec, stream), "cudaGraphLaunch")
        else:
            self._enqueue(lane, binding)
        for name, array in binding.outputs.items():
            _check(cudart.cudaMemcpyAsync(array.ctypes.data, binding.device[name], array.nbytes, d2h,
                                          stream), "copy from the GPU")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return binding.outputs

    def _enqueue(self, lane: _Lane, binding: _Binding) -> None:
        context = binding.context if binding.context is not None else lane.context
        assert context is not None
        self._use_profile(context, binding.profile, lane)
        for name, pointer in binding.device.items():
            context.set_tensor_address(name, pointer)
        for t in self.component.inputs:
            context.set_input_shape(t.name, binding.host[t.name].shape)
        if not context.execute_async_v3(int(lane.stream)):
            raise RuntimeStageError(f"{self.component.name}: TensorRT failed to enqueue the engine")

    def _bind(self, lane: _Lane, key: tuple[tuple[str, int], ...],
              ready: Mapping[str, np.ndarray]) -> _Binding:
        """Allocate the buffers of one binding of the dynamic axes (and, with CUDA graphs, its
        own context and graph)."""
        context = self._binding_context(lane) if self._manual_capture else lane.context
        assert context is not None
        cudart = self._cudart
        shapes = {name: array.shape for name, array in ready.items()}
        profile = self._profile_for(shapes)
        self._use_profile(context, profile, lane)
        for name, shape in shapes.items():
            if not context.set_input_shape(name, shape):
                raise RuntimeStageError(f"{self.component.name}: the engine rejects input {name} of "
                                        f"shape {shape} (outside its optimisation profile)",
                                        hint=rebuild_hint(self.folder, self.RUNTIME))
        for t in self.component.outputs:
            dims = context.get_tensor_shape(t.name)
            shapes[t.name] = tuple(int(dims[i]) for i in range(len(dims)))
        binding = _Binding(host={}, device={}, host_pointers=[],
                           context=context if self._manual_capture else None, profile=profile)
        dtypes = {t.name: np.dtype(t.dtype) for t in (*self.component.inputs, *self.component.outputs)}
        try:
            for name, shape in shapes.items():
                nbytes = int(np.prod(shape)) * dtypes[name].itemsize
                binding.device[name] = int(_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))
                pointer = int(_check(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))  # pinned: async copies
                binding.host_pointers.append(pointer)
                raw = memoryview((ctypes.c_byte * nbytes).from_address(pointer)).cast("B")
                binding.host[name] = np.frombuffer(raw, dtype=dtypes[name]).reshape(shape)
            binding.outputs = {t.name: binding.host[t.name] for t in self.component.outputs}
            if self._manual_capture:
                self._capture(lane, binding)
        except BaseException:  # nothing half-made stays cached: the next call starts over
            self._release(binding)
            raise
        lane.bindings[key] = binding
        return binding

    def _binding_context(self, lane: _Lane) -> Any:
        """A new execution context on the device memory all the lane's bindings' contexts
        share (sized for the engine's whole profile; they never run at the same time)."""
        assert self.engine is not None
        if lane.context_memory is None:
            size = int(self.engine.device_memory_size_v2)
            lane.context_memory = int(_check(self._cudart.cudaMalloc(max(size, 1)), "cudaMalloc"))
            lane.context_memory_size = size
        context = self._graph_context(self.engine, lane.keep)
        if context is None:
            raise RuntimeStageError(f"{self.component.name}: TensorRT could not create an execution context "
                                    "(its log above says why)")
        context.set_device_memory(lane.context_memory, lane.context_memory_size)
        return context

    def _profile_for(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        """The engine's optimisation profile whose ranges hold `shapes` (0 with one profile)."""
        assert self.engine is not None
        count = int(getattr(self.engine, "num_optimization_profiles", 1))
        if count <= 1:
            return 0
        for profile in range(count):
            fits = True
            for name, shape in shapes.items():
                low, _, high = (tuple(int(dims[i]) for i in range(len(dims)))
                                for dims in self.engine.get_tensor_profile_shape(name, profile))
                fits = fits and all(lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True))
            if fits:
                return profile
        raise RuntimeStageError(f"{self.component.name}: no optimisation profile of the engine holds "
                                f"inputs of shapes {dict(shapes)}",
                                hint=rebuild_hint(self.folder, self.RUNTIME))

    def _use_profile(self, context: Any, profile: int, lane: _Lane) -> None:
        """Switch `context` to `profile` (a no-op on one-profile engines); the shapes are set
        again after it, as TensorRT asks."""
        if profile != int(getattr(context, "active_optimization_profile", 0) or 0):
            if not context.set_optimization_profile_async(profile, int(lane.stream)):
                raise RuntimeStageError(
                    f"{self.component.name}: TensorRT refused optimisation profile {profile}")

    def _graph_context(self, engine: Any, keep: list[Any]) -> Any:
        """An execution context without device memory of its own, for one binding (the
        USER_MANAGED strategy: TensorRT >= 10.0 and TensorRT-RTX have it, unlike
        create_execution_context_without_device_memory)."""
        return engine.create_execution_context(self._trt.ExecutionContextAllocationStrategy.USER_MANAGED)

    def _capture(self, lane: _Lane, binding: _Binding) -> None:
        """Record one enqueue into a CUDA graph. TensorRT asks for one plain enqueue after a
        shape change before capturing, so its deferred set-up work stays out of the graph. A
        failed capture is ended and its error cleared, and the binding keeps plain enqueues
        (`capture_error` says why, as one log line does)."""
        cudart, stream = self._cudart, lane.stream
        self._enqueue(lane, binding)
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        failure = None
        try:
            self._enqueue(lane, binding)
        except Exception as err:  # the capture must end whatever went wrong
            failure = f"{type(err).__name__}: {err}"
        except BaseException:  # interrupted: never leave the stream capturing
            _, graph = cudart.cudaStreamEndCapture(stream)
            if graph is not None and int(graph) != 0:
                cudart.cudaGraphDestroy(graph)
            cudart.cudaGetLastError()
            raise
        error, graph = cudart.cudaStreamEndCapture(stream)
        if failure is None and int(error) != 0:
            failure = f"cudaStreamEndCapture failed: {getattr(error, 'name', error)}"
        if failure is None:
            error, graph_exec = cudart.cudaGraphInstantiate(graph, 0)
            if int(error) == 0:
                binding.graph, binding.graph_exec = graph, graph_exec
                return
            failure = f"cudaGraphInstantiate failed: {getattr(error, 'name', error)}"
        if graph is not None and int(graph) != 0:
            cudart.cudaGraphDestroy(graph)
        cudart.cudaGetLastError()  # a failed capture leaves its error for the next call to find
        binding.capture_error = failure
        shape = {t.name: binding.host[t.name].shape for t in self.component.inputs}
        _log.warning("%s: CUDA graph capture failed for inputs %s (%s); running them without a graph",
                     self.component.name, shape, failure)

    def _release(self, binding: _Binding) -> None:
        """Free one binding's graph, context and buffers."""
        cudart = self._cudart
        if binding.graph_exec is not None:
            cudart.cudaGraphExecDestroy(binding.graph_exec)
        if binding.graph is not None:
            cudart.cudaGraphDestroy(binding.graph)
        binding.graph = binding.graph_exec = None
        binding.context = None  # destroyed here, before the memory it runs on
        for pointer in binding.device.values():
            cudart.cudaFree(pointer)
        for pointer in binding.host_pointers:
            cudart.cudaFreeHost(pointer)
        binding.device, binding.host_pointers, binding.host, binding.outputs = {}, [], {}, {}

    def _release_engine_objects(self) -> None:
        """Drop what the engine made beyond contexts, before the engine (TensorRT-RTX: its
        runtime cache)."""

    def _release_lane(self, lane: _Lane) -> None:
        cudart = self._cudart
        if cudart is not None:
            cudart.cudaStreamSynchronize(lane.stream)
            for binding in lane.bindings.values():
                self._release(binding)
            if lane.context_memory is not None:
                cudart.cudaFree(lane.context_memory)
            cudart.cudaStreamDestroy(lane.stream)
        lane.bindings.clear()
        lane.context_memory = None
        lane.context = None  # the context before its runtime config, both before the engine
        lane.keep.clear()

    def deactivate_impl(self) -> None:
        if self._lane is not None:
            self._release_lane(self._lane)
        self._lane = None
        self._release_engine_objects()
        self.engine = None  # the engine before the runtime
        self._runtime = None
        self._trt = None
