"""The one list of backends: name -> how to make one per component, and why it cannot run
here. `--backend` choices, `auto`, `mnt-bench`, `mnt-export doctor` and the engine build
all read it.

Backends that live outside the runtime (the PyTorch reference, "torch") come from the
`mnt.backends` entry points as `BackendKind` objects, so that the runtime never imports
them. Nothing here imports onnxruntime, TensorRT or torch to answer `unavailable`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mnt.runtime.backends.base import Backend
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.gpu import probe_gpu, tensorrt_version
from mnt.runtime.manifest import Manifest

AUTO = "auto"
ENTRY_POINTS = "mnt.backends"
ORT_HINT = "pip install 'mnt[cpu]' (or 'mnt[gpu]' on a CUDA machine, never both)"


@dataclass(frozen=True)
class BackendKind:
    """One kind of backend. `unavailable(folder, manifest)` is None when it can run here
    (for that artefact folder, when given), else why not in one phrase; `make(folder,
    manifest, **options)` returns one (inactive) backend per component."""

    name: str
    summary: str
    unavailable: Callable[[Path | None, Manifest | None], str | None]
    make: Callable[..., dict[str, Backend]]


def _ort_providers() -> list[str] | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _ort_cpu_unavailable(folder: Path | None, manifest: Manifest | None) -> str | None:
    return None if importlib.util.find_spec("onnxruntime") else f"onnxruntime is not installed ({ORT_HINT})"


def _ort_cuda_unavailable(folder: Path | None, manifest: Manifest | None) -> str | None:
    providers = _ort_providers()
    if providers is None:
        return f"onnxruntime is not installed ({ORT_HINT})"
    if "CUDAExecutionProvider" not in providers:
        return "this onnxruntime has no CUDA provider (install onnxruntime-gpu instead of onnxruntime)"
    gpu = probe_gpu()
    return None if gpu.available else f"no GPU ({gpu.reason})"


def _make_ort(device: str) -> Callable[..., dict[str, Backend]]:
    def make(folder: Path, manifest: Manifest, allow_fallback: bool = False,
             threads: int | None = None) -> dict[str, Backend]:
        from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return {name: OnnxRuntimeBackend(info, folder, device, allow_fallback, threads)
                for name, info in manifest.components.items()}

    return make


def _engines_unavailable(runtime: str) -> Callable[[Path | None, Manifest | None], str | None]:
    """For "tensorrt" without a folder: can engines be built and run here (TensorRT and a
    GPU); with a folder: does every component have an engine valid for this GPU."""
    from mnt.runtime.backends.tensorrt import RUNTIMES

    module, label, install = RUNTIMES[runtime]

    def unavailable(folder: Path | None, manifest: Manifest | None) -> str | None:
        if manifest is not None and not any(runtime in c.engines for c in manifest.components.values()):
            extra = " --engines tensorrt-rtx" if runtime == "tensorrt-rtx" else ""
            return (f"{folder} holds no {label} engines (build them with `mnt-export build --from "
                    f"{folder}{extra}`)")
        version = tensorrt_version(module)
        if version is None:
            return f"{label} is not installed (its Python module `{module}` does not import; {install})"
        gpu = probe_gpu()
        if not gpu.available:
            return f"no GPU ({gpu.reason})"
        if manifest is not None and folder is not None:
            from mnt.runtime.backends.tensorrt import check_engine

            try:
                for info in manifest.components.values():
                    check_engine(info, folder, gpu, version, runtime)
            except RuntimeStageError as err:
                return str(err)
        return None

    return unavailable


def _make_engines(runtime: str) -> Callable[..., dict[str, Backend]]:
    def make(folder: Path, manifest: Manifest, allow_fallback: bool = False,
             cuda_graph: bool = False) -> dict[str, Backend]:
        # the backends import tensorrt / tensorrt_rtx on activate only
        from mnt.runtime.backends.tensorrt import TensorRTBackend
        from mnt.runtime.backends.tensorrt_rtx import TensorRTRTXBackend

        kind = TensorRTRTXBackend if runtime == "tensorrt-rtx" else TensorRTBackend
        return {name: kind(info, folder, cuda_graph) for name, info in manifest.components.items()}

    return make


BUILT_IN = (
    BackendKind("onnxruntime-cpu", "ONNX Runtime on the CPU", _ort_cpu_unavailable, _make_ort("cpu")),
    BackendKind("onnxruntime-cuda", "ONNX Runtime with its CUDA provider", _ort_cuda_unavailable,
                _make_ort("cuda")),
    BackendKind("tensorrt", "the folder's TensorRT engines (built on this device)",
                _engines_unavailable("tensorrt"), _make_engines("tensorrt")),
    BackendKind("tensorrt-rtx", "the folder's TensorRT-RTX engines (built anywhere, for RTX GPUs)",
                _engines_unavailable("tensorrt-rtx"), _make_engines("tensorrt-rtx")),
)
# What `auto` tries, best first: the first kind that can run the folder here.
AUTO_ORDER = ("tensorrt", "tensorrt-rtx", "onnxruntime-cuda", "onnxruntime-cpu")
# Entry-point backends that mnt itself ships, so that `--backend` lists them without
# loading them (loading "torch" imports nothing heavy, but finding entry points costs time).
KNOWN_PLUGINS = ("torch",)


@cache
def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def names() -> tuple[str, ...]:
    """Every name `--backend` accepts, `auto` first."""
    return (AUTO, *(k.name for k in BUILT_IN), *KNOWN_PLUGINS)


def kind(name: str) -> BackendKind:
    for k in BUILT_IN:
        if k.name == name:
            return k
    entry = _plugins().get(name)
    if entry is None:
        if name in KNOWN_PLUGINS:
            raise RuntimeStageError(f"the {name} backend is not installed",
                                    hint="it comes with the export side: pip install torch==2.13.0 "
                                         "&& pip install 'mnt[export]'")
        raise RuntimeStageError(f"unknown backend {name!r}; choose one of {', '.join(names())}")
    try:
        found = entry.load()
    except ImportError as err:
        raise RuntimeStageError(f"the {name} backend cannot be loaded: {err}") from err
    if not isinstance(found, BackendKind):
        raise RuntimeStageError(f"entry point {ENTRY_POINTS}:{name} is not a BackendKind ({found!r})")
    return found


def unavailable(name: str, folder: Path | None = None, manifest: Manifest | None = None) -> str | None:
    """None when backend `name` can run here (for `folder`, when given), else why not."""
    try:
        return kind(name).unavailable(folder, manifest)
    except RuntimeStageError as err:
        return err.one_line()


def available(folder: Path | None = None, manifest: Manifest | None = None) -> list[str]:
    """The backends that can run here (for `folder`, when given), `auto` left out."""
    return [n for n in names()[1:] if unavailable(n, folder, manifest) is None]


def pick_auto(folder: Path | None = None, manifest: Manifest | None = None) -> tuple[str, dict[str, str]]:
    """(what `auto` picks, why each better choice was passed over). Never fails: the CPU
    is the last resort, and its own activation says what is missing."""
    passed: dict[str, str] = {}
    for name in AUTO_ORDER:
        reason = unavailable(name, folder, manifest)
        if reason is None:
            return name, passed
        passed[name] = reason
    return AUTO_ORDER[-1], passed


def make_backends(folder: Path, manifest: Manifest, name: str, allow_fallback: bool = False,
                  **options: Any) -> dict[str, Backend]:
    """One inactive backend per component of `folder`, of kind `name` (`auto`: the best
    that runs here, and ONNX Runtime may then fall back to the CPU)."""
    if name == AUTO:
        name, _ = pick_auto(folder, manifest)
        allow_fallback = True
    return kind(name).make(folder, manifest, allow_fallback=allow_fallback, **options)
