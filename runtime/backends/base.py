"""The one backend interface every engine kind implements."""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.manifest import ComponentInfo


def resolve_shape(shape: tuple[int | str, ...], dims: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(dims[d] if isinstance(d, str) else d for d in shape)


class Backend(abc.ABC):
    """One component on one engine. `activate` loads it (slow, once), `infer` runs it,
    `deactivate` frees it. IO names, dtypes and shapes come from the manifest."""

    def __init__(self, component: ComponentInfo) -> None:
        self.component = component

    @abc.abstractmethod
    def activate(self) -> None: ...

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. The returned arrays may be buffers reused by the next call: copy
        what must outlive it."""

    @abc.abstractmethod
    def deactivate(self) -> None: ...

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
