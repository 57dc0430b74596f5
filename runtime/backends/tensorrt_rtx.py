"""TensorRT-RTX backend: engines built on any machine (no GPU needed) for a list of RTX
compute capabilities, compiled just-in-time for this GPU when first run.

The same engine API as TensorRT's (the base class does buffers, copies and profiles); what
differs is which module runs it, which engine of the component it takes, and the runtime
config every context is made from: it carries the runtime cache that keeps the
JIT-compiled kernels on disk between runs (one file per engine, under the cache folder), so
only the first run of an engine on a GPU pays for it, and with `cuda_graph` TensorRT-RTX's
own whole-graph capture. No capture is made here: TensorRT-RTX specialises dynamic-shape
kernels lazily (fallback kernels until the specialised ones are compiled), which a graph
captured by hand would freeze; its own strategy captures when the kernels are ready. The
engines are built with REQUIRE_USER_ALLOCATION, which that capture needs.

A runtime config, and the runtime cache with the config it came from, live as long as the
contexts made from them (the lane's `keep`, the backend's cache), and go before the engine.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from mnt.runtime.backends.tensorrt import TensorRTBackend
from mnt.runtime.defaults import cache_dir
from mnt.runtime.errors import MntError
from mnt.runtime.files import atomic_path


def runtime_cache_path(engine_sha256: str, compute_capability: str) -> Path:
    return cache_dir() / "tensorrt-rtx" / f"runtime-{engine_sha256[:24]}-sm{compute_capability}.cache"


class TensorRTRTXBackend(TensorRTBackend):
    RUNTIME = "tensorrt-rtx"
    RUNTIME_CAPTURES_GRAPHS = True  # cuda_graph: CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
    _runtime_cache: Any = None  # the engine's one cache, shared by its contexts
    _cache_config: Any = None  # the runtime config the cache was made from
    _cache_path: Path | None = None

    def _create_context(self, engine: Any, keep: list[Any]) -> Any:
        config = self._runtime_config(engine)
        if self.cuda_graph:
            config.cuda_graph_strategy = self._trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        keep.append(config)  # the context runs on its config for its whole life
        return engine.create_execution_context(config)

    def _runtime_config(self, engine: Any) -> Any:
        """A runtime config holding the engine's one runtime cache (read from disk once)."""
        if self._runtime_cache is None:
            self._cache_path = runtime_cache_path(self.component.engines[self.RUNTIME].sha256,
                                                  self._compute_capability())
            self._cache_config = engine.create_runtime_config()
            self._runtime_cache = self._cache_config.create_runtime_cache()
            if self._cache_path.is_file():
                self._runtime_cache.deserialize(self._cache_path.read_bytes())
        config = engine.create_runtime_config()
        config.set_runtime_cache(self._runtime_cache)
        return config

    def _compute_capability(self) -> str:
        from mnt.runtime.gpu import probe_gpu

        return probe_gpu(self.device).compute_capability.replace(".", "")

    def deactivate_impl(self) -> None:
        cache, path = self._runtime_cache, self._cache_path
        if cache is not None and path is not None:  # keep what the JIT compiled for the next run
            # (best effort: a cache that cannot be written costs only the next start's time)
            with contextlib.suppress(OSError, MntError):
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as temporary:
                    temporary.write_bytes(bytes(memoryview(cache.serialize())))
        super().deactivate_impl()  # contexts and their configs, then the cache (below), then the engine

    def _release_engine_objects(self) -> None:
        self._runtime_cache = self._cache_config = None
