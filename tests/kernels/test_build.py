"""`mnt-export kernels` and the loader: a real nvcc build for sm_87/89/90 (skipped without
nvcc), its kernels.json and archs, the errors when nvcc, a compiler or a library is missing,
and that the kernels' Python modules never import torch or onnx."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.kernels import build as kernel_build
from mnt.kernels.errors import KernelError
from mnt.kernels.loader import build_host_library, device_library, read_manifest, sources_sha256
from mnt.kernels.spec import OPS, op_spec


def _nvcc() -> Path | None:
    try:
        return kernel_build.find_nvcc()
    except KernelError:
        return None


needs_nvcc = pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (PATH, $CUDA_HOME, /usr/local/cuda)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real build through the CLI (about a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("kernels") / "lib"
    result = CliRunner().invoke(main, ["kernels", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


@needs_nvcc
def test_build_writes_library_ptx_and_manifest(built):
    out, output = built
    assert "sm_87, sm_89, sm_90, compute_90" in output and "MB" in output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["kernels.json", "libmnt_kernels.so", *(f"{op}.ptx" for op in OPS)])
    manifest = read_manifest(out)  # checks every file's sha256
    assert manifest["archs"] == {"sass": ["sm_87", "sm_89", "sm_90"], "ptx": ["compute_90"],
                                 "op_ptx": "compute_87"}
    assert manifest["fatbin_targets"] == ["sm_87", "sm_89", "sm_90", "compute_90"]
    assert manifest["sources_sha256"] == sources_sha256()
    assert manifest["nvcc_version"].count(".") == 2
    for op in OPS:
        entry = manifest["ops"][op]
        ptx = (out / entry["ptx"]).read_text()
        assert ".target sm_87" in ptx
        entries = kernel_build.ptx_entries(ptx)
        n_in = len(op_spec(op)["inputs"])
        for kernel in op_spec(op)["kernels"].values():
            # TensorRT's AOT order: input pointers, the int32 shapes, then the output pointer
            n_int = len(kernel["args"]) - n_in - 1
            assert entries[kernel["name"]] == ["u64"] * n_in + ["u32"] * n_int + ["u64"]
            assert entry["kernels"] == op_spec(op)["kernels"]
    assert not list(out.parent.glob(".lib.partial-*"))  # the staging folder is gone


@needs_nvcc
def test_cuobjdump_lists_the_archs(built):
    cuobjdump = kernel_build.find_nvcc().resolve().parent / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip(f"{cuobjdump} not installed (the fatbin headers were checked instead)")
    library = str(built[0] / "libmnt_kernels.so")
    elf = subprocess.run([str(cuobjdump), "--list-elf", library], capture_output=True, text=True).stdout
    ptx = subprocess.run([str(cuobjdump), "--list-ptx", library], capture_output=True, text=True).stdout
    for arch in ("sm_87", "sm_89", "sm_90"):
        assert arch in elf
    assert "sm_90" in ptx and "sm_87" not in ptx


@needs_nvcc
def test_device_library_loads_and_checks(built, tmp_path):
    out = built[0]
    kernels = device_library(out)
    with pytest.raises(KernelError, match="cudaErrorInvalidValue"):  # shapes are checked first
        kernels.warp("float32", 0, 0, 0, (1, 1, 4, 4), (6, 6))
    with pytest.raises(KernelError, match="cudaErrorInvalidValue"):
        kernels.cross_attention("float16", 0, 0, 0, 0, 1, 4, 4, 513, 8)
    if ctypes.util.find_library("cuda") is None:  # no driver here: the launch fails cleanly
        with pytest.raises(KernelError, match="cudaErrorInsufficientDriver|cudaErrorNoDevice"):
            kernels.warp("float16", 0, 0, 0, (1, 1, 4, 4), (4, 4))

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with (copy / "warp.ptx").open("a") as f:
        f.write("// edited\n")
    with pytest.raises(KernelError, match="does not match the sha256"):
        device_library(copy)
    manifest = json.loads((out / "kernels.json").read_text())
    manifest["sources_sha256"] = "0" * 64
    shutil.copy(out / "warp.ptx", copy / "warp.ptx")
    (copy / "kernels.json").write_text(json.dumps(manifest))
    with pytest.raises(KernelError, match="other kernel sources") as err:
        device_library(copy)
    assert "--force" in err.value.hint


@needs_nvcc
def test_existing_output_needs_force(built):
    result = CliRunner().invoke(main, ["kernels", "--out", str(built[0])])
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in result.output


PTX = """.version 8.0
.target sm_87
.visible .entry k(
\t.param .u64 .ptr .align 1 k_param_0,
\t.param .u64 k_param_1,
\t.param .u32 k_param_2,
\t.param .s32 k_param_3,
\t.param .u64 k_param_4
)
{
\tret;
}
"""


def _spec(types: list[str]) -> dict:
    args = [{"name": f"a{i}", "type": t} for i, t in enumerate(types)]
    return {"op": "Op", "inputs": [{}, {}], "outputs": [{}],
            "kernels": {"float32": {"name": "k", "args": args}}}


def test_specs_declare_tensorrt_argument_order():
    for op in OPS:
        for dtype in op_spec(op)["kernels"]:
            kernel_build.check_tensorrt_order(op_spec(op), dtype)
    good = ["const float*", "const float*", "int32", "int32", "float*"]
    kernel_build.check_tensorrt_order(_spec(good), "float32")
    for bad in (["const float*", "const float*", "float*", "int32", "int32"],  # output before the int32s
                ["const float*", "int32", "const float*", "int32", "float*"],
                ["const float*", "float*"]):
        with pytest.raises(KernelError, match="2 input pointer\\(s\\), then the int32 arguments, then 1"):
            kernel_build.check_tensorrt_order(_spec(bad), "float32")
    with pytest.raises(KernelError, match="only pointers and int32"):
        kernel_build.check_tensorrt_order(_spec([*good[:2], "float", *good[3:]]), "float32")


def test_ptx_params_are_checked_against_the_spec_one_by_one():
    entries = kernel_build.ptx_entries(PTX)
    assert entries == {"k": ["u64", "u64", "u32", "s32", "u64"]}
    args = _spec(["const float*", "const float*", "int32", "int32", "float*"])["kernels"]["float32"]["args"]
    kernel_build.check_ptx_params("k", entries["k"], args)
    old_order = [args[0], args[1], args[4], args[2], args[3]]
    with pytest.raises(KernelError, match="PTX parameter 2 is .u32, but spec argument 2 is a4"):
        kernel_build.check_ptx_params("k", entries["k"], old_order)
    with pytest.raises(KernelError, match="declares 5 parameters in its PTX but its spec lists 4"):
        kernel_build.check_ptx_params("k", entries["k"], args[:4])


def test_cli_says_when_nvcc_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    monkeypatch.setattr(kernel_build, "DEFAULT_CUDA_DIRS", (tmp_path / "usr-local-cuda",))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["kernels", "--out", str(out)])
    assert result.exit_code == 1
    assert "nvcc (the CUDA compiler) not found" in result.output
    assert "$CUDA_HOME/bin" in result.output and "install the CUDA toolkit" in result.output
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_missing_compiler_and_library_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(KernelError, match="no C\\+\\+ compiler found") as err:
        build_host_library(tmp_path / "cache")
    assert "CXX" in err.value.hint
    monkeypatch.delenv("MNT_KERNELS_DIR", raising=False)
    with pytest.raises(KernelError, match="MNT_KERNELS_DIR is not set") as err:
        device_library()
    assert "mnt-export kernels --out" in err.value.hint
    with pytest.raises(KernelError, match="holds no kernels.json"):
        device_library(tmp_path)


def test_kernel_modules_do_not_import_torch():
    code = ("import sys, mnt.kernels.spec, mnt.kernels.loader, mnt.kernels.build; "
            "bad = [m for m in ('torch', 'onnx', 'mnt.export') if m in sys.modules]; "
            "assert not bad, f'{bad} imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
