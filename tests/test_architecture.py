"""The package's structure, read from its source: no import circles between modules (lazy
imports inside functions count too), the dependency direction of the design (runtime never
imports export or calibration, nor torch at import time; the TensorRT builder needs no
torch), and a package list that covers every folder holding modules."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("export", "runtime", "calibration", "kernels")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return "mnt." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for part in PARTS for p in sorted((ROOT / part).rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at import time?) for every import statement of the file, those
    under `if TYPE_CHECKING:` left out (they never run)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.module, top))
                # `from mnt.calibration import report`: the submodule is imported too
                found.extend((f"{child.module}.{a.name}", top) for a in child.names
                             if f"{child.module}.{a.name}" in MODULES)
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


GRAPH = {name: sorted({m for m, _ in _imports(path) if m in MODULES and m != name})
         for name, path in MODULES.items()}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_modules_are_found():
    assert {"mnt.runtime.reenactor", "mnt.export.cli", "mnt.calibration.build",
            "mnt.kernels.loader"} <= set(MODULES)


def test_no_import_circles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_planted_circle():
    planted = {**GRAPH, "mnt.runtime.files": [*GRAPH["mnt.runtime.files"], "mnt.runtime.reenactor"]}
    assert any("mnt.runtime.files" in c and "mnt.runtime.reenactor" in c for c in _cycles(planted))


def _importing(prefix: str, forbidden: tuple[str, ...], at_import_time_only: bool) -> list[str]:
    return [f"{name} imports {module}" for name, path in MODULES.items() if name.startswith(prefix)
            for module, top in _imports(path)
            if (top or not at_import_time_only)
            and any(module == f or module.startswith(f + ".") for f in forbidden)]


def test_runtime_never_imports_export_or_calibration():
    assert _importing("mnt.runtime", ("mnt.export", "mnt.calibration"), at_import_time_only=False) == []


def test_runtime_and_kernels_import_no_torch_at_import_time():
    assert _importing("mnt.runtime", ("torch",), at_import_time_only=True) == []
    assert _importing("mnt.kernels", ("torch", "mnt.export", "mnt.calibration"),
                      at_import_time_only=True) == []


def test_the_device_path_needs_no_torch():
    # What `mnt-export build --from`, `verify`, `inspect` and `doctor` run on a Jetson.
    for prefix in ("mnt.export.tensorrt", "mnt.export.onnx.verify", "mnt.export.onnx.gates",
                   "mnt.export.onnx.goldens", "mnt.export.errors", "mnt.export.cli"):
        assert _importing(prefix, ("torch",), at_import_time_only=prefix == "mnt.export.cli") == []


def test_calibration_uses_only_public_names_of_export():
    private = [f"{name}: {module}" for name, path in MODULES.items() if name.startswith("mnt.calibration")
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnt.export")
               for module in (f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_"))]
    assert private == []


def _setup_packages() -> list[str]:
    spec = importlib.util.spec_from_file_location("mnt_setup", ROOT / "setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.packages()


def test_package_list_covers_every_folder_holding_modules():
    folders = {p.parent for part in PARTS for p in (ROOT / part).rglob("*.py")}
    without_init = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert without_init == [], "these folders hold modules but no __init__.py, so no wheel would ship them"
    expected = sorted("mnt." + ".".join(f.relative_to(ROOT).parts) for f in folders)
    assert _setup_packages() == expected


def test_every_module_imports_from_its_own_file():
    # the installed mnt.* mapping (editable or not) points at this checkout's folders
    wrong = [n for n, path in MODULES.items()
             if Path(getattr(importlib.util.find_spec(n), "origin", "") or "").resolve() != path.resolve()]
    assert wrong == []
