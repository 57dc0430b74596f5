// Host reference of the mnt kernels: the CUDA kernels' work done in plain loops on the CPU
// with the same per-element functions (warp/warp.h, cross_attention/cross_attention.h), so
// the maths is tested against PyTorch on machines without a GPU. Built by
// mnt.kernels.loader with the system C++ compiler into libmnt_kernels_host.so.
#include "cross_attention/cross_attention.h"
#include "warp/warp.h"

namespace {

template <typename T>
int warp_host(const T* features, const float* flow, T* out, int N, int C, int H, int W, int h, int w) {
    const int status = mnt_warp_check(N, C, H, W, h, w);
    if (status != MNT_OK) return status;
    for (int n = 0; n < N; ++n)
        for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x) mnt_warp_pixel(features, flow, out, n, y, x, C, H, W, h / H);
    return MNT_OK;
}

// One query row exactly as one warp of the kernel computes it, lane by lane.
template <typename T>
void attention_row(const T* q_row, const T* k_b, const T* v_b, T* out_row, int Lk, int D, int Dv, int tile) {
    float q[MNT_ATTN_LANES][MNT_ATTN_SLOTS], acc[MNT_ATTN_LANES][MNT_ATTN_SLOTS] = {};
    for (int lane = 0; lane < MNT_ATTN_LANES; ++lane) mnt_attn_load_slots(q_row, lane, D, q[lane]);
    const float scale = 1.0f / sqrtf((float)D);
    float m = -INFINITY, l = 0.0f, s[MNT_ATTN_MAX_TILE], partial[MNT_ATTN_LANES];
    for (int start = 0; start < Lk; start += tile) {
        const int count = tile < Lk - start ? tile : Lk - start;
        const T* k_tile = k_b + (long long)start * D;
        const T* v_tile = v_b + (long long)start * Dv;
        for (int j = 0; j < count; ++j) {
            for (int lane = 0; lane < MNT_ATTN_LANES; ++lane)
                partial[lane] = mnt_attn_partial_dot(q[lane], k_tile + (long long)j * D, lane, D);
            s[j] = mnt_attn_butterfly_sum(partial) * scale;
        }
        const float alpha = mnt_attn_online_tile(s, count, &m, &l);
        for (int lane = 0; lane < MNT_ATTN_LANES; ++lane)
            mnt_attn_accumulate(acc[lane], alpha, s, v_tile, count, lane, Dv);
    }
    for (int lane = 0; lane < MNT_ATTN_LANES; ++lane) mnt_attn_store(out_row, acc[lane], l, lane, Dv);
}

template <typename T>
int cross_attention_host(const T* query, const T* keys, const T* values, T* out, int B, int Lq, int Lk, int D,
                         int Dv) {
    const int status = mnt_attn_check(B, Lq, Lk, D, Dv);
    if (status != MNT_OK) return status;
    const int tile = mnt_attn_key_tile(D, Dv, (int)sizeof(T));
    for (int b = 0; b < B; ++b)
        for (int row = 0; row < Lq; ++row)
            attention_row(query + ((long long)b * Lq + row) * D, keys + (long long)b * Lk * D,
                          values + (long long)b * Lk * Dv, out + ((long long)b * Lq + row) * Dv, Lk, D, Dv, tile);
    return MNT_OK;
}

}  // namespace

extern "C" {

// Same arguments as the device launchers (inputs, int32 shapes, output), host pointers, no
// stream; 0 or 1 (invalid shapes).
int mnt_warp_host_f32(const float* features, const float* flow, int N, int C, int H, int W, int h, int w,
                      float* out) {
    return warp_host(features, flow, out, N, C, H, W, h, w);
}

int mnt_warp_host_f16(const void* features, const float* flow, int N, int C, int H, int W, int h, int w,
                      void* out) {
    return warp_host(static_cast<const mnt_half*>(features), flow, static_cast<mnt_half*>(out), N, C, H, W, h, w);
}

int mnt_cross_attention_host_f32(const float* query, const float* keys, const float* values, int B, int Lq,
                                 int Lk, int D, int Dv, float* out) {
    return cross_attention_host(query, keys, values, out, B, Lq, Lk, D, Dv);
}

int mnt_cross_attention_host_f16(const void* query, const void* keys, const void* values, int B, int Lq, int Lk,
                                 int D, int Dv, void* out) {
    return cross_attention_host(static_cast<const mnt_half*>(query), static_cast<const mnt_half*>(keys),
                                static_cast<const mnt_half*>(values), static_cast<mnt_half*>(out), B, Lq, Lk, D,
                                Dv);
}

// The FP16 conversions the host reference stores with (tested against numpy for all values).
void mnt_host_f32_to_f16(const float* in, uint16_t* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = mnt_float_to_half_bits(in[i]);
}

void mnt_host_f16_to_f32(const uint16_t* in, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = mnt_half_bits_to_float(in[i]);
}

// Launch geometry, as the device launchers compute it (mnt.kernels.launch mirrors it).
int mnt_warp_grid_x(int N, int H, int W) { return mnt_warp_grid(N, H, W); }
int mnt_cross_attention_grid_x(int Lq) { return mnt_attn_grid_x(Lq); }
int mnt_cross_attention_key_tile(int D, int Dv, int elem) { return mnt_attn_key_tile(D, Dv, elem); }
int mnt_warp_check_shapes(int N, int C, int H, int W, int h, int w) { return mnt_warp_check(N, C, H, W, h, w); }
int mnt_cross_attention_check_shapes(int B, int Lq, int Lk, int D, int Dv) {
    return mnt_attn_check(B, Lq, Lk, D, Dv);
}

}  // extern "C"
