"""The whole landmark step on engines against mediapipe's own face mesh, on videos: per
frame the 68 points of ``OnnxMeshLandmarks`` (tracking) and of ``MediaPipeLandmarks``
(tracking), their distance in pixels, and the frames where only one found a face.

`python -m mnt.export.faces.landmark_parity [--precision fp32] VIDEO...` prints a table."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnt.export.faces.build import build_faces_into, face_images
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.landmarkers.onnx_mesh import OnnxMeshLandmarks


@dataclass(frozen=True)
class ClipParity:
    name: str
    frames: int
    both: int  # frames where both found a face
    only_ours: int
    only_mediapipe: int
    mean_px: float  # over the 68 points of the frames where both found one
    p99_px: float
    max_px: float
    face_size_px: float  # the median inter-ocular distance, for scale
    ours_ms: float  # per frame
    mediapipe_ms: float

    def row(self) -> str:
        return (f"| {self.name} | {self.frames} | {self.both} | {self.only_ours} | {self.only_mediapipe} | "
                f"{self.mean_px:.3f} | {self.p99_px:.3f} | {self.max_px:.3f} | {self.face_size_px:.0f} | "
                f"{self.ours_ms:.1f} | {self.mediapipe_ms:.1f} |")


HEADER = ("| clip | frames | both | only ours | only mediapipe | mean px | p99 px | max px | eyes px | "
          "ours ms | mediapipe ms |\n|---|---|---|---|---|---|---|---|---|---|---|")


def face_landmarker(folder: Path, precision: str = "fp32", static: bool = False) -> OnnxMeshLandmarks:
    """The ONNX backend on face components built into `folder` (ONNX Runtime, CPU)."""
    faces = build_faces_into(folder, precision, face_images(), log=lambda line: None)
    backends = {n: OnnxRuntimeBackend(info, folder, threads=1) for n, info in faces.items()}
    return OnnxMeshLandmarks(backends=backends, static_image_mode=static, human_check=False)


def clip_parity(video: Path, ours: OnnxMeshLandmarks, limit: int | None = None) -> ClipParity:
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks
    from mnt.runtime.video import read_frames

    ours.reset()
    distances, only_ours, only_mp, both, eyes, frames = [], 0, 0, 0, [], 0
    ours_s = mp_s = 0.0
    with MediaPipeLandmarks(static_image_mode=False, human_check=False) as reference:
        for frame in read_frames(video, limit=limit):
            frames += 1
            t0 = time.perf_counter()
            a = ours.detect(frame)
            t1 = time.perf_counter()
            b = reference.detect(frame)
            mp_s += time.perf_counter() - t1
            ours_s += t1 - t0
            if a is not None and b is not None:
                both += 1
                distances.append(np.linalg.norm(a.landmarks[:, :2] - b.landmarks[:, :2], axis=1))
                eyes.append(float(np.linalg.norm(b.landmarks[36, :2] - b.landmarks[45, :2])))
            only_ours += a is not None and b is None
            only_mp += a is None and b is not None
    d = np.concatenate(distances) if distances else np.zeros(1)
    return ClipParity(video.stem, frames, both, only_ours, only_mp, float(d.mean()),
                      float(np.percentile(d, 99)),
                      float(d.max()), float(np.median(eyes)) if eyes else 0.0,
                      1e3 * ours_s / max(frames, 1), 1e3 * mp_s / max(frames, 1))


def main(argv: list[str]) -> None:
    precision = "fp32"
    if argv[:1] == ["--precision"]:
        precision, argv = argv[1], argv[2:]
    with tempfile.TemporaryDirectory() as folder, face_landmarker(Path(folder), precision) as ours:
        print(f"precision {precision}\n{HEADER}")
        for video in map(Path, argv):
            print(clip_parity(video, ours).row(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
