"""The stateful `mnt_reenact` model of an exported Triton repository: Triton's Python
backend runs it (its model.py imports this), under the sequence batcher. It holds every
stream's state on a `Hub` whose engines are the repository's component models, called
through Triton's BLS (business logic scripting) API: the components run on the server's
own ONNX Runtime or TensorRT backends, where Triton places them.

Triton's sequence batcher gives each request a leading batch axis of 1 (the model batches
requests of different streams, so it declares max_batch_size); the interface is otherwise
`mnt.runtime.serve.protocol`'s.

Nothing here imports OpenCV at module level: Triton's server images have no libGL or
libX11, so the non-headless `opencv-contrib-python` that mnt depends on fails to import
there (server issues 3244, 6340). `initialize` imports it (through the hub) and, where it
fails, says to install the headless wheel instead.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mnt.runtime.backends.base import Backend, BackendState
from mnt.runtime.errors import MntError, RuntimeStageError
from mnt.runtime.manifest import ComponentInfo, load_manifest
from mnt.runtime.serve.protocol import CONTROLS, DATA, REFUSED, handle

ARTIFACTS = "artifacts"  # the version folder's copy of the manifest and landmark statistics
HEADLESS_OPENCV = ("pip uninstall -y opencv-contrib-python && "
                   "pip install 'opencv-contrib-python-headless>=4.9,<4.12'")


def import_opencv() -> None:
    """Import OpenCV, or RuntimeStageError naming the headless wheel that loads without libGL."""
    try:
        import cv2  # noqa: F401
    except ImportError as err:
        raise RuntimeStageError(f"OpenCV does not import here ({err}); Triton's server images have no "
                                "libGL, which the non-headless opencv-contrib-python needs",
                                hint=f"in the image: {HEADLESS_OPENCV}") from err


class TritonModelBackend(Backend):
    """A component as a model of the same Triton server, called per inference (BLS).
    Requests are independent, so streams may call it at once (a trivial per-stream state)."""

    STATEFUL = True

    def __init__(self, component: ComponentInfo, pb_utils: Any) -> None:
        super().__init__(component)
        self._pb = pb_utils
        self._outputs = [t.name for t in component.outputs]

    def activate_impl(self) -> None:
        pass  # (Triton loaded the model with the repository)

    def deactivate_impl(self) -> None:
        pass

    def new_state_impl(self, state: BackendState) -> Any:
        return None

    def release_state_impl(self, state: BackendState) -> None:
        pass

    def infer_state_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int],
                         state: BackendState) -> dict[str, np.ndarray]:
        return self.infer_impl(ready, dims)

    def infer_impl(self, feeds: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        pb = self._pb
        inputs = [pb.Tensor(n, np.ascontiguousarray(a)) for n, a in feeds.items()]
        request = pb.InferenceRequest(model_name=self.component.name, inputs=inputs,
                                      requested_output_names=self._outputs)
        response = request.exec()
        if response.has_error():
            raise RuntimeStageError(f"model {self.component.name}: {response.error().message()}")
        return {n: pb.get_output_tensor_by_name(response, n).as_numpy() for n in self._outputs}


class TritonPythonModel:
    """What Triton's Python backend calls: initialize, execute (a list of requests), finalize."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        import_opencv()
        from mnt.runtime.hub import Hub

        self._pb = pb_utils
        folder = Path(args["model_repository"]) / args["model_version"] / ARTIFACTS
        manifest = load_manifest(folder)
        parameters = {k: v["string_value"]
                      for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}

        def backends() -> dict[str, Backend]:
            return {n: TritonModelBackend(info, pb_utils) for n, info in manifest.all_components.items()}

        config = json.loads(args["model_config"])
        self._batched = int(config.get("max_batch_size", 0)) > 0  # (a batch axis of 1 on each request)
        self._pool = ThreadPoolExecutor(max(int(config.get("max_batch_size", 0)), 1), "mnt-stream")
        self.hub = Hub(folder, backends=backends, max_streams=int(parameters.get("max_streams", "64")),
                       idle_s=float(parameters.get("idle_timeout_s", "30")),
                       say=lambda line: pb_utils.Logger.log_info(line))

    def execute(self, requests: list[Any]) -> list[Any]:
        # A batch holds requests of different streams (one each): they run side by side.
        return list(self._pool.map(self._answer, requests))

    def _answer(self, request: Any) -> Any:
        pb = self._pb
        inputs = {}
        for spec in CONTROLS + DATA:
            tensor = pb.get_input_tensor_by_name(request, spec.name)
            if tensor is not None:
                inputs[spec.name] = tensor.as_numpy()[0] if self._batched else tensor.as_numpy()
        try:
            out = handle(self.hub, inputs)
        except MntError as err:
            return pb.InferenceResponse(error=pb.TritonError(f"{REFUSED}: {err.one_line()}"))
        return pb.InferenceResponse([pb.Tensor(n, np.ascontiguousarray(a[None] if self._batched else a))
                                     for n, a in out.items()])

    def finalize(self) -> None:
        self._pool.shutdown()
        self.hub.close()
