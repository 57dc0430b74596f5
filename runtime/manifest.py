"""The artefact manifest: a sidecar ``manifest.json`` that describes one build folder.

Written last and atomically by ``mnt-export build``; read by the runtime, ``verify`` and
``inspect``. A folder without a readable manifest of this schema is not an artefact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import atomic_path, sha256_file
from mnt.runtime.manifest_schema import PATH_RULE, kind_of, problems
from mnt.runtime.manifest_schema import STATS_NAME as STATS_NAME  # the statistics beside the components

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REBUILD_HINT = "rebuild it with `mnt-export build --checkpoint CKPT --out DIR`"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name: "float32" or "float16"
    shape: tuple[int | str, ...]  # str: a dynamic axis, its range in ComponentInfo.dims

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorInfo:
        return cls(data["name"], data["dtype"], tuple(data["shape"]))


@dataclass(frozen=True)
class EngineInfo:
    """An engine of one component, for one runtime:
    - "tensorrt": built on the device, valid only for this TensorRT version and the GPU's
      compute capability (the runtime refuses it elsewhere);
    - "tensorrt-rtx": built anywhere (no GPU needed), valid for this TensorRT-RTX version on
      GPUs of the listed compute capabilities, compiled just-in-time there on first run."""

    file: str
    sha256: str
    tensorrt_version: str  # of the runtime: TensorRT's, or TensorRT-RTX's
    compute_capability: str  # "8.7" (tensorrt); "" for tensorrt-rtx, see compute_capabilities
    plugin_library_sha256: str | None  # the kernel library whose PTX the engine embeds
    build_key: str  # mnt.export.tensorrt.builder.build_key: ONNX, settings, versions, GPUs, plugins
    ops: str  # "native": TensorRT's own layers; "plugins": our kernels (mnt::* nodes)
    runtime: str = "tensorrt"
    compute_capabilities: tuple[str, ...] = ()  # tensorrt-rtx: the GPUs it was built for

    def to_json(self) -> dict[str, Any]:
        data = {"file": self.file, "sha256": self.sha256, "runtime": self.runtime,
                "tensorrt_version": self.tensorrt_version, "compute_capability": self.compute_capability,
                "plugin_library_sha256": self.plugin_library_sha256, "build_key": self.build_key,
                "ops": self.ops}
        if self.compute_capabilities:
            data["compute_capabilities"] = list(self.compute_capabilities)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineInfo:
        return cls(data["file"], data["sha256"], data["tensorrt_version"], data["compute_capability"],
                   data.get("plugin_library_sha256"), data["build_key"], data["ops"],
                   data.get("runtime", "tensorrt"), tuple(data.get("compute_capabilities", ())))


@dataclass(frozen=True)
class ComponentInfo:
    name: str
    file: str
    sha256: str
    precision: str
    phase: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    dims: dict[str, tuple[int, int]]
    accuracy: dict[str, Any]
    golden: dict[str, str] | None = None  # {"file", "sha256"} of stored inputs and outputs
    engines: dict[str, EngineInfo] = field(default_factory=dict)  # runtime -> its engine, once built
    # Plugin variant (`mnt-export build --plugins`): custom node -> count, e.g. {"mnt::Warp": 4}
    custom_ops: dict[str, int] = field(default_factory=dict)
    # Converted networks (the face components): where the original came from, its licence
    source: dict[str, str] | None = None

    @property
    def variant(self) -> str:
        """'plugins' when the graph holds mnt:: custom nodes (TensorRT plugins), else 'standard'."""
        return "plugins" if self.custom_ops else "standard"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "onnx": {"file": self.file, "sha256": self.sha256},
            "precision": self.precision,
            "phase": self.phase,
            "variant": self.variant,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "dims": {name: {"min": lo, "max": hi} for name, (lo, hi) in self.dims.items()},
            "accuracy": self.accuracy,
        }
        if self.golden:
            data["golden"] = self.golden
        if self.engines:
            data["engines"] = {runtime: e.to_json() for runtime, e in self.engines.items()}
        if self.custom_ops:
            data["custom_ops"] = dict(self.custom_ops)
        if self.source:
            data["source"] = dict(self.source)
        return data

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ComponentInfo:
        return cls(
            name=name, file=data["onnx"]["file"], sha256=data["onnx"]["sha256"],
            precision=data["precision"], phase=data["phase"],
            inputs=tuple(TensorInfo.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorInfo.from_json(t) for t in data["outputs"]),
            dims={k: (v["min"], v["max"]) for k, v in data["dims"].items()},
            accuracy=data["accuracy"], golden=data.get("golden"),
            engines=_engines(data),
            custom_ops=dict(data.get("custom_ops") or {}),
            source=data.get("source"),
        )


def _engines(component: dict[str, Any]) -> dict[str, EngineInfo]:
    engines = {runtime: EngineInfo.from_json(e) for runtime, e in (component.get("engines") or {}).items()}
    if component.get("engine"):  # written by mnt 0.1 before TensorRT-RTX: one TensorRT engine
        engines.setdefault("tensorrt", EngineInfo.from_json(component["engine"]))
    return engines


@dataclass(frozen=True)
class Manifest:
    tool_version: str
    checkpoint_sha256: str
    precision: str
    opset: int
    versions: dict[str, str]  # torch, onnx, onnxruntime, ...
    model: dict[str, Any]  # the checkpoint's config
    components: dict[str, ComponentInfo]
    files: dict[str, str]  # other files of the build (landmark statistics): name -> sha256
    # INT8 builds (mnt.calibration): the calibration sample, per component the layers kept
    # in higher precision and why, and the accuracy report's summary. None otherwise.
    calibration: dict[str, Any] | None = None
    # Optional: mediapipe's face networks converted to ONNX (`face_detector`, `face_landmarks`),
    # what the runtime's ONNX landmark backend runs. Apart from `components` (the model
    # itself), which every backend, engine build and INT8 step goes through; folders built
    # before them, or without mediapipe on the export machine, simply lack them.
    faces: dict[str, ComponentInfo] = field(default_factory=dict)

    @property
    def all_components(self) -> dict[str, ComponentInfo]:
        """The model's components and the face components: what is hashed and verified."""
        return {**self.components, **self.faces}

    def paths(self) -> dict[str, str]:
        """Every file this manifest names, by its field: what must stay inside the folder."""
        named = {f"files.{name}": name for name in self.files}
        for section, components in (("components", self.components), ("face_components", self.faces)):
            for name, c in components.items():
                named[f"{section}.{name}.onnx.file"] = c.file
                if c.golden:
                    named[f"{section}.{name}.golden.file"] = c.golden["file"]
                for runtime, engine in c.engines.items():
                    named[f"{section}.{name}.engines.{runtime}.file"] = engine.file
        return named

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "tool_version": self.tool_version,
            "checkpoint_sha256": self.checkpoint_sha256,
            "precision": self.precision,
            "opset": self.opset,
            "versions": self.versions,
            "model": self.model,
            "files": self.files,
            "components": {name: c.to_json() for name, c in self.components.items()},
        }
        if self.calibration is not None:
            data["calibration"] = self.calibration
        if self.faces:
            data["face_components"] = {name: c.to_json() for name, c in self.faces.items()}
        return data

    def write(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder) / MANIFEST_NAME
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        return path


def load_manifest(folder: str | os.PathLike[str]) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise RuntimeStageError(f"{folder} is not an mnt artefact folder (no {MANIFEST_NAME})",
                                hint=REBUILD_HINT)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RuntimeStageError(f"{path} is not readable JSON: {err}", hint=REBUILD_HINT) from err
    if not isinstance(data, dict):
        raise RuntimeStageError(f"{path} is {kind_of(data)}, expected a JSON object", hint=REBUILD_HINT)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RuntimeStageError(
            f"{path} has schema version {data.get('schema_version')!r}; this mnt reads "
            f"{SCHEMA_VERSION}", hint=REBUILD_HINT)
    found = problems(data)
    if found:
        raise RuntimeStageError(f"{path}: " + "; ".join(found), hint=REBUILD_HINT)
    manifest = Manifest(
        tool_version=data["tool_version"], checkpoint_sha256=data["checkpoint_sha256"],
        precision=data["precision"], opset=data["opset"], versions=data["versions"],
        model=data["model"], files=data["files"],
        components={n: ComponentInfo.from_json(n, c) for n, c in data["components"].items()},
        calibration=data.get("calibration"),
        faces={n: ComponentInfo.from_json(n, c) for n, c in (data.get("face_components") or {}).items()},
    )
    linked_out = _outside(Path(folder), manifest)
    if linked_out:
        raise RuntimeStageError(f"{path}: " + "; ".join(linked_out), hint=REBUILD_HINT)
    return manifest


def _outside(folder: Path, manifest: Manifest) -> list[str]:
    """The named files that a link takes out of the folder (the schema has refused '..' and
    absolute paths): an artefact folder must not make mnt read, verify or copy other files."""
    root = folder.resolve()
    found = []
    for where, name in manifest.paths().items():
        try:
            inside = (folder / name).resolve().is_relative_to(root)
        except (OSError, RuntimeError):  # a link loop
            inside = False
        if not inside:
            found.append(f"{where} is {name!r}, a link out of the folder; expected {PATH_RULE}")
    return found


def check_hashes(folder: str | os.PathLike[str], manifest: Manifest, goldens: bool = True) -> list[str]:
    """Names of the files whose content no longer matches the manifest (the goldens too,
    unless `goldens` is False: the runtime loads only the components and statistics)."""
    components = manifest.all_components.values()
    expected = {c.file: c.sha256 for c in components}
    if goldens:
        expected.update({c.golden["file"]: c.golden["sha256"] for c in components if c.golden})
    expected.update(manifest.files)
    bad = []
    for name, digest in expected.items():
        path = Path(folder) / name
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return bad
