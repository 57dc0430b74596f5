"""`mnt-serve`'s server: a real Triton Inference Server (the one PyTriton bundles: HTTP,
gRPC, health and readiness, metrics), whose `mnt_reenact` model answers on a `Hub`
in this process: one loaded model, any number of streams."""

from __future__ import annotations

import logging
import os
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mnt.runtime.errors import MntError, RuntimeStageError
from mnt.runtime.hub import Hub
from mnt.runtime.serve.protocol import CONTROLS, DATA, MODEL, OUTPUTS, REFUSED, handle

SERVE_HINT = "pip install 'mnt[serve]' (PyTriton: Linux, glibc 2.35 or newer)"


def _libpython_on_path() -> None:
    """Triton's Python-backend stub loads libpython; a pyenv or other non-system Python
    keeps its own outside the loader's path (the stub then fails deep inside threading)."""
    folder = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if folder and library and (Path(folder) / library).exists():
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        if folder not in paths:
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([folder, *paths])


def _infer(hub: Hub) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        responses = []
        for request in requests:
            try:
                responses.append(handle(hub, dict(request.data)))
            except MntError as err:
                hub.say(f"refused: {err.one_line()}")
                # PyTriton answers an exception with an error for the request (its traceback)
                raise RuntimeError(f"{REFUSED}: {err.one_line()}") from None
        return responses

    return infer


class Server:
    """Start with `with Server(hub, ...) as server:`; `server.wait()` serves until SIGTERM or
    Ctrl-C (both end every stream and stop the server cleanly)."""

    def __init__(self, hub: Hub, http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                 address: str = "127.0.0.1", instances: int = 4, log: Path | None = None,
                 verbose: bool = False) -> None:
        """`log`: where Triton's own log goes (default: stderr); `verbose`: PyTriton's log too."""
        try:
            from pytriton.model_config import ModelConfig, Tensor
            from pytriton.triton import Triton, TritonConfig
        except ImportError as err:
            raise RuntimeStageError(f"mnt-serve needs PyTriton: {err}", hint=SERVE_HINT) from err
        _libpython_on_path()
        # PyTriton logs each refused request's traceback; the hub says it in one line
        logging.getLogger("pytriton").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
        self.hub = hub
        config = TritonConfig(http_address=address, http_port=http_port, grpc_address=address,
                              grpc_port=grpc_port, metrics_address=address, metrics_port=metrics_port,
                              exit_on_error=True, exit_timeout_secs=5, log_verbose=0,
                              log_file=log)
        self._triton = Triton(config=config)
        self._triton.__enter__()
        try:
            # One instance per concurrent request: streams run side by side on the hub.
            self._triton.bind(
                model_name=MODEL, infer_func=[_infer(hub)] * instances,
                inputs=[Tensor(name=s.name, dtype=s.dtype, shape=s.shape, optional=s.optional)
                        for s in CONTROLS + DATA],
                outputs=[Tensor(name=s.name, dtype=s.dtype, shape=s.shape) for s in OUTPUTS],
                config=ModelConfig(batching=False))
            self._triton.run()
        except BaseException:
            self._triton.__exit__(None, None, None)
            raise
        self.urls = {"http": f"http://{address}:{http_port}", "grpc": f"grpc://{address}:{grpc_port}"}

    def wait(self) -> None:
        """Until Ctrl-C or SIGTERM (the CLI's guard raises them here), or the server dies.
        (Not PyTriton's serve(): it takes the signals itself and returns as if all were well.)"""
        while self._triton.is_alive():
            time.sleep(0.5)
        raise RuntimeStageError("the Triton server stopped by itself", hint="see its log for why")

    def close(self) -> None:
        self._triton.__exit__(None, None, None)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
