"""ONNX Runtime backend: CPU by default, CUDA when onnxruntime-gpu and a GPU are present.

ONNX Runtime silently falls back to the CPU when CUDA is unavailable; this backend checks
the providers the session really got and refuses unless a fallback was allowed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnt.runtime.backends.base import Backend, BackendState, resolve_shape
from mnt.runtime.backends.mnt_ops import with_reference_ops
from mnt.runtime.cpu import int8_path
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.manifest import ComponentInfo

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
EMPTY: Mapping[str, np.ndarray] = {}
# On x86 CPUs without VNNI, ONNX Runtime's u8 x s8 kernels add pairs of INT8 products in
# saturating 16-bit integers, so an INT8 graph would compute differently there (the tiny
# disentangler: 53 -> 32 dB; calibration/README.md). "1" has ONNX Runtime turn weights outside
# [-64, 64] into uint8 and run its exact u8 x u8 kernels instead (FP32 graphs are untouched).
# Asked for only where the kernels saturate (or the CPU is unknown): on VNNI CPUs the u8 x s8
# kernels are exact already and the u8 x u8 ones were 1.1-1.9x slower (measured here).
INT8_EXACT = ("session.x64quantprecision", "1")


def session_options(ort: Any) -> Any:
    """The options every mnt session starts from: errors-only logging, exact INT8 products."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no per-node constant-folding chatter
    if int8_path().saturates is not False:
        options.add_session_config_entry(*INT8_EXACT)
    return options


@dataclass
class _StreamBuffers:
    """One stream's: output buffers per binding of the dynamic axes, and (CUDA) its
    resident inputs as device tensors."""

    outputs: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)
    on_device: dict[str, Any] = field(default_factory=dict)


class OnnxRuntimeBackend(Backend):
    def __init__(self, component: ComponentInfo, folder: str | Path, device: str = "cpu",
                 allow_fallback: bool = False, threads: int | None = None) -> None:
        super().__init__(component)
        if device not in PROVIDERS:
            raise RuntimeStageError(f"unknown ONNX Runtime device {device!r}; use one of {list(PROVIDERS)}")
        self.path = Path(folder) / component.file
        self.device, self.allow_fallback, self.threads = device, allow_fallback, threads
        self.session: Any = None
        self._default = _StreamBuffers()  # for calls without a state
        self._on_gpu = False

    def activate_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeStageError(
                "onnxruntime is not installed",
                hint="pip install 'mnt[cpu]' (or 'mnt[gpu]' on a CUDA machine, never both)") from err
        options = session_options(ort)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spinning between calls: a frame runs several sessions (face detector and mesh,
        # disentangler, generator; more with several streams) on the same cores, and each
        # one's threads spinning after its call took the cores from the next: with spinning,
        # the built-in model's frame ran at 15 fps here, without it at 30.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            options.intra_op_num_threads = self.threads
        wanted = [PROVIDERS[self.device]] + (["CPUExecutionProvider"] if self.device == "cuda" else [])
        model = self._model()
        try:
            self.session = ort.InferenceSession(model, options, providers=wanted)
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise RuntimeStageError(f"cannot load {self.path}: {err}") from err
        # a file holding another component's graph loads fine, then fails (or lies) later
        from mnt.runtime.manifest import REBUILD_HINT

        for side, got_io, want_io in (("inputs", self.session.get_inputs(), self.component.inputs),
                                      ("outputs", self.session.get_outputs(), self.component.outputs)):
            got_names, want_names = [t.name for t in got_io], [t.name for t in want_io]
            if sorted(got_names) != sorted(want_names):
                self.session = None
                raise RuntimeStageError(
                    f"{self.path} has {side} {got_names}, but the manifest's {self.component.name} "
                    f"has {want_names}", hint=REBUILD_HINT)
        got = self.session.get_providers()
        self._on_gpu = got[0] == PROVIDERS["cuda"]
        if PROVIDERS[self.device] not in got and not self.allow_fallback:
            self.session = None
            raise RuntimeStageError(
                f"ONNX Runtime could not use {PROVIDERS[self.device]} for {self.component.name} "
                f"(it got {got})",
                hint="install onnxruntime-gpu on a machine with a CUDA GPU, or allow the CPU fallback")

    def _model(self) -> str | bytes:
        """The graph's path; for a plugin variant its bytes with the mnt:: ops' reference
        functions attached (in memory; the file keeps bare custom nodes for TensorRT)."""
        if not self.component.custom_ops:
            return str(self.path)
        try:
            return with_reference_ops(self.path.read_bytes(), self.component.custom_ops)
        except OSError as err:
            raise RuntimeStageError(f"cannot read {self.path}: {err.strerror}") from err
        except KeyError as err:
            raise RuntimeStageError(f"{self.component.name}: {err.args[0]}",
                                    hint="build it without --plugins, or update mnt") from err

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session else []

    STATEFUL = True  # ONNX Runtime's session runs calls from several threads at once

    def new_state_impl(self, state: BackendState) -> _StreamBuffers:
        return _StreamBuffers()

    def infer_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        return self._run(ready, dims, self._default)

    def infer_state_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int],
                         state: BackendState) -> dict[str, np.ndarray]:
        return self._run(ready, dims, state.impl, state.resident)

    def release_state_impl(self, state: BackendState) -> None:
        state.impl.outputs.clear()
        state.impl.on_device.clear()

    def _run(self, ready: dict[str, np.ndarray], dims: dict[str, int], own: _StreamBuffers,
             resident: Mapping[str, np.ndarray] = EMPTY) -> dict[str, np.ndarray]:
        key = tuple(sorted(dims.items()))
        buffers = own.outputs.get(key)
        if buffers is None:  # outputs are preallocated once per binding of the dynamic axes
            buffers = {t.name: np.empty(resolve_shape(t.shape, dims), dtype=t.dtype)
                       for t in self.component.outputs}
            own.outputs[key] = buffers
        binding = self.session.io_binding()
        for name, array in ready.items():
            if name in resident and self._on_gpu:  # on the GPU once, for the stream's life
                if name not in own.on_device:
                    import onnxruntime as ort

                    own.on_device[name] = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
                binding.bind_ortvalue_input(name, own.on_device[name])
            else:
                binding.bind_cpu_input(name, array)
        for name, array in buffers.items():
            binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        self.session.run_with_iobinding(binding)
        return buffers

    def deactivate_impl(self) -> None:
        self.session = None
        self._default = _StreamBuffers()
