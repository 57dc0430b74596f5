// mnt::CrossAttention CUDA kernels and launchers: out = softmax(Q Kᵀ / sqrt(D)) V for
// query (B, Lq, D), keys (B, Lk, D), values (B, Lk, Dv), D and Dv <= 512.
//
// Layout: grid (ceil(Lq / 4), B), 128 threads = 4 warps per block, one query row per warp.
// The block streams the keys and values through shared memory in tiles (a tile is a
// contiguous run of Lk rows, so the copy is coalesced) and each tile is reused by the
// block's 4 rows. A warp keeps its query row and FP32 output accumulators in registers
// (16 per lane), reduces each logit with xor shuffles and folds every tile into an online
// softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022), so keys are read
// once and no Lq x Lk logit matrix is ever stored. Logits, max, exp-sum and the weighted
// sum are FP32; only loads and the final store touch T.
#include <cuda_runtime.h>

#include "cross_attention.h"

__device__ __forceinline__ float mnt_warp_sum(float v) {
MNT_UNROLL
    for (int offset = MNT_ATTN_LANES / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Shapes the kernel cannot run (a TensorRT AOT launch reaches the kernel unchecked): every
// output element of the block's rows becomes NaN instead of truncated sums or a tile loop
// that never advances.
template <typename T>
__device__ void mnt_cross_attention_refuse(T* out, int Lq, int Dv) {
    const int lane = threadIdx.x % MNT_ATTN_LANES, row = blockIdx.x * MNT_ATTN_WARPS + threadIdx.x / MNT_ATTN_LANES;
    if (row >= Lq) return;
    T* out_row = out + ((long long)blockIdx.y * Lq + row) * Dv;
    for (int d = lane; d < Dv; d += MNT_ATTN_LANES) mnt_store(out_row + d, mnt_nan());
}

template <typename T>
__device__ __forceinline__ void mnt_cross_attention_block(const T* __restrict__ query, const T* __restrict__ keys,
                                                          const T* __restrict__ values, T* __restrict__ out,
                                                          int B, int Lq, int Lk, int D, int Dv) {
    __shared__ __align__(16) unsigned char smem[MNT_ATTN_SMEM_BYTES];
    if (mnt_attn_check_launch(B, Lq, Lk, D, Dv, (int)sizeof(T)) != MNT_OK) {  // the same for the whole block
        mnt_cross_attention_refuse(out, Lq, Dv);
        return;
    }
    T* k_tile = reinterpret_cast<T*>(smem);
    const int tile = mnt_attn_key_tile(D, Dv, (int)sizeof(T));
    T* v_tile = k_tile + tile * D;

    const int lane = threadIdx.x % MNT_ATTN_LANES, warp = threadIdx.x / MNT_ATTN_LANES;
    const int b = blockIdx.y, row = blockIdx.x * MNT_ATTN_WARPS + warp;
    const bool active = row < Lq;  // idle warps still help load tiles and meet the barriers
    const T* k_b = keys + (long long)b * Lk * D;
    const T* v_b = values + (long long)b * Lk * Dv;
    const float scale = 1.0f / sqrtf((float)D);

    float q[MNT_ATTN_SLOTS], acc[MNT_ATTN_SLOTS], s[MNT_ATTN_MAX_TILE];
    mnt_attn_load_slots(query + ((long long)b * Lq + (active ? row : 0)) * D, lane, D, q);
MNT_UNROLL
    for (int i = 0; i < MNT_ATTN_SLOTS; ++i) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int start = 0; start < Lk; start += tile) {
        const int count = min(tile, Lk - start);
        __syncthreads();  // the previous tile is no longer read
        for (int e = threadIdx.x; e < count * D; e += MNT_ATTN_BLOCK) k_tile[e] = k_b[(long long)start * D + e];
        for (int e = threadIdx.x; e < count * Dv; e += MNT_ATTN_BLOCK) v_tile[e] = v_b[(long long)start * Dv + e];
        __syncthreads();
        if (!active) continue;
MNT_UNROLL
        for (int j = 0; j < MNT_ATTN_MAX_TILE; ++j) {
            if (j < count) s[j] = mnt_warp_sum(mnt_attn_partial_dot(q, k_tile + j * D, lane, D)) * scale;
        }
        const float alpha = mnt_attn_online_tile(s, count, &m, &l);
        mnt_attn_accumulate(acc, alpha, s, v_tile, count, lane, Dv);
    }
    if (active) mnt_attn_store(out + ((long long)b * Lq + row) * Dv, acc, l, lane, Dv);
}

// Kernel arguments in the order TensorRT's ahead-of-time plugins launch with: the input
// pointers in op order, the int32 shapes (the plugin's extra arguments), then the output
// pointer. Launch: grid (ceil(Lq/4), B), block 128, no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(MNT_ATTN_BLOCK)
mnt_cross_attention_kernel_f32(const float* query, const float* keys, const float* values, int B, int Lq, int Lk,
                               int D, int Dv, float* out) {
    mnt_cross_attention_block(query, keys, values, out, B, Lq, Lk, D, Dv);
}

extern "C" __global__ void __launch_bounds__(MNT_ATTN_BLOCK)
mnt_cross_attention_kernel_f16(const __half* query, const __half* keys, const __half* values, int B, int Lq,
                               int Lk, int D, int Dv, __half* out) {
    mnt_cross_attention_block(query, keys, values, out, B, Lq, Lk, D, Dv);
}

template <typename T, typename Kernel>
static int mnt_cross_attention_launch(Kernel kernel, const T* query, const T* keys, const T* values, int B,
                                      int Lq, int Lk, int D, int Dv, T* out, cudaStream_t stream) {
    if (mnt_attn_check_launch(B, Lq, Lk, D, Dv, (int)sizeof(T)) != MNT_OK) return (int)cudaErrorInvalidValue;
    const dim3 grid(mnt_attn_grid_x(Lq), B);
    kernel<<<grid, MNT_ATTN_BLOCK, 0, stream>>>(query, keys, values, B, Lq, Lk, D, Dv, out);
    return (int)cudaGetLastError();
}

// The launchers take the kernel's arguments in the kernel's order, plus the stream.
extern "C" int mnt_cross_attention_f32(const float* query, const float* keys, const float* values, int B, int Lq,
                                       int Lk, int D, int Dv, float* out, cudaStream_t stream) {
    return mnt_cross_attention_launch(mnt_cross_attention_kernel_f32, query, keys, values, B, Lq, Lk, D, Dv, out,
                                      stream);
}

extern "C" int mnt_cross_attention_f16(const void* query, const void* keys, const void* values, int B, int Lq,
                                       int Lk, int D, int Dv, void* out, cudaStream_t stream) {
    return mnt_cross_attention_launch(mnt_cross_attention_kernel_f16, static_cast<const __half*>(query),
                                      static_cast<const __half*>(keys), static_cast<const __half*>(values), B, Lq,
                                      Lk, D, Dv, static_cast<__half*>(out), stream);
}
