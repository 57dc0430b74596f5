"""The kernels' binaries from Python (no torch import): their sources, the host reference
library (built on demand with the system C++ compiler, cached by the sources' hash) and
the CUDA library `libmnt_kernels.so` written by `mnt-export kernels`, checked against its
kernels.json before it is loaded. Symbol names and argument lists come from the op specs
(mnt.kernels.spec)."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from mnt.kernels.errors import KernelError
from mnt.kernels.spec import (
    KERNELS_DIR,
    OPS,
    arg_kind,
    check_shapes,
    dtypes,
    launcher_name,
    op_spec,
    validate_spec,
)
from mnt.runtime.defaults import cache_dir
from mnt.runtime.files import atomic_path, sha256_file

LIBRARY_NAME = "libmnt_kernels.so"
MANIFEST_NAME = "kernels.json"
HOST_LIBRARY_NAME = "libmnt_kernels_host.so"
HOST_SOURCE = "host_reference.cpp"
SOURCE_SUFFIXES = (".h", ".cu", ".cpp")
# No implicit FMA contraction: the headers write their FMAs out, so host and device round
# alike (nvcc gets --fmad=false for the same reason).
HOST_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math")
CUDA_SUCCESS = 0


def source_files() -> list[Path]:
    """Every kernel source (headers, CUDA, host C++), sorted by path below KERNELS_DIR."""
    files = sorted(p for p in KERNELS_DIR.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file())
    if not any(p.suffix == ".cu" for p in files):
        raise KernelError(f"no CUDA sources under {KERNELS_DIR}",
                          hint="reinstall mnt: its package data (kernels/*/*.cu, *.h) is missing")
    return files


def sources_sha256() -> str:
    """One hash over the sources' relative paths and contents: what a build is keyed by."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(KERNELS_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Host reference library


def find_cxx() -> str:
    """$CXX, else g++, c++ or clang++ from PATH."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise KernelError(f"no C++ compiler found (looked for {', '.join(candidates)} in PATH) to build the "
                      "kernels' host reference",
                      hint="install one (Debian/Ubuntu: apt-get install g++) or set CXX to its path")


def default_cache_dir() -> Path:
    return cache_dir() / "kernels"


def build_host_library(cache_dir: Path | None = None) -> Path:
    """Compile host_reference.cpp (the kernels' per-element maths on the CPU) unless this
    version of the sources is already in the cache; returns the library's path."""
    folder = (cache_dir or default_cache_dir()) / f"host-{sources_sha256()[:16]}"
    library = folder / HOST_LIBRARY_NAME
    if library.exists():
        return library
    compiler = find_cxx()
    folder.mkdir(parents=True, exist_ok=True)
    # Compiled under a partial name, then moved: a concurrent or interrupted build never
    # leaves a half-written library under the final name (nor, after the next, a stray).
    with atomic_path(library, error=KernelError) as temporary:
        command = [compiler, *HOST_FLAGS, "-o", str(temporary), str(KERNELS_DIR / HOST_SOURCE)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KernelError(f"{Path(compiler).name} failed to build the kernels' host reference:\n"
                              f"{' '.join(command)}\n{result.stderr.strip()}")
    return library


def _argtypes(spec: dict[str, Any], dtype: str) -> list[Any]:
    """ctypes argument types of the op's kernel arguments for `dtype` (the host reference and
    the launchers take them in the kernel's order)."""
    kinds = [arg_kind(a) for a in spec["kernels"][dtype]["args"]]
    return [ctypes.c_void_p if kind == "pointer" else ctypes.c_int for kind in kinds]


class HostKernels:
    """The host reference library: the kernels' maths on numpy arrays (C-contiguous)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        ptr = ctypes.c_void_p
        for op in OPS:
            spec = op_spec(op)
            for dtype in dtypes(spec):
                getattr(self.lib, spec["host_reference"][dtype]).argtypes = _argtypes(spec, dtype)
        for name in ("mnt_host_f32_to_f16", "mnt_host_f16_to_f32"):
            getattr(self.lib, name).argtypes = [ptr, ptr, ctypes.c_longlong]
            getattr(self.lib, name).restype = None
        for name, count in (("mnt_warp_grid_x", 3), ("mnt_cross_attention_grid_x", 1),
                            ("mnt_cross_attention_key_tile", 3), ("mnt_warp_check_shapes", 6),
                            ("mnt_cross_attention_check_shapes", 5)):
            getattr(self.lib, name).argtypes = [ctypes.c_int] * count

    @staticmethod
    def _array(x: np.ndarray, dtype: Any, name: str) -> np.ndarray:
        if x.dtype != dtype:
            raise KernelError(f"{name} is {x.dtype}, expected {np.dtype(dtype)}")
        return np.ascontiguousarray(x)

    def run(self, op: str, *inputs: np.ndarray) -> np.ndarray:
        """The op's host reference on `inputs` (in spec order, dtypes and ranks as its spec
        says) -> its output. KernelError when the shapes break the contract."""
        spec = op_spec(op)
        storage = inputs[0].dtype.name if inputs else ""
        if storage not in dtypes(spec):
            raise KernelError(f"{spec['op']} {spec['inputs'][0]['name']} must be one of "
                              f"{', '.join(dtypes(spec))}, got {storage or 'nothing'}")
        if len(inputs) != len(spec["inputs"]):
            raise KernelError(f"{spec['op']} takes {len(spec['inputs'])} inputs, got {len(inputs)}")
        ready = []
        for x, tensor in zip(inputs, spec["inputs"], strict=True):
            want = storage if tensor["dtype"] in spec["type_constraints"] else tensor["dtype"]
            ready.append(self._array(x, np.dtype(want), tensor["name"]))
        symbols = check_shapes(spec, [x.shape for x in ready])
        (output,) = spec["outputs"]
        shape = tuple(symbols[s] if isinstance(s, str) else s for s in output["shape"])
        out = np.empty(shape, np.dtype(storage))
        scalars = [symbols[a["name"]] for a in spec["kernels"][storage]["args"] if arg_kind(a) == "int32"]
        status = getattr(self.lib, spec["host_reference"][storage])(
            *(x.ctypes.data for x in ready), *scalars, out.ctypes.data)
        if status != 0:
            shapes = ", ".join(str(x.shape) for x in ready)
            raise KernelError(f"{spec['op']}: the kernel rejects shapes {shapes}: "
                              f"{'; '.join(spec.get('shape_constraints', []))}")
        return out

    def warp(self, features: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """features (N, C, H, W) float32/float16, flow (N, 2, f*H, f*W) float32 -> like features."""
        return self.run("warp", features, flow)

    def cross_attention(self, query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """query (B, Lq, D), keys (B, Lk, D), values (B, Lk, Dv), one dtype -> (B, Lq, Dv)."""
        return self.run("cross_attention", query, keys, values)

    def f32_to_f16(self, x: np.ndarray) -> np.ndarray:
        x = self._array(x, np.float32, "x")
        out = np.empty(x.shape, np.float16)
        self.lib.mnt_host_f32_to_f16(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def f16_to_f32(self, x: np.ndarray) -> np.ndarray:
        x = self._array(x, np.float16, "x")
        out = np.empty(x.shape, np.float32)
        self.lib.mnt_host_f16_to_f32(x.ctypes.data, out.ctypes.data, x.size)
        return out


def host_library(cache_dir: Path | None = None) -> HostKernels:
    """The host reference library, built first if this version of the sources is not cached."""
    return HostKernels(build_host_library(cache_dir))


# ---------------------------------------------------------------------------------------
# CUDA library


def read_manifest(folder: Path) -> dict[str, Any]:
    """kernels.json of a folder written by `mnt-export kernels`, its files checked by sha256."""
    manifest_path = folder / MANIFEST_NAME
    rebuild = f"build it with `mnt-export kernels --out {folder}` (needs nvcc)"
    if not manifest_path.is_file():
        raise KernelError(f"{folder} holds no {MANIFEST_NAME}: not a kernel library folder", hint=rebuild)
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise KernelError(f"{manifest_path} is not a valid kernels manifest ({err})", hint=rebuild) from err
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            raise KernelError(f"{path} is missing (listed in {MANIFEST_NAME})", hint=rebuild)
        if sha256_file(path) != info["sha256"]:
            raise KernelError(f"{path} does not match the sha256 in {MANIFEST_NAME}: changed after the build",
                              hint=f"rebuild with `mnt-export kernels --out {folder} --force`")
    return manifest


class DeviceKernels:
    """libmnt_kernels.so: the extern "C" launchers, called with device pointers (ints) and a
    cudaStream_t (an int; 0 is the legacy default stream). Raises KernelError with the CUDA
    error's name when a launch fails. The kernel tests run the kernels through it; the
    TensorRT plugins do not (they embed each op's PTX, mnt.export.tensorrt.plugins).
    Launcher names and arguments come from the specs in the library's kernels.json."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.path = folder / LIBRARY_NAME
        self.specs = {}
        for op in OPS:
            if op not in manifest.get("ops", {}):
                raise KernelError(f"{folder / MANIFEST_NAME} has no op {op!r}",
                                  hint=f"rebuild with `mnt-export kernels --out {folder} --force`")
            self.specs[op] = validate_spec(manifest["ops"][op], f"{folder / MANIFEST_NAME} (op {op})")
        try:
            self.lib = ctypes.CDLL(str(self.path))
        except OSError as err:
            raise KernelError(f"cannot load {self.path}: {err}",
                              hint="it needs the NVIDIA driver (libcuda.so.1) at run time") from err
        for spec in self.specs.values():
            for dtype in dtypes(spec):
                launcher = getattr(self.lib, launcher_name(spec, dtype))
                launcher.argtypes = [*_argtypes(spec, dtype), ctypes.c_void_p]  # then the stream
        self.lib.mnt_kernels_error_name.argtypes = [ctypes.c_int]
        self.lib.mnt_kernels_error_name.restype = ctypes.c_char_p

    def error_name(self, code: int) -> str:
        name = self.lib.mnt_kernels_error_name(code)
        return name.decode() if name else f"CUDA error {code}"

    def _check(self, op: str, status: int) -> None:
        if status != CUDA_SUCCESS:
            raise KernelError(f"{op} launch failed: {self.error_name(status)} ({status})")

    def launch(self, op: str, dtype: str, pointers: list[int], scalars: list[int], stream: int = 0) -> None:
        """The op's launcher for `dtype`: the input pointers, the int32 arguments (in the
        kernel's order), then the output pointer(s), all as the spec lists them."""
        spec = self.specs[op]
        if dtype not in dtypes(spec):
            raise KernelError(f"{spec['op']} has no {dtype} kernel; choose one of {', '.join(dtypes(spec))}")
        n_in = len(spec["inputs"])
        fn = getattr(self.lib, launcher_name(spec, dtype))
        status = fn(*pointers[:n_in], *scalars, *pointers[n_in:], stream)
        self._check(f"{spec['domain']}::{spec['op']}", status)

    def warp(self, dtype: str, features: int, flow: int, out: int, shape: tuple[int, int, int, int],
             flow_hw: tuple[int, int], stream: int = 0) -> None:
        """features (N, C, H, W) of `dtype`, flow (N, 2, h, w) float32, out like features."""
        self.launch("warp", dtype, [features, flow, out], [*shape, *flow_hw], stream)

    def cross_attention(self, dtype: str, query: int, keys: int, values: int, out: int, b: int, lq: int,
                        lk: int, d: int, dv: int, stream: int = 0) -> None:
        """query (B, Lq, D), keys (B, Lk, D), values (B, Lk, Dv), out (B, Lq, Dv), all `dtype`."""
        self.launch("cross_attention", dtype, [query, keys, values, out], [b, lq, lk, d, dv], stream)


def device_library(folder: Path | str | None = None, check_sources: bool = True) -> DeviceKernels:
    """Load libmnt_kernels.so from `folder` (else $MNT_KERNELS_DIR) after checking it against
    its kernels.json; with check_sources, it must also be built from these sources."""
    if folder is None:
        folder = os.environ.get("MNT_KERNELS_DIR")
        if not folder:
            raise KernelError("no kernel library folder given and MNT_KERNELS_DIR is not set",
                              hint="build one with `mnt-export kernels --out DIR` and pass DIR or set "
                                   "MNT_KERNELS_DIR=DIR")
    folder = Path(folder)
    manifest = read_manifest(folder)
    if LIBRARY_NAME not in manifest["files"]:
        raise KernelError(f"{folder / MANIFEST_NAME} lists no {LIBRARY_NAME}")
    if check_sources and manifest.get("sources_sha256") != sources_sha256():
        raise KernelError(f"{folder / LIBRARY_NAME} was built from other kernel sources than this mnt's",
                          hint=f"rebuild with `mnt-export kernels --out {folder} --force`")
    return DeviceKernels(folder, manifest)
