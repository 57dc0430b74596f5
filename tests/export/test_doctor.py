"""`mnt-export doctor`: text and JSON from the same facts, safe on a CPU-only machine and
without torch, and exit 0 whatever it finds."""

import json
import subprocess
from pathlib import Path

from click.testing import CliRunner

from mnt.export import doctor
from mnt.export.cli import main
from mnt.runtime.backends import registry
from tests.helpers import run_blocking

KEYS = {"python", "mnt", "packages", "gpu", "cpu", "nvcc", "backends", "auto"}
PACKAGES = {"numpy", "onnxruntime", "torch", "onnx", "tensorrt", "tensorrt_rtx", "cuda-python",
            "mediapipe", "dlib"}


def _json(*args):
    result = CliRunner().invoke(main, ["doctor", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_has_every_fact_and_the_auto_pick():
    found = _json()
    assert set(found) == KEYS and set(found["packages"]) == PACKAGES
    assert found["python"]["executable"] and found["python"]["version"].count(".") == 2
    assert found["packages"]["numpy"]["installed"] and found["packages"]["numpy"]["version"]
    assert "CPUExecutionProvider" in found["packages"]["onnxruntime"]["providers"]
    assert {"available", "name", "compute_capability", "driver", "reason"} <= set(found["gpu"])
    assert {"path", "release", "reason"} <= set(found["nvcc"])
    assert list(found["backends"]) == list(registry.names()[1:])
    assert found["backends"]["onnxruntime-cpu"] == {"available": True, "reason": None,
                                                    "summary": "ONNX Runtime on the CPU"}
    for data in found["backends"].values():
        assert data["available"] == (data["reason"] is None)
    auto = found["auto"]
    assert auto["artifacts"] is None and auto["pick"] in registry.AUTO_ORDER
    # Everything better than the pick was passed over, each with its reason.
    better = registry.AUTO_ORDER[:registry.AUTO_ORDER.index(auto["pick"])]
    assert list(auto["passed_over"]) == list(better) and all(auto["passed_over"].values())


def test_text_says_the_same_as_the_json():
    found = _json()
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"Python {found['python']['version']}" in text and found["packages"]["numpy"]["version"] in text
    assert "backends:" in text and f"--backend auto (without a folder) picks {found['auto']['pick']}" in text
    backends = text.split("\nbackends:\n")[1].splitlines()
    for name, data in found["backends"].items():
        line = next(x for x in backends if x.strip().startswith(name + " "))
        assert ("available" in line) if data["available"] else (data["reason"] in line)


def test_auto_pick_for_an_artefact_folder_and_a_bad_one(tiny_artefacts, tmp_path):
    folder = tiny_artefacts("fp32")
    found = _json("--artifacts", str(folder))
    assert found["auto"]["artifacts"] == str(folder) and found["auto"]["pick"] in registry.AUTO_ORDER
    assert "holds no TensorRT engines" in found["backends"]["tensorrt"]["reason"]
    bad = CliRunner().invoke(main, ["doctor", "--artifacts", str(tmp_path / "nope")])
    assert bad.exit_code == 1 and "not an mnt artefact folder" in bad.stderr


def test_failing_probes_are_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the probe broke")

    def hangs(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    import mnt.kernels.build

    monkeypatch.setattr(doctor, "probe_gpu", broken)
    monkeypatch.setattr(registry, "unavailable", broken)
    monkeypatch.setattr(mnt.kernels.build, "find_nvcc", lambda: Path("/opt/cuda/bin/nvcc"))
    monkeypatch.setattr(doctor.subprocess, "run", hangs)
    found = _json()
    assert "the probe broke" in found["gpu"]["reason"] and not found["gpu"]["available"]
    assert all("cannot tell" in b["reason"] for b in found["backends"].values())
    assert found["nvcc"]["path"] == "/opt/cuda/bin/nvcc" and "timed out" in found["nvcc"]["reason"]
    assert CliRunner().invoke(main, ["doctor"]).exit_code == 0


def test_runs_when_torch_cannot_be_imported():
    code = ("import json\n"
            "from mnt.export.cli import main\n"
            "for args in (['doctor'], ['doctor', '--json']):\n"
            "    sys.argv = ['mnt-export', *args]\n"
            "    try:\n"
            "        main()\n"
            "    except SystemExit as done:\n"
            "        assert done.code in (0, None), done.code\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mediapipe'))),"
            " file=sys.stderr)\n")
    result = run_blocking(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
    text, _, data = result.stdout.partition("\n{")
    assert "--backend auto" in text
    found = json.loads("{" + data)
    assert set(found) == KEYS and found["auto"]["pick"] in registry.AUTO_ORDER
    assert found["backends"]["onnxruntime-cpu"]["available"]
