"""The custom ops' contracts: one `kernels/<op>/spec.json` per op, loaded and checked here.

Every Python user of an op reads it from this module: the op list (the kernel folders that
hold a spec.json), the ONNX and TensorRT names (domain, version, op type, inputs, outputs,
type constraints), the torch custom-op name, the kernels and their arguments, the launch
geometry (the spec's formulas, evaluated by `evaluate`), the shape limits and the relations
between shapes (optional `derived` symbols and `relations`, e.g. Warp's h = f * H). The CUDA
headers keep their own constants; tests/kernels/test_spec.py checks them against the specs.

Standard library only: mnt.runtime imports this module (no torch, onnx or numpy).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mnt.kernels.errors import KernelError

KERNELS_DIR = Path(__file__).resolve().parent
SPEC_NAME = "spec.json"
DTYPES = ("float32", "float16")  # the storage types a spec may name
REQUIRED = ("op", "domain", "version", "summary", "attributes", "type_constraints", "inputs", "outputs",
            "limits", "sources", "kernels", "launch", "launchers", "host_reference")
# One op per kernel folder: the folders that hold a spec.json, in name order.
OPS = tuple(sorted(p.parent.name for p in KERNELS_DIR.glob(f"*/{SPEC_NAME}")))
_LAUNCHER = re.compile(r"\s*int\s+(\w+)\s*\(")

Cdiv = Callable[[Any, Any], Any]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@cache
def op_spec(op: str) -> dict[str, Any]:
    """The op's spec.json (`op` is its folder name, e.g. "warp"), checked by validate_spec.
    Cached: callers must not change it (copy it first)."""
    if op not in OPS:
        raise KernelError(f"unknown kernel op {op!r}; known: {', '.join(OPS) or 'none'}",
                          hint=None if OPS else f"reinstall mnt: no {SPEC_NAME} under {KERNELS_DIR}")
    path = KERNELS_DIR / op / SPEC_NAME
    try:
        spec = json.loads(path.read_text())
    except ValueError as err:
        raise KernelError(f"{path} is not valid JSON: {err}") from err
    return validate_spec(spec, str(path))


def validate_spec(spec: Any, where: str) -> dict[str, Any]:
    """`spec` if it is a complete op contract, else KernelError naming `where` and the fault.
    Also run on the copies in a kernel library's kernels.json."""
    def fail(problem: str) -> KernelError:
        return KernelError(f"{where}: {problem}")

    if not isinstance(spec, dict):
        raise fail("not a JSON object")
    missing = [key for key in REQUIRED if key not in spec]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    if not all(isinstance(spec[key], str) and spec[key] for key in ("op", "domain")):
        raise fail("op and domain must be non-empty strings")
    if not isinstance(spec["version"], int) or spec["version"] < 1:
        raise fail(f"version must be an integer >= 1, got {spec['version']!r}")
    if spec["attributes"] != {}:  # no user of the contract passes attributes
        raise fail("attributes must be empty: the ONNX functions, schemas and plugins take none")
    constraints = spec["type_constraints"]

    def storage_types(types: Any) -> bool:
        return isinstance(types, list) and bool(types) and set(types) <= set(DTYPES)

    if not isinstance(constraints, dict) or not all(storage_types(types) for types in constraints.values()):
        raise fail(f"type_constraints must map names to non-empty lists of {', '.join(DTYPES)}")
    symbols: set[str] = set()
    for side in ("inputs", "outputs"):
        tensors = spec[side]
        if not isinstance(tensors, list) or not tensors:
            raise fail(f"{side} must be a non-empty list")
        for tensor in tensors:
            if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
                raise fail(f"every entry of {side} needs a name")
            if tensor.get("dtype") not in (*DTYPES, *constraints):
                raise fail(f"{tensor['name']}: dtype {tensor.get('dtype')!r} is neither one of "
                           f"{', '.join(DTYPES)} nor a type constraint")
            shape = tensor.get("shape")
            if not isinstance(shape, list) or not all(isinstance(s, (str, int)) for s in shape):
                raise fail(f"{tensor['name']}: shape must be a list of symbols and integers")
            if side == "inputs":
                symbols.update(s for s in shape if isinstance(s, str))
        seen = [t["name"] for t in tensors]
        if len(set(seen)) != len(seen):
            raise fail(f"{side} repeat a name: {seen}")
    unknown = sorted({s for t in spec["outputs"] for s in t["shape"] if isinstance(s, str)} - symbols)
    if unknown:
        raise fail(f"output symbols {unknown} are not input shape symbols")
    storage = spec["outputs"][0]["dtype"]
    if storage not in constraints:
        raise fail("the first output's dtype must be a type constraint (the storage type of the kernels)")
    probe = dict.fromkeys(symbols, 1)
    for key in ("kernels", "launchers", "host_reference"):
        if not isinstance(spec[key], dict) or sorted(spec[key]) != sorted(constraints[storage]):
            raise fail(f"{key} must have one entry per storage type {constraints[storage]}")
    for dtype, kernel in spec["kernels"].items():
        if not isinstance(kernel, dict) or not isinstance(kernel.get("name"), str) \
                or not isinstance(kernel.get("args"), list):
            raise fail(f"kernels.{dtype} needs a name and a list of args")
        for arg in kernel["args"]:
            if not (isinstance(arg, dict) and all(isinstance(arg.get(key), str) for key in ("name", "type"))):
                raise fail(f"{kernel['name']}: every argument needs a name and a type")
            try:
                kind = arg_kind(arg)
            except KernelError as err:
                raise fail(str(err)) from err
            if kind == "int32" and arg["name"] not in symbols:
                raise fail(f"{kernel['name']}: int32 argument {arg['name']} is not an input shape symbol "
                           f"({', '.join(sorted(symbols))})")
        if not _LAUNCHER.match(str(spec["launchers"][dtype])):
            raise fail(f"launchers.{dtype} is not a C declaration `int name(...)`")
    launch = spec["launch"] if isinstance(spec["launch"], dict) else {}
    block, grid = launch.get("block"), launch.get("grid")
    if not (isinstance(block, list) and len(block) == 3 and all(type(b) is int and b >= 1 for b in block)):
        raise fail("launch.block must be 3 positive integers")
    if not (isinstance(grid, list) and len(grid) == 3 and all(isinstance(g, str) for g in grid)):
        raise fail("launch.grid must be 3 formulas")
    if not isinstance(launch.get("shared_bytes", 0), int) or launch.get("shared_bytes", 0) < 0:
        raise fail("launch.shared_bytes must be an integer >= 0")
    limits = spec["limits"]
    if not isinstance(limits, dict) or not all(isinstance(v, int) and v >= 1 for v in limits.values()):
        raise fail("limits must map formulas over the shape symbols to positive integers")
    for formula in [*grid, *limits]:
        evaluate(formula, probe, ceil_div, where)  # names and syntax
    derived = spec.get("derived", {})
    if not isinstance(derived, dict) or any(not isinstance(f, str) or name in symbols
                                            for name, f in derived.items()):
        raise fail("derived must map new symbol names to formulas over the shape symbols")
    for formula in derived.values():
        evaluate(formula, probe, ceil_div, where)
    relations = spec.get("relations", {})
    if not isinstance(relations, dict) or any(not isinstance(r, str) or r.count("=") != 1
                                              or not isinstance(why, str) for r, why in relations.items()):
        raise fail('relations must map "formula = formula" to why it must hold')
    for relation in relations:
        for side in _sides(relation):
            evaluate(side, {**probe, **dict.fromkeys(derived, 1)}, ceil_div, where)
    if len([s for s in spec["sources"] if str(s).endswith(".cu")]) != 1:
        raise fail("sources must list exactly one .cu file (the op's kernels)")
    return spec


# --- names -------------------------------------------------------------------------------

def onnx_name(spec: Mapping[str, Any]) -> str:
    """'mnt::Warp': the ONNX node's domain and op type, and the TensorRT plugin's id."""
    return f"{spec['domain']}::{spec['op']}"


def torch_name(op: str) -> str:
    """'mnt::warp': the torch custom op the model calls while plugin_ops() is active."""
    return f"{op_spec(op)['domain']}::{op}"


def names(tensors: Sequence[Mapping[str, Any]]) -> list[str]:
    return [t["name"] for t in tensors]


def dtypes(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The storage types the op's kernels are built for, e.g. ('float32', 'float16')."""
    return tuple(spec["type_constraints"][spec["outputs"][0]["dtype"]])


def cuda_source(spec: Mapping[str, Any]) -> Path:
    """The op's .cu file (its kernels and launchers)."""
    return KERNELS_DIR / next(s for s in spec["sources"] if s.endswith(".cu"))


def launcher_name(spec: Mapping[str, Any], dtype: str) -> str:
    """The extern "C" host launcher of the op's kernel for `dtype` (from its declaration)."""
    match = _LAUNCHER.match(spec["launchers"][dtype])
    assert match is not None  # validate_spec checked it
    return match.group(1)


def arg_kind(arg: Mapping[str, str]) -> str:
    """'pointer' or 'int32' for a kernel argument ({"name", "type"}): the only kinds the
    kernels take (and TensorRT's AOT plugins pass)."""
    kind = arg["type"].strip()
    if kind.endswith("*"):
        return "pointer"
    if kind == "int32":
        return "int32"
    raise KernelError(f"kernel argument {arg['name']} has type {kind!r}; TensorRT's AOT plugins pass only "
                      "pointers and int32 values")


def scalar_args(spec: Mapping[str, Any], dtype: str) -> tuple[str, ...]:
    """The int32 arguments of the op's kernel for `dtype`, in order: shape symbols."""
    return tuple(a["name"] for a in spec["kernels"][dtype]["args"] if arg_kind(a) == "int32")


# --- formulas, symbols, limits, launch geometry --------------------------------------------

def evaluate(formula: str, symbols: Mapping[str, Any], cdiv: Cdiv = ceil_div, where: str = "") -> Any:
    """A spec's formula ("ceil(N * H * W / 256)", "B", "1") over `symbols` (ints, or TensorRT
    shape expressions with their `cdiv`). Only names, integers, +, -, * and ceil(a / b) are
    allowed, so a plain division can never truncate silently.

    Order-independent for expression types that, like tensorrt.plugin's ShapeExpr, define
    only the non-reflected operators and a cdiv that refuses two ints: integer sub-trees are
    computed in Python, and an int left of an expression is swapped to the right (+, *) or
    made an expression of the same type first (-, ceil)."""
    context = f"{where}: " if where else ""

    def lift(value: int, like: Any) -> Any:
        return type(like)(value)  # a constant expression of the other operand's kind

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in symbols:
                raise KernelError(f"{context}formula {formula!r} names {node.id!r}, not a shape symbol "
                                  f"({', '.join(sorted(symbols))})")
            return symbols[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            left, right = walk(node.left), walk(node.right)
            if isinstance(left, int) and not isinstance(right, int):
                if isinstance(node.op, ast.Add):
                    return right + left
                if isinstance(node.op, ast.Mult):
                    return right * left
                left = lift(left, right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Mult):
                return left * right
            return left - right
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ceil"
                and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.BinOp)
                and isinstance(node.args[0].op, ast.Div)):
            a, b = walk(node.args[0].left), walk(node.args[0].right)
            if isinstance(a, int) and isinstance(b, int):
                return ceil_div(a, b)
            return cdiv(lift(a, b) if isinstance(a, int) else a, b)
        raise KernelError(f"{context}unsupported formula {formula!r}: only names, integers, +, -, * and "
                          "ceil(a / b)")

    try:
        tree = ast.parse(formula, mode="eval")
    except SyntaxError as err:
        raise KernelError(f"{context}formula {formula!r} does not parse: {err.msg}") from err
    return walk(tree)


def formula_names(formula: str) -> set[str]:
    """The symbols a formula names (after evaluate has accepted it), `ceil` aside."""
    tree = ast.parse(formula, mode="eval")
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


def shape_symbols(spec: Mapping[str, Any], shapes: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Symbol -> value from the op's input shapes (one entry per spec input), e.g. N, C, H,
    W from the features and h, w from the flow. A symbol met twice keeps its first value
    (`check_shapes` says whether the two agree)."""
    if len(shapes) != len(spec["inputs"]):
        raise KernelError(f"{spec['op']} takes {len(spec['inputs'])} inputs "
                          f"({', '.join(names(spec['inputs']))}), got {len(shapes)} shapes")
    symbols: dict[str, Any] = {}
    for tensor, shape in zip(spec["inputs"], shapes, strict=True):
        if len(tensor["shape"]) != len(shape):
            raise KernelError(f"{spec['op']}: input {tensor['name']} has rank {len(shape)}, "
                              f"its spec says {tensor['shape']}")
        for symbol, value in zip(tensor["shape"], shape, strict=True):
            if isinstance(symbol, str):
                symbols.setdefault(symbol, value)
    return symbols


def limit_violations(spec: Mapping[str, Any], symbols: Mapping[str, int | None],
                     bounds: bool = False) -> list[str]:
    """One message per limit of the spec that `symbols` exceed (symbol -> its value, or None
    where unknown). With `bounds` the values are upper bounds (a build-time constant or an
    optimisation profile's max): the limits grow with every symbol, so bounds within them
    mean every shape is. A limit over an unknown symbol is left to the kernel's own check at
    run time."""
    problems = []
    for formula, most in spec["limits"].items():
        if any(symbols.get(name) is None for name in formula_names(formula)):
            continue
        got = evaluate(formula, symbols)
        if got > most:
            how = "can reach" if bounds else "="
            problems.append(f"{spec['op']}: {formula} {how} {got}; the kernel supports at most {most}")
    return problems


def symbol_values(spec: Mapping[str, Any], shapes: Sequence[Sequence[int | None]],
                  bound: bool = False) -> dict[str, int | None]:
    """Symbol -> int, or None where no input gives one: from per-input sizes that are ints or
    None (unknown). With `bound` the sizes are upper bounds and a symbol met twice keeps the
    smallest; else it keeps the first known value."""
    values: dict[str, int | None] = {}
    for symbol, size in _symbol_sizes(spec, shapes):
        values.setdefault(symbol, None)
        known = values[symbol]
        if size is not None and (known is None or (bound and size < known)):
            values[symbol] = int(size)
    return values


def _symbol_sizes(spec: Mapping[str, Any], shapes: Sequence[Sequence[Any]]) -> list[tuple[str, Any]]:
    shape_symbols(spec, shapes)  # counts and ranks
    return [(symbol, size) for tensor, shape in zip(spec["inputs"], shapes, strict=True)
            for symbol, size in zip(tensor["shape"], shape, strict=True) if isinstance(symbol, str)]


def relation_violations(spec: Mapping[str, Any], symbols: Mapping[str, int | None]) -> list[str]:
    """One message per relation of the spec ("h = f * H": both sides equal, over the shape
    symbols and the spec's derived symbols) that int `symbols` break; a relation naming an
    unknown (None) symbol is not checked."""
    known: dict[str, int] = {k: int(v) for k, v in symbols.items() if v is not None}
    for name, formula in spec.get("derived", {}).items():
        if formula_names(formula) <= set(known):
            known[name] = int(evaluate(formula, known))
    problems = []
    for relation, why in spec.get("relations", {}).items():
        left, right = _sides(relation)
        involved = formula_names(left) | formula_names(right)
        if involved <= set(known) and evaluate(left, known) != evaluate(right, known):
            values = ", ".join(f"{n}={known[n]}" for n in sorted(involved))
            problems.append(f"{spec['op']}: needs {left} = {right}, got {values}: {why}")
    return problems


def _sides(relation: str) -> tuple[str, str]:
    left, right = relation.split("=")
    return left.strip(), right.strip()


def check_shapes(spec: Mapping[str, Any], shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """The shape symbols of integer input shapes, after the contract's checks: ranks, every
    symbol >= 1, a symbol that appears twice has one value, fixed sizes match, the spec's
    limits and its relations (Warp's pooling factor)."""
    symbols = shape_symbols(spec, shapes)
    for tensor, shape in zip(spec["inputs"], shapes, strict=True):
        for symbol, size in zip(tensor["shape"], shape, strict=True):
            want = symbols[symbol] if isinstance(symbol, str) else symbol
            if size != want:
                raise KernelError(f"{spec['op']}: {tensor['name']} has shape {tuple(shape)}, but its "
                                  f"{symbol} must be {want} (spec shape {tensor['shape']})")
    small = [f"{s}={v}" for s, v in symbols.items() if v < 1]
    if small:
        raise KernelError(f"{spec['op']}: every size must be >= 1, got {', '.join(small)}")
    problems = limit_violations(spec, symbols) + relation_violations(spec, symbols)
    if problems:
        raise KernelError("; ".join(problems), hint="use the native ops (no plugins) for such shapes")
    return symbols


@dataclass(frozen=True)
class Launch:
    kernel: str  # extern "C" name, in the library and in the op's PTX
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int  # dynamic shared memory
    # The int32 arguments in order: TensorRT passes them between the input pointers and the
    # output pointer, as the kernels declare them.
    scalars: tuple[int, ...]


def launch(spec: Mapping[str, Any], dtype: str, shapes: Sequence[Sequence[int]]) -> Launch:
    """The launch of the op's kernel for `dtype` on integer input shapes, from the spec's
    formulas (after check_shapes)."""
    if dtype not in spec["kernels"]:
        raise KernelError(f"{spec['op']} has no {dtype} kernel; choose one of {', '.join(dtypes(spec))}")
    symbols = check_shapes(spec, shapes)
    geometry = spec["launch"]
    grid = [int(evaluate(f, symbols)) for f in geometry["grid"]]
    block = [int(b) for b in geometry["block"]]
    scalars = tuple(int(symbols[s]) for s in scalar_args(spec, dtype))
    return Launch(spec["kernels"][dtype]["name"], (grid[0], grid[1], grid[2]), (block[0], block[1], block[2]),
                  int(geometry.get("shared_bytes", 0)), scalars)
