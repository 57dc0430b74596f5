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


def mnt_run(*args, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """The real `mnt-run` command line with `args`, its output captured."""
    return subprocess.run([console_script("mnt-run"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


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
    and within twice PyTorch float32's RMS error (or at float32's floor); FP16 >= 40 dB."""
    from mnt.export.onnx.gates import THRESHOLDS

    image = manifest.components["generator"].accuracy["outputs"]["image"]
    if precision == "fp32":
        assert image["max_abs_error"] <= 1e-4 and image["psnr_db"] >= 60
        assert (image["rmse"] <= 2 * image["torch_fp32"]["rmse"]
                or image["psnr_db"] >= THRESHOLDS["fp32"]["rmse_floor_psnr_db"])
    else:
        assert image["psnr_db"] >= 40


def talking_clip(path: Path, faceless: int = 0, faces: int = 30, rate: int = 25, size: int = 192,
                 sample_rate: int = 16000) -> Path:
    """A driver made here, with no files from outside: `faceless` grey frames, then `faces`
    frames of the astronaut (scikit-image) moving sideways; its audio is silent until the
    face appears, then a 1 kHz tone (so an output's sound can be checked against its picture)."""
    import av
    from skimage import data

    face = cv2.resize(data.astronaut()[:360, 60:420], (size, size))
    grey = np.full((size, size, 3), 120, np.uint8)
    total = faceless + faces
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate)
        audio.layout = "mono"
        for i in range(total):
            picture = np.roll(face, (i - faceless) % 7 - 3, axis=1) if i >= faceless else grey
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        t = np.arange(int(total / rate * sample_rate)) / sample_rate
        tone = (0.5 * np.sin(2 * np.pi * 1000 * t) * (t >= faceless / rate)).astype(np.float32)
        mux_tone(container, audio, tone, sample_rate)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return path


def sound_by_time(path: Path) -> tuple[np.ndarray, int]:
    """(mono samples of `path`'s first audio stream, sample rate)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(chunks), stream.rate


def copied_artefacts(folder: Path, tmp_path: Path) -> tuple[Path, dict]:
    """A writable copy of an artefact folder and its manifest's data."""
    import json
    import shutil

    from mnt.runtime.manifest import MANIFEST_NAME

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy, json.loads((copy / MANIFEST_NAME).read_text())


def write_manifest(folder: Path, data: dict) -> None:
    import json

    from mnt.runtime.manifest import MANIFEST_NAME

    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def mux_tone(container, audio, tone: np.ndarray, sample_rate: int) -> None:
    """Encode a mono float32 signal into `audio` of `container` in 1024-sample frames."""
    import av

    for start in range(0, len(tone), 1024):
        chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, start
        for packet in audio.encode(chunk):
            container.mux(packet)
