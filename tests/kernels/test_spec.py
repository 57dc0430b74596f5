"""The op specs (kernels/<op>/spec.json through mnt.kernels.spec): each is a complete
contract, its formulas evaluate safely, its launch geometry and limits equal the CUDA
headers' constants and what the compiled launchers compute, and every Python user of an op
(the runtime's ONNX functions, the ONNX schemas, the torch custom ops, the TensorRT
plugins) takes its names, launch and limits from it."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mnt.kernels.errors import KernelError
from mnt.kernels.spec import (
    KERNELS_DIR,
    OPS,
    ceil_div,
    check_shapes,
    dtypes,
    evaluate,
    launch,
    limit_violations,
    names,
    onnx_name,
    op_spec,
    scalar_args,
    torch_name,
    validate_spec,
)

HEADER_CONSTANTS = ("MNT_WARP_BLOCK", "MNT_ATTN_WARPS", "MNT_ATTN_BLOCK", "MNT_ATTN_MAX_DIM",
                    "MNT_ATTN_LANES")


def test_every_kernel_folder_with_a_spec_is_an_op():
    assert OPS == ("cross_attention", "warp")
    assert OPS == tuple(sorted(d.name for d in KERNELS_DIR.iterdir() if (d / "spec.json").is_file()))
    for op in OPS:
        spec = op_spec(op)
        assert all((KERNELS_DIR / source).is_file() for source in spec["sources"]), op
        assert dtypes(spec) == ("float32", "float16")
        for dtype in dtypes(spec):
            assert spec["kernels"][dtype]["name"].startswith(f"mnt_{op}_kernel_")
    assert onnx_name(op_spec("warp")) == "mnt::Warp"
    assert onnx_name(op_spec("cross_attention")) == "mnt::CrossAttention"
    with pytest.raises(KernelError, match="unknown kernel op 'blur'; known: cross_attention, warp"):
        op_spec("blur")


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.pop("limits"), "missing limits"),
    (lambda s: s.update(version=0), "version must be an integer >= 1"),
    (lambda s: s.update(attributes={"mode": "bilinear"}), "attributes must be empty"),
    (lambda s: s["launch"]["grid"].__setitem__(0, "N / 256"), "unsupported formula 'N / 256'"),
    (lambda s: s["launch"].update(block=[256, 1]), "launch.block must be 3 positive integers"),
    (lambda s: s["limits"].update({"Q": 4}), "names 'Q', not a shape symbol"),
    (lambda s: s["kernels"].pop("float16"), "kernels must have one entry per storage type"),
    (lambda s: s["kernels"]["float32"]["args"][2].update(name="M"), "int32 argument M is not an input shape"),
    (lambda s: s["kernels"]["float32"]["args"][2].update(type="float"), "only pointers and int32"),
    (lambda s: s["inputs"][1].update(dtype="int8"), "flow: dtype 'int8'"),
    (lambda s: s["launchers"].update(float32="void f()"), "launchers.float32 is not a C declaration"),
])
def test_validation_names_the_fault(change, problem):
    spec = copy.deepcopy(op_spec("warp"))
    validate_spec(copy.deepcopy(spec), "x")
    change(spec)
    with pytest.raises(KernelError, match=f"^where: .*{problem}"):
        validate_spec(spec, "where")


def test_formulas_evaluate_over_shape_symbols():
    symbols = {"N": 1, "H": 64, "W": 64, "Lq": 1025, "B": 2}
    assert evaluate("ceil(N * H * W / 256)", symbols, ceil_div) == 16
    assert evaluate("ceil(Lq / 4)", symbols, ceil_div) == 257
    assert evaluate("B", symbols) == 2 and evaluate("1", symbols) == 1 and evaluate("2 * B - 1", symbols) == 3
    for bad in ("N / 2", "Q", "__import__('os')", "N ** 2", "ceil(N / 2, 3)", "1.5", "True"):
        with pytest.raises(KernelError):
            evaluate(bad, symbols)


@pytest.fixture(scope="module")
def header(tmp_path_factory) -> dict[str, int]:
    """The CUDA headers' launch constants, compiled by the host compiler."""
    from mnt.kernels.loader import find_cxx

    folder = tmp_path_factory.mktemp("constants")
    source = folder / "constants.cpp"
    source.write_text('#include <stdio.h>\n#include "warp/warp.h"\n'
                      '#include "cross_attention/cross_attention.h"\nint main() {\n'
                      + "".join(f'    printf("%d\\n", (int)({name}));\n' for name in HEADER_CONSTANTS)
                      + "    return 0;\n}\n")
    command = [find_cxx(), "-std=c++17", f"-I{KERNELS_DIR}", "-o", str(folder / "constants"), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    out = subprocess.run([str(folder / "constants")], check=True, capture_output=True, text=True).stdout
    return dict(zip(HEADER_CONSTANTS, map(int, out.split()), strict=True))


def test_the_spec_launch_geometry_and_limits_are_the_headers(header):
    warp, attention = op_spec("warp"), op_spec("cross_attention")
    assert warp["launch"]["block"] == [header["MNT_WARP_BLOCK"], 1, 1]
    assert warp["limits"] == {"N * H * W": 2**31 - 1 - header["MNT_WARP_BLOCK"]}
    assert attention["launch"]["block"] == [header["MNT_ATTN_BLOCK"], 1, 1]
    assert header["MNT_ATTN_BLOCK"] == header["MNT_ATTN_WARPS"] * header["MNT_ATTN_LANES"]
    assert attention["limits"]["D"] == attention["limits"]["Dv"] == header["MNT_ATTN_MAX_DIM"]
    for spec in (warp, attention):
        assert spec["launch"]["shared_bytes"] == 0  # the kernels use static shared memory only
    for lq in range(1, 300):  # one query row per warp
        assert evaluate(attention["launch"]["grid"][0], {"Lq": lq}) == ceil_div(lq, header["MNT_ATTN_WARPS"])
    for pixels in (1, 255, 256, 257, 10**6):
        assert evaluate(warp["launch"]["grid"][0], {"N": 1, "H": 1, "W": pixels}) == \
            ceil_div(pixels, header["MNT_WARP_BLOCK"])


@pytest.fixture(scope="module")
def host():
    from mnt.kernels.loader import host_library

    return host_library()


def test_launch_geometry_matches_the_compiled_launchers(host):
    """mnt.kernels.spec.launch (the spec's formulas and limits) computes what the compiled
    launchers do, and refuses what their shape checks refuse."""
    warp, attention = op_spec("warp"), op_spec("cross_attention")
    rng = np.random.default_rng(4)
    for _ in range(200):
        n, c, height, width = (int(v) for v in rng.integers(1, 300, 4))
        factor = int(rng.integers(1, 5))
        shapes = [(n, c, height, width), (n, 2, height * factor, width * factor)]
        assert host.lib.mnt_warp_check_shapes(n, c, height, width, height * factor, width * factor) == 0
        planned = launch(warp, "float16", shapes)
        assert planned.grid == (host.lib.mnt_warp_grid_x(n, height, width), 1, 1)
        threads = planned.grid[0] * planned.block[0]
        assert threads >= n * height * width > threads - planned.block[0]
        assert planned.kernel == "mnt_warp_kernel_f16"
        assert planned.scalars == (n, c, height, width, height * factor, width * factor)
        b, lq, lk, d, dv = (int(v) for v in rng.integers(1, 700, 5))
        ok = host.lib.mnt_cross_attention_check_shapes(b, lq, lk, d, dv) == 0
        shapes = [(b, lq, d), (b, lk, d), (b, lk, dv)]
        assert ok == (not limit_violations(attention, {"B": b, "D": d, "Dv": dv}))
        if ok:
            planned = launch(attention, "float32", shapes)
            assert planned.grid == (host.lib.mnt_cross_attention_grid_x(lq), b, 1)
            assert planned.scalars == (b, lq, lk, d, dv)
            assert planned.kernel == "mnt_cross_attention_kernel_f32"
            assert 1 <= host.lib.mnt_cross_attention_key_tile(d, dv, 4) <= 16
        else:
            with pytest.raises(KernelError, match=f"at most {attention['limits']['D']}"):
                launch(attention, "float32", shapes)
    # At the limits: the spec's and the header's checks agree on both sides of each.
    most = attention["limits"]
    for b, d, dv in ((most["B"], most["D"], most["Dv"]), (most["B"] + 1, 8, 8), (1, most["D"] + 1, 8),
                     (1, 8, most["Dv"] + 1)):
        ok = host.lib.mnt_cross_attention_check_shapes(b, 1, 1, d, dv) == 0
        assert ok == (not limit_violations(attention, {"B": b, "D": d, "Dv": dv})), (b, d, dv)
    pixels = warp["limits"]["N * H * W"]
    for width in (pixels, pixels + 1):
        ok = host.lib.mnt_warp_check_shapes(1, 1, 1, width, 1, width) == 0
        assert ok == (not limit_violations(warp, {"N": 1, "H": 1, "W": width})), width
    with pytest.raises(KernelError, match="every size must be >= 1"):
        launch(warp, "float32", [(1, 1, 0, 4), (1, 2, 0, 4)])


def test_the_runtime_functions_read_the_spec():
    from mnt.runtime.backends import mnt_ops

    assert mnt_ops.reference_ops() == tuple(onnx_name(op_spec(op)) for op in ("warp", "cross_attention"))
    onnx = pytest.importorskip("onnx")
    for op, build in (("warp", mnt_ops.warp_function), ("cross_attention", mnt_ops.cross_attention_function)):
        spec = op_spec(op)
        function = onnx.FunctionProto.FromString(build())
        assert (function.domain, function.name) == (spec["domain"], spec["op"])
        assert list(function.input) == names(spec["inputs"])
        assert list(function.output) == names(spec["outputs"])


def test_the_onnx_schemas_and_torch_ops_read_the_spec():
    pytest.importorskip("onnxscript")
    import onnx
    import torch

    from mnt.export.onnx.custom_ops import ONNX_TYPES, TRANSLATIONS

    for op in OPS:
        spec = op_spec(op)
        schema = onnx.defs.get_schema(spec["op"], spec["version"], spec["domain"])
        assert [p.name for p in schema.inputs] == names(spec["inputs"])
        assert [p.name for p in schema.outputs] == names(spec["outputs"])
        assert {c.type_param_str: sorted(c.allowed_type_strs) for c in schema.type_constraints} == {
            name: sorted(ONNX_TYPES[t] for t in types) for name, types in spec["type_constraints"].items()}
        assert not schema.attributes
        namespace, name = torch_name(op).split("::")
        assert getattr(getattr(torch.ops, namespace), name).default in TRANSLATIONS


def _library(folder: Path) -> Path:
    """A kernel folder whose one-instruction PTX entries declare the specs' parameters."""
    from mnt.kernels.loader import MANIFEST_NAME
    from mnt.runtime.files import sha256_file

    folder.mkdir()
    ops, files = {}, {}
    for op in OPS:
        spec = op_spec(op)
        entries = []
        for kernel in spec["kernels"].values():
            types = ["u64" if a["type"].endswith("*") else "u32" for a in kernel["args"]]
            params = ",\n".join(f"\t.param .{t} {kernel['name']}_{i}" for i, t in enumerate(types))
            entries.append(f".visible .entry {kernel['name']}(\n{params}\n)\n{{\n\tret;\n}}\n")
        (folder / f"{op}.ptx").write_text(".version 8.0\n.target sm_87\n" + "".join(entries))
        ops[op] = {**spec, "ptx": f"{op}.ptx"}
        files[f"{op}.ptx"] = {"sha256": sha256_file(folder / f"{op}.ptx")}
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files, "ops": ops}))
    return folder


def test_the_tensorrt_plugins_launch_and_limit_by_the_spec(tmp_path):
    """The plugins' aot_impl on stand-ins for tensorrt / tensorrt.plugin with integer shapes:
    the spec's launch and limits (TensorRT itself is tested on a GPU, test_builder.py)."""
    from mnt.export.tensorrt import plugins

    library = plugins.load_plugin_kernels(_library(tmp_path / "lib"))
    assert set(library.kernels) == {(op, dtype) for op in OPS for dtype in dtypes(op_spec(op))}

    class Params:
        pass

    trt = SimpleNamespace(float32="f32", float16="f16")
    trtp = SimpleNamespace(cdiv=ceil_div, KernelLaunchParams=Params, SymInt32=lambda a: a,
                           SymIntExprs=SimpleNamespace(from_tuple=tuple))

    def aot(op: str, dtype: str, *shapes: tuple[int, ...], flow: str | None = None):
        inputs = [SimpleNamespace(dtype=dtype, shape_expr=s) for s in shapes]
        if flow:
            inputs[1].dtype = flow
        return plugins._aot_result(trt, trtp, library, op, inputs)

    for op, shapes in (("warp", [(2, 64, 32, 32), (2, 2, 64, 64)]),
                       ("cross_attention", [(1, 1024, 128), (1, 2048, 128), (1, 2048, 64)])):
        spec = op_spec(op)
        for dtype, trt_dtype in (("float32", "f32"), ("float16", "f16")):
            name, ptx, params, extra = aot(op, trt_dtype, *shapes, flow="f32" if op == "warp" else None)
            planned = launch(spec, dtype, shapes)
            assert name == planned.kernel and ptx == (tmp_path / "lib" / f"{op}.ptx").read_text()
            assert (params.grid_x, params.grid_y, params.grid_z) == planned.grid
            assert (params.block_x, params.block_y, params.block_z) == planned.block
            assert params.shared_mem == planned.shared_bytes and extra == planned.scalars
            assert scalar_args(spec, dtype) == library.kernels[op, dtype].scalar_args
    limit = op_spec("cross_attention")["limits"]["Dv"]
    with pytest.raises(ValueError, match=f"Dv can reach {limit + 1}; the kernel supports at most {limit}"):
        aot("cross_attention", "f16", (1, 4, 8), (1, 4, 8), (1, 4, limit + 1))
    with pytest.raises(ValueError, match="mnt::Warp needs flow of float32, got float16"):
        aot("warp", "f16", (1, 4, 8, 8), (1, 2, 8, 8))
    with pytest.raises(ValueError, match="mnt::CrossAttention needs keys of float16, got float32"):
        descs = [SimpleNamespace(dtype=d) for d in ("f16", "f32", "f16")]
        plugins._check_dtypes(trt, op_spec("cross_attention"), descs)


class ShapeExpr:
    """Like tensorrt.plugin's ShapeExpr: +, -, * with an int or another expression on the
    right only (no reflected operators), constants built from ints."""

    def __init__(self, value: int) -> None:
        self.value = value

    def _other(self, other: ShapeExpr | int) -> int:
        if isinstance(other, ShapeExpr):
            return other.value
        if type(other) is int:
            return other
        return NotImplemented

    def __add__(self, other):
        return ShapeExpr(self.value + self._other(other))

    def __sub__(self, other):
        return ShapeExpr(self.value - self._other(other))

    def __mul__(self, other):
        return ShapeExpr(self.value * self._other(other))


def expr_cdiv(a, b):
    """tensorrt.plugin.cdiv: refuses two ints, and an int first only as its own code wraps it."""
    if not isinstance(a, ShapeExpr):
        raise ValueError("Both arguments cannot be 'int's" if isinstance(b, int) else "int dividend")
    return ShapeExpr(ceil_div(a.value, b.value if isinstance(b, ShapeExpr) else b))


@pytest.mark.parametrize("formula, want", [
    ("ceil(N * H * W / 256)", 16), ("1 - x", -2), ("2 * N", 2), ("N * 2", 2), ("3 + x", 6),
    ("ceil(8 / 3)", 3), ("ceil(1000 / x)", 334), ("10 - 2 * x", 4), ("ceil(2 * 8 / 4) + N", 5),
])
def test_evaluate_needs_only_the_expressions_own_operators(formula, want):
    symbols = {"N": ShapeExpr(1), "H": ShapeExpr(64), "W": ShapeExpr(64), "x": ShapeExpr(3)}
    got = evaluate(formula, symbols, expr_cdiv)
    assert (got.value if isinstance(got, ShapeExpr) else got) == want
    assert evaluate(formula, {k: v.value for k, v in symbols.items()}) == want  # and on ints


def test_check_shapes_applies_the_warp_relations():
    warp = op_spec("warp")
    assert set(warp["relations"]) == {"h = f * H", "w = f * W"} and warp["derived"] == {"f": "ceil(h / H)"}
    check_shapes(warp, [(1, 1, 4, 4), (1, 2, 8, 8)])
    for flow_hw, problem in (((8, 6), "needs w = f \\* W, got W=4, f=2, w=6"),
                             ((6, 8), "needs h = f \\* H, got H=4, f=2, h=6"),
                             ((2, 2), "needs h = f \\* H, got H=4, f=1, h=2")):
        with pytest.raises(KernelError, match=problem):
            check_shapes(warp, [(1, 1, 4, 4), (1, 2, *flow_hw)])
        with pytest.raises(KernelError, match="pooling factor"):
            launch(warp, "float32", [(1, 1, 4, 4), (1, 2, *flow_hw)])


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.update(derived={"N": "ceil(h / H)"}), "derived must map new symbol names"),
    (lambda s: s.update(relations={"h == f * H": "x"}), "relations must map"),
    (lambda s: s.update(relations={"h = g * H": "x"}), "names 'g', not a shape symbol"),
])
def test_validation_checks_derived_symbols_and_relations(change, problem):
    spec = copy.deepcopy(op_spec("warp"))
    change(spec)
    with pytest.raises(KernelError, match=problem):
        validate_spec(spec, "where")


@pytest.fixture(scope="module")
def shape_checks(tmp_path_factory) -> dict[str, int]:
    """The headers' tile formula and shape checks, compiled by the host compiler: the least
    key tile over every allowed D, Dv per storage size, and the checks on shapes outside."""
    from mnt.kernels.loader import find_cxx

    folder = tmp_path_factory.mktemp("checks")
    source = folder / "checks.cpp"
    source.write_text(r'''#include <stdio.h>
#include "warp/warp.h"
#include "cross_attention/cross_attention.h"
int main() {
    for (int elem = 2; elem <= 4; elem += 2) {
        int least = 1 << 30;
        for (int d = 1; d <= MNT_ATTN_MAX_DIM; ++d)
            for (int dv = 1; dv <= MNT_ATTN_MAX_DIM; ++dv) {
                const int tile = mnt_attn_key_tile(d, dv, elem);
                if (tile < least) least = tile;
                if (mnt_attn_check_launch(1, 1, 1, d, dv, elem) != MNT_OK) least = -1;
            }
        printf("least_tile_%d %d\n", elem, least);
    }
    printf("tile_8193_f32 %d\n", mnt_attn_key_tile(4097, 4096, 4));
    printf("launch_8193_f32 %d\n", mnt_attn_check_launch(1, 1, 1, 4097, 4096, 4));
    printf("launch_513 %d\n", mnt_attn_check_launch(1, 4, 4, 513, 8, 2));
    printf("launch_ok %d\n", mnt_attn_check_launch(1, 4, 4, 512, 512, 4));
    printf("warp_w_6 %d\n", mnt_warp_check(1, 1, 4, 4, 8, 6));
    printf("warp_h_6 %d\n", mnt_warp_check(1, 1, 4, 4, 6, 8));
    printf("warp_ok %d\n", mnt_warp_check(1, 1, 4, 4, 8, 8));
    return 0;
}
''')
    command = [find_cxx(), "-std=c++17", "-O2", f"-I{KERNELS_DIR}", "-o", str(folder / "checks"), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    out = subprocess.run([str(folder / "checks")], check=True, capture_output=True, text=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_every_allowed_attention_shape_gets_a_key_tile_and_others_are_refused(shape_checks):
    """The kernel's tile loop advances by mnt_attn_key_tile: at least one key over the whole
    range the spec allows (D, Dv <= 512), and the launch check refuses what is outside."""
    assert shape_checks["least_tile_2"] >= 1 and shape_checks["least_tile_4"] >= 1
    assert shape_checks["tile_8193_f32"] == 0 and shape_checks["launch_8193_f32"] != 0
    assert shape_checks["launch_513"] != 0 and shape_checks["launch_ok"] == 0
    assert shape_checks["warp_w_6"] != 0 and shape_checks["warp_h_6"] != 0 and shape_checks["warp_ok"] == 0
    # the spec refuses the same shapes
    attention = op_spec("cross_attention")
    assert limit_violations(attention, {"B": 1, "D": 4097, "Dv": 4096})
    assert limit_violations(attention, {"B": 1, "D": 513, "Dv": 8})
    assert not limit_violations(attention, {"B": 1, "D": 512, "Dv": 512})


class ProfileShape:
    """tensorrt.plugin.Shape at aot_impl time: -1 for a dynamic dimension, and the profile's
    min and max."""

    def __init__(self, dims, most) -> None:
        self.dims, self.max = tuple(dims), tuple(most)

    @property
    def is_dynamic(self) -> bool:
        return -1 in self.dims

    def __getitem__(self, index):
        return self.dims[index]


class Dim:
    """A ShapeExpr as aot_impl sees it: constant or not."""

    def __init__(self, value: int | None) -> None:
        self.value, self.is_fake = value, False

    @property
    def is_constant(self) -> bool:
        return self.value is not None

    def constant_value(self) -> int:
        assert self.value is not None
        return self.value


def _desc(dtype: str, dims, most=None):
    """A TensorDesc: None in `dims` is a dynamic dimension (profile max from `most`)."""
    shape = ProfileShape([-1 if d is None else d for d in dims], most or dims)
    return SimpleNamespace(dtype=dtype, shape_expr=[Dim(d) for d in dims], has_shape=most is not None,
                           shape=shape)


def test_plugin_shape_checks_use_constants_and_the_profile_max():
    """The limits hold for every dimension, constant or up to the profile's max; relations
    between build-time constants hold; dimensions known only at run time are the kernel's."""
    from mnt.export.tensorrt import plugins

    warp, attention = op_spec("warp"), op_spec("cross_attention")
    plugins._check_shapes(attention, [_desc("f16", (1, None, 512), (1, 4096, 512))] * 3)
    with pytest.raises(ValueError, match="D can reach 513; the kernel supports at most 512"):
        plugins._check_shapes(attention, [_desc("f16", (1, 64, None), (1, 64, 513))] * 3)
    with pytest.raises(ValueError, match="Dv can reach 600"):
        plugins._check_shapes(attention, [_desc("f16", (1, 64, 64))] * 2
                              + [_desc("f16", (1, 64, None), (1, 64, 600))])
    with pytest.raises(ValueError, match="B can reach 70000"):
        plugins._check_shapes(attention, [_desc("f16", (None, 64, 64), (70000, 64, 64))] * 3)
    plugins._check_shapes(attention, [_desc("f16", (1, 64, None))] * 3)  # no bound: the kernel checks
    plugins._check_shapes(warp, [_desc("f16", (None, 64, 32, 32), (8, 64, 32, 32)),
                                 _desc("f32", (None, 2, 64, 64), (8, 2, 64, 64))])
    with pytest.raises(ValueError, match="needs w = f \\* W, got W=32, f=2, w=48"):
        plugins._check_shapes(warp, [_desc("f16", (None, 64, 32, 32), (8, 64, 32, 32)),
                                     _desc("f32", (None, 2, 64, 48), (8, 2, 64, 48))])
    with pytest.raises(ValueError, match="N \\* H \\* W can reach"):
        plugins._check_shapes(warp, [_desc("f16", (None, 4, 32768, 32768), (8, 4, 32768, 32768)),
                                     _desc("f32", (None, 2, 32768, 32768), (8, 2, 32768, 32768))])
    # a dynamic flow size is checked at run time by the kernel, not here
    plugins._check_shapes(warp, [_desc("f16", (1, 64, 32, 32)), _desc("f32", (1, 2, None, None))])
