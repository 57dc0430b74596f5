"""mnt.kernels: the CUDA kernels of the custom ops mnt::Warp and mnt::CrossAttention.

One plain folder of sources per op (warp/, cross_attention/: kernel .cu, per-element maths
header shared with the host compiler, spec.json, README.md), common.h, host_reference.cpp
(the same maths for the CPU), and the Python side: `loader` (the one way in: sources, specs,
the host reference library, the CUDA library and its kernels.json), `build` (the nvcc build
behind `mnt-export kernels`), `launch` (launch geometry for plugin callers). No torch import.
"""
