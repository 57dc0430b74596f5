"""`mnt-export triton --format plan` writes a repository for one serving image: every plan
must load in that image's TensorRT (plans load only in the TensorRT that built them), plans
with our AOT plugins need TensorRT >= 10.9, and each plan's TensorRT is recorded."""

import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.export.errors import ExportError
from mnt.export.triton.repository import write_repository
from mnt.runtime.manifest import EngineInfo, load_manifest


def _with_plans(tiny_artefacts, tmp_path, version: str, ops: str = "native"):
    """A copy of the tiny artefacts whose every component has a TensorRT `version` engine."""
    folder = tmp_path / "artefact"
    shutil.copytree(tiny_artefacts("fp32"), folder)
    manifest = load_manifest(folder)
    updated = {}
    for name, info in manifest.all_components.items():
        (folder / f"{name}.engine").write_bytes(b"plan of " + name.encode())
        engine = EngineInfo(f"{name}.engine", "0" * 64, version, "8.9", None, "1" * 64, ops)
        updated[name] = replace(info, engines={"tensorrt": engine})
    replace(manifest, components={n: updated[n] for n in manifest.components},
            faces={n: updated[n] for n in manifest.faces}).write(folder)
    return folder


def test_plans_of_the_images_tensorrt_are_written_with_their_version_recorded(tiny_artefacts, tmp_path):
    folder = _with_plans(tiny_artefacts, tmp_path, "10.8.0.43")
    out = tmp_path / "repo"
    models = write_repository(folder, out, fmt="plan", image="25.01")
    for name in models[:-1]:
        config = (out / name / "config.pbtxt").read_text()
        assert config.startswith("# model.plan: TensorRT 10.8.0.43, GPU compute capability 8.9")
        assert 'platform: "tensorrt_plan"' in config
        assert (out / name / "1" / "model.plan").read_bytes() == (folder / f"{name}.engine").read_bytes()
    readme = (out / "README.md").read_text()
    assert "tritonserver:25.01-py3" in readme and "opencv-contrib-python-headless" in readme
    assert f"`{models[0]}`: TensorRT 10.8.0.43, compute capability 8.9" in readme


def test_plans_of_another_tensorrt_are_refused_naming_each(tiny_artefacts, tmp_path):
    folder = _with_plans(tiny_artefacts, tmp_path, "10.3.0.30")  # JetPack 6's
    with pytest.raises(ExportError, match=r"another TensorRT than tritonserver:25.01's 10.8.0.*"
                                          r"generator \(10.3.0.30\)") as err:
        write_repository(folder, tmp_path / "repo", fmt="plan", image="25.01")
    assert "build them with TensorRT 10.8.0" in err.value.hint and not (tmp_path / "repo").exists()
    assert write_repository(folder, tmp_path / "jetson", fmt="plan", image="24.08")  # 24.08 has 10.3


def test_aot_plugin_plans_need_tensorrt_10_9(tiny_artefacts, tmp_path):
    folder = _with_plans(tiny_artefacts, tmp_path, "10.8.0.43", ops="plugins")
    with pytest.raises(ExportError, match="plans with our AOT plugins need TensorRT >= 10.9; "
                                          "tritonserver:25.01 has TensorRT 10.8.0") as err:
        write_repository(folder, tmp_path / "repo", fmt="plan", image="25.01")
    assert "--image 25.03 or newer" in err.value.hint
    newer = _with_plans(tiny_artefacts, tmp_path / "newer", "10.9.0.34", ops="plugins")
    assert write_repository(newer, tmp_path / "repo", fmt="plan", image="25.03")


def test_an_unknown_image_needs_its_tensorrt_given(tiny_artefacts, tmp_path):
    folder = _with_plans(tiny_artefacts, tmp_path, "10.13.3.9")
    args = ["triton", "--artifacts", str(folder), "--format", "plan", "--image", "25.10"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "which TensorRT the tritonserver:25.10 image holds" in result.output
    assert "--serving-tensorrt VERSION" in result.output
    given = ["--serving-tensorrt", "10.13.3.9"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), *given])
    assert result.exit_code == 0, result.output
    assert "TensorRT 10.13.3.9" in (tmp_path / "b" / "generator" / "config.pbtxt").read_text()
