"""The TensorRT engine path as far as it runs without TensorRT or a GPU: the skip line,
`--from`, the engine cache key, profiles, the plugin-variant parser input and the AOT
plugins' PTX and launch geometry. Engine builds themselves are marked `tensorrt`."""

import json
import re
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.export.errors import ExportError
from mnt.export.tensorrt import builder as engine
from mnt.export.tensorrt.builder import BuildTarget, EngineSettings, build_key, profile_shapes
from mnt.export.tensorrt.plugins import load_plugin_kernels
from mnt.kernels.build import ptx_entries
from mnt.kernels.spec import OPS, op_spec, scalar_args
from mnt.runtime.gpu import GpuProbe, probe_gpu, tensorrt_version
from mnt.runtime.manifest import EngineInfo, load_manifest
from tests.helpers import console_script

NO_ENGINES = engine.engines_unavailable()


@pytest.fixture(scope="module")
def folder(tiny_artefacts, tmp_path_factory):
    """A private copy of the tiny fp16 artefacts (the tests may write engines into it)."""
    copy = tmp_path_factory.mktemp("trt") / "artefact"
    shutil.copytree(tiny_artefacts("fp16"), copy)
    return copy


@pytest.mark.skipif(NO_ENGINES is None, reason="TensorRT and a GPU are here: engines are built, not skipped")
def test_build_from_verifies_goldens_then_skips_engines_with_one_line(folder):
    result = subprocess.run([console_script("mnt-export"), "build", "--from", str(folder)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "reproduce their goldens" in result.stdout
    skipped = [line for line in lines if "engines skipped" in line]
    assert len(skipped) == 1 and skipped[0] == lines[-1]
    assert NO_ENGINES in skipped[0] and f"mnt-export build --from {folder}" in skipped[0]
    assert not list(folder.glob("*.engine")) and all(
        not c.engines for c in load_manifest(folder).components.values())


def test_build_from_refuses_a_folder_whose_goldens_no_longer_match(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    golden = broken / "goldens" / "generator.npz"
    data = dict(np.load(golden))
    data["output:image"] = data["output:image"] + np.float32(0.5)  # a drifted reference output
    np.savez(golden, **data)
    result = CliRunner().invoke(main, ["build", "--from", str(broken)])
    assert result.exit_code != 0
    assert "golden checks failed; no engines built" in result.output
    assert "engines skipped" not in result.output


@pytest.mark.skipif(NO_ENGINES is None, reason="TensorRT and a GPU are here: engines are built, not skipped")
def test_build_ends_with_the_skip_line_after_writing_the_onnx(folder, tmp_path, monkeypatch):
    import mnt.export.onnx.build

    def fake_build(checkpoint, precision, out, **kwargs):  # the export itself is tested in test_build
        shutil.copytree(folder, out)

    monkeypatch.setattr(mnt.export.onnx.build, "build", fake_build)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", "--checkpoint", "x.safetensors", "--out", str(out)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("TensorRT engines skipped: ") and f"--from {out}" in last
    no_engines = CliRunner().invoke(main, ["build", "--checkpoint", "x", "--out", str(tmp_path / "b"),
                                           "--no-engines"])
    assert "engines skipped" not in no_engines.output


def test_build_needs_checkpoint_and_out_or_from(tmp_path):
    result = CliRunner().invoke(main, ["build", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--checkpoint and --out" in result.output
    result = CliRunner().invoke(main, ["build", "--from", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "leave out --checkpoint and --out" in result.output


def test_skip_reason_names_a_missing_gpu_when_tensorrt_imports(monkeypatch):
    from mnt.runtime.backends import registry

    monkeypatch.setattr(registry, "tensorrt_version", lambda module="tensorrt": "10.3.0")
    monkeypatch.setattr(registry, "probe_gpu", lambda: GpuProbe(0, reason="the CUDA driver sees no GPU"))
    assert engine.engines_unavailable() == "no GPU (the CUDA driver sees no GPU)"
    monkeypatch.setattr(registry, "probe_gpu", lambda: GpuProbe(1, "Orin", "8.7"))
    assert engine.engines_unavailable() is None
    monkeypatch.setattr(registry, "tensorrt_version", lambda module="tensorrt": None)
    assert "TensorRT is not installed" in engine.engines_unavailable()


def test_build_key_changes_with_each_of_its_inputs():
    target = BuildTarget("10.3.0", "8.7")
    base = dict(onnx_sha256="a" * 64, settings=EngineSettings(), target=target,
                plugin_library_sha256=None, profile={"x": [[1], [1], [8]]})
    key = build_key(**base)
    assert key == build_key(**base) and len(key) == 64
    variants = [
        {"onnx_sha256": "b" * 64},
        {"settings": EngineSettings(ops="plugins")},
        {"settings": EngineSettings(opts=(1, 4))},
        {"settings": EngineSettings(optimization_level=5)},
        {"settings": EngineSettings(workspace_mib=512)},
        {"target": BuildTarget("10.3.1", "8.7")},
        {"target": BuildTarget("10.3.0", "9.0")},
        {"plugin_library_sha256": "c" * 64},
        {"profile": {"x": [[1], [4], [8]]}},
    ]
    keys = {build_key(**{**base, **change}) for change in variants}
    assert len(keys) == len(variants) and key not in keys


def test_engine_settings_reject_unknown_ops():
    with pytest.raises(ExportError, match="unknown engine ops"):
        EngineSettings(ops="cudnn")


def test_profiles_split_k_1_to_8_each_tuned_for_its_own_optimum(folder):
    manifest = load_manifest(folder)
    generator = manifest.components["generator"]
    profiles = profile_shapes(generator, EngineSettings().opts)
    ks = [tuple(rows[i][0] for i in range(3)) for rows in (p["keys_0"] for p in profiles)]
    assert ks == [(1, 1, 1), (2, 4, 4), (5, 8, 8)]  # K = 1 alone; every K in exactly one range
    first, _, last = profiles[1]["keys_0"]
    assert first[1:] == last[1:]  # only K varies
    assert all(p["driver_landmarks"] == ((1, 3, 256, 256),) * 3 for p in profiles)  # static stays static
    assert [p["keys_0"][1][0] for p in profile_shapes(generator, (4, 20))] == [4, 8]  # clamped into 1..8
    assert engine.axis_ranges(1, 8, (1,)) == [(1, 1, 8)]
    face = next(iter(manifest.faces.values()))
    assert len(profile_shapes(face, (1, 4, 8))) == 1  # no dynamic axis: one profile


def test_profile_optima_must_rise():
    with pytest.raises(ExportError, match="must be rising and positive"):
        EngineSettings(opts=(4, 1))


class FakeBuilderConfig:
    """TensorRT's timing-cache calls: set_timing_cache refuses a cache made from bytes of
    another GPU or TensorRT (returns False), as TensorRT's does."""

    def __init__(self) -> None:
        self.attached: list[bytes] = []

    def create_timing_cache(self, data: bytes) -> bytes:
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        self.attached.append(cache)
        return cache in (b"", b"this gpu")


def test_a_timing_cache_of_another_gpu_is_replaced_by_an_empty_one(tmp_path):
    path, lines, config = tmp_path / "timing.cache", [], FakeBuilderConfig()
    path.write_bytes(b"another gpu")
    assert engine.attach_timing_cache(config, path, "generator", lines.append) == b""
    assert config.attached == [b"another gpu", b""]
    assert len(lines) == 1 and "does not fit this GPU and TensorRT; timing afresh" in lines[0]
    path.write_bytes(b"this gpu")
    lines.clear()
    assert engine.attach_timing_cache(FakeBuilderConfig(), path, "generator", lines.append) == b"this gpu"
    assert lines == []


def test_manifest_round_trips_an_engine_entry(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "a")
    manifest = load_manifest(tmp_path / "a")
    entry = EngineInfo(file="generator.engine", sha256="d" * 64, tensorrt_version="10.3.0",
                       compute_capability="8.7", plugin_library_sha256=None, build_key="e" * 64, ops="native")
    generator = replace(manifest.components["generator"], engines={"tensorrt": entry})
    components = {**manifest.components, "generator": generator}
    replace(manifest, components=components).write(tmp_path / "a")
    data = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert data["schema_version"] == 1  # an optional field: older readers ignore it
    assert data["components"]["generator"]["engines"] == {"tensorrt": {
        "file": "generator.engine", "sha256": "d" * 64, "runtime": "tensorrt", "tensorrt_version": "10.3.0",
        "compute_capability": "8.7", "plugin_library_sha256": None, "build_key": "e" * 64, "ops": "native"}}
    assert "engines" not in data["components"]["target_encoder"]
    again = load_manifest(tmp_path / "a")
    assert again.components["generator"].engines == {"tensorrt": entry}
    assert again.components["target_encoder"].engines == {}
    # a manifest of mnt 0.1 (one "engine" per component) still reads, as a TensorRT engine
    data["components"]["generator"]["engine"] = data["components"]["generator"].pop("engines")["tensorrt"]
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(data))
    assert load_manifest(tmp_path / "a").components["generator"].engines == {"tensorrt": entry}


def test_plugin_variant_parser_input_gets_namespace_and_aot_attributes(tmp_path):
    node = onnx.helper.make_node("Warp", ["features", "flow"], ["out"], domain="mnt")
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT16, [1, 4, 8, 8]),
                      onnx.helper.make_tensor_value_info("flow", onnx.TensorProto.FLOAT, [1, 2, 16, 16])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT16, [1, 4, 8, 8])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                         onnx.helper.make_opsetid("mnt", 1)])
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    before = path.read_bytes()
    parsed = onnx.load_from_string(engine.plugin_onnx_bytes(path))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in parsed.graph.node[0].attribute}
    assert attrs == {"plugin_namespace": b"mnt", "aot": 1}
    assert path.read_bytes() == before  # the file keeps the contract's attribute-free node
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(ExportError, match="not a plugin-variant graph"):
        engine.plugin_onnx_bytes(tmp_path / "plain.onnx")


def test_plugin_engines_need_the_kernel_library(monkeypatch):
    monkeypatch.delenv("MNT_KERNELS_DIR", raising=False)
    with pytest.raises(ExportError, match="kernel library") as err:
        engine.kernels_folder(None)
    assert "mnt-export kernels --out DIR" in err.value.hint
    monkeypatch.setenv("MNT_KERNELS_DIR", "/k")
    assert engine.kernels_folder(None) == Path("/k")


# --- AOT plugin kernels: argument order, PTX, launch geometry -----------------------------


def _synthetic_library(folder: Path, arg_order: list[int] | None = None) -> Path:
    """A kernel folder with one-instruction PTX whose entries declare the spec's parameters,
    optionally with every spec's arguments (and so the PTX) permuted by `arg_order`."""
    from mnt.kernels.loader import MANIFEST_NAME

    folder.mkdir()
    ops, files = {}, {}
    for op in ("warp", "cross_attention"):
        spec = json.loads(json.dumps(op_spec(op)))
        entries = []
        for kernel in spec["kernels"].values():
            if arg_order is not None:
                kernel["args"] = [kernel["args"][i] for i in arg_order]
            types = ["u64" if a["type"].endswith("*") else "u32" for a in kernel["args"]]
            params = ",\n".join(f"\t.param .{t} {kernel['name']}_param_{i}" for i, t in enumerate(types))
            entries.append(f".visible .entry {kernel['name']}(\n{params}\n)\n{{\n\tret;\n}}\n")
        (folder / f"{op}.ptx").write_text(".version 8.0\n.target sm_87\n" + "".join(entries))
        ops[op] = {**spec, "ptx": f"{op}.ptx"}
        files[f"{op}.ptx"] = {"sha256": engine.sha256_file(folder / f"{op}.ptx")}
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files, "ops": ops}))
    return folder


def test_plugin_embeds_the_ptx_unchanged_and_refuses_the_old_argument_order(tmp_path):
    library = load_plugin_kernels(_synthetic_library(tmp_path / "new"))
    for (op, _), kernel in library.kernels.items():
        assert kernel.ptx == (tmp_path / "new" / f"{op}.ptx").read_text()
    # 9 arguments each: the inputs, the int32 shapes, the output. The old contract put the
    # output pointer right after the inputs (index 2 for Warp's 2 inputs).
    old = [0, 1, 8, 2, 3, 4, 5, 6, 7]
    n_in = len(op_spec(OPS[0])["inputs"])  # the ops are checked in OPS order
    refused = f"AOT plugins pass {n_in} input pointer\\(s\\), then the int32"
    with pytest.raises(ExportError, match=refused) as err:
        load_plugin_kernels(_synthetic_library(tmp_path / "old", old))
    assert "mnt-export kernels --out" in err.value.hint


def test_plugin_refuses_ptx_whose_parameters_disagree_with_the_spec(tmp_path):
    # PTX compiled from kernels in the old order (output before the shapes), spec in TensorRT's
    folder = _synthetic_library(tmp_path / "lib", [0, 1, 8, 2, 3, 4, 5, 6, 7])
    manifest = json.loads((folder / "kernels.json").read_text())
    for op in OPS:
        manifest["ops"][op]["kernels"] = json.loads(json.dumps(op_spec(op)["kernels"]))
    (folder / "kernels.json").write_text(json.dumps(manifest))
    first = op_spec(OPS[0])  # the ops are checked in OPS order; Warp's message: parameter 2 ... is N
    n_in, symbol = len(first["inputs"]), scalar_args(first, "float32")[0]
    disagree = f"PTX parameter {n_in} is .u64, but spec argument {n_in} is {symbol} "
    with pytest.raises(ExportError, match=disagree):
        load_plugin_kernels(folder)
    folder = _synthetic_library(tmp_path / "renamed")
    manifest = json.loads((folder / "kernels.json").read_text())
    manifest["ops"]["warp"]["kernels"]["float16"]["name"] = "mnt_warp_kernel_f64"
    (folder / "kernels.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="warp.ptx has no kernel entry mnt_warp_kernel_f64"):
        load_plugin_kernels(folder)


def _kernel_params(cubin: Path, kernel: str) -> list[tuple[int, int, int]]:
    """(ordinal, offset, size) of each parameter from the cubin's EIATTR_KPARAM_INFO records."""
    dump = subprocess.run(["readelf", "-x", f".nv.info.{kernel}", str(cubin)], capture_output=True,
                          text=True, check=True).stdout
    data = b"".join(bytes.fromhex("".join(m.group(1).split()))
                    for m in re.finditer(r"^\s+0x[0-9a-f]+ ((?:[0-9a-f]{2,8} )+)", dump, re.M))
    i, params = 0, []
    while i < len(data):
        if data[i] != 0x04:  # EIFMT_NVAL / EIFMT_HVAL records: 4 bytes in all
            i += 4
            continue
        size = struct.unpack_from("<H", data, i + 2)[0]
        if data[i + 1] == 0x17:  # EIATTR_KPARAM_INFO
            _, ordinal, offset, word = struct.unpack_from("<IHHI", data, i + 4)
            params.append((ordinal, offset, (word >> 18) & 0x3FFF))
        i += 4 + size
    return sorted(params)


@pytest.fixture(scope="module")
def ptx_library(tmp_path_factory):
    """A kernel folder with the real per-op PTX (nvcc, compute_75) and its kernels.json, as
    `mnt-export kernels` writes them (without the slower fat library)."""
    from mnt.kernels.build import ptx_command
    from mnt.kernels.loader import MANIFEST_NAME

    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.skip("nvcc is not installed")
    out = tmp_path_factory.mktemp("kernels")
    ops, files = {}, {}
    for op in ("warp", "cross_attention"):
        subprocess.run(ptx_command(Path(nvcc), op, out / f"{op}.ptx"), check=True, capture_output=True)
        ops[op] = {**op_spec(op), "ptx": f"{op}.ptx"}
        files[f"{op}.ptx"] = {"sha256": engine.sha256_file(out / f"{op}.ptx")}
    (out / MANIFEST_NAME).write_text(json.dumps({"files": files, "ops": ops}))
    return out


def test_plugin_kernels_take_tensorrt_argument_order_in_the_compiled_code(ptx_library, tmp_path):
    library = load_plugin_kernels(ptx_library)
    kernel = library.kernels["warp", "float16"]
    assert kernel.scalar_args == ("N", "C", "H", "W", "h", "w")
    ptxas = Path(shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc").with_name("ptxas")
    if not ptxas.exists() or not shutil.which("readelf"):
        pytest.skip("ptxas or readelf missing")
    (tmp_path / "w.ptx").write_text(kernel.ptx)
    subprocess.run([str(ptxas), "-arch=sm_87", "-o", str(tmp_path / "w.cubin"), str(tmp_path / "w.ptx")],
                   check=True)
    params = _kernel_params(tmp_path / "w.cubin", kernel.name)
    # features, flow (pointers), N C H W h w (int32), then the output pointer: what TensorRT passes
    assert [size for _, _, size in params] == [8, 8, 4, 4, 4, 4, 4, 4, 8]


def test_nvcc_ptx_declares_tensorrt_argument_order_and_the_plugin_embeds_it_unchanged(ptx_library):
    """On real nvcc output: every kernel's PTX entry takes the input pointers (.u64), then
    the int32 shapes (.u32/.s32), then the output pointer, as TensorRT's AOT launch passes
    them, and the plugin embeds that PTX byte for byte."""
    library = load_plugin_kernels(ptx_library)
    for op in ("warp", "cross_attention"):
        spec = op_spec(op)
        written = (ptx_library / f"{op}.ptx").read_text()
        entries = ptx_entries(written)
        for dtype, entry in spec["kernels"].items():
            kernel = library.kernels[op, dtype]
            assert kernel.ptx == written
            params = entries[entry["name"]]
            n_in, n_int = len(spec["inputs"]), len(kernel.scalar_args)
            assert len(params) == n_in + n_int + 1, (entry["name"], params)
            assert params[:n_in] == ["u64"] * n_in and params[-1] == "u64", (entry["name"], params)
            assert all(p in ("u32", "s32") for p in params[n_in:-1]), (entry["name"], params)
            assert [a["name"] for a in entry["args"]][n_in:-1] == list(kernel.scalar_args)


def test_plugin_launch_geometry_follows_the_spec(ptx_library):
    library = load_plugin_kernels(ptx_library)
    cdiv = lambda a, b: -(-a // b)  # noqa: E731
    kernel, grid, args = library.launch("warp", "float32", [(1, 64, 32, 32), (1, 2, 64, 64)], cdiv)
    assert kernel.name == "mnt_warp_kernel_f32" and kernel.block == (256, 1, 1)
    assert grid == (4, 1, 1) and args == [1, 64, 32, 32, 64, 64]
    kernel, grid, args = library.launch("cross_attention", "float16",
                                        [(1, 1024, 128), (1, 8 * 256, 128), (1, 8 * 256, 128)], cdiv)
    assert kernel.name == "mnt_cross_attention_kernel_f16" and kernel.block == (128, 1, 1)
    assert grid == (256, 1, 1) and args == [1, 1024, 2048, 128, 128]
    assert library.sha256 == engine.sha256_file(ptx_library / "kernels.json")


# --- on a machine with TensorRT and a GPU ----------------------------------------------------

@pytest.mark.tensorrt
@pytest.mark.skipif(NO_ENGINES is not None, reason=f"needs TensorRT and a GPU: {NO_ENGINES}")
def test_engines_build_and_match_onnx_runtime(folder):
    from mnt.export.onnx.gates import Error
    from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from mnt.runtime.backends.tensorrt import TensorRTBackend
    from tests.tolerances import TENSORRT_VS_ONNXRUNTIME_MIN_PSNR_DB

    manifest = engine.build_engines(folder, log=print)
    gpu = probe_gpu()
    for name, info in manifest.components.items():
        built = info.engines["tensorrt"]
        assert built.compute_capability == gpu.compute_capability
        assert built.tensorrt_version == tensorrt_version()
        golden = np.load(folder / info.golden["file"])
        feeds = {t.name: golden[f"input:{t.name}"] for t in info.inputs}
        with OnnxRuntimeBackend(info, folder) as ort, TensorRTBackend(info, folder, cuda_graph=True) as trt:
            expected = {k: v.astype(np.float64) for k, v in ort.infer(feeds).items()}
            for _ in range(2):  # the second call replays the captured graph
                got = trt.infer(feeds)
            for t in info.outputs:
                psnr = Error.between(got[t.name], expected[t.name]).psnr_db
                assert psnr >= TENSORRT_VS_ONNXRUNTIME_MIN_PSNR_DB[info.precision], (name, t.name, psnr)
