"""`mnt-export kernels`: compile the CUDA kernels with nvcc into OUT/libmnt_kernels.so (SASS
for sm_75, sm_80, sm_86, sm_87, sm_89 and sm_90, and PTX for compute_75 that newer GPUs JIT),
one PTX file per op for compute_75 (what TensorRT's ahead-of-time plugins embed: PTX runs on
its own and newer GPUs only, so it targets the lowest) and OUT/kernels.json. A build for one
device's own compute capability (`build_kernels(..., capability="8.6")`) is quicker.

OUT is assembled under a temporary name beside it and renamed at the end, so a failed or
interrupted build never leaves a folder that looks valid. No torch import here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mnt.kernels.errors import KernelError
from mnt.kernels.loader import LIBRARY_NAME, MANIFEST_NAME, sources_sha256
from mnt.kernels.spec import KERNELS_DIR, OPS, arg_kind, cuda_source, op_spec
from mnt.runtime.files import sha256_file, staged_folder

SCHEMA_VERSION = 1
# Turing (T4, RTX 20), A100, Ampere consumer and A10 (RTX 30), Jetson Orin, Ada (RTX 40, L4),
# Hopper. SASS runs on its own capability; PTX on its own and every newer one.
SASS_ARCHS = ("75", "80", "86", "87", "89", "90")
PTX_ARCH = "75"  # the lowest, embedded as PTX too: GPUs newer than every SASS (Blackwell, Thor) JIT it
OP_PTX_ARCH = "75"  # the lowest target: TensorRT's AOT plugin PTX runs on all of them
MIN_ARCH = 75  # below Turing: CUDA 13 dropped those GPUs, and the kernels are not tested there
# -O3 for host code; device code is optimised by default. --fmad=false: no implicit FMA
# contraction, so the device rounds like the host reference (the headers write their FMAs
# out). No --use_fast_math: it swaps expf and divisions for approximations the host cannot
# reproduce, and the kernels are memory-bound, not bound by those instructions.
NVCC_FLAGS = ("-O3", "-std=c++17", "--fmad=false", "-Xcompiler", "-fPIC")
CUDA_DIRS_ENV = "CUDA_HOME"
DEFAULT_CUDA_DIRS = (Path("/usr/local/cuda"),)
FATBIN_MAGIC = 0xBA55ED50
PTX_PARAM_TYPES = {"pointer": ("u64", "b64", "s64"), "int32": ("u32", "s32", "b32")}
NVCC_HINT = ("install the CUDA toolkit (JetPack ships it at /usr/local/cuda; on a PC: NVIDIA's cuda-toolkit "
             "package), or put nvcc on PATH or set CUDA_HOME to the toolkit's folder")


def find_nvcc() -> Path:
    """nvcc from PATH, else $CUDA_HOME/bin, else /usr/local/cuda/bin."""
    searched = ["PATH"]
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    dirs = [Path(os.environ[CUDA_DIRS_ENV])] if os.environ.get(CUDA_DIRS_ENV) else []
    searched += [f"${CUDA_DIRS_ENV}/bin ({dirs[0]}/bin)"] if dirs else [f"${CUDA_DIRS_ENV} (not set)"]
    for folder in [*dirs, *DEFAULT_CUDA_DIRS]:
        candidate = folder / "bin" / "nvcc"
        if os.access(candidate, os.X_OK):
            return candidate
    searched += [str(d / "bin") for d in DEFAULT_CUDA_DIRS]
    raise KernelError(f"nvcc (the CUDA compiler) not found; looked in {', '.join(searched)}", hint=NVCC_HINT)


def nvcc_version(nvcc: Path) -> str:
    """'13.0.88' from `nvcc --version` (its 'V13.0.88' token)."""
    text = _run([str(nvcc), "--version"], "nvcc --version").stdout
    match = re.search(r"\bV(\d+\.\d+\.\d+)", text)
    if not match:
        raise KernelError(f"cannot read the version from `{nvcc} --version`: {text.strip()[-200:]}")
    return match.group(1)


@dataclass(frozen=True)
class Archs:
    """What a build compiles for: SASS archs ("87"), the library's PTX arch and the op PTX's."""

    sass: tuple[str, ...] = SASS_ARCHS
    ptx: str = PTX_ARCH
    op_ptx: str = OP_PTX_ARCH

    def targets(self) -> list[str]:
        """The library's code objects, as fatbin_targets lists them."""
        return [f"sm_{a}" for a in self.sass] + [f"compute_{self.ptx}"]

    def record(self) -> dict[str, Any]:
        """kernels.json's `archs`."""
        return {"sass": [f"sm_{a}" for a in self.sass], "ptx": [f"compute_{self.ptx}"],
                "op_ptx": f"compute_{self.op_ptx}"}


def device_archs(capability: str) -> Archs:
    """A build for one GPU's compute capability ("8.6"): its SASS and PTX only."""
    match = re.fullmatch(r"(\d+)\.(\d)", capability.strip())
    if not match:
        raise KernelError(f"compute capability {capability!r} is not MAJOR.MINOR (e.g. 8.6)")
    arch = match.group(1) + match.group(2)
    if int(arch) < MIN_ARCH:
        raise KernelError(f"compute capability {capability} is below {MIN_ARCH // 10}.{MIN_ARCH % 10}, the "
                          "oldest GPUs the kernels support (Turing)",
                          hint="use the native ops (no plugins) on this GPU")
    return Archs((arch,), arch, arch)


def library_command(nvcc: Path, out: Path, archs: Archs = Archs()) -> list[str]:
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs.sass if a != archs.ptx]
    sass = f"sm_{archs.ptx}," if archs.ptx in archs.sass else ""
    gencode.append(f"-gencode=arch=compute_{archs.ptx},code=[{sass}compute_{archs.ptx}]")
    sources = [str(p) for p in sorted(KERNELS_DIR.rglob("*.cu"))]
    return [str(nvcc), *NVCC_FLAGS, "-shared", *gencode, "--threads", "0", "-o", str(out), *sources]


def ptx_command(nvcc: Path, op: str, out: Path, arch: str = OP_PTX_ARCH) -> list[str]:
    source = cuda_source(op_spec(op))
    return [str(nvcc), *NVCC_FLAGS, "-ptx", f"-arch=compute_{arch}", "-o", str(out), str(source)]


def _run(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as err:
        raise KernelError(f"cannot run {command[0]}: {err.strerror or err}", hint=NVCC_HINT) from err
    if result.returncode != 0:
        raise KernelError(f"{what} failed (exit {result.returncode}):\n{' '.join(command)}\n"
                          f"{(result.stderr or result.stdout).strip()[-4000:]}")
    return result


def fatbin_targets(library: Path) -> list[str]:
    """The code objects embedded in a CUDA binary's fatbins, e.g. ['sm_87', ..., 'compute_90'],
    read from the fatbin headers (what `cuobjdump --list-elf/--list-ptx` reports; cuobjdump
    is not part of every toolkit install). Entry kind 1 is PTX, 2 is an ELF cubin."""
    data = library.read_bytes()
    found: set[str] = set()
    start = data.find(struct.pack("<I", FATBIN_MAGIC))
    while start >= 0:
        _, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
        offset, end = start + header_size, start + header_size + fat_size
        while offset + 32 <= end:
            kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, offset)
            arch = struct.unpack_from("<I", data, offset + 28)[0]
            if kind in (1, 2) and entry_header >= 32:
                found.add(f"{'compute' if kind == 1 else 'sm'}_{arch}")
            if entry_header == 0:
                break
            offset += entry_header + size
        start = data.find(struct.pack("<I", FATBIN_MAGIC), max(end, start + 4))
    return sorted(found, key=lambda t: (t.startswith("compute"), t))


def ptx_entries(ptx: str) -> dict[str, list[str]]:
    """Kernel entry name -> the PTX types of its parameters in declaration order (e.g.
    ['u64', 'u64', 'u32', 'u64']), from PTX text."""
    entries = {}
    for match in re.finditer(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx):
        entries[match.group(1)] = re.findall(r"\.param\s+\.(\w+)", match.group(2))
    return entries


# PTX ISA version -> the first CUDA release that loads it (its driver JIT-compiles it; an
# older driver refuses the module). From NVIDIA's PTX ISA release history,
# https://docs.nvidia.com/cuda/parallel-thread-execution/#release-notes-ptx-release-history,
# as cuda-python's cuda.bindings.utils.get_minimal_required_cuda_ver_from_ptx_ver maps it.
# Until CUDA 12.5 the ISA was the CUDA version minus 4.0; CUDA 12.6 kept ISA 8.5.
PTX_ISA_CUDA = {
    (7, 0): (11, 0), (7, 1): (11, 1), (7, 2): (11, 2), (7, 3): (11, 3), (7, 4): (11, 4),
    (7, 5): (11, 5), (7, 6): (11, 6), (7, 7): (11, 7), (7, 8): (11, 8),
    (8, 0): (12, 0), (8, 1): (12, 1), (8, 2): (12, 2), (8, 3): (12, 3), (8, 4): (12, 4),
    (8, 5): (12, 5), (8, 6): (12, 7), (8, 7): (12, 8), (8, 8): (12, 9),
    (9, 0): (13, 0), (9, 1): (13, 1),
}


def ptx_isa_version(ptx: str) -> tuple[int, int]:
    """(8, 5) from PTX text's `.version 8.5` directive."""
    match = re.search(r"^\s*\.version\s+(\d+)\.(\d+)", ptx, re.MULTILINE)
    if not match:
        raise KernelError("the PTX has no .version directive")
    return int(match.group(1)), int(match.group(2))


def ptx_needs_cuda(isa: tuple[int, int], toolkit: str = "") -> tuple[int, int]:
    """The oldest CUDA driver (major, minor) that loads PTX of ISA `isa`. An ISA newer than
    the table needs at least the toolkit that wrote it (`toolkit`, nvcc's "13.2.51"), else at
    least one minor release past the newest CUDA the table names."""
    if isa in PTX_ISA_CUDA:
        return PTX_ISA_CUDA[isa]
    newest = max(PTX_ISA_CUDA.values())
    match = re.match(r"(\d+)\.(\d+)", toolkit)
    written = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if isa < min(PTX_ISA_CUDA):
        return written if match else (0, 0)
    return max(written, (newest[0], newest[1] + 1))


def check_tensorrt_order(spec: dict[str, Any], dtype: str) -> None:
    """The spec's kernel for `dtype` declares its arguments in the order TensorRT's AOT
    plugins launch with: one pointer per input (op order), the int32 extra arguments, then
    one pointer per output."""
    kernel = spec["kernels"][dtype]
    kinds = [arg_kind(a) for a in kernel["args"]]
    n_in, n_out = len(spec["inputs"]), len(spec["outputs"])
    n_int = len(kinds) - n_in - n_out
    if n_int < 0 or kinds != ["pointer"] * n_in + ["int32"] * n_int + ["pointer"] * n_out:
        raise KernelError(f"{kernel['name']} ({spec['op']} spec.json) takes {', '.join(kinds)}; TensorRT's "
                          f"AOT plugins pass {n_in} input pointer(s), then the int32 arguments, then {n_out} "
                          "output pointer(s)")


def check_ptx_params(name: str, declared: list[str], args: list[dict[str, str]]) -> None:
    """A PTX entry's parameter types (from ptx_entries) match the spec's arguments one by
    one: 64-bit for a pointer, 32-bit for an int32."""
    if len(declared) != len(args):
        raise KernelError(f"{name} declares {len(declared)} parameters in its PTX but its spec lists "
                          f"{len(args)}")
    for index, (ptx_type, arg) in enumerate(zip(declared, args, strict=True)):
        if ptx_type not in PTX_PARAM_TYPES[arg_kind(arg)]:
            raise KernelError(f"{name}: PTX parameter {index} is .{ptx_type}, but spec argument {index} "
                              f"is {arg['name']} ({arg['type']}): the kernel and its spec.json disagree")


def _check_ptx(op: str, ptx: Path) -> None:
    """Every kernel the op's spec names is in its PTX with the spec's arguments, in the order
    TensorRT's AOT plugins launch with."""
    entries = ptx_entries(ptx.read_text())
    spec = op_spec(op)
    for dtype, kernel in spec["kernels"].items():
        if kernel["name"] not in entries:
            raise KernelError(f"{ptx.name} has no kernel {kernel['name']} ({op}/spec.json, {dtype}); "
                              f"found {sorted(entries)}")
        check_tensorrt_order(spec, dtype)
        check_ptx_params(kernel["name"], entries[kernel["name"]], kernel["args"])


def _tool_version() -> str:
    try:
        return version("mnt")
    except PackageNotFoundError:
        return "unknown"


def build_kernels(out: Path, force: bool = False, log: Callable[[str], None] = print,
                  capability: str | None = None) -> dict[str, Any]:
    """Compile the library and the per-op PTX into OUT with kernels.json; returns the manifest.
    `capability` ("8.6"): for that GPU only (refused below 7.5), else for every SASS_ARCHS GPU
    and, through PTX, newer ones."""
    archs = Archs() if capability is None else device_archs(capability)
    nvcc = find_nvcc()
    nvcc_ver = nvcc_version(nvcc)
    started = time.perf_counter()
    with staged_folder(out, force, "the kernel library", KernelError) as staging:
        library = staging / LIBRARY_NAME
        expected = archs.targets()
        log(f"nvcc {nvcc_ver} ({nvcc}): {LIBRARY_NAME} for {', '.join(expected)}")
        _run(library_command(nvcc, library, archs), f"nvcc ({LIBRARY_NAME})")
        targets = fatbin_targets(library)
        if sorted(targets) != sorted(expected):
            raise KernelError(f"{LIBRARY_NAME} embeds {targets}, expected {expected}")
        ops: dict[str, Any] = {}
        for op in OPS:
            ptx = staging / f"{op}.ptx"
            _run(ptx_command(nvcc, op, ptx, archs.op_ptx), f"nvcc ({ptx.name})")
            _check_ptx(op, ptx)
            isa = ptx_isa_version(ptx.read_text())
            ops[op] = {**op_spec(op), "ptx": ptx.name, "ptx_arch": f"compute_{archs.op_ptx}",
                       "ptx_isa": f"{isa[0]}.{isa[1]}"}
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(staging.iterdir())}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "tool_version": _tool_version(),
            "nvcc_version": nvcc_ver,
            "archs": archs.record(),
            "fatbin_targets": targets,
            "nvcc_flags": list(NVCC_FLAGS),
            "sources_sha256": sources_sha256(),
            "build_seconds": round(time.perf_counter() - started, 2),
            "files": files,
            "ops": ops,
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
