"""Launch geometry of the CUDA kernels, for callers that launch a kernel themselves (the
TensorRT ahead-of-time plugins: kernel name, grid, block, shared memory, int32 scalars).
Mirrors the launchers in warp/warp.cu and cross_attention/cross_attention.cu and the
constants of their headers; tests compare it with the compiled headers."""

from __future__ import annotations

from dataclasses import dataclass

from mnt.kernels.errors import KernelError

WARP_BLOCK = 256  # MNT_WARP_BLOCK
ATTN_WARPS = 4  # MNT_ATTN_WARPS: query rows per block
ATTN_BLOCK = 32 * ATTN_WARPS
ATTN_MAX_DIM = 512  # MNT_ATTN_MAX_DIM
INT32_MAX = 2**31 - 1
SUFFIX = {"float32": "f32", "float16": "f16"}


@dataclass(frozen=True)
class Launch:
    kernel: str  # extern "C" name, in the library and in the op's PTX
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int  # dynamic shared memory (the kernels use static shared memory only)
    # The int32 arguments in order: TensorRT passes them between the input pointers and the
    # output pointer, as the kernels declare them.
    scalars: tuple[int, ...]


def kernel_suffix(dtype: str) -> str:
    """'float32' -> 'f32', 'float16' -> 'f16': the suffix of the kernels and launchers."""
    if dtype not in SUFFIX:
        raise KernelError(f"unsupported kernel dtype {dtype!r}; choose one of {sorted(SUFFIX)}")
    return SUFFIX[dtype]


def warp_launch(dtype: str, n: int, c: int, height: int, width: int, flow_h: int, flow_w: int) -> Launch:
    """features (n, c, height, width), flow (n, 2, flow_h, flow_w) -> the launch."""
    suffix = kernel_suffix(dtype)
    if min(n, c, height, width) < 1 or flow_h < height or flow_h % height:
        raise KernelError(f"Warp: flow {flow_h}x{flow_w} is not an integer multiple >= 1 of the "
                          f"features' {height}x{width} (or a size is < 1)")
    factor = flow_h // height
    if flow_w != factor * width:
        raise KernelError(f"Warp: flow {flow_h}x{flow_w} does not pool to {height}x{width} by one factor")
    if n * height * width > INT32_MAX - WARP_BLOCK:
        raise KernelError(f"Warp: N*H*W = {n * height * width} exceeds the kernel's 32-bit pixel index")
    grid = (-(-n * height * width // WARP_BLOCK), 1, 1)
    return Launch(f"mnt_warp_kernel_{suffix}", grid, (WARP_BLOCK, 1, 1), 0,
                  (n, c, height, width, flow_h, flow_w))


def cross_attention_launch(dtype: str, b: int, lq: int, lk: int, d: int, dv: int) -> Launch:
    """query (b, lq, d), keys (b, lk, d), values (b, lk, dv) -> the launch."""
    suffix = kernel_suffix(dtype)
    if min(b, lq, lk, d, dv) < 1:
        raise KernelError(f"CrossAttention: every size must be >= 1, got B={b} Lq={lq} Lk={lk} D={d} Dv={dv}")
    if d > ATTN_MAX_DIM or dv > ATTN_MAX_DIM:
        raise KernelError(f"CrossAttention: D={d}, Dv={dv}; the kernel supports at most {ATTN_MAX_DIM}",
                          hint="use the native attention path for wider heads")
    if b > 65535:
        raise KernelError(f"CrossAttention: batch {b} exceeds the grid's y limit 65535")
    return Launch(f"mnt_cross_attention_kernel_{suffix}", (-(-lq // ATTN_WARPS), b, 1), (ATTN_BLOCK, 1, 1), 0,
                  (b, lq, lk, d, dv))
