"""The build's face step: mediapipe's two TFLite face networks -> `face_detector.onnx` and
`face_landmarks.onnx` in the artefact folder, gated against the TFLite interpreter on real
faces, with goldens; -> their manifest entries (`Manifest.faces`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from mnt.export.errors import AccuracyError, ExportError
from mnt.export.faces import gates
from mnt.export.faces.models import DETECTOR, MESH, MODELS, FaceModel, model_path, source
from mnt.export.faces.parity import measure, samples
from mnt.export.faces.reference import TfliteReference, interpreter_version
from mnt.export.faces.tflite_onnx import convert
from mnt.export.onnx.goldens import write_golden
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import ComponentInfo, TensorInfo

PHASE = "frame"  # every driver frame (and each target photo once)
PRECISIONS = ("fp32", "fp16")


def available() -> str | None:
    """None when the face step can run here, else why not."""
    try:
        for model in MODELS:
            model_path(model)
        import ai_edge_litert.interpreter  # noqa: F401
        import tflite  # noqa: F401
    except ExportError as err:
        return err.one_line()
    except ImportError as err:
        return f"{err.name} is not installed (pip install 'mnt[faces]')"
    return None


def _info(model: FaceModel, file: str, sha256: str, precision: str) -> ComponentInfo:
    return ComponentInfo(
        name=model.component, file=file, sha256=sha256, precision=precision, phase=PHASE,
        inputs=(TensorInfo(model.input_name, "float32", model.input_shape),),
        outputs=tuple(TensorInfo(n, "float32", s) for n, s in model.output_shapes.items()),
        dims={}, accuracy={}, source=source(model))


def export_face_component(folder: Path, model: FaceModel, precision: str, inputs: Sequence[np.ndarray],
                          log: Callable[[str], None]) -> ComponentInfo:
    """Convert, write, gate and store the golden of one face network."""
    if precision not in PRECISIONS:
        raise ExportError(f"{model.component}: no {precision} variant; choose one of {list(PRECISIONS)}")
    started = time.perf_counter()
    converted = convert(model_path(model), model.input_name, model.outputs, model.output_shapes,
                        fp16=precision == "fp16")
    file = f"{model.component}.onnx"
    onnx.save(converted.model, folder / file)
    exported = time.perf_counter() - started
    info = _info(model, file, sha256_file(folder / file), precision)
    with OnnxRuntimeBackend(info, folder) as backend:
        figures, raw, references = measure(model, lambda x: backend.infer({model.input_name: x}), inputs,
                                           TfliteReference(model).run)
    failures = gates.judge(model.component, precision, figures)
    accuracy = {
        "reference": f"TFLite ({interpreter_version()})", "samples": len(inputs),
        "psnr_db": min(r["psnr_db"] for r in raw.values()),
        "max_abs_error": max(r["max_abs_error"] for r in raw.values()),
        "passed": not failures, "failures": failures, "figures": figures,
        "thresholds": gates.thresholds(model.component, precision),
        "outputs": raw, "tflite_ops": converted.ops, "export_seconds": round(exported, 2),
    }
    log(f"{model.component}: converted in {exported:.1f} s; against TFLite on {len(inputs)} real inputs: "
        + ", ".join(f"{k} {v:.3g}" for k, v in figures.items() if k in accuracy["thresholds"]))
    if failures:
        raise AccuracyError(f"{model.component} ({precision}) failed its parity gate: " + "; ".join(failures),
                            hint="no artefact was written")
    golden = write_golden(folder, info, inputs[:1], [references[0][t.name] for t in info.outputs])
    return replace(info, accuracy=accuracy, golden=golden)


def build_faces_into(folder: Path, precision: str, images: Sequence[np.ndarray],
                     log: Callable[[str], None] = print) -> dict[str, ComponentInfo]:
    """Both face components into the (staged) `folder`, gated on `images` (uint8 RGB photos
    or frames holding faces); -> name -> manifest entry."""
    if not images:
        raise ExportError("the face components need at least one image with a face for their parity gate")
    data = samples(images)
    if not data.mesh:
        raise ExportError(f"the face detector found no face in any of the {len(images)} parity images",
                          hint="pass photos of faces (--faces DIR)")
    log(f"face components: {len(data.detector)} images, {len(data.mesh)} face crops; reference: "
        f"TFLite ({interpreter_version()})")
    return {m.component: export_face_component(folder, m, precision, ins, log)
            for m, ins in ((DETECTOR, data.detector), (MESH, data.mesh))}


def face_images(paths: Sequence[Path] = (), limit: int = 24) -> list[np.ndarray]:
    """The face gate's images: the astronaut photo (scikit-image), then the photos and
    sampled video frames (6 each) of `paths` (the build's --faces), whole, not cropped:
    the detector sees whole frames."""
    from skimage import data

    from mnt.export.onnx.samples import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from mnt.runtime.images import read_image
    from mnt.runtime.video import read_frames

    images = [data.astronaut()]
    files = sorted(p for path in map(Path, paths) for p in ([path] if path.is_file() else path.iterdir())
                   if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    for file in files:
        if file.suffix.lower() in IMAGE_SUFFIXES:
            image = read_image(file)
            images += [] if image is None else [image]
        else:
            images += list(read_frames(file, limit=6, step=15))
    return images[:limit]
