"""The face components' parity gates against the TFLite interpreter, per figure of
`mnt.export.faces.parity.compare`. Numpy only (verify runs them without PyTorch).

Measured on 28 real images (the astronaut, the 5 shared targets, 4 frames of each of the
6 shared driving clips) and 84 mesh crops (each detected face's ROI, as is and shifted,
scaled and turned by up to 0.3 rad), ONNX Runtime 1.32 CPU against ai-edge-litert 2.3.0:

| figure | fp32 | fp16 |
| --- | --- | --- |
| mesh points, max (192 px crop) | 2.0e-4 px | 0.085 px |
| mesh points, mean | 3.6e-5 px | 0.026 px |
| mesh depth, max | 5.7e-5 px | 0.032 px |
| presence (probability), max | < 1e-6 | < 1e-6 |
| detector boxes and keypoints of detected anchors, max (128 px input) | 3.1e-5 px | 0.033 px |
| detector scores (probability), max over all anchors | 1e-6 | 5.9e-4 |

FP32 is float32 rounding in another order (XNNPACK against ONNX Runtime's kernels): the
bounds sit about 50x above it and far below what a wrong conversion gives (a transposed
kernel or a pad on the wrong side moves points by pixels). FP16 stores the float16 weights
exactly and computes in float16: its bounds are about 5x the measurement, and still a
fraction of a pixel, where the landmark transformer and the crop cannot tell.
"""

from __future__ import annotations

# figure -> its largest allowed value, per precision
THRESHOLDS: dict[str, dict[str, dict[str, float]]] = {
    "face_detector": {
        "fp32": {"boxes_max_px": 0.01, "scores_max_abs": 1e-4},
        "fp16": {"boxes_max_px": 0.25, "scores_max_abs": 5e-3},
    },
    "face_landmarks": {
        "fp32": {"landmarks_max_px": 0.01, "landmarks_mean_px": 0.002, "depth_max_px": 0.01,
                 "presence_max_abs": 1e-4},
        "fp16": {"landmarks_max_px": 0.5, "landmarks_mean_px": 0.1, "depth_max_px": 0.25,
                 "presence_max_abs": 5e-3},
    },
}


# which output each figure judges
OUTPUT_OF = {"boxes_max_px": "boxes", "scores_max_abs": "scores", "landmarks_max_px": "landmarks",
             "landmarks_mean_px": "landmarks", "depth_max_px": "landmarks", "presence_max_abs": "presence"}


def thresholds(component: str, precision: str) -> dict[str, float]:
    try:
        return THRESHOLDS[component][precision]
    except KeyError:
        raise KeyError(f"no face gate for {component} at {precision}") from None


def judge(component: str, precision: str, figures: dict[str, float]) -> list[str]:
    """The gate's failures (empty when it passes)."""
    return [failure for found in failures_by_output(component, precision, figures).values()
            for failure in found]


def failures_by_output(component: str, precision: str, figures: dict[str, float]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, limit in thresholds(component, precision).items():
        if figures[name] > limit:
            found.setdefault(OUTPUT_OF[name], []).append(f"{name} {figures[name]:.3g} > {limit:g}")
    return found
