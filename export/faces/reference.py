"""The reference for the face components: the original TFLite models run by Google's own
TFLite interpreter (ai-edge-litert, XNNPACK), whose outputs the converted graphs must match."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from mnt.export.errors import ExportError
from mnt.export.faces.models import FaceModel, model_path

LITERT_HINT = "pip install 'ai-edge-litert>=2.3' (in 'mnt[faces]'; x86-64 and macOS wheels only)"


def interpreter_version() -> str:
    try:
        return f"ai-edge-litert {version('ai-edge-litert')}"
    except PackageNotFoundError:
        return "ai-edge-litert ?"


class TfliteReference:
    """One TFLite model in the interpreter; `run(x)` -> its outputs under the ONNX names."""

    def __init__(self, model: FaceModel, path: Path | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise ExportError("the face components' parity gate needs a TFLite interpreter",
                              hint=LITERT_HINT) from err
        self.model = model
        self.path = path or model_path(model)
        self._interpreter: Any = Interpreter(model_path=str(self.path), num_threads=1)
        self._interpreter.allocate_tensors()
        (self._input,) = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != tuple(self._input["shape"]):
            raise ExportError(f"{self.model.component}: reference input of shape {x.shape}, "
                              f"expected {tuple(self._input['shape'])}")
        self._interpreter.set_tensor(self._input["index"], x)
        self._interpreter.invoke()
        return {self.model.outputs[d["name"]]:
                self._interpreter.get_tensor(d["index"]).reshape(self.model.output_shapes[
                    self.model.outputs[d["name"]]]).copy() for d in self._outputs}
