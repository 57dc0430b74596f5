"""The stateful interface of the `mnt_reenact` model, the same on `mnt-serve` (PyTriton)
and in the exported Triton repository (a Python-backend model under Triton's sequence
batcher), and the one function that answers a request on a `Hub`.

A stream is a sequence with a correlation ID (CORRID): its first request has START and
the target photos (TARGETS: image files' bytes one after another, TARGET_SIZES: each
one's length: plain uint8, which every client sends as it is), the next ones a driver frame each (FRAME,
uint8 RGB, with its time in seconds in TIME), the last END (with or without a frame).
On Triton's sequence batcher the client sets the sequence flags and Triton fills CORRID,
START and END; mnt-serve has no sequence batcher, so the client sends them as inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mnt.runtime.errors import RuntimeStageError

if TYPE_CHECKING:  # (the hub needs OpenCV; the interface does not: bls imports it without)
    from mnt.runtime.hub import Hub

MODEL = "mnt_reenact"
# What starts a refused request's error text: the client finds the reason behind it in
# whatever the server wraps around it (PyTriton sends a traceback).
REFUSED = "mnt refused the request"


@dataclass(frozen=True)
class Spec:
    name: str
    dtype: Any  # numpy dtype (np.bytes_ for Triton's BYTES)
    shape: tuple[int, ...]
    triton: str  # the config's data_type
    optional: bool = True


CONTROLS = (
    Spec("CORRID", np.uint64, (1,), "TYPE_UINT64", optional=False),
    Spec("START", np.bool_, (1,), "TYPE_BOOL"),
    Spec("END", np.bool_, (1,), "TYPE_BOOL"),
)
DATA = (
    Spec("TARGETS", np.uint8, (-1,), "TYPE_UINT8"),
    Spec("TARGET_SIZES", np.int64, (-1,), "TYPE_INT64"),
    Spec("TARGET_NAMES", np.uint8, (-1,), "TYPE_UINT8"),  # the photos' names, UTF-8, one per line
    Spec("FRAME", np.uint8, (-1, -1, 3), "TYPE_UINT8"),
    Spec("TIME", np.float64, (1,), "TYPE_FP64"),
)
OUTPUTS = (
    Spec("FOUND", np.bool_, (1,), "TYPE_BOOL"),  # whether a face was made (FACE and CROP then come)
    Spec("FACE", np.uint8, (-1, -1, 3), "TYPE_UINT8"),  # the reenacted face
    Spec("CROP", np.uint8, (-1, -1, 3), "TYPE_UINT8"),  # the driver's crop, as the generator saw it
    Spec("TARGET_CROPS", np.uint8, (-1, -1, -1, 3), "TYPE_UINT8"),  # START: the aligned targets
    Spec("TARGET_MATRICES", np.float64, (-1, 2, 3), "TYPE_FP64"),  # START: photo -> crop
)


def handle(hub: Hub, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One request's inputs -> its outputs; RuntimeStageError for a request the hub
    refuses (the stream's state, and every other stream's, stay as they were)."""
    unknown = sorted(set(inputs) - {s.name for s in CONTROLS + DATA})
    if unknown:
        raise RuntimeStageError(f"unknown inputs {', '.join(unknown)}",
                                hint=f"send {', '.join(s.name for s in CONTROLS + DATA)} only")
    stream = str(int(_scalar(inputs, "CORRID", np.integer, required=True)))
    start, end = bool(_scalar(inputs, "START", np.bool_)), bool(_scalar(inputs, "END", np.bool_))
    out = {"FOUND": np.zeros(1, np.bool_)}  # (only what applies: zero-size tensors cannot travel)
    if any(name.startswith("TARGET") for name in inputs) and not start:
        raise RuntimeStageError(f"stream {stream!r}: TARGETS come only with START",
                                hint="start a new stream to change the targets")
    if not start and not end and "FRAME" not in inputs:
        raise RuntimeStageError(f"stream {stream!r}: the request holds no FRAME",
                                hint="send START with TARGETS, then FRAME per driver frame, then END")
    if start:
        photos = _photos(stream, inputs)
        names = bytes(np.asarray(inputs.get("TARGET_NAMES", []), np.uint8)).decode("utf-8", "replace")
        crops = hub.start(stream, photos, names.splitlines()).targets.crops
        out["TARGET_CROPS"] = np.stack([c.image for c in crops])
        out["TARGET_MATRICES"] = np.stack([c.matrix for c in crops]).astype(np.float64)
    try:
        if "FRAME" in inputs:
            at = _scalar(inputs, "TIME", np.floating)
            result = hub.frame(stream, np.asarray(inputs["FRAME"]), None if at is None else float(at))
            if result is not None:
                face, crop = result
                out.update(FACE=face, CROP=crop.image, FOUND=np.ones(1, np.bool_))
    finally:
        if end and not hub.end(stream) and not start:
            raise RuntimeStageError(f"stream {stream!r} is not running; nothing to end")
    return out


def pack_photos(photos: list[bytes]) -> dict[str, np.ndarray]:
    """Image files' bytes -> TARGETS and TARGET_SIZES."""
    return {"TARGETS": np.frombuffer(b"".join(photos), np.uint8),
            "TARGET_SIZES": np.array([len(p) for p in photos], np.int64)}


def _photos(stream: str, inputs: dict[str, np.ndarray]) -> list[bytes]:
    if "TARGETS" not in inputs or "TARGET_SIZES" not in inputs:
        raise RuntimeStageError(f"stream {stream!r}: START needs TARGETS and TARGET_SIZES (1 to 8 photos' "
                                "file bytes, and each one's length)")
    data = np.asarray(inputs["TARGETS"]).reshape(-1)
    sizes = np.asarray(inputs["TARGET_SIZES"]).reshape(-1)
    if data.dtype != np.uint8 or not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes < 0) \
            or int(sizes.sum()) != data.size:
        raise RuntimeStageError(f"stream {stream!r}: TARGET_SIZES ({sizes.tolist()}) do not add up to the "
                                f"{data.size} bytes of TARGETS (uint8)")
    ends = np.cumsum(sizes)
    return [data[end - size:end].tobytes() for size, end in zip(sizes, ends, strict=True)]


def _scalar(inputs: dict[str, np.ndarray], name: str, kind: type, required: bool = False) -> Any:
    value = inputs.get(name)
    if value is None:
        if required:
            raise RuntimeStageError(f"the request has no {name}", hint="every request names its stream")
        return None
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, kind):
        raise RuntimeStageError(f"{name} must be one {kind.__name__} value, got {array.dtype} {array.shape}")
    return array.reshape(-1)[0]
