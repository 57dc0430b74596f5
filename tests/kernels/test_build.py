"""`mnt-export kernels` and the loader: which GPUs a build covers, a real nvcc build for
sm_75/80/86/87/89/90 plus compute_75 PTX and one for a single capability (skipped without
nvcc), its kernels.json and archs, the PTX ISA versions, the errors when nvcc, a compiler or
a library is missing, and that the kernels' Python modules never import torch or onnx."""

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
    assert f"{', '.join(SASS)}, compute_75" in output and "MB" in output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["kernels.json", "libmnt_kernels.so", *(f"{op}.ptx" for op in OPS)])
    manifest = read_manifest(out)  # checks every file's sha256
    assert manifest["archs"] == {"sass": SASS, "ptx": ["compute_75"], "op_ptx": "compute_75"}
    assert manifest["fatbin_targets"] == [*SASS, "compute_75"]
    assert manifest["sources_sha256"] == sources_sha256()
    assert manifest["nvcc_version"].count(".") == 2
    for op in OPS:
        entry = manifest["ops"][op]
        ptx = (out / entry["ptx"]).read_text()
        assert ".target sm_75" in ptx and entry["ptx_arch"] == "compute_75"
        isa = kernel_build.ptx_isa_version(ptx)
        assert entry["ptx_isa"] == f"{isa[0]}.{isa[1]}"
        # the table knows what this nvcc writes: CUDA x.y writes at most the ISA that came with x.y
        assert kernel_build.ptx_needs_cuda(isa) <= tuple(map(int, manifest["nvcc_version"].split(".")[:2]))
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
    for arch in SASS:
        assert arch in elf
    assert "sm_75" in ptx and "sm_90" not in ptx


# Every GPU generation the README and the docs name: (compute capability, examples).
GPUS = [("7.5", "T4, RTX 20"), ("8.0", "A100, A30"), ("8.6", "RTX 30, A10, A40"), ("8.7", "Jetson Orin"),
        ("8.9", "RTX 40, L4, L40"), ("9.0", "H100, H200"), ("10.0", "B200"), ("11.0", "Jetson Thor"),
        ("12.0", "RTX 50")]
SASS = ["sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90"]


def _arch(capability: str) -> int:
    major, minor = capability.split(".")
    return int(major) * 10 + int(minor)


def _runs_on(codes: set[str], capability: str) -> bool:
    """SASS runs on its own capability (counted strictly here), PTX on its own and newer."""
    arch = _arch(capability)
    ptx = [int(c.split("_")[1]) for c in codes if c.startswith("compute_")]
    return f"sm_{arch}" in codes or any(p <= arch for p in ptx)


def _gencode(command: list[str]) -> set[str]:
    """The code objects nvcc's -gencode flags ask for."""
    codes: set[str] = set()
    for flag in command:
        if flag.startswith("-gencode="):
            codes.update(flag.split("code=")[-1].strip("[]").split(","))
    return codes


def test_the_build_covers_every_gpu_the_readme_names():
    command = kernel_build.library_command(Path("nvcc"), Path("lib.so"))
    codes = _gencode(command)
    assert codes == set(kernel_build.Archs().targets())  # what kernels.json records is what is built
    assert kernel_build.Archs().record() == {"sass": SASS, "ptx": ["compute_75"], "op_ptx": "compute_75"}
    for capability, examples in GPUS:
        assert _runs_on(codes, capability), f"the library has no code for {capability} ({examples})"
        if _arch(capability) <= 90:  # real code up to Hopper, no JIT on first use
            assert f"sm_{_arch(capability)}" in codes, (capability, examples)
    op_ptx = kernel_build.ptx_command(Path("nvcc"), "warp", Path("warp.ptx"))
    assert "-arch=compute_75" in op_ptx
    for capability, examples in GPUS:  # TensorRT's AOT plugins embed the op PTX: it must run everywhere
        assert _runs_on({"compute_75"}, capability), (capability, examples)


def test_a_build_for_one_device_and_the_capabilities_refused():
    archs = kernel_build.device_archs("8.6")
    assert archs.targets() == ["sm_86", "compute_86"] and archs.op_ptx == "86"
    command = kernel_build.library_command(Path("nvcc"), Path("lib.so"), archs)
    assert _gencode(command) == {"sm_86", "compute_86"}
    assert kernel_build.device_archs("12.0").targets() == ["sm_120", "compute_120"]
    with pytest.raises(KernelError, match="7.0 is below 7.5") as err:
        kernel_build.device_archs("7.0")
    assert "native ops" in err.value.hint
    with pytest.raises(KernelError, match="not MAJOR.MINOR"):
        kernel_build.device_archs("sm_86")


@needs_nvcc
def test_a_real_build_for_one_device_records_its_archs(tmp_path):
    """About 6 s on 2 cores: one SASS, one PTX."""
    manifest = kernel_build.build_kernels(tmp_path / "lib", capability="8.6", log=lambda line: None)
    assert manifest["archs"] == {"sass": ["sm_86"], "ptx": ["compute_86"], "op_ptx": "compute_86"}
    assert manifest["fatbin_targets"] == ["sm_86", "compute_86"]
    for op in OPS:
        assert ".target sm_86" in (tmp_path / "lib" / f"{op}.ptx").read_text()


def test_ptx_isa_versions_and_the_cuda_release_that_loads_them():
    assert kernel_build.ptx_isa_version(PTX) == (8, 0)
    assert kernel_build.ptx_isa_version("//\n.version 9.0\n.target sm_75\n") == (9, 0)
    with pytest.raises(KernelError, match="no .version"):
        kernel_build.ptx_isa_version(".target sm_75\n")
    needs = kernel_build.ptx_needs_cuda
    assert needs((7, 8)) == (11, 8) and needs((8, 4)) == (12, 4) and needs((8, 5)) == (12, 5)
    assert needs((8, 6)) == (12, 7) and needs((8, 8)) == (12, 9) and needs((9, 0)) == (13, 0)  # 12.6 kept 8.5
    assert needs((9, 9), "13.9.40") == (13, 9)  # newer than the table: at least the toolkit that wrote it
    assert needs((9, 9)) > max(kernel_build.PTX_ISA_CUDA.values())


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
