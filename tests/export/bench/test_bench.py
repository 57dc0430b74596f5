"""mnt-bench: the pairing harness, the PyTorch baseline backend, the report, and a
one-iteration smoke of the real command (no timing is asserted anywhere)."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from mnt.export.bench.report import ORDER, markdown, report
from mnt.export.bench.runner import Row, paired
from tests.helpers import SHARED_DATA, console_script
from tests.tolerances import GENERATOR_FP32_VS_FP64_MIN_PSNR_DB


def test_paired_alternates_and_warms_up_both():
    calls = []
    ms, base = paired(lambda: calls.append("a"), lambda: calls.append("b"), warmup=2, iterations=4)
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(ms) == 4 and len(base) == 4 and min(ms + base) >= 0
    alone, none = paired(lambda: calls.append("c"), None, warmup=0, iterations=3)
    assert len(alone) == 3 and none is None


def test_torch_backend_reproduces_the_goldens(tiny_artefacts, tiny_checkpoint):
    """The baseline is the reference model itself: float32 PyTorch against the float64
    goldens stored by the build, for every component."""
    from mnt.export.model.backend import torch_backends
    from mnt.runtime.manifest import load_manifest

    folder = tiny_artefacts("fp32")
    manifest = load_manifest(folder)
    for name, backend in torch_backends(folder, manifest, tiny_checkpoint).items():
        info = manifest.components[name]
        golden = np.load(folder / info.golden["file"])
        with backend:
            out = backend.infer({t.name: golden[f"input:{t.name}"] for t in info.inputs})
        for t in info.outputs:
            want = golden[f"output:{t.name}"]
            error = np.mean((out[t.name].astype(np.float64) - want) ** 2)
            psnr = 10 * np.log10(np.ptp(want) ** 2 / max(error, 1e-300))
            assert psnr > GENERATOR_FP32_VS_FP64_MIN_PSNR_DB, (name, t.name, psnr)


def test_torch_backend_refuses_another_checkpoint(tiny_artefacts, tmp_path):
    from mnt.export.errors import ExportError
    from mnt.export.model.backend import torch_backends
    from mnt.export.model.checkpoint import init_reference, save_checkpoint
    from mnt.export.model.config import PRESETS
    from mnt.runtime.manifest import load_manifest

    other = tmp_path / "seed1.safetensors"
    save_checkpoint(init_reference(PRESETS["tiny"], seed=1), other)
    folder = tiny_artefacts("fp32")
    with pytest.raises(ExportError, match="not the checkpoint"):
        torch_backends(folder, load_manifest(folder), other)
    with pytest.raises(ExportError) as missing:
        torch_backends(folder, load_manifest(folder), None)
    assert "--checkpoint" in missing.value.one_line()


def test_report_reads_rows_against_limits():
    rows = [Row("generator", "onnxruntime-cpu", "fp32", 1, [10.0, 12.0, 11.0], 1.1, [30.0, 33.0, 36.0]),
            Row("generator", "onnxruntime-cpu", "fp32", 8, [11.0, 11.5, 12.0], 1.2, [33.0]),
            Row("driver_generation", "onnxruntime-cpu", "fp32", 1, [20.0], 1.2, [40.0],
                {"outside_networks_ms": 2.0, "outside_networks_fraction": 0.1})]
    machine = {"cpu": {"model": "x", "cores": 2, "simd": "avx2", "clock_ghz": 2.0, "clock_source": "t",
                       "fp32_peak_gflops": 200.0, "peak_formula": "f"},
               "gpu": None, "versions": {}, "threads": 2, "peak_rss_mb": 1.0}
    data = report(machine, {}, rows, {("onnxruntime-cpu", "fp32"): 100.0})
    first = data["rows"][0]
    assert (first["k"], first["ms_median"], first["ms_min"], first["ms_max"]) == (1, 11.0, 10.0, 12.0)
    assert first["gflops"] == 100.0 and first["fraction_of_matmul"] == 1.0
    assert first["fraction_of_peak"] == 0.5 and first["speedup_vs_torch"] == 3.0
    assert data["summary"]["onnxruntime-cpu"] == {"generator_k8_over_k1": round(11.5 / 11, 3),
                                                  "outside_networks_fraction": 0.1}
    assert "| generator | 8 | onnxruntime-cpu |" in markdown(data)


def test_unknown_backend_is_named(tiny_artefacts, tiny_checkpoint):
    from mnt.export.bench.cli import main

    result = CliRunner().invoke(main, ["--artifacts", str(tiny_artefacts("fp32")), "--checkpoint",
                                       str(tiny_checkpoint), "--backends", "tensorrtx"])
    assert result.exit_code == 1 and "unknown backend 'tensorrtx'" in result.output


def test_bench_smoke_one_iteration(tiny_artefacts, tiny_checkpoint, tmp_path):
    """The real command, one iteration per row: every row of Tables 6 and 7 for the engine
    and the baseline, the streaming rows for 1 and 2 streams, JSON and markdown written."""
    video = SHARED_DATA / "driving" / "d0.mp4"
    args = [console_script("mnt-bench"), "--artifacts", str(tiny_artefacts("fp32")),
            "--checkpoint", str(tiny_checkpoint), "--backends", "onnxruntime-cpu",
            "--targets", "1,2", "--frames", "1", "--warmup", "0", "--streams", "1,2",
            "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")]
    if video.exists():
        args += ["--video", str(video), "--photos", str(SHARED_DATA / "targets")]
    env = {**os.environ, "MNT_CACHE_DIR": str(tmp_path / "cache")}  # demo inputs, if used
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "b.json").read_text())
    seen = {(r["component"], r["backend"], r["k"]) for r in data["rows"]}
    for component in ORDER[1:-1]:
        ks = (1,) if component == "driver_landmark_transformer" else (1, 2)
        for backend in ("onnxruntime-cpu", "torch"):
            assert {(component, backend, k) for k in ks} <= seen, (component, backend)
    assert ("landmark_detector", "mediapipe", 1) in seen
    streams = {(r["k"], r["streams"], r["pipelined"]) for r in data["rows"]
               if r["component"] == "driver_streams"}
    assert streams == {(k, n, p) for k in (1, 2) for n in (1, 2) for p in (True, False)}
    for row in data["rows"]:
        assert {"component", "backend", "precision", "k", "streams", "pipelined", "ms_median", "ms_min",
                "ms_max", "gflops", "speedup_vs_torch"} <= row.keys()
        assert row["ms_min"] <= row["ms_median"] <= row["ms_max"]
    assert data["machine"]["cpu"]["cores"] >= 1 and data["machine"]["matmul_gflops"]
    assert "generator_k2_over_k1" in data["summary"]["onnxruntime-cpu"]
    assert "| generator | 2 | onnxruntime-cpu |" in (tmp_path / "b.md").read_text()
    assert "| 2 | yes | 2 | onnxruntime-cpu |" in (tmp_path / "b.md").read_text()


def test_mnt_run_on_the_torch_backend(tiny_artefacts, tiny_checkpoint, tmp_path):
    """`mnt-run --backend torch` finds the PyTorch backend through its entry point; it
    needs the checkpoint the artefacts came from."""
    folder = str(tiny_artefacts("fp32"))
    env = {**os.environ, "MNT_CACHE_DIR": str(tmp_path / "cache")}
    base = [console_script("mnt-run"), "--demo", "--artifacts", folder, "--backend", "torch",
            "--max-frames", "2", "-o", str(tmp_path / "out.mp4")]
    missing = subprocess.run(base, capture_output=True, text=True, env=env, timeout=600)
    assert missing.returncode == 1 and "--checkpoint" in missing.stderr
    assert not (tmp_path / "out.mp4").exists()
    ran = subprocess.run([*base, "--checkpoint", str(tiny_checkpoint)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "2 frames" in ran.stderr and (tmp_path / "out.mp4").stat().st_size > 0
