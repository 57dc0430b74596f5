"""What a Jetson runs from the export side, installed without the `export` extra (no
PyTorch, onnx, onnxscript, safetensors or scikit-image): `mnt-export --help`, `inspect`,
`verify` and `build --from` (goldens re-checked in ONNX Runtime, then engines, or the line
saying why they were skipped)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import run_blocking

CLI = ("import sys\n"
       "from mnt.export.cli import main\n"
       "sys.argv = ['mnt-export', *{args!r}]\n"
       "try:\n"
       "    main()\n"
       "finally:\n"
       "    torch = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
       "    print(json.dumps(torch), file=sys.stderr)\n")


EXPORT_EXTRA = ("torch", "onnx", "onnxscript", "safetensors", "skimage")


def _run(*args: str):
    result = run_blocking("import json\n" + CLI.format(args=list(args)), EXPORT_EXTRA)
    imported = json.loads(result.stderr.strip().splitlines()[-1])
    assert imported == [], f"torch modules imported: {imported}"
    return result


def test_help_without_torch():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "build" in result.stdout and "verify" in result.stdout


@pytest.fixture(scope="module")
def device_folder(tiny_artefacts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("device") / "artefact"
    shutil.copytree(tiny_artefacts("fp16"), folder)
    return folder


def test_inspect_and_verify_without_torch(device_folder):
    inspected = _run("inspect", str(device_folder))
    assert inspected.returncode == 0, inspected.stderr
    assert "generator" in inspected.stdout
    verified = _run("verify", str(device_folder))
    assert verified.returncode == 0, verified.stderr
    assert "outputs within their thresholds" in verified.stdout


def test_build_from_without_torch(device_folder):
    before = sorted(p.name for p in device_folder.rglob("*"))
    result = _run("build", "--from", str(device_folder))
    assert result.returncode == 0, result.stderr
    assert "reproduce their goldens" in result.stdout
    assert "TensorRT engines skipped" in result.stdout or "TensorRT engines written" in result.stdout
    if "skipped" in result.stdout:
        assert sorted(p.name for p in device_folder.rglob("*")) == before  # nothing half-written
