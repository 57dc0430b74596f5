// mnt::Warp CUDA kernels and launchers: bilinear sampling of features (N, C, H, W) at the
// identity grid plus a flow (N, 2, f*H, f*W) average-pooled to H x W in the same pass.
//
// One thread per output pixel (n, y, x), looping over the C channels: the f*f pooled flow
// values, the 4 bilinear weights and tap offsets are computed once per pixel, not per
// channel. For a fixed channel, neighbouring threads read neighbouring taps and write
// neighbouring outputs, so loads and stores coalesce; no shared memory is needed.
#include <cuda_runtime.h>

#include "warp.h"

template <typename T>
__device__ __forceinline__ void mnt_warp_thread(const T* __restrict__ features, const float* __restrict__ flow,
                                                T* __restrict__ out, int N, int C, int H, int W, int h, int w) {
    // A TensorRT AOT launch reaches the kernel with no host check: refuse here (NaN output)
    // rather than read the flow out of bounds.
    if (mnt_warp_check(N, C, H, W, h, w) != MNT_OK) {
        mnt_warp_refuse(out, (long long)blockIdx.x * blockDim.x + threadIdx.x, N, C, H, W);
        return;
    }
    const int index = blockIdx.x * blockDim.x + threadIdx.x;
    const int pixels = H * W;
    if (index >= N * pixels) return;  // N*H*W fits int32: mnt_warp_check
    const int n = index / pixels, rest = index - n * pixels;
    mnt_warp_pixel(features, flow, out, n, rest / W, rest % W, C, H, W, h / H);
}

// Kernel arguments in the order TensorRT's ahead-of-time plugins launch with: the input
// pointers in op order, the int32 shapes (the plugin's extra arguments), then the output
// pointer. Every shape reaches the kernel, which checks them (w = f * W included).
extern "C" __global__ void __launch_bounds__(MNT_WARP_BLOCK)
mnt_warp_kernel_f32(const float* features, const float* flow, int N, int C, int H, int W, int h, int w,
                    float* out) {
    mnt_warp_thread(features, flow, out, N, C, H, W, h, w);
}

extern "C" __global__ void __launch_bounds__(MNT_WARP_BLOCK)
mnt_warp_kernel_f16(const __half* features, const float* flow, int N, int C, int H, int W, int h, int w,
                    __half* out) {
    mnt_warp_thread(features, flow, out, N, C, H, W, h, w);
}

template <typename T, typename Kernel>
static int mnt_warp_launch(Kernel kernel, const T* features, const float* flow, int N, int C, int H, int W,
                           int h, int w, T* out, cudaStream_t stream) {
    if (mnt_warp_check(N, C, H, W, h, w) != MNT_OK) return (int)cudaErrorInvalidValue;
    kernel<<<mnt_warp_grid(N, H, W), MNT_WARP_BLOCK, 0, stream>>>(features, flow, N, C, H, W, h, w, out);
    return (int)cudaGetLastError();
}

// The launchers take the kernel's arguments in the kernel's order, plus the stream.
extern "C" int mnt_warp_f32(const float* features, const float* flow, int N, int C, int H, int W, int h, int w,
                            float* out, cudaStream_t stream) {
    return mnt_warp_launch(mnt_warp_kernel_f32, features, flow, N, C, H, W, h, w, out, stream);
}

extern "C" int mnt_warp_f16(const void* features, const float* flow, int N, int C, int H, int W, int h, int w,
                            void* out, cudaStream_t stream) {
    return mnt_warp_launch(mnt_warp_kernel_f16, static_cast<const __half*>(features), flow, N, C, H, W, h, w,
                           static_cast<__half*>(out), stream);
}
