"""mnt.kernels: the CUDA kernels of the custom ops mnt::Warp and mnt::CrossAttention.

One plain folder of sources per op (warp/, cross_attention/: kernel .cu, per-element maths
header shared with the host compiler, spec.json, README.md), common.h, host_reference.cpp
(the same maths for the CPU), and the Python side: `spec` (each op's spec.json, the one
source every Python user of an op reads: names, inputs and outputs, kernels, launch
geometry, limits), `loader` (the host reference library, the CUDA library and its
kernels.json) and `build` (the nvcc build behind `mnt-export kernels`). No torch import.
"""
