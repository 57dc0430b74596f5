"""`mnt::Warp` and `mnt::CrossAttention` as TensorRT plugins (Python plugin API, IPluginV3
era) with ahead-of-time kernels: the engine embeds the PTX of our kernels and TensorRT
launches them itself, so engines run without Python (and from C++ or trtexec).

Why here, on the export side: only building an engine needs the registration; an AOT
engine carries its kernels. The kernels come from the folder written by `mnt-export
kernels` (its files checked against kernels.json by mnt.kernels.loader.read_manifest);
everything about a kernel (plugin name, dtypes, arguments, launch geometry, shape limits)
comes from its spec in that manifest, read through mnt.kernels.spec.

TensorRT passes an AOT kernel its arguments as (input pointers, extra int32 arguments,
output pointers), and our kernels declare theirs in that order, so the PTX is embedded
exactly as nvcc wrote it; loading checks the spec and each PTX entry against that order
(mnt.kernels.build), so a kernel that changes its signature fails here, not on a GPU.

This module must not use `from __future__ import annotations`: tensorrt.plugin validates
the decorated functions' annotations as objects.
"""

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnt.export.errors import ExportError
from mnt.kernels.errors import KernelError
from mnt.kernels.spec import (
    OPS,
    dtypes,
    evaluate,
    limit_violations,
    onnx_name,
    op_spec,
    relation_violations,
    scalar_args,
    shape_symbols,
    symbol_values,
    validate_spec,
)
from mnt.runtime import gpu

_registered: str | None = None  # the kernel folder registered in this process
AOT_TENSORRT = (10, 9)  # the first TensorRT with ahead-of-time Python plugins (tensorrt.plugin: 10.6)


@dataclass(frozen=True)
class AotKernel:
    """One kernel as TensorRT's AOT plugin launches it: name, the op's PTX as nvcc wrote it,
    the int32 arguments' symbols in order, and the launch formulas."""

    name: str
    ptx: str
    scalar_args: tuple[str, ...]
    grid: tuple[str, str, str]
    block: tuple[int, int, int]
    shared_bytes: int


@dataclass(frozen=True)
class PluginKernels:
    """The kernel library's AOT kernels, per op and storage dtype."""

    folder: Path
    sha256: str  # of kernels.json, which holds the sha256 of every file of the library
    specs: dict[str, dict[str, Any]]
    kernels: dict[tuple[str, str], AotKernel]
    nvcc_version: str = ""  # the toolkit that wrote the PTX, from kernels.json

    def launch(self, op: str, dtype: str, shapes: Sequence[Sequence[Any]],
               cdiv: Callable[[Any, Any], Any]) -> tuple[AotKernel, tuple[Any, Any, Any], list[Any]]:
        """(kernel, grid (x, y, z), int32 arguments) for inputs of `shapes` (ints or shape
        expressions)."""
        if (op, dtype) not in self.kernels:
            raise ExportError(f"no {op} kernel for {dtype} in {self.folder}")
        kernel = self.kernels[op, dtype]
        symbols = shape_symbols(self.specs[op], shapes)
        grid = tuple(evaluate(f, symbols, cdiv) for f in kernel.grid)
        args = [evaluate(name, symbols, cdiv) for name in kernel.scalar_args]
        return kernel, (grid[0], grid[1], grid[2]), args


def load_plugin_kernels(folder: Path) -> PluginKernels:
    """The AOT kernels of a library folder from `mnt-export kernels` (files checked against
    kernels.json by the loader; each op's spec checked, and each kernel's arguments and PTX
    entry checked against the order TensorRT launches with)."""
    from mnt.kernels.build import check_ptx_params, check_tensorrt_order, ptx_entries
    from mnt.kernels.loader import MANIFEST_NAME, read_manifest

    rebuild = f"rebuild it with `mnt-export kernels --out {folder} --force`"
    try:
        manifest = read_manifest(folder)
    except KernelError as err:
        raise ExportError(str(err), hint=err.hint) from err
    specs, kernels = {}, {}
    for op in OPS:
        spec = manifest.get("ops", {}).get(op)
        if spec is None:
            raise ExportError(f"{folder / MANIFEST_NAME} has no op {op!r}", hint=rebuild)
        try:
            validate_spec(spec, f"{folder / MANIFEST_NAME} (op {op})")
        except KernelError as err:
            raise ExportError(str(err), hint=rebuild) from err
        # The ONNX nodes are named from this mnt's specs: the plugins must register those names.
        ours = op_spec(op)
        if onnx_name(spec) != onnx_name(ours) or spec["version"] != ours["version"]:
            raise ExportError(f"{folder / MANIFEST_NAME}: op {op} is {onnx_name(spec)} version "
                              f"{spec['version']}, this mnt's is {onnx_name(ours)} version {ours['version']}",
                              hint=rebuild)
        specs[op] = spec
        ptx = (folder / spec["ptx"]).read_text()  # embedded unchanged: one module per op
        entries = ptx_entries(ptx)
        launch = spec["launch"]
        for dtype in dtypes(spec):
            entry = spec["kernels"][dtype]
            if entry["name"] not in entries:
                raise ExportError(f"{spec['ptx']} has no kernel entry {entry['name']}", hint=rebuild)
            try:
                check_tensorrt_order(spec, dtype)
                check_ptx_params(entry["name"], entries[entry["name"]], entry["args"])
            except KernelError as err:
                raise ExportError(f"{folder / spec['ptx']}: {err}", hint=rebuild) from err
            kernels[op, dtype] = AotKernel(
                name=entry["name"], ptx=ptx, scalar_args=scalar_args(spec, dtype),
                grid=(str(launch["grid"][0]), str(launch["grid"][1]), str(launch["grid"][2])),
                block=(int(launch["block"][0]), int(launch["block"][1]), int(launch["block"][2])),
                shared_bytes=int(launch.get("shared_bytes", 0)))
    digest = hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest()
    return PluginKernels(folder, digest, specs, kernels, str(manifest.get("nvcc_version", "")))


def version_tuple(text: str) -> tuple[int, ...]:
    """(10, 3, 0, 30) from "10.3.0.30" (a suffix such as "post1" or "+cuda12" ends it)."""
    numbers = []
    for part in text.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.end() < len(part):
            break
    return tuple(numbers)


def check_ptx_loads(kernels: PluginKernels, driver: int) -> None:
    """ExportError unless this driver (cudaDriverGetVersion's 12060) can JIT-compile every
    op's PTX: its `.version` (the PTX ISA) came with a CUDA release, and older drivers refuse
    it when the engine loads its kernels."""
    from mnt.kernels.build import PTX_ISA_CUDA, ptx_isa_version, ptx_needs_cuda

    have = (driver // 1000, driver % 1000 // 10)
    toolkit = f"nvcc {kernels.nvcc_version}" if kernels.nvcc_version else "an unrecorded nvcc"
    seen: set[str] = set()
    for (op, _), kernel in sorted(kernels.kernels.items()):
        if op in seen:
            continue
        seen.add(op)
        path = kernels.folder / kernels.specs[op]["ptx"]
        rebuild = f"`mnt-export kernels --out {kernels.folder} --force`"
        try:
            isa = ptx_isa_version(kernel.ptx)
        except KernelError as err:
            raise ExportError(f"{path}: {err}", hint=f"rebuild it with {rebuild}") from err
        need = ptx_needs_cuda(isa, kernels.nvcc_version)
        if have < need:
            known = "" if isa in PTX_ISA_CUDA else " (newer than this mnt's table)"
            raise ExportError(
                f"{path} is PTX ISA {isa[0]}.{isa[1]}{known}, written by {toolkit}: it needs a CUDA "
                f"{need[0]}.{need[1]} driver or newer to load, and this machine's driver is CUDA "
                f"{have[0]}.{have[1]}",
                hint=f"rebuild the kernel library with a CUDA toolkit no newer than the driver (CUDA "
                     f"{have[0]}.{have[1]}; JetPack's is /usr/local/cuda/bin): put its nvcc first on PATH or "
                     f"set CUDA_HOME, then {rebuild}; or update the NVIDIA driver")


# --- registration with TensorRT -----------------------------------------------------------

def register_plugins(kernels: PluginKernels) -> None:
    """Register mnt::Warp and mnt::CrossAttention with tensorrt.plugin (once per process)."""
    global _registered
    if _registered == str(kernels.folder):
        return
    if _registered is not None:
        raise ExportError(f"TensorRT plugins are already registered from {_registered} in this process; "
                          f"cannot switch to {kernels.folder}")
    import tensorrt as trt

    # tensorrt.plugin itself appeared in 10.6: check the version before importing it.
    found = str(getattr(trt, "__version__", "unknown"))
    if version_tuple(found)[:2] < AOT_TENSORRT:
        raise _no_aot_plugins(found)
    driver = gpu.cuda_version("driver")
    if driver is not None:
        check_ptx_loads(kernels, driver)
    try:
        import tensorrt.plugin as trtp
    except ImportError as err:
        raise _no_aot_plugins(found) from err
    if not hasattr(trtp, "aot_impl"):
        raise _no_aot_plugins(found)
    _define(trt, trtp, kernels)
    _registered = str(kernels.folder)


def _no_aot_plugins(found: str) -> ExportError:
    return ExportError(f"TensorRT {found} has no ahead-of-time Python plugins (they came with TensorRT "
                       f"{AOT_TENSORRT[0]}.{AOT_TENSORRT[1]}; JetPack 6 has 10.3)",
                       hint="build the artefacts without --plugins (TensorRT's native layers), or "
                            f"install TensorRT >= {AOT_TENSORRT[0]}.{AOT_TENSORRT[1]}")


def _dtype_name(trt: Any, dtype: Any) -> str:
    for name, candidate in (("float32", trt.float32), ("float16", trt.float16)):
        if dtype == candidate:
            return name
    raise ValueError(f"mnt plugins support float32 and float16 tensors, got {dtype}")


def _check_dtypes(trt: Any, spec: dict[str, Any], inputs: Sequence[Any]) -> str:
    """The storage dtype name; ValueError unless the inputs' dtypes are the spec's: one per
    type constraint, fixed ones as named (Warp's float32 flow)."""
    seen: dict[str, str] = {}
    for tensor, desc in zip(spec["inputs"], inputs, strict=True):
        got = _dtype_name(trt, desc.dtype)
        want = seen.setdefault(tensor["dtype"], got) if tensor["dtype"] in spec["type_constraints"] \
            else tensor["dtype"]
        if got != want:
            raise ValueError(f"{onnx_name(spec)} needs {tensor['name']} of {want}, got {got}")
    storage = seen[spec["outputs"][0]["dtype"]]
    if storage not in dtypes(spec):
        raise ValueError(f"{onnx_name(spec)} has kernels for {', '.join(dtypes(spec))}, got {storage}")
    return storage


def _constant(expr: Any) -> int | None:
    """A shape expression's value where TensorRT knows it at build time, else None."""
    if isinstance(expr, int):
        return expr
    if expr.is_fake or not expr.is_constant:
        return None
    return int(expr.constant_value())


def _upper(desc: Any, index: int) -> int | None:
    """The largest value dimension `index` of an input takes: a build-time constant, else
    the optimisation profile's max (TensorRT gives aot_impl the profile's min, opt and max
    through `desc.shape`), else None."""
    constant = _constant(desc.shape_expr[index])
    if constant is not None:
        return constant
    if not getattr(desc, "has_shape", False):
        return None
    shape = desc.shape
    size = int(shape.max[index]) if shape.is_dynamic else int(shape[index])
    return size if size >= 0 else None


def _check_shapes(spec: dict[str, Any], inputs: Sequence[Any]) -> None:
    """ValueError (TensorRT reports it and fails the build) when the inputs break the spec:
    its limits on each dimension's largest value (constant or profile max) and its relations
    between dimensions known at build time. What is known only at run time the kernels check
    themselves (NaN output, never a truncated sum or an endless loop)."""
    shapes = [list(t.shape_expr) for t in inputs]
    constants = symbol_values(spec, [[_constant(e) for e in shape] for shape in shapes])
    upper = symbol_values(spec, [[_upper(t, i) for i in range(len(shape))]
                                 for t, shape in zip(inputs, shapes, strict=True)], bound=True)
    problems = limit_violations(spec, upper, bounds=True) + relation_violations(spec, constants)
    if problems:
        raise ValueError("; ".join(problems))


def _aot_result(trt: Any, trtp: Any, kernels: PluginKernels, op: str, inputs: Sequence[Any]) -> Any:
    """What an aot_impl returns: (kernel name, PTX, launch parameters, int32 arguments),
    after the spec's shape checks (_check_shapes)."""
    spec = kernels.specs[op]
    dtype = _check_dtypes(trt, spec, inputs)
    _check_shapes(spec, inputs)
    shapes = [list(t.shape_expr) for t in inputs]
    kernel, grid, args = kernels.launch(op, dtype, shapes, trtp.cdiv)
    launch = trtp.KernelLaunchParams()
    launch.grid_x, launch.grid_y, launch.grid_z = grid
    launch.block_x, launch.block_y, launch.block_z = kernel.block
    launch.shared_mem = kernel.shared_bytes
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(a) for a in args])
    return kernel.name, kernel.ptx, launch, extra


def _define(trt: Any, trtp: Any, kernels: PluginKernels) -> None:
    """The decorated definitions, named from the specs. tensorrt.plugin reads each op's
    inputs from the Python signature, so those stay written out (in spec order); their
    annotations are evaluated here, where trtp exists."""
    warp, attention = kernels.specs["warp"], kernels.specs["cross_attention"]

    @trtp.register(onnx_name(warp))
    def warp_desc(features: trtp.TensorDesc, flow: trtp.TensorDesc) -> trtp.TensorDesc:
        _check_dtypes(trt, warp, (features, flow))
        _check_shapes(warp, (features, flow))  # the constants, at network definition
        return features.like()

    @trtp.aot_impl(onnx_name(warp))
    def warp_aot(features: trtp.TensorDesc, flow: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc],
                 tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return _aot_result(trt, trtp, kernels, "warp", (features, flow))

    @trtp.register(onnx_name(attention))
    def attention_desc(query: trtp.TensorDesc, keys: trtp.TensorDesc,
                       values: trtp.TensorDesc) -> trtp.TensorDesc:
        _check_dtypes(trt, attention, (query, keys, values))
        _check_shapes(attention, (query, keys, values))
        q, v = query.shape_expr, values.shape_expr
        return trtp.from_shape_expr((q[0], q[1], v[2]), dtype=query.dtype)

    @trtp.aot_impl(onnx_name(attention))
    def attention_aot(query: trtp.TensorDesc, keys: trtp.TensorDesc, values: trtp.TensorDesc,
                      outputs: tuple[trtp.TensorDesc], tactic: int
                      ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return _aot_result(trt, trtp, kernels, "cross_attention", (query, keys, values))
