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
    scalar_args,
    shape_symbols,
    validate_spec,
)

_registered: str | None = None  # the kernel folder registered in this process


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
    return PluginKernels(folder, digest, specs, kernels)


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
    import tensorrt.plugin as trtp

    if not hasattr(trtp, "aot_impl"):
        raise ExportError(f"TensorRT {trt.__version__} has no ahead-of-time Python plugins (they came "
                          "with TensorRT 10.9)",
                          hint="build the artefacts without --plugins (TensorRT's native layers), or "
                               "install TensorRT >= 10.9")
    _define(trt, trtp, kernels)
    _registered = str(kernels.folder)


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


def _aot_result(trt: Any, trtp: Any, kernels: PluginKernels, op: str, inputs: Sequence[Any]) -> Any:
    """What an aot_impl returns: (kernel name, PTX, launch parameters, int32 arguments),
    after the spec's shape limits (for the dimensions known at build time)."""
    spec = kernels.specs[op]
    dtype = _check_dtypes(trt, spec, inputs)
    shapes = [list(t.shape_expr) for t in inputs]
    problems = limit_violations(spec, shape_symbols(spec, shapes), trtp.cdiv, _constant)
    if problems:
        raise ValueError("; ".join(problems))
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
        return features.like()

    @trtp.aot_impl(onnx_name(warp))
    def warp_aot(features: trtp.TensorDesc, flow: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc],
                 tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return _aot_result(trt, trtp, kernels, "warp", (features, flow))

    @trtp.register(onnx_name(attention))
    def attention_desc(query: trtp.TensorDesc, keys: trtp.TensorDesc,
                       values: trtp.TensorDesc) -> trtp.TensorDesc:
        _check_dtypes(trt, attention, (query, keys, values))
        q, v = query.shape_expr, values.shape_expr
        return trtp.from_shape_expr((q[0], q[1], v[2]), dtype=query.dtype)

    @trtp.aot_impl(onnx_name(attention))
    def attention_aot(query: trtp.TensorDesc, keys: trtp.TensorDesc, values: trtp.TensorDesc,
                      outputs: tuple[trtp.TensorDesc], tactic: int
                      ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return _aot_result(trt, trtp, kernels, "cross_attention", (query, keys, values))
