"""Which INT8 kernels ONNX Runtime's CPU provider runs here, read from the CPU's flags.

ONNX Runtime (MLAS) multiplies INT8 activations (as uint8) by INT8 weights with the best
instruction it finds: VNNI (`vpdpbusd`, AVX-512 or AVX) and AMX accumulate every product in
32 bits; AVX2 and AVX-512 without VNNI use `vpmaddubsw`, which adds each pair of products in
a saturating 16-bit integer; AArch64 multiplies into 16 bits and accumulates in 32 (with the
dot-product extension `sdot`/`udot`: in 32 directly). mnt's sessions ask for exact products
everywhere (`backends.onnxruntime.INT8_EXACT`); this module names the path, for `doctor` and
for the manifest's record of where an INT8 build was gated. Linux reads /proc/cpuinfo;
elsewhere the path is "unknown" (never an error), and mnt asks for exact products."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Int8Path:
    """`name`: the kernel family; `saturates`: whether its u8 x s8 products can saturate
    (pairs summed in 16 bits) unless a session asks for exact products; None: unknown."""

    name: str
    saturates: bool | None
    cpu: str = ""

    def describe(self) -> str:
        if self.saturates is None:
            return f"{self.name} (CPU flags not read; mnt asks for exact INT8 products)"
        if self.saturates:
            return (f"{self.name}: u8 x s8 pairs add in saturating 16 bits; mnt's sessions "
                    "ask for exact u8 x u8 products instead")
        return f"{self.name}: exact INT8 products (32-bit accumulation)"


def int8_path_of(flags: set[str], machine: str, cpu: str = "") -> Int8Path:
    """The INT8 path for a CPU with these /proc/cpuinfo flags on this `platform.machine()`."""
    if machine in ("aarch64", "arm64"):
        # Linux calls the dot-product extension "asimddp"
        return Int8Path("ARM dot-product" if "asimddp" in flags else "ARM NEON (no dot-product)", False, cpu)
    if machine not in ("x86_64", "AMD64", "i686", "i386") or not flags:
        return Int8Path("unknown", None, cpu)
    if "amx_int8" in flags:
        return Int8Path("AMX", False, cpu)
    if "avx512_vnni" in flags and {"avx512bw", "avx512vl"} <= flags:
        return Int8Path("AVX-512 VNNI", False, cpu)
    if "avx_vnni" in flags:
        return Int8Path("AVX-VNNI", False, cpu)
    if {"avx512bw", "avx512vl", "avx512dq"} <= flags:
        return Int8Path("AVX-512 without VNNI", True, cpu)
    if "avx2" in flags:
        return Int8Path("AVX2 only", True, cpu)
    return Int8Path("SSE (no AVX2)", False, cpu)  # Linux builds widen to 16 bits there: exact


def _read_cpuinfo(path: Path) -> tuple[set[str], str]:
    """(flags, model name) of the first processor listed; empty where unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return set(), ""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:  # x86 "flags", aarch64 "Features"
            flags = set(value.split())
        elif key == "model name" and not model:
            model = value.strip()
    return flags, model


@functools.cache
def int8_path(cpuinfo: Path = CPUINFO) -> Int8Path:
    """This machine's INT8 path (Linux: /proc/cpuinfo; elsewhere "unknown")."""
    flags, model = _read_cpuinfo(cpuinfo)
    return int8_path_of(flags, platform.machine(), model or platform.processor())
