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
    `deactivate` frees it. IO names, dtypes and shapes come from the manifest.

    Subclasses implement the `*_impl` methods; the checks every backend needs (activation,
    input names, shapes, dtypes and dynamic axes) are done here, once."""

    def __init__(self, component: ComponentInfo) -> None:
        self.component = component
        self.is_active = False

    def activate(self) -> None:
        self.activate_impl()
        self.is_active = True

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. The returned arrays may be buffers reused by the next call: copy
        what must outlive it."""
        if not self.is_active:
            raise RuntimeStageError(f"{self.component.name}: backend used before activate()")
        ready, dims = self.prepare_feeds(feeds)
        return self.infer_impl(ready, dims)

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

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
