"""Shared test inputs: real faces (shipped with scikit-image, plus ../shared/data when it
is beside the checkout) and landmark sets placed in the model's crop."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run_blocking(code: str, blocked: tuple[str, ...] = ("torch",), timeout: float = 300
                 ) -> subprocess.CompletedProcess:
    """Run Python `code` in a fresh interpreter in which importing any of `blocked` (or their
    submodules) raises ImportError, as on a machine without them."""
    prelude = (
        "import sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(blocked)!r}:\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Blocked())\n"
    )
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          timeout=timeout)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interruptible_popen(args: list[str], **kwargs) -> subprocess.Popen:
    """Popen a child that the test will send SIGINT. The child gets the default SIGINT
    handler: a shell running pytest in the background (or a CI runner) may hand SIGINT down
    as ignored, and Python then never raises KeyboardInterrupt."""
    return subprocess.Popen(args, preexec_fn=_default_sigint, **kwargs)


def console_script(name: str) -> str:
    """The path of one of mnt's console scripts in the running environment."""
    return str(Path(sys.executable).parent / name)


def real_faces(size: int = 256) -> list[np.ndarray]:
    """uint8 RGB portraits: the astronaut (scikit-image), then ../shared/data/targets."""
    from skimage import data

    from mnt.export.onnx.samples import square_crop

    faces = [square_crop(data.astronaut()[:320, 80:400], size)]
    if SHARED_DATA.exists():
        for path in sorted((SHARED_DATA / "targets").glob("*.jpg")):
            faces.append(square_crop(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), size))
    return faces


def placed_landmarks(size: int = 256, alpha: np.ndarray | None = None, seed: int = 0,
                     yaw: float = 0.0) -> np.ndarray:
    """The prior's mean face (plus an expression) posed in a size x size crop."""
    from mnt.export.model.landmark_prior import random_stats
    from mnt.export.onnx.samples import posed_landmarks

    return posed_landmarks(random_stats(np.random.default_rng(seed)), size, alpha, yaw)


def reference_frame(reference, faces: list[np.ndarray], points: list[np.ndarray],
                    driver: np.ndarray) -> np.ndarray:
    """The PyTorch reference's reenacted uint8 frame for target faces with their landmarks
    and the driver's landmarks, rounded as the runtime rounds."""
    import torch

    from mnt.runtime import rasterize, to_model_input

    y = torch.from_numpy(np.stack([to_model_input(f) for f in faces]))[None]
    ry = torch.from_numpy(np.stack([to_model_input(rasterize(p)) for p in points]))[None]
    rx = torch.from_numpy(to_model_input(rasterize(driver)))[None]
    with torch.no_grad():
        expected = reference.generator(rx, y, ry)[0].numpy().transpose(1, 2, 0)
    return np.clip((expected + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def assert_generator_gate(manifest, precision: str) -> None:
    """The generated image's parity gate as README states it: FP32 max abs <= 1e-4, >= 60 dB
    and within twice PyTorch float32's RMS error; FP16 >= 40 dB."""
    image = manifest.components["generator"].accuracy["outputs"]["image"]
    if precision == "fp32":
        assert image["max_abs_error"] <= 1e-4 and image["psnr_db"] >= 60
        assert image["rmse"] <= 2 * image["torch_fp32"]["rmse"]
    else:
        assert image["psnr_db"] >= 40
