"""`mnt-export triton`: an artefact folder as a Triton Inference Server model repository,
for NVIDIA's full server (the NGC image tritonserver:YY.MM-py3, `-igpu` on a Jetson):

    REPO/<component>/config.pbtxt, 1/model.onnx (or model.plan)   one per component
    REPO/mnt_reenact/config.pbtxt, 1/model.py, 1/artifacts/      the stateful model
    REPO/README.md                                               how to run it

The components are stateless models on Triton's ONNX Runtime or TensorRT backend.
`mnt_reenact` is a Python-backend model under the sequence batcher: it holds each
stream's target state, keyed by the sequence's correlation ID, and calls the components
through BLS (mnt.runtime.serve.bls; the container needs mnt, see docs/deploy.md).

A plan (`--format plan`) loads only in the TensorRT version that built it, so the
repository is written for one serving image (`image`, an NGC tag such as 25.01, whose
TensorRT `IMAGE_TENSORRT` knows, or its TensorRT version given outright): every plan's
TensorRT must be that one, and plans with our AOT plugins need TensorRT >= 10.9. Each
plan's TensorRT and GPU are recorded in its config.pbtxt and the README.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from mnt.export.errors import ExportError
from mnt.runtime.manifest import (
    MANIFEST_NAME,
    STATS_NAME,
    ComponentInfo,
    EngineInfo,
    TensorInfo,
    load_manifest,
)
from mnt.runtime.serve.protocol import CONTROLS, DATA, MODEL, OUTPUTS, Spec

FORMATS = ("onnx", "plan")
# NGC tritonserver image (YY.MM) -> the TensorRT in it (NVIDIA's frameworks support matrix;
# -igpu images for Jetson share the release's TensorRT). Others: give the version outright.
IMAGE_TENSORRT = {"24.08": "10.3.0", "24.09": "10.4.0", "24.10": "10.5.0", "24.11": "10.6.0",
                  "24.12": "10.7.0", "25.01": "10.8.0", "25.02": "10.8.0", "25.03": "10.9.0"}
DEFAULT_IMAGE = "25.01"
AOT_PLUGINS_TENSORRT = (10, 9)  # aot_impl (our plugins' ahead-of-time kernels) first appears here
_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
          "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
# The stateful model's own parameters (its config's `parameters`, read by bls.TritonPythonModel)
MAX_STREAMS, IDLE_TIMEOUT_S = 64, 30
MODEL_PY = '''\
"""mnt's stateful reenactment model; its code is the installed package's (pip install mnt)."""

from mnt.runtime.serve.bls import TritonPythonModel  # noqa: F401  (what Triton's Python backend loads)
'''


def _tensor(t: TensorInfo) -> str:
    if t.dtype not in _TYPES:
        raise ExportError(f"{t.name}: dtype {t.dtype} has no Triton type here")
    dims = ", ".join(str(-1 if isinstance(d, str) else d) for d in t.shape)
    return f'  {{ name: "{t.name}" data_type: {_TYPES[t.dtype]} dims: [ {dims} ] }}'


def _spec(s: Spec, optional: bool) -> str:
    optional_field = " optional: true" if optional else ""
    dims = ", ".join(str(d) for d in s.shape)
    return f'  {{ name: "{s.name}" data_type: {s.triton} dims: [ {dims} ]{optional_field} }}'


def _version(text: str) -> tuple[int, ...]:
    from mnt.export.tensorrt.builder import version_tuple

    return version_tuple(text)


def serving_tensorrt(image: str, tensorrt: str | None) -> str:
    """The TensorRT version plans must have for `image` (`tensorrt` overrides the table)."""
    found = tensorrt or IMAGE_TENSORRT.get(image)
    if found is None:
        raise ExportError(f"which TensorRT the tritonserver:{image} image holds is not known here",
                          hint="give it with --serving-tensorrt VERSION (NVIDIA's frameworks support "
                               f"matrix), or choose one of the images {', '.join(IMAGE_TENSORRT)}")
    return found


def check_plans(components: dict[str, ComponentInfo], folder: Path, image: str, tensorrt: str) -> None:
    """Every plan must load in the serving TensorRT `tensorrt`: the same version (compared
    as far as the shorter one goes, at least major.minor.patch when both have it), and
    >= 10.9 for plans with our AOT plugins. ExportError naming every plan that cannot."""
    want = _version(tensorrt)
    bad, plugins = [], []
    for name, info in components.items():
        engine = info.engines["tensorrt"]
        have = _version(engine.tensorrt_version)
        depth = min(len(have), len(want), 3)
        if have[:depth] != want[:depth] or depth < 2:
            bad.append(f"{name} ({engine.tensorrt_version})")
        if engine.ops == "plugins" and want[:2] < AOT_PLUGINS_TENSORRT:
            plugins.append(name)
    if plugins:
        newer = [tag for tag, v in IMAGE_TENSORRT.items() if _version(v)[:2] >= AOT_PLUGINS_TENSORRT]
        raise ExportError(f"{', '.join(plugins)}: plans with our AOT plugins need TensorRT >= 10.9; "
                          f"tritonserver:{image} has TensorRT {tensorrt}",
                          hint=f"serve an image with TensorRT >= 10.9 (--image {newer[0]} or newer) and "
                               "build the plans with its TensorRT, or the standard graphs (no --plugins)")
    if bad:
        raise ExportError(f"{folder}: plans built with another TensorRT than tritonserver:{image}'s "
                          f"{tensorrt}, where they cannot load: {', '.join(bad)}",
                          hint=f"build them with TensorRT {tensorrt} (NVIDIA's tensorrt:{image}-py3 image "
                               f"holds it: mnt-export build --from {folder}), or export --format onnx")


def _plan_note(engine: EngineInfo) -> str:
    return (f"# model.plan: TensorRT {engine.tensorrt_version}, GPU compute capability "
            f"{engine.compute_capability}, {engine.ops} ops; it loads only in that TensorRT, on that GPU")


def component_config(info: ComponentInfo, fmt: str, kind: str, instances: int) -> str:
    platform = "onnxruntime_onnx" if fmt == "onnx" else "tensorrt_plan"
    note = [_plan_note(info.engines["tensorrt"])] if fmt == "plan" else []
    return "\n".join([
        *note, f'name: "{info.name}"', f'platform: "{platform}"',
        "max_batch_size: 0  # shapes are the manifest's; a dynamic axis (K targets) is -1",
        "input [", ",\n".join(_tensor(t) for t in info.inputs), "]",
        "output [", ",\n".join(_tensor(t) for t in info.outputs), "]",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]", ""])


def stateful_config(kind: str, instances: int, batch: int) -> str:
    """The sequence batcher fills CORRID, START and END from each request's sequence fields;
    the oldest strategy lets one instance take many streams, a batch of requests of
    different streams at a time (the model answers each on its own)."""
    controls = {"CORRID": "CONTROL_SEQUENCE_CORRID", "START": "CONTROL_SEQUENCE_START",
                "END": "CONTROL_SEQUENCE_END"}
    control_lines = []
    for spec in CONTROLS:
        value = (f"data_type: {spec.triton}" if spec.name == "CORRID"
                 else "bool_false_true: [ false, true ]")
        control = f"{{ kind: {controls[spec.name]} {value} }}"
        control_lines.append(f'    {{ name: "{spec.name}" control [ {control} ] }}')
    return "\n".join([
        f'name: "{MODEL}"', 'backend: "python"', f"max_batch_size: {batch}",
        "input [", ",\n".join(_spec(s, s.optional) for s in DATA), "]",
        "output [", ",\n".join(_spec(s, False) for s in OUTPUTS), "]",
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {IDLE_TIMEOUT_S * 1_000_000}",
        f"  oldest {{ max_candidate_sequences: {MAX_STREAMS} preferred_batch_size: [ 1 ] }}",
        "  control_input [", ",\n".join(control_lines), "  ]", "}",
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
        f'parameters {{ key: "max_streams" value: {{ string_value: "{MAX_STREAMS}" }} }}',
        f'parameters {{ key: "idle_timeout_s" value: {{ string_value: "{IDLE_TIMEOUT_S}" }} }}', ""])


def _model_file(folder: Path, info: ComponentInfo, fmt: str) -> Path:
    if fmt == "plan":
        engine = info.engines.get("tensorrt")
        if engine is None:
            raise ExportError(f"{info.name} has no TensorRT engine in {folder}",
                              hint="build them on the serving GPU (mnt-export build --from DIR "
                                   "--engines tensorrt), or export --format onnx")
        return folder / engine.file
    if info.custom_ops:
        ops = ", ".join(sorted(info.custom_ops))
        raise ExportError(f"{info.name}.onnx holds {ops} nodes (the plugin variant, built with --plugins): "
                          "Triton's ONNX Runtime backend cannot run them",
                          hint="export --format plan (TensorRT engines, which embed the kernels), or "
                               "build the standard variant (mnt-export build without --plugins)")
    return folder / info.file


def write_repository(folder: Path, out: Path, fmt: str = "onnx", kind: str = "KIND_GPU",
                     instances: int = 1, batch: int = 8, force: bool = False,
                     say: Callable[[str], None] = lambda line: None, image: str = DEFAULT_IMAGE,
                     tensorrt: str | None = None) -> list[str]:
    """-> the models written. `kind`: KIND_GPU or KIND_CPU for the components. `image`: the
    tritonserver tag it is for; `tensorrt`: that image's TensorRT, where the table lacks it."""
    from mnt.runtime.files import staged_folder

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose {' or '.join(FORMATS)}")
    manifest = load_manifest(folder)
    components = manifest.all_components
    if not manifest.faces:
        raise ExportError(f"{folder} has no face components (face_detector, face_landmarks), which the "
                          "stateful model runs for every frame",
                          hint="rebuild it with the faces extra installed (pip install 'mnt[faces]')")
    sources = {name: _model_file(folder, info, fmt) for name, info in components.items()}
    if fmt == "plan":
        check_plans(components, folder, image, serving_tensorrt(image, tensorrt))
    with staged_folder(out, force, "the Triton repository", ExportError) as staging:
        suffix = "onnx" if fmt == "onnx" else "plan"
        for name, info in components.items():
            (staging / name / "1").mkdir(parents=True)
            shutil.copyfile(sources[name], staging / name / "1" / f"model.{suffix}")
            (staging / name / "config.pbtxt").write_text(component_config(info, fmt, kind, instances))
            say(f"{name}: model.{suffix}")
        version = staging / MODEL / "1"
        (version / "artifacts").mkdir(parents=True)
        for file in (MANIFEST_NAME, STATS_NAME):
            shutil.copyfile(folder / file, version / "artifacts" / file)
        (version / "model.py").write_text(MODEL_PY)
        (staging / MODEL / "config.pbtxt").write_text(stateful_config(kind, instances, batch))
        say(f"{MODEL}: the stateful model (Python backend, sequence batching)")
        plans = {name: info.engines["tensorrt"] for name, info in components.items()} if fmt == "plan" else {}
        (staging / "README.md").write_text(readme(fmt, image, plans))
    return [*components, MODEL]


def readme(fmt: str, image: str = DEFAULT_IMAGE, plans: dict[str, EngineInfo] | None = None) -> str:
    from importlib.metadata import version

    plan_lines = "".join(f"- `{name}`: TensorRT {e.tensorrt_version}, compute capability "
                         f"{e.compute_capability}, {e.ops} ops\n" for name, e in (plans or {}).items())
    if plan_lines:
        plan_lines = (f"\nThe plans load only in the TensorRT that built them, on their GPU (this "
                      f"repository was checked against tritonserver:{image}):\n\n{plan_lines}")

    return f"""# mnt Triton model repository

Written by `mnt-export triton` (mnt {version("mnt")}); components as `model.{'onnx' if fmt == 'onnx'
else 'plan'}`. Serve it with NVIDIA's Triton Inference Server image, with mnt installed in it
for the stateful model (`mnt_reenact`):

```bash
docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD:/models \\
  nvcr.io/nvidia/tritonserver:{image}-py3 \\
  bash -c "pip install 'mnt[human-check]' && pip uninstall -y opencv-contrib-python && \\
           pip install 'opencv-contrib-python-headless>=4.9,<4.12' && tritonserver --model-repository /models"
```

(The image has no libGL, which the non-headless OpenCV that mnt depends on needs; the headless
wheel is the same OpenCV without it. docs/deploy.md has the whole recipe.)
{plan_lines}
On a Jetson use the `-igpu` image. Then, on any machine with `pip install 'mnt[serve]'`:
`mnt-run driver.mp4 --targets photos/ --server grpc://HOST:8001`.

A stream is a sequence (one correlation ID): START with TARGETS (1 to 8 photo files'
bytes), then one FRAME (uint8 RGB, H x W x 3) per request, then END. Streams idle for
{IDLE_TIMEOUT_S} s are ended. Several servers behind a load balancer scale out: the
balancer must keep a sequence on one server (sequence affinity: route by the correlation
ID, or keep a client's gRPC connection on one server).
"""
