// mnt::Warp per-element maths, shared by the CUDA kernel (warp.cu) and the host reference
// (host_reference.cpp): the flow's f x f average pooling, the sampling taps (identity
// pixel-centre grid + flow, grid_sample's align_corners=False unnormalisation, zeros
// padding) and the bilinear blend. FP32 throughout; storage T is float or mnt_half.
#ifndef MNT_KERNELS_WARP_H
#define MNT_KERNELS_WARP_H

#include "../common.h"

#define MNT_WARP_BLOCK 256  // threads per block: one thread per output pixel

// 0 when (features N,C,H,W; flow N,2,h,w) is a valid Warp: h = f*H, w = f*W, f >= 1.
MNT_HD inline int mnt_warp_check(int N, int C, int H, int W, int h, int w) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || h < H || h % H != 0) return MNT_ERROR_INVALID_VALUE;
    int f = h / H;
    if (w != f * W) return MNT_ERROR_INVALID_VALUE;
    // Offsets are 64-bit, but a thread index over N*H*W and the grid's x size are 32-bit.
    if ((long long)N * H * W > 0x7fffffffLL - MNT_WARP_BLOCK) return MNT_ERROR_INVALID_VALUE;
    return MNT_OK;
}

// Output pixel `index` (of N*H*W) over all C channels set to NaN: what the kernel writes
// when it refuses its shape arguments (mnt_warp_check), for as far as they address `out`.
template <typename T>
MNT_HD inline void mnt_warp_refuse(T* out, long long index, int N, int C, int H, int W) {
    if (N < 1 || C < 1 || H < 1 || W < 1) return;
    const long long hw = (long long)H * W;
    if (index < 0 || index >= N * hw) return;
    const long long n = index / hw;
    T* dst = out + n * C * hw + (index - n * hw);
    for (int c = 0; c < C; ++c) mnt_store(dst + c * hw, mnt_nan());
}

MNT_HD inline int mnt_warp_grid(int N, int H, int W) {
    return mnt_ceil_div((long long)N * H * W, MNT_WARP_BLOCK);
}

// The 4 taps of one output pixel: top-left corner, weights, and which corners lie inside.
typedef struct MntWarpTaps {
    int x0, y0;
    float w00, w01, w10, w11;  // (row, column) offsets from the top-left corner
    bool in00, in01, in10, in11;
} MntWarpTaps;

// Mean of the flow over the f x f block of output pixel (x, y): F.avg_pool2d(flow, f),
// summed row by row and divided once by f*f, as PyTorch does. flow_n is image n's (2, h, w).
MNT_HD inline void mnt_warp_pooled_flow(const float* flow_n, int H, int W, int f, int x, int y,
                                        float* fx, float* fy) {
    const int w = W * f;
    const long long plane = (long long)H * f * w;
    float sx = 0.0f, sy = 0.0f;
    for (int i = 0; i < f; ++i) {
        const float* row = flow_n + (long long)(y * f + i) * w + (long long)x * f;
        for (int j = 0; j < f; ++j) {
            sx += row[j];
            sy += row[plane + j];
        }
    }
    const float count = (float)(f * f);
    *fx = f == 1 ? sx : sx / count;
    *fy = f == 1 ? sy : sy / count;
}

// Taps of output pixel (x, y) of an H x W map displaced by the normalised flow (fx, fy).
MNT_HD inline MntWarpTaps mnt_warp_taps(int x, int y, int H, int W, float fx, float fy) {
    // Identity pixel-centre grid, as blocks.identity_grid computes it: (2i + 1) / size - 1.
    const float gx = ((float)(2 * x + 1) / (float)W - 1.0f) + fx;
    const float gy = ((float)(2 * y + 1) / (float)H - 1.0f) + fy;
    // grid_sample, align_corners=False: ((g + 1) * size - 1) / 2 in input pixels.
    float ix = ((gx + 1.0f) * (float)W - 1.0f) / 2.0f;
    float iy = ((gy + 1.0f) * (float)H - 1.0f) / 2.0f;
    // Far outside (or NaN) means all four taps are padding; clamping first keeps the
    // float -> int conversion defined without changing which taps are inside.
    ix = fminf(fmaxf(ix, -2.0f), (float)W + 1.0f);
    iy = fminf(fmaxf(iy, -2.0f), (float)H + 1.0f);
    const float x0f = floorf(ix), y0f = floorf(iy);
    const float tx = ix - x0f, ty = iy - y0f;
    MntWarpTaps t;
    t.x0 = (int)x0f;
    t.y0 = (int)y0f;
    t.w00 = (1.0f - tx) * (1.0f - ty);
    t.w01 = tx * (1.0f - ty);
    t.w10 = (1.0f - tx) * ty;
    t.w11 = tx * ty;
    const bool x0in = t.x0 >= 0 && t.x0 < W, x1in = t.x0 + 1 >= 0 && t.x0 + 1 < W;
    const bool y0in = t.y0 >= 0 && t.y0 < H, y1in = t.y0 + 1 >= 0 && t.y0 + 1 < H;
    t.in00 = y0in && x0in;
    t.in01 = y0in && x1in;
    t.in10 = y1in && x0in;
    t.in11 = y1in && x1in;
    return t;
}

// Bilinear blend of one channel plane (H x W) at the taps; padding taps read nothing.
template <typename T>
MNT_HD inline float mnt_warp_blend(const T* plane, int W, const MntWarpTaps& t) {
    const long long base = (long long)t.y0 * W + t.x0;
    float acc = 0.0f;
    if (t.in00) acc = fmaf(mnt_load(plane[base]), t.w00, acc);
    if (t.in01) acc = fmaf(mnt_load(plane[base + 1]), t.w01, acc);
    if (t.in10) acc = fmaf(mnt_load(plane[base + W]), t.w10, acc);
    if (t.in11) acc = fmaf(mnt_load(plane[base + W + 1]), t.w11, acc);
    return acc;
}

// One output pixel (n, y, x) over all C channels: the pooled flow and the taps are computed
// once and reused for every channel (what the CUDA kernel's thread does).
template <typename T>
MNT_HD inline void mnt_warp_pixel(const T* features, const float* flow, T* out, int n, int y, int x,
                                  int C, int H, int W, int f) {
    const long long hw = (long long)H * W;
    float fx, fy;
    mnt_warp_pooled_flow(flow + (long long)n * 2 * hw * f * f, H, W, f, x, y, &fx, &fy);
    const MntWarpTaps taps = mnt_warp_taps(x, y, H, W, fx, fy);
    const T* src = features + (long long)n * C * hw;
    T* dst = out + (long long)n * C * hw + (long long)y * W + x;
    for (int c = 0; c < C; ++c) {
        mnt_store(dst + c * hw, mnt_warp_blend(src + c * hw, W, taps));
    }
}

#endif  // MNT_KERNELS_WARP_H
