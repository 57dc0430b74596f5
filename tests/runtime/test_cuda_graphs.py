"""TensorRTBackend(cuda_graph=True) against a fake cuda-python runtime and a fake TensorRT
engine that record what is called (no GPU): one execution context per captured graph on
one shared device-memory allocation, and a failed capture that falls back to plain enqueues
(the capture ended, its error cleared and kept), as trtexec does."""

from __future__ import annotations

import ctypes
import enum
import logging
import types
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

from mnt.runtime.backends import tensorrt as backend_module
from mnt.runtime.backends.tensorrt import TensorRTBackend
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import ComponentInfo, TensorInfo

INFO = ComponentInfo(name="generator", file="generator.onnx", sha256="2" * 64, precision="fp32",
                     phase="frame", inputs=(TensorInfo("x", "float32", ("K", 3)),),
                     outputs=(TensorInfo("y", "float32", ("K", 3)),), dims={"K": (1, 8)}, accuracy={})


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


OK = Err.cudaSuccess


class Handle:
    """A graph or graph exec: cuda-python's handles convert to int (0 is null)."""

    count = 0

    def __init__(self, ops: list) -> None:
        Handle.count += 1
        self.value, self.ops = 0x100 + Handle.count, ops

    def __int__(self) -> int:
        return self.value


class FakeCudart:
    """Device memory as bytearrays, pinned host memory as ctypes buffers, stream capture as a
    list of the enqueued work, and CUDA's last-error state."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h")
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local")

    def __init__(self) -> None:
        self.device: dict[int, bytearray] = {}
        self.host: dict[int, ctypes.Array] = {}
        self.next_pointer = 0x10000
        self.capturing: list | None = None
        self.last_error = OK
        self.end_capture_error: Err | None = None  # what cudaStreamEndCapture reports
        self.graphs: set[int] = set()
        self.execs: set[int] = set()
        self.calls: list[str] = []

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if name.startswith("cuda") and callable(value):  # every runtime call, in order
            object.__getattribute__(self, "calls").append(name)
        return value

    def cudaSetDevice(self, device):
        return (OK,)

    def cudaStreamCreate(self):
        return (OK, 77)

    def cudaStreamDestroy(self, stream):
        return (OK,)

    def cudaMalloc(self, nbytes):
        self.next_pointer += 0x1000 + nbytes
        self.device[self.next_pointer] = bytearray(nbytes)
        return (OK, self.next_pointer)

    def cudaFree(self, pointer):
        del self.device[pointer]
        return (OK,)

    def cudaMallocHost(self, nbytes):
        buffer = ctypes.create_string_buffer(nbytes)
        self.host[ctypes.addressof(buffer)] = buffer
        return (OK, ctypes.addressof(buffer))

    def cudaFreeHost(self, pointer):
        del self.host[pointer]
        return (OK,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        assert self.capturing is None, "copies stay outside the graph"
        if kind == "h2d":
            self.device[dst][:nbytes] = ctypes.string_at(src, nbytes)
        else:
            ctypes.memmove(dst, bytes(self.device[src][:nbytes]), nbytes)
        return (OK,)

    def cudaStreamSynchronize(self, stream):
        assert self.capturing is None, "synchronising a capturing stream is illegal"
        return (OK,)

    def cudaStreamBeginCapture(self, stream, mode):
        assert self.capturing is None
        self.capturing = []
        return (OK,)

    def cudaStreamEndCapture(self, stream):
        ops, self.capturing = self.capturing, None
        if self.end_capture_error is not None:
            self.last_error = self.end_capture_error
            return (self.end_capture_error, None)  # cuda-python gives None on an error
        graph = Handle(ops)
        self.graphs.add(int(graph))
        return (OK, graph)

    def cudaGraphInstantiate(self, graph, flags):
        graph_exec = Handle(graph.ops)
        self.execs.add(int(graph_exec))
        return (OK, graph_exec)

    def cudaGraphLaunch(self, graph_exec, stream):
        assert int(graph_exec) in self.execs
        for op in graph_exec.ops:
            op()
        return (OK,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.execs.remove(int(graph_exec))
        return (OK,)

    def cudaGraphDestroy(self, graph):
        self.graphs.remove(int(graph))
        return (OK,)

    def cudaGetLastError(self):
        error, self.last_error = self.last_error, OK
        return (error,)


class FakeContext:
    """y = 2 x + 1 over x's shape. A graph captured on this context replays the state the
    context had at capture: it notes a replay while the context holds other shapes."""

    def __init__(self, engine: FakeEngine, own_memory: bool) -> None:
        self.engine, self.cuda = engine, engine.cuda
        self.memory: int | str | None = "own" if own_memory else None
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.active_optimization_profile = 0

    def set_optimization_profile_async(self, profile, stream):
        self.active_optimization_profile, self.shapes = profile, {}  # shapes are set again after it
        return 0 <= profile < self.engine.num_optimization_profiles

    def set_device_memory(self, pointer, size):
        assert len(self.cuda.device[pointer]) >= size
        self.memory = pointer

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def execute_async_v3(self, stream):
        cuda, engine = self.cuda, self.engine
        if self.memory is None or cuda.last_error != OK:  # TensorRT's own error check sees a stale error
            return False
        if cuda.capturing is not None and engine.fail_capture:
            cuda.last_error = Err.cudaErrorStreamCaptureUnsupported
            cuda.end_capture_error = Err.cudaErrorStreamCaptureInvalidated
            return False
        shapes, addresses = dict(self.shapes), dict(self.addresses)
        low, _, high = self.engine.profile_range(self.active_optimization_profile)
        if not low <= shapes["x"][0] <= high:  # TensorRT refuses shapes outside the active profile
            return False

        def run() -> None:
            if self.shapes != shapes:
                engine.stale_replays.append((shapes, dict(self.shapes)))
            count = int(np.prod(shapes["x"]))
            x = np.frombuffer(bytes(cuda.device[addresses["x"]][:count * 4]), np.float32)
            cuda.device[addresses["y"]][:count * 4] = (x * 2 + 1).astype(np.float32).tobytes()
            engine.runs.append((id(self), shapes["x"]))

        if cuda.capturing is not None:
            cuda.capturing.append(run)
        else:
            run()
        return True


class FakeEngine:
    num_io_tensors = 2
    device_memory_size_v2 = 1 << 20
    ks = ((1, 1, 8),)  # (min, opt, max) K of each optimisation profile

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.ks)

    def profile_range(self, profile: int) -> tuple[int, int, int]:
        return self.ks[profile]

    def get_tensor_profile_shape(self, name, profile):
        return [(k, 3) for k in self.ks[profile]]

    def __init__(self, cuda: FakeCudart) -> None:
        self.cuda = cuda
        self.fail_capture = False
        self.contexts: list[weakref.ref] = []
        self.stale_replays: list = []
        self.runs: list = []

    def get_tensor_name(self, index):
        return ("x", "y")[index]

    def get_tensor_mode(self, name):
        return "input" if name == "x" else "output"

    def get_tensor_dtype(self, name):
        return "float"

    def _context(self, own_memory: bool) -> FakeContext:
        context = FakeContext(self, own_memory)
        self.contexts.append(weakref.ref(context))
        return context

    def create_execution_context(self, strategy="static"):
        return self._context(own_memory=strategy != "user-managed")


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """(cuda, engine, make): make(cuda_graph) -> an activated TensorRTBackend on the fakes."""
    cuda = FakeCudart()
    engine = FakeEngine(cuda)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Runtime = lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: engine)
    trt.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = lambda dtype: np.float32
    trt.ExecutionContextAllocationStrategy = SimpleNamespace(STATIC="static", USER_MANAGED="user-managed")
    trt.CudaGraphStrategy = SimpleNamespace(DISABLED="disabled", WHOLE_GRAPH_CAPTURE="whole-graph")
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    path = tmp_path / "generator.engine"
    path.write_bytes(b"engine")
    entry = SimpleNamespace(file=path.name, sha256=sha256_file(path))
    monkeypatch.setattr(backend_module, "check_engine", lambda *args, **kwargs: entry)
    monkeypatch.setattr(backend_module, "probe_gpu", lambda *args: None)
    monkeypatch.setattr(backend_module, "tensorrt_version", lambda *args: "10.3.0")
    monkeypatch.setattr(backend_module, "cuda_runtime", lambda: cuda)

    def make(cuda_graph: bool) -> TensorRTBackend:
        backend = TensorRTBackend(INFO, tmp_path, cuda_graph=cuda_graph)
        backend.activate()
        return backend

    return cuda, engine, make


def _x(k: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(k * 3, dtype=np.float32) + start).reshape(k, 3)


def test_each_binding_replays_the_graph_captured_on_its_own_context(fakes):
    cuda, engine, make = fakes
    backend = make(cuda_graph=True)
    for k, start in ((1, 0.0), (3, 10.0), (1, 5.0), (3, 1.0)):
        x = _x(k, start)
        np.testing.assert_array_equal(backend.infer({"x": x})["y"], x * 2 + 1)
    assert engine.stale_replays == []  # no graph replayed while its context held other shapes
    contexts = [ref() for ref in engine.contexts]
    assert len(contexts) == 2 and contexts[0] is not contexts[1]  # one per binding, none shared
    shared = {c.memory for c in contexts}
    assert len(shared) == 1 and next(iter(shared)) in cuda.device  # one allocation for all of them
    assert [c.shapes["x"] for c in contexts] == [(1, 3), (3, 3)]
    # two plain enqueues and one capture per binding, then the replays run on the K=1 and K=3 contexts
    assert [shape for _, shape in engine.runs] == [(1, 3), (1, 3), (3, 3), (3, 3), (1, 3), (3, 3)]
    assert [who for who, _ in engine.runs[-2:]] == [id(contexts[0]), id(contexts[1])]
    assert cuda.calls.count("cudaGraphLaunch") == 4 and len(cuda.execs) == 2
    del contexts, shared
    backend.deactivate()
    assert all(ref() is None for ref in engine.contexts)  # destroyed in deactivate
    assert cuda.device == {} and cuda.host == {} and not cuda.graphs and not cuda.execs


def test_without_cuda_graphs_one_context_runs_every_binding(fakes):
    cuda, engine, make = fakes
    backend = make(cuda_graph=False)
    for k in (1, 3, 1):
        np.testing.assert_array_equal(backend.infer({"x": _x(k)})["y"], _x(k) * 2 + 1)
    assert len(engine.contexts) == 1 and "cudaStreamBeginCapture" not in cuda.calls
    backend.deactivate()
    assert cuda.device == {} and cuda.host == {}


@pytest.mark.parametrize("failure", ["enqueue", "end_capture"])
def test_a_failed_capture_falls_back_to_plain_enqueues_and_keeps_its_cause(fakes, caplog, failure):
    cuda, engine, make = fakes
    backend = make(cuda_graph=True)
    if failure == "enqueue":  # TensorRT's enqueue fails inside the capture
        engine.fail_capture = True
        cause = "TensorRT failed to enqueue"
    else:  # the enqueue returned, but the capture was invalidated
        cuda.end_capture_error = Err.cudaErrorStreamCaptureInvalidated
        cause = "cudaErrorStreamCaptureInvalidated"
    with caplog.at_level(logging.WARNING, logger=backend_module.__name__):
        for start in (0.0, 7.0):  # the second call runs plain too, without capturing again
            np.testing.assert_array_equal(backend.infer({"x": _x(2, start)})["y"], _x(2, start) * 2 + 1)
    cuda.end_capture_error = None
    (binding,) = backend._bindings.values()
    assert binding.graph_exec is None and cause in binding.capture_error
    assert cuda.last_error == OK and "cudaGetLastError" in cuda.calls  # the capture's error was cleared
    assert cuda.calls.count("cudaStreamBeginCapture") == 1 and not cuda.graphs and not cuda.execs
    records = [r for r in caplog.records if "CUDA graph capture failed" in r.getMessage()]
    assert len(records) == 1 and cause in records[0].getMessage()
    engine.fail_capture = False  # another binding still gets its graph
    np.testing.assert_array_equal(backend.infer({"x": _x(4)})["y"], _x(4) * 2 + 1)
    assert len(cuda.execs) == 1
    backend.deactivate()
    assert cuda.device == {} and cuda.host == {}


class FakeRuntimeCache:
    def __init__(self) -> None:
        self.data = b""

    def deserialize(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+jit"  # what this run compiled, after what it was given


class FakeRuntimeConfig:
    def __init__(self) -> None:
        self.cache: FakeRuntimeCache | None = None
        self.strategy = "static"
        self.cuda_graph_strategy = "disabled"

    def create_runtime_cache(self) -> FakeRuntimeCache:
        return FakeRuntimeCache()

    def set_runtime_cache(self, cache: FakeRuntimeCache) -> None:
        self.cache = cache

    def set_execution_context_allocation_strategy(self, strategy: str) -> None:
        self.strategy = strategy


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_the_rtx_backend_keeps_its_jit_runtime_cache_on_disk(fakes, monkeypatch, tmp_path, cuda_graph):
    from dataclasses import replace

    from mnt.runtime import gpu
    from mnt.runtime.backends.tensorrt_rtx import TensorRTRTXBackend, runtime_cache_path
    from mnt.runtime.manifest import EngineInfo

    cuda, engine, _ = fakes
    monkeypatch.setitem(__import__("sys").modules, "tensorrt_rtx", __import__("sys").modules["tensorrt"])
    monkeypatch.setattr(gpu, "probe_gpu", lambda device=0: gpu.GpuProbe(1, "RTX 3090", "8.6"))
    configs: list[FakeRuntimeConfig] = []

    def runtime_config() -> FakeRuntimeConfig:
        configs.append(FakeRuntimeConfig())
        return configs[-1]

    def context(config: FakeRuntimeConfig) -> FakeContext:
        assert config.cache is not None  # every context compiles into (and from) the one cache
        return engine._context(own_memory=config.strategy != "user-managed")

    engine.create_runtime_config = runtime_config
    engine.create_execution_context = context
    rtx = EngineInfo("generator.rtx.engine", "ab" * 32, "1.7.1", "", None, "c" * 64, "native",
                     "tensorrt-rtx", ("8.6",))
    info = replace(INFO, engines={"tensorrt-rtx": rtx})
    path = runtime_cache_path(rtx.sha256, "86")
    path.unlink(missing_ok=True)
    for run in (1, 2):
        backend = TensorRTRTXBackend(info, tmp_path, cuda_graph=cuda_graph)
        backend.activate()
        for k in (1, 3):
            np.testing.assert_array_equal(backend.infer({"x": _x(k)})["y"], _x(k) * 2 + 1)
        caches = {id(c.cache) for c in configs if c.cache is not None}
        assert len(caches) == 1  # one runtime cache per engine, whatever the contexts
        assert "cudaStreamBeginCapture" not in cuda.calls  # TensorRT-RTX captures by itself
        backend.deactivate()
        assert path.read_bytes() == b"+jit" * run  # the second run started from the first's
        configs.clear()


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_each_state_has_its_own_lane_and_uploads_its_resident_inputs_once(fakes, cuda_graph):
    cuda, engine, make = fakes
    handles = iter(range(100, 200))
    cuda.cudaStreamCreate = lambda: (OK, next(handles))  # (the fake's own gives one handle for all)
    copies = []
    real_copy = cuda.cudaMemcpyAsync

    def copy(dst, src, nbytes, kind, stream):
        copies.append((kind, stream))
        return real_copy(dst, src, nbytes, kind, stream)

    cuda.cudaMemcpyAsync = copy
    backend = make(cuda_graph=cuda_graph)
    first, second = (backend.new_state(resident={"x": x}) for x in (_x(2), _x(3, 5.0)))
    for state, x, calls in ((first, _x(2), 3), (second, _x(3, 5.0), 2), (first, _x(2), 1)):
        for _ in range(calls):
            np.testing.assert_array_equal(backend.infer({}, state)["y"], x * 2 + 1)
    uploads = [stream for kind, stream in copies if kind == "h2d"]
    downloads = [stream for kind, stream in copies if kind == "d2h"]
    assert len(uploads) == 2 and len(set(uploads)) == 2  # once per state, each on its own stream
    assert len(downloads) == 6 and set(downloads) == set(uploads)
    assert first.moved_bytes == 0 and first.calls == 4
    first.close()
    second.close()
    backend.deactivate()
    assert cuda.device == {} and cuda.host == {}
    assert all(ref() is None for ref in engine.contexts)


def _rtx_backend(fakes, monkeypatch, tmp_path, cuda_graph: bool):
    """(backend, configs made, contexts made) of a TensorRTRTXBackend on the fakes, whose
    contexts note whether their runtime config is still alive when they run."""
    import gc
    import sys
    from dataclasses import replace

    from mnt.runtime import gpu
    from mnt.runtime.backends.tensorrt_rtx import TensorRTRTXBackend
    from mnt.runtime.manifest import EngineInfo

    cuda, engine, _ = fakes
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", sys.modules["tensorrt"])
    monkeypatch.setattr(gpu, "probe_gpu", lambda device=0: gpu.GpuProbe(1, "RTX 4090", "8.9"))
    monkeypatch.setenv("MNT_CACHE_DIR", str(tmp_path / "cache"))
    configs: list[weakref.ref] = []
    contexts: list[tuple[FakeContext, weakref.ref]] = []

    def runtime_config() -> FakeRuntimeConfig:
        config = FakeRuntimeConfig()
        configs.append(weakref.ref(config))
        return config

    def create(config: FakeRuntimeConfig) -> FakeContext:
        context = engine._context(own_memory=config.strategy != "user-managed")
        context.graphs = config.cuda_graph_strategy
        run, config_ref = context.execute_async_v3, weakref.ref(config)

        def execute(stream):
            gc.collect()
            assert config_ref() is not None, "a context ran after its runtime config was freed"
            return run(stream)

        context.execute_async_v3 = execute
        contexts.append((context, config_ref))
        return context

    engine.create_runtime_config = runtime_config
    engine.create_execution_context = create
    rtx = EngineInfo("generator.rtx.engine", "cd" * 32, "1.7.1", "", None, "c" * 64, "native",
                     "tensorrt-rtx", ("8.9",))
    info = replace(INFO, engines={"tensorrt-rtx": rtx})
    backend = TensorRTRTXBackend(info, tmp_path, cuda_graph=cuda_graph)
    backend.activate()
    return backend, configs, contexts


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_rtx_contexts_keep_their_runtime_config_and_graphs_are_tensorrt_rtxs_own(
        fakes, monkeypatch, tmp_path, cuda_graph):
    import gc

    cuda, engine, _ = fakes
    backend, configs, contexts = _rtx_backend(fakes, monkeypatch, tmp_path, cuda_graph)
    state = backend.new_state()
    for k in (1, 3, 1):
        np.testing.assert_array_equal(backend.infer({"x": _x(k)})["y"], _x(k) * 2 + 1)
        np.testing.assert_array_equal(backend.infer({"x": _x(k)}, state)["y"], _x(k) * 2 + 1)
    assert len(contexts) == 2  # one per lane: TensorRT-RTX re-captures per shape itself
    want = "whole-graph" if cuda_graph else "disabled"
    assert [c.graphs for c, _ in contexts] == [want, want]
    assert "cudaStreamBeginCapture" not in cuda.calls and not cuda.graphs
    gc.collect()
    assert all(ref() is not None for ref in configs)  # the cache's config too
    state.close()
    backend.deactivate()
    del contexts[:]
    gc.collect()
    assert all(ref() is None for ref in configs) and all(ref() is None for ref in engine.contexts)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_each_binding_runs_on_the_profile_whose_range_holds_its_k(fakes, cuda_graph):
    cuda, engine, make = fakes
    engine.ks = ((1, 1, 1), (2, 4, 4), (5, 8, 8))  # the builder's default split
    backend = make(cuda_graph=cuda_graph)
    for k in (1, 3, 8, 1, 4, 6):
        np.testing.assert_array_equal(backend.infer({"x": _x(k)})["y"], _x(k) * 2 + 1)
    assert {b.profile for b in backend._bindings.values()} == {0, 1, 2}
    assert {k[0][1]: b.profile for k, b in backend._bindings.items()} == {1: 0, 3: 1, 4: 1, 8: 2, 6: 2}
    backend.deactivate()
    assert cuda.device == {} and cuda.host == {}
