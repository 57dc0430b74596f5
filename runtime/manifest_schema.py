"""The manifest's schema, checked on the parsed JSON before anything is built from it: an
artefact folder is untrusted input, so every problem is found and named by its field (one
line for all of them) instead of surfacing later as a KeyError or TypeError."""

from __future__ import annotations

from typing import Any

REQUIRED_COMPONENTS = ("target_encoder", "landmark_disentangler", "generator")
FACE_COMPONENTS = ("face_detector", "face_landmarks")  # optional, under "face_components"
DTYPES = ("float32", "float16")
STATS_NAME = "landmark_stats.npz"  # the landmark statistics: read by the runtime, so hashed
PATH_RULE = "a relative path inside the artefact folder, without '..'"
# The model's tensors whose shapes the runtime relies on (S: model.image_size), the
# generator's other inputs being the target encoder's outputs.
FIXED_TENSORS = {
    "target_encoder": {"inputs": {"target_images": (3, "S", "S"), "target_landmarks": (3, "S", "S")}},
    "landmark_disentangler": {"inputs": {"images": (3, "S", "S"), "landmark_offsets": (204,)},
                              "outputs": {"coefficients": (48,)}},
    "generator": {"inputs": {"driver_landmarks": (3, "S", "S")}, "outputs": {"image": (3, "S", "S")}},
}
# model.image_size: a multiple of 32 (five downsamplings), at most what a checkpoint allows
IMAGE_SIZES = (32, 2048)


def path_problem(text: str) -> str | None:
    """Why `text` may not be a path a manifest names, None if it may. The folder is untrusted,
    so no path may reach out of it (a link out is caught where the folder is known, in
    mnt.runtime.manifest); backslashes count as separators, as they would on Windows."""
    parts = text.replace("\\", "/").split("/")
    if not text.strip() or text.startswith(("/", "\\")) or text[1:2] == ":" or ".." in parts \
            or "\0" in text:
        return f"{text!r}, expected {PATH_RULE}"
    return None


def kind_of(value: Any) -> str:
    """How a JSON value is named in a problem: 'an object', 'a list', ..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _is(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "bool": bool, "dict": dict, "list": list}[kind])


_EXPECTED = {"int": "an integer", "number": "a number", "str": "a string", "bool": "a boolean",
             "dict": "an object", "list": "a list"}


class _Schema:
    """Collects every problem of a manifest's JSON, each naming its field."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def field(self, data: dict[str, Any], key: str, kind: str, where: str,
              optional: bool = False) -> Any:
        """data[key] if it is of `kind`, else None (a problem is recorded unless optional and absent)."""
        path = f"{where}.{key}" if where else key
        if key not in data or (optional and data[key] is None):
            if not optional:
                self.problems.append(f"{path} is missing")
            return None
        return self.value(data[key], kind, path)

    def value(self, value: Any, kind: str, path: str) -> Any:
        if _is(value, kind):
            return value
        self.problems.append(f"{path} is {kind_of(value)}, expected {_EXPECTED[kind]}")
        return None

    def manifest(self, data: Any) -> None:
        for key in ("tool_version", "checkpoint_sha256", "precision"):
            self.field(data, key, "str", "")
        self.field(data, "opset", "int", "")
        versions = self.field(data, "versions", "dict", "")
        model = self.field(data, "model", "dict", "")
        if model is not None:
            size = self.field(model, "image_size", "int", "model")
            lo, hi = IMAGE_SIZES
            if size is not None and not (lo <= size <= hi and size % lo == 0):
                self.problems.append(f"model.image_size is {size}, expected a multiple of {lo} "
                                     f"from {lo} to {hi}")
        files = self.field(data, "files", "dict", "")
        for mapping, where in ((versions, "versions"), (files, "files")):
            for name, text in (mapping or {}).items():
                self.value(text, "str", f"{where}.{name}")
        for name in files or {}:
            self.path(name, "files", key=True)
        if files is not None and STATS_NAME not in files:
            self.problems.append(f"files.{STATS_NAME} is missing (the runtime reads it, so it must "
                                 "be hashed)")
        self.field(data, "calibration", "dict", "", optional=True)
        components = self.field(data, "components", "dict", "")
        if components is None:
            return
        for name in REQUIRED_COMPONENTS:
            if name not in components:
                self.problems.append(f"components.{name} is missing")
        for name, component in components.items():
            if name not in REQUIRED_COMPONENTS:  # what this mnt would neither load nor verify
                self.problems.append(f"components.{name} is not a component of this model "
                                     f"({', '.join(REQUIRED_COMPONENTS)})")
            elif self.value(component, "dict", f"components.{name}") is not None:
                self.component(component, f"components.{name}")
        faces = self.field(data, "face_components", "dict", "", optional=True) or {}
        for name, component in faces.items():
            where = f"face_components.{name}"
            if name not in FACE_COMPONENTS:
                self.problems.append(f"{where} is not a face component ({', '.join(FACE_COMPONENTS)})")
            elif self.value(component, "dict", where) is not None:
                self.component(component, where, converted=True)

    def component(self, data: dict[str, Any], where: str, converted: bool = False) -> None:
        """`converted`: a network converted from another format (the face components), gated
        against its original instead of PyTorch, with its source recorded."""
        onnx = self.field(data, "onnx", "dict", where)
        if onnx is not None:
            self.path(self.field(onnx, "file", "str", f"{where}.onnx"), f"{where}.onnx.file")
            self.field(onnx, "sha256", "str", f"{where}.onnx")
        self.field(data, "precision", "str", where)
        self.field(data, "phase", "str", where)
        dims = self.field(data, "dims", "dict", where) or {}
        for dim, bounds in dims.items():
            self.dim(bounds, f"{where}.dims.{dim}")
        outputs: list[str] = []
        for side in ("inputs", "outputs"):
            tensors = self.field(data, side, "list", where)
            if tensors is not None and not tensors:
                self.problems.append(f"{where}.{side} is empty")
            names = [self.tensor(t, dims, f"{where}.{side}[{i}]") for i, t in enumerate(tensors or [])]
            for name in sorted({n for n in names if n is not None and names.count(n) > 1}):
                self.problems.append(f"{where}.{side} has the name {name!r} more than once")
            if side == "outputs":
                outputs = [n for n in names if n is not None]
        accuracy = self.field(data, "accuracy", "dict", where)
        if accuracy is not None:
            self.accuracy(accuracy, outputs, f"{where}.accuracy", converted)
        if converted:
            origin = self.field(data, "source", "dict", where)
            for key in ("file", "sha256", "licence"):
                if origin is not None:
                    self.field(origin, key, "str", f"{where}.source")
        golden = self.field(data, "golden", "dict", where, optional=True)
        if golden is not None:
            self.path(self.field(golden, "file", "str", f"{where}.golden"), f"{where}.golden.file")
            self.field(golden, "sha256", "str", f"{where}.golden")
        engines = self.field(data, "engines", "dict", where, optional=True) or {}
        for runtime, engine in engines.items():
            if self.value(engine, "dict", f"{where}.engines.{runtime}") is not None:
                self.engine(engine, f"{where}.engines.{runtime}")
        if data.get("engine"):  # mnt 0.1: one TensorRT engine
            if self.value(data["engine"], "dict", f"{where}.engine") is not None:
                self.engine(data["engine"], f"{where}.engine")
        custom_ops = self.field(data, "custom_ops", "dict", where, optional=True) or {}
        for op, count in custom_ops.items():
            self.value(count, "int", f"{where}.custom_ops.{op}")

    def path(self, text: str | None, where: str, key: bool = False) -> None:
        """A file the manifest names: the value at `where`, or (`key`) a key of `where`."""
        problem = None if text is None else path_problem(text)
        if problem is not None:
            self.problems.append(f"{where} {'names' if key else 'is'} {problem}")

    def dim(self, bounds: Any, where: str) -> None:
        if self.value(bounds, "dict", where) is None:
            return
        lo, hi = self.field(bounds, "min", "int", where), self.field(bounds, "max", "int", where)
        if lo is not None and hi is not None and not 1 <= lo <= hi:
            self.problems.append(f"{where} is {lo}..{hi}, expected 1 <= min <= max")

    def tensor(self, data: Any, dims: dict[str, Any], where: str) -> str | None:
        if self.value(data, "dict", where) is None:
            return None
        name = self.field(data, "name", "str", where)
        dtype = data.get("dtype")
        if "dtype" not in data:
            self.problems.append(f"{where}.dtype is missing")
        elif dtype not in DTYPES:
            self.problems.append(f"{where}.dtype is {dtype!r}, expected float32 or float16")
        shape = self.field(data, "shape", "list", where)
        for i, size in enumerate(shape or []):
            if _is(size, "int"):
                if size < 1:
                    self.problems.append(f"{where}.shape[{i}] is {size}, expected a positive size")
            elif isinstance(size, str):
                if size not in dims:
                    self.problems.append(f"{where}.shape[{i}] is the dim {size!r}, which is not in dims")
            else:
                self.problems.append(f"{where}.shape[{i}] is {kind_of(size)}, "
                                     "expected an integer or a dim name")
        return name

    def accuracy(self, data: dict[str, Any], outputs: list[str], where: str, converted: bool = False) -> None:
        # what verify and inspect read
        self.field(data, "psnr_db", "number", where)
        self.field(data, "max_abs_error", "number", where)
        self.field(data, "passed", "bool", where)
        if converted:  # its figures against the original, in pixels and probabilities
            for name, value in (self.field(data, "figures", "dict", where) or {}).items():
                self.value(value, "number", f"{where}.figures.{name}")
        per_output = self.field(data, "outputs", "dict", where)
        if per_output is None:
            return
        for name in outputs:
            entry = self.field(per_output, name, "dict", f"{where}.outputs")
            if entry is None:
                continue
            self.field(entry, "psnr_db", "number", f"{where}.outputs.{name}")
            if converted:
                continue
            torch32 = self.field(entry, "torch_fp32", "dict", f"{where}.outputs.{name}")
            for key in ("max_abs_error", "rmse", "psnr_db"):
                if torch32 is not None:
                    self.field(torch32, key, "number", f"{where}.outputs.{name}.torch_fp32")

    def engine(self, data: dict[str, Any], where: str) -> None:
        for key in ("file", "sha256", "tensorrt_version", "compute_capability", "build_key", "ops"):
            value = self.field(data, key, "str", where)
            if key == "file":
                self.path(value, f"{where}.file")
        self.field(data, "plugin_library_sha256", "str", where, optional=True)
        self.field(data, "runtime", "str", where, optional=True)
        for i, cc in enumerate(self.field(data, "compute_capabilities", "list", where, optional=True) or []):
            self.value(cc, "str", f"{where}.compute_capabilities[{i}]")


def _consistency(data: dict[str, Any]) -> list[str]:
    """Fields that contradict each other, in a manifest whose fields are each well-formed:
    the image size against the components' shapes, the generator against the target encoder."""
    size = data["model"]["image_size"]
    components = data["components"]
    found = []
    for name, sides in FIXED_TENSORS.items():
        for side, tensors in sides.items():
            shapes = {t["name"]: t["shape"][1:] for t in components[name][side]}
            for tensor, shape in tensors.items():
                want = [size if d == "S" else d for d in shape]
                if tensor not in shapes:
                    found.append(f"components.{name}.{side} has no {tensor!r}")
                elif shapes[tensor] != want:
                    found.append(f"components.{name}.{side} {tensor!r} is {shapes[tensor]} per item, but "
                                 f"model.image_size {size} needs {want}")
    made = {t["name"]: t["shape"][1:] for t in components["target_encoder"]["outputs"]}
    taken = {t["name"]: t["shape"][1:] for t in components["generator"]["inputs"]
             if t["name"] != "driver_landmarks"}
    if made != taken:
        found.append(f"components.generator.inputs {sorted(taken)} do not match "
                     f"components.target_encoder.outputs {sorted(made)} (names and shapes)")
    return found


def problems(data: dict[str, Any]) -> list[str]:
    """Every problem of a manifest's JSON object (schema_version aside), each naming its field."""
    schema = _Schema()
    schema.manifest(data)
    return schema.problems or _consistency(data)
