"""A real Triton server (the tritonserver 2.51 that PyTriton bundles, with its Python backend
only) serving an exported repository, for the tests.

The bundle has no ONNX Runtime or TensorRT backend (NVIDIA's full images do), so each
component model is served by a stand-in: a Python-backend model that runs the same
model.onnx on ONNX Runtime, with the config's inputs and outputs unchanged. The stateful
`mnt_reenact` model is the exported one. The bundle's embedded Python ignores the virtual
environment (and would take the base interpreter's numpy, which may be a numpy 2 that the
bundled stub's tensors do not survive), so each model.py first puts this environment's
site folder in front (in the NGC image, mnt is pip-installed into its Python instead).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import site
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STAND_IN = '''\
import json

import onnxruntime as ort
import triton_python_backend_utils as pb


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.outputs = [o["name"] for o in config["output"]]
        path = f'{args["model_repository"]}/{args["model_version"]}/model.onnx'
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        answers = []
        for request in requests:
            feeds = {i.name: pb.get_input_tensor_by_name(request, i.name).as_numpy()
                     for i in self.session.get_inputs()}
            results = self.session.run(self.outputs, feeds)
            answers.append(pb.InferenceResponse([pb.Tensor(n, a) for n, a in zip(self.outputs, results)]))
        return answers
'''


def bundled() -> Path | None:
    """PyTriton's tritonserver folder, or None where it is not installed."""
    try:
        import pytriton
    except ImportError:
        return None
    folder = Path(pytriton.__file__).parent / "tritonserver"
    return folder if (folder / "bin" / "tritonserver").is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_stand_ins(repo: Path) -> None:
    """Rewrite `repo`'s component models as Python-backend stand-ins (see above)."""
    folder = site.getsitepackages()[0]
    prefix = (f"import site\nimport sys\n\nsite.addsitedir({folder!r})\nsys.path.remove({folder!r})\n"
              f"sys.path.insert(0, {folder!r})\n")
    for config in sorted(repo.glob("*/config.pbtxt")):
        model = config.parent / "1" / "model.py"
        text = config.read_text()
        if 'platform: "onnxruntime_onnx"' in text:
            config.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
            model.write_text(prefix + STAND_IN)
        else:
            model.write_text(prefix + model.read_text())


@contextlib.contextmanager
def triton(repo: Path, scratch: Path, timeout_s: float = 240) -> Iterator[dict[str, str]]:
    """Serve `repo` (already with stand-ins) -> {"http": URL, "grpc": URL}; stopped after."""
    folder = bundled()
    assert folder is not None
    backends = scratch / "backends" / "python"
    backends.mkdir(parents=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(folder / "python_backend_stubs" / version / "triton_python_backend_stub", backends)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (backends / name).symlink_to(folder / "backends" / "python" / name)
    ports = {name: free_port() for name in ("http", "grpc", "metrics")}
    libs = [sysconfig.get_config_var("LIBDIR"), str(folder.parent.parent / "nvidia_pytriton.libs")]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(libs)}
    log = open(scratch / "triton.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(folder / "bin" / "tritonserver"), "--model-repository", str(repo),
         "--backend-directory", str(scratch / "backends"), "--http-address", "127.0.0.1",
         "--grpc-address", "127.0.0.1", "--metrics-address", "127.0.0.1",
         *[f"--{name}-port={port}" for name, port in ports.items()], "--exit-timeout-secs", "5"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=2):
                    # (tritonserver is ready when every model of the repository is)
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tritonserver did not get ready:\n"
                                   + (scratch / "triton.log").read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield {"http": f"http://127.0.0.1:{ports['http']}", "grpc": f"grpc://127.0.0.1:{ports['grpc']}"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
