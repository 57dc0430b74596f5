"""TensorRT-RTX engines, built for real on this machine (no GPU needed: its builds are
ahead of time), through the same builder code the TensorRT path runs; and the runtime's
refusal, in one line, where no GPU is."""

import shutil

import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.export.errors import ExportError
from mnt.export.tensorrt.builder import EngineSettings, build_engines, engines_unavailable, rtx_capabilities
from mnt.runtime.backends import registry
from mnt.runtime.backends.tensorrt import check_engine
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.gpu import GpuProbe, probe_gpu, tensorrt_version
from mnt.runtime.manifest import EngineInfo, load_manifest

NO_RTX = engines_unavailable("tensorrt-rtx")
needs_rtx = pytest.mark.skipif(NO_RTX is not None, reason=f"needs TensorRT-RTX: {NO_RTX}")
RTX = EngineSettings(runtime="tensorrt-rtx")


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def rtx_folder(request, tiny_artefacts, tmp_path_factory):
    """A copy of the tiny artefacts with TensorRT-RTX engines built into it."""
    if NO_RTX is not None:
        pytest.skip(f"needs TensorRT-RTX: {NO_RTX}")
    folder = tmp_path_factory.mktemp(f"rtx-{request.param}") / "artefact"
    shutil.copytree(tiny_artefacts(request.param), folder)
    lines: list[str] = []
    manifest = build_engines(folder, RTX, log=lines.append)
    return folder, manifest, lines


@needs_rtx
def test_every_component_gets_an_rtx_engine_for_the_default_gpus(rtx_folder):
    folder, manifest, lines = rtx_folder
    version = tensorrt_version("tensorrt_rtx")
    assert manifest.versions["tensorrt-rtx"] == version
    assert set(manifest.components) < set(manifest.all_components)  # the face components too
    for name, info in manifest.all_components.items():
        engine = info.engines["tensorrt-rtx"]
        assert engine.runtime == "tensorrt-rtx" and engine.tensorrt_version == version
        assert engine.compute_capabilities == ("8.0", "8.6", "8.9", "12.0") and engine.ops == "native"
        assert engine.file == f"{name}.rtx.engine" and (folder / engine.file).stat().st_size > 100_000
    assert load_manifest(folder) == manifest  # written, and read back the same
    assert any("engine built" in line for line in lines)


@needs_rtx
def test_a_rebuild_takes_the_cached_engines(rtx_folder):
    folder, manifest, _ = rtx_folder
    lines: list[str] = []
    again = build_engines(folder, RTX, log=lines.append)
    assert sum("taken from the cache" in line for line in lines) == len(manifest.all_components)
    assert again == manifest


@needs_rtx
def test_other_capabilities_are_another_engine(tiny_artefacts, tmp_path):
    folder = tmp_path / "artefact"
    shutil.copytree(tiny_artefacts("fp16"), folder)
    settings = EngineSettings(runtime="tensorrt-rtx", compute_capabilities=rtx_capabilities("86,120"))
    lines: list[str] = []
    manifest = build_engines(folder, settings, log=lines.append)
    assert manifest.components["generator"].engines["tensorrt-rtx"].compute_capabilities == ("8.6", "12.0")
    assert not any("taken from the cache" in line for line in lines)


@needs_rtx
def test_turing_cannot_take_the_fp32_islands_and_says_so(tiny_artefacts, tmp_path):
    # Measured: TensorRT-RTX 1.7 has no FP32 GEMM for SM75, and the FP16 generator keeps its
    # attention products in FP32.
    folder = tmp_path / "artefact"
    shutil.copytree(tiny_artefacts("fp16"), folder)
    settings = EngineSettings(runtime="tensorrt-rtx", compute_capabilities=("7.5",))
    with pytest.raises(ExportError, match="TensorRT-RTX could not build an engine: .*Turing") as err:
        build_engines(folder, settings, log=lambda _: None)
    assert "leave 75 out" in err.value.hint
    assert not any(c.engines for c in load_manifest(folder).components.values())  # nothing half-written


def test_capabilities_are_checked_and_named():
    assert rtx_capabilities("120, 80,8.6") == ("8.0", "8.6", "12.0")
    with pytest.raises(ExportError, match="cannot target compute capability '90'") as err:
        rtx_capabilities("80,90")
    assert "no Hopper or Jetson" in err.value.hint


def test_plugins_with_rtx_are_refused_before_any_export(tmp_path):
    result = CliRunner().invoke(main, ["build", "--checkpoint", str(tmp_path / "none.safetensors"),
                                       "--out", str(tmp_path / "out"), "--plugins", "--engines",
                                       "tensorrt-rtx"])
    assert result.exit_code == 1
    assert "--plugins cannot be built with --engines tensorrt-rtx" in result.output
    assert "tensorrt_rtx.plugin" in result.output and not (tmp_path / "out").exists()


GPU_86 = GpuProbe(1, "RTX 3090", "8.6", 24.0)
ENGINE = EngineInfo("generator.rtx.engine", "0" * 64, "1.7.1.116", "", None, "1" * 64, "native",
                    "tensorrt-rtx", ("8.0", "8.6"))


def _info(tiny_artefacts):
    from dataclasses import replace

    info = load_manifest(tiny_artefacts("fp16")).components["generator"]
    return replace(info, engines={"tensorrt-rtx": ENGINE})


def test_an_rtx_engine_runs_on_a_listed_gpu_with_its_version(tiny_artefacts):
    info = _info(tiny_artefacts)
    assert check_engine(info, "art", GPU_86, "1.7.1.116", "tensorrt-rtx") == ENGINE
    with pytest.raises(RuntimeStageError, match=r"capability 8.0, 8.6; this GPU \(RTX 4090\) is 8.9") as e:
        check_engine(info, "art", GpuProbe(1, "RTX 4090", "8.9"), "1.7.1.116", "tensorrt-rtx")
    assert "--compute-capabilities 89" in e.value.hint
    with pytest.raises(RuntimeStageError, match="TensorRT-RTX 1.7.1.116, this machine has TensorRT-RTX 1.8"):
        check_engine(info, "art", GPU_86, "1.8.0", "tensorrt-rtx")
    with pytest.raises(RuntimeStageError, match="has no TensorRT engine"):
        check_engine(info, "art", GPU_86, "10.3.0", "tensorrt")  # the other runtime's engine


@needs_rtx
def test_without_a_gpu_the_rtx_backend_refuses_in_one_line(rtx_folder):
    folder, manifest, _ = rtx_folder
    if probe_gpu().available:
        pytest.skip("a GPU is here")
    reason = registry.unavailable("tensorrt-rtx", folder, manifest)
    assert reason.startswith("no GPU (")
    picked, passed = registry.pick_auto(folder, manifest)
    assert picked == "onnxruntime-cpu" and passed["tensorrt-rtx"] == reason
    from mnt.runtime.reenactor import Reenactor

    with pytest.raises(RuntimeStageError, match="the TensorRT-RTX backend needs a CUDA GPU") as err:
        Reenactor(folder, backend="tensorrt-rtx")
    assert "\n" not in err.value.one_line()


@needs_rtx
def test_the_built_in_model_builds_fp16_rtx_engines(tmp_path):
    from mnt.runtime.defaults import default_checkpoint

    out = tmp_path / "demo-fp16"
    result = CliRunner().invoke(main, ["build", "--checkpoint", str(default_checkpoint()), "--precision",
                                       "fp16", "--out", str(out), "--engines", "tensorrt-rtx"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("TensorRT-RTX engines for compute capability")
    manifest = load_manifest(out)
    assert all("tensorrt-rtx" in c.engines for c in manifest.all_components.values())
    inspected = CliRunner().invoke(main, ["inspect", str(out)])
    assert inspected.exit_code == 0
    assert all(f"{name}.rtx.engine" in inspected.output for name in manifest.all_components)
