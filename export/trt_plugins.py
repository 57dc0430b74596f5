"""`mnt::Warp` and `mnt::CrossAttention` as TensorRT plugins (Python plugin API, IPluginV3
era) with ahead-of-time kernels: the engine embeds the PTX of our kernels and TensorRT
launches them itself, so engines run without Python (and from C++ or trtexec).

Why here, on the export side: only building an engine needs the registration; an AOT
engine carries its kernels. The kernels are reached through mnt.kernels.loader (the
folder written by `mnt-export kernels`, checked against its kernels.json); everything
about a kernel (name, arguments, launch geometry) comes from its spec in that manifest.

TensorRT passes an AOT kernel its arguments as (input pointers, extra int32 arguments,
output pointers), and our kernels declare theirs in that order, so the PTX is embedded
exactly as nvcc wrote it; loading checks the spec and each PTX entry against that order
(mnt.kernels.build), so a kernel that changes its signature fails here, not on a GPU.

This module must not use `from __future__ import annotations`: tensorrt.plugin validates
the decorated functions' annotations as objects.
"""

import ast
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnt.export.errors import ExportError

PLUGIN_NAMESPACE = "mnt"
PLUGIN_OPS = {"warp": "Warp", "cross_attention": "CrossAttention"}  # kernel op -> ONNX op type
DTYPE_NAMES = ("float32", "float16")

_registered: str | None = None  # the kernel folder registered in this process


# --- launch geometry from the spec's formulas --------------------------------------------

def evaluate(formula: str, symbols: dict[str, Any], cdiv: Callable[[Any, Any], Any]) -> Any:
    """A spec's launch formula ("ceil(N * H * W / 256)", "B", "1") over `symbols` (ints, or
    TensorRT shape expressions). Only names, integers, +, -, * and ceil(a / b) are allowed,
    so a plain division can never truncate silently."""
    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in symbols:
                raise ExportError(f"launch formula {formula!r} names {node.id!r}, not a shape symbol "
                                  f"({', '.join(sorted(symbols))})")
            return symbols[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right if not isinstance(left, int) or isinstance(right, int) else right + left
            if isinstance(node.op, ast.Mult):
                return left * right if not isinstance(left, int) or isinstance(right, int) else right * left
            return left - right
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ceil"
                and len(node.args) == 1 and isinstance(node.args[0], ast.BinOp)
                and isinstance(node.args[0].op, ast.Div)):
            return cdiv(walk(node.args[0].left), walk(node.args[0].right))
        raise ExportError(f"unsupported launch formula {formula!r}")

    try:
        tree = ast.parse(formula, mode="eval")
    except SyntaxError as err:
        raise ExportError(f"launch formula {formula!r} does not parse: {err.msg}") from err
    return walk(tree)


def shape_symbols(spec: dict[str, Any], shapes: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Symbol -> value from the op's input shapes (one entry per spec input), e.g. N, C, H,
    W from the features and h, w from the flow. A symbol met twice keeps its first value."""
    symbols: dict[str, Any] = {}
    for tensor, shape in zip(spec["inputs"], shapes, strict=True):
        if len(tensor["shape"]) != len(shape):
            raise ExportError(f"{spec['op']}: input {tensor['name']} has rank {len(shape)}, "
                              f"its spec says {tensor['shape']}")
        for symbol, value in zip(tensor["shape"], shape, strict=True):
            if isinstance(symbol, str):
                symbols.setdefault(symbol, value)
    return symbols


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
    kernels.json by the loader; each kernel's spec and PTX entry checked against the argument
    order TensorRT launches with)."""
    from mnt.kernels.build import check_ptx_params, check_tensorrt_order, ptx_entries
    from mnt.kernels.errors import KernelError
    from mnt.kernels.loader import MANIFEST_NAME, read_manifest

    rebuild = f"rebuild it with `mnt-export kernels --out {folder} --force`"
    try:
        manifest = read_manifest(folder)
    except KernelError as err:
        raise ExportError(str(err), hint=err.hint) from err
    specs, kernels = {}, {}
    for op in PLUGIN_OPS:
        spec = manifest.get("ops", {}).get(op)
        if spec is None:
            raise ExportError(f"{folder / MANIFEST_NAME} has no op {op!r}", hint=rebuild)
        specs[op] = spec
        ptx = (folder / spec["ptx"]).read_text()  # embedded unchanged: one module per op
        entries = ptx_entries(ptx)
        launch = spec["launch"]
        for dtype in DTYPE_NAMES:
            entry = spec["kernels"][dtype]
            if entry["name"] not in entries:
                raise ExportError(f"{spec['ptx']} has no kernel entry {entry['name']}", hint=rebuild)
            try:
                check_tensorrt_order(spec, dtype)
                check_ptx_params(entry["name"], entries[entry["name"]], entry["args"])
            except KernelError as err:
                raise ExportError(f"{folder / spec['ptx']}: {err}", hint=rebuild) from err
            kernels[op, dtype] = AotKernel(
                name=entry["name"], ptx=ptx,
                scalar_args=tuple(a["name"] for a in entry["args"] if a["type"] == "int32"),
                grid=(str(launch["grid"][0]), str(launch["grid"][1]), str(launch["grid"][2])),
                block=(int(launch["block"][0]), int(launch["block"][1]), int(launch["block"][2])),
                shared_bytes=int(launch.get("shared_bytes", 0)))
    digest = hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest()
    return PluginKernels(folder, digest, specs, kernels)


def _scalar_symbols_known(spec: dict[str, Any], kernel: AotKernel) -> None:
    symbols = {s for t in spec["inputs"] for s in t["shape"] if isinstance(s, str)}
    missing = [a for a in kernel.scalar_args if a not in symbols]
    if missing:
        raise ExportError(f"{kernel.name}: int32 arguments {missing} are not shape symbols of {spec['op']}")


# --- registration with TensorRT -----------------------------------------------------------

def register_plugins(kernels: PluginKernels) -> None:
    """Register mnt::Warp and mnt::CrossAttention with tensorrt.plugin (once per process)."""
    global _registered
    if _registered == str(kernels.folder):
        return
    if _registered is not None:
        raise ExportError(f"TensorRT plugins are already registered from {_registered} in this process; "
                          f"cannot switch to {kernels.folder}")
    for op, spec in kernels.specs.items():
        for dtype in DTYPE_NAMES:
            _scalar_symbols_known(spec, kernels.kernels[op, dtype])
    import tensorrt as trt
    import tensorrt.plugin as trtp

    if not hasattr(trtp, "aot_impl"):
        raise ExportError(f"TensorRT {trt.__version__} has no ahead-of-time Python plugins (they came "
                          "with TensorRT 10.9)", hint="build with --engine-ops native")
    _define(trt, trtp, kernels)
    _registered = str(kernels.folder)


def _dtype_name(trt: Any, dtype: Any) -> str:
    if dtype == trt.float16:
        return "float16"
    if dtype == trt.float32:
        return "float32"
    raise ValueError(f"mnt plugins support float32 and float16 storage, got {dtype}")


def _aot_result(trt: Any, trtp: Any, kernels: PluginKernels, op: str, inputs: Sequence[Any]) -> Any:
    """What an aot_impl returns: (kernel name, PTX, launch parameters, int32 arguments)."""
    dtype = _dtype_name(trt, inputs[0].dtype)
    kernel, grid, args = kernels.launch(op, dtype, [list(t.shape_expr) for t in inputs], trtp.cdiv)
    launch = trtp.KernelLaunchParams()
    launch.grid_x, launch.grid_y, launch.grid_z = grid
    launch.block_x, launch.block_y, launch.block_z = kernel.block
    launch.shared_mem = kernel.shared_bytes
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(a) for a in args])
    return kernel.name, kernel.ptx, launch, extra


def _define(trt: Any, trtp: Any, kernels: PluginKernels) -> None:
    """The decorated definitions. Their annotations are evaluated here, where trtp exists;
    tensorrt.plugin checks them against its schema."""
    @trtp.register(f"{PLUGIN_NAMESPACE}::Warp")
    def warp_desc(features: trtp.TensorDesc, flow: trtp.TensorDesc) -> trtp.TensorDesc:
        if flow.dtype != trt.float32:
            raise ValueError(f"mnt::Warp needs a float32 flow, got {flow.dtype}")
        return features.like()

    @trtp.aot_impl(f"{PLUGIN_NAMESPACE}::Warp")
    def warp_aot(features: trtp.TensorDesc, flow: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc],
                 tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return _aot_result(trt, trtp, kernels, "warp", (features, flow))

    @trtp.register(f"{PLUGIN_NAMESPACE}::CrossAttention")
    def attention_desc(query: trtp.TensorDesc, keys: trtp.TensorDesc,
                       values: trtp.TensorDesc) -> trtp.TensorDesc:
        if not query.dtype == keys.dtype == values.dtype:
            raise ValueError("mnt::CrossAttention needs query, keys and values of one dtype")
        q, v = query.shape_expr, values.shape_expr
        return trtp.from_shape_expr((q[0], q[1], v[2]), dtype=query.dtype)

    @trtp.aot_impl(f"{PLUGIN_NAMESPACE}::CrossAttention")
    def attention_aot(query: trtp.TensorDesc, keys: trtp.TensorDesc, values: trtp.TensorDesc,
                      outputs: tuple[trtp.TensorDesc], tactic: int
                      ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        for name, expr in (("D", query.shape_expr[2]), ("Dv", values.shape_expr[2])):
            if not expr.is_fake and expr.is_constant and expr.constant_value() > 512:
                raise ValueError(f"mnt::CrossAttention supports {name} <= 512, got {expr.constant_value()}")
        return _aot_result(trt, trtp, kernels, "cross_attention", (query, keys, values))
