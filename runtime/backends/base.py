"""The one backend interface every engine kind implements."""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.manifest import ComponentInfo


def resolve_shape(shape: tuple[int | str, ...], dims: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(dims[d] if isinstance(d, str) else d for d in shape)


class BackendState:
    """One stream's share of a backend (whisper.cpp's state beside its shared model): the
    inputs that stay the same for the stream's life (`resident`: a target state), given
    once and, on a GPU, uploaded once; and what the backend keeps per stream in `impl`
    (output buffers, IO bindings, an execution context and CUDA stream). Streams with
    states of their own run concurrently on one backend, from any threads."""

    def __init__(self, backend: Backend, resident: Mapping[str, np.ndarray]) -> None:
        self.backend = backend
        self.resident = dict(resident)
        self.impl: Any = None
        self.calls = 0
        self.moved_bytes = 0  # inputs handed to the engine by calls, the resident ones aside
        self.resident_bytes = sum(np.asarray(a).nbytes for a in self.resident.values())

    def close(self) -> None:
        if self.impl is not None:
            self.backend.release_state_impl(self)
            self.impl = None


class Backend(abc.ABC):
    """One component on one engine. `activate` loads it (slow, once), `infer` runs it,
    `deactivate` frees it. IO names, dtypes and shapes come from the manifest.

    Subclasses implement the `*_impl` methods; the checks every backend needs (activation,
    input names, shapes, dtypes and dynamic axes) are done here, once. A backend that keeps
    per-stream state (`STATEFUL`) implements `new_state_impl`, `infer_state_impl` and
    `release_state_impl`; calls with a state into any other are serialised and their
    outputs copied, so that streams are always safe, if not always concurrent."""

    STATEFUL = False

    def __init__(self, component: ComponentInfo) -> None:
        self.component = component
        self.is_active = False
        self._serial = threading.Lock()

    def activate(self) -> None:
        self.activate_impl()
        self.is_active = True

    def new_state(self, resident: Mapping[str, np.ndarray] | None = None) -> BackendState:
        """A stream's own state, with the inputs that stay the same for its life."""
        if not self.is_active:
            raise RuntimeStageError(f"{self.component.name}: backend used before activate()")
        names = {t.name for t in self.component.inputs}
        unknown = sorted(set(resident or {}) - names)
        if unknown:
            raise RuntimeStageError(f"{self.component.name}: resident inputs {unknown} are not inputs of it")
        state = BackendState(self, resident or {})
        if self.STATEFUL:
            state.impl = self.new_state_impl(state)
        return state

    def infer(self, feeds: Mapping[str, np.ndarray],
              state: BackendState | None = None) -> dict[str, np.ndarray]:
        """Run once. Without a state the returned arrays may be buffers reused by the next
        call (copy what must outlive it), and calls must not overlap; with a stream's state
        they are that stream's own, and calls from several streams may overlap."""
        if not self.is_active:
            raise RuntimeStageError(f"{self.component.name}: backend used before activate()")
        if state is None:
            ready, dims = self.prepare_feeds(feeds)
            return self.infer_impl(ready, dims)
        if state.backend is not self:
            raise RuntimeStageError(f"{self.component.name}: a state made by another backend")
        ready, dims = self.prepare_feeds({**state.resident, **feeds})
        state.calls += 1
        state.moved_bytes += sum(a.nbytes for n, a in ready.items() if n not in state.resident)
        if self.STATEFUL:
            return self.infer_state_impl(ready, dims, state)
        with self._serial:
            return {name: np.array(array) for name, array in self.infer_impl(ready, dims).items()}

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def new_state_impl(self, state: BackendState) -> Any:
        raise NotImplementedError

    def infer_state_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int],
                         state: BackendState) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def release_state_impl(self, state: BackendState) -> None:
        """Free what `new_state_impl` made (STATEFUL backends)."""
        raise NotImplementedError

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feeds: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        """`feeds`: checked and cast to the manifest's dtypes; `dims`: the dynamic axes' values."""

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def prepare_feeds(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                       dict[str, int]]:
        """Check feeds against the manifest, cast them to its dtypes, and bind the
        dynamic axes (e.g. K) to their values."""
        info = self.component
        missing = [t.name for t in info.inputs if t.name not in feeds]
        if missing:
            raise RuntimeStageError(f"{info.name}: missing inputs {missing}")
        dims: dict[str, int] = {}
        ready = {}
        for spec in info.inputs:
            array = np.asarray(feeds[spec.name])
            if array.ndim != len(spec.shape):
                raise RuntimeStageError(
                    f"{info.name}: input {spec.name} has shape {array.shape}, expected {spec.shape}")
            for size, want in zip(array.shape, spec.shape, strict=True):
                if isinstance(want, str):
                    lo, hi = info.dims[want]
                    if dims.setdefault(want, size) != size or not lo <= size <= hi:
                        raise RuntimeStageError(
                            f"{info.name}: input {spec.name} has {want}={size}; "
                            f"expected one value in {lo}..{hi} across inputs")
                elif size != want:
                    raise RuntimeStageError(
                        f"{info.name}: input {spec.name} has shape {array.shape}, expected {spec.shape}")
            ready[spec.name] = np.ascontiguousarray(array, dtype=spec.dtype)
        return ready, dims
