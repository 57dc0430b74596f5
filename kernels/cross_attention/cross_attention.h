// mnt::CrossAttention per-element maths, shared by the CUDA kernel (cross_attention.cu) and
// the host reference (host_reference.cpp): softmax(Q Kᵀ / sqrt(D)) V with an online softmax
// over tiles of keys, FP32 logits, running max, exp-sum and weighted sum; storage T.
//
// The work of one query row is laid out as one 32-lane warp does it: lane l holds the
// query and output elements d = l, l + 32, ... (MNT_ATTN_SLOTS of them), a logit is the
// butterfly (xor-shuffle) sum of the 32 lanes' partial dot products, and keys arrive in
// tiles of mnt_attn_key_tile() keys. The host reference runs the same steps lane by lane,
// so it reproduces the kernel's rounding order, not just its maths.
//
// Online softmax after Milakov & Gimelshein, "Online normalizer calculation for softmax"
// (2018), in the tiled form of FlashAttention (Dao et al., 2022): per tile, the running
// max m and sum l are rescaled by exp(m_old - m_new) instead of a second pass over keys.
#ifndef MNT_KERNELS_CROSS_ATTENTION_H
#define MNT_KERNELS_CROSS_ATTENTION_H

#include "../common.h"

#define MNT_ATTN_LANES 32
#define MNT_ATTN_SLOTS 16                                  // per-lane elements: D, Dv <= 512
#define MNT_ATTN_MAX_DIM (MNT_ATTN_LANES * MNT_ATTN_SLOTS)
#define MNT_ATTN_WARPS 4                                   // query rows per block, one per warp
#define MNT_ATTN_BLOCK (MNT_ATTN_WARPS * MNT_ATTN_LANES)
#define MNT_ATTN_MAX_TILE 16                               // keys per tile, at most (registers: 154 on sm_90)
#define MNT_ATTN_SMEM_BYTES 32768                          // static shared memory for a K and a V tile

// 0 when query (B, Lq, D), keys (B, Lk, D), values (B, Lk, Dv) make a valid CrossAttention.
MNT_HD inline int mnt_attn_check(int B, int Lq, int Lk, int D, int Dv) {
    if (B < 1 || Lq < 1 || Lk < 1 || D < 1 || Dv < 1) return MNT_ERROR_INVALID_VALUE;
    if (D > MNT_ATTN_MAX_DIM || Dv > MNT_ATTN_MAX_DIM) return MNT_ERROR_INVALID_VALUE;
    if (B > 65535) return MNT_ERROR_INVALID_VALUE;  // the grid's y size
    return MNT_OK;
}

// Keys per shared-memory tile: as many K and V rows of storage size `elem` as fit, at most
// MNT_ATTN_MAX_TILE; 0 when not one row fits (mnt_attn_check_launch refuses that: the tile
// loop advances by it).
MNT_HD inline int mnt_attn_key_tile(int D, int Dv, int elem) {
    const long long row = ((long long)D + Dv) * elem;
    if (row <= 0 || row > MNT_ATTN_SMEM_BYTES) return 0;
    const long long tile = MNT_ATTN_SMEM_BYTES / row;
    return tile < MNT_ATTN_MAX_TILE ? (int)tile : MNT_ATTN_MAX_TILE;
}

// 0 when a kernel with storage of `elem` bytes runs these shapes: mnt_attn_check, and at
// least one key per shared-memory tile. The launchers and the kernels themselves check it.
MNT_HD inline int mnt_attn_check_launch(int B, int Lq, int Lk, int D, int Dv, int elem) {
    if (mnt_attn_check(B, Lq, Lk, D, Dv) != MNT_OK) return MNT_ERROR_INVALID_VALUE;
    return mnt_attn_key_tile(D, Dv, elem) >= 1 ? MNT_OK : MNT_ERROR_INVALID_VALUE;
}

MNT_HD inline int mnt_attn_grid_x(int Lq) { return mnt_ceil_div(Lq, MNT_ATTN_WARPS); }

// Lane `lane`'s share of a row of length `dim`: slots[i] = row[lane + 32 i] (0 past the end).
template <typename T>
MNT_HD inline void mnt_attn_load_slots(const T* row, int lane, int dim, float* slots) {
MNT_UNROLL
    for (int i = 0; i < MNT_ATTN_SLOTS; ++i) {
        const int d = lane + MNT_ATTN_LANES * i;
        slots[i] = d < dim ? mnt_load(row[d]) : 0.0f;
    }
}

// Lane `lane`'s partial dot product of its query slots with a key row.
template <typename T>
MNT_HD inline float mnt_attn_partial_dot(const float* q_slots, const T* key, int lane, int D) {
    float acc = 0.0f;
MNT_UNROLL
    for (int i = 0; i < MNT_ATTN_SLOTS; ++i) {
        const int d = lane + MNT_ATTN_LANES * i;
        if (d < D) acc = fmaf(q_slots[i], mnt_load(key[d]), acc);
    }
    return acc;
}

// Online-softmax step for one tile of `count` logits (s[j], already scaled): updates the
// running max *m and sum *l, turns s[j] into the weights exp(s[j] - m_new), and returns the
// factor the running output must be scaled by, exp(m_old - m_new).
MNT_HD inline float mnt_attn_online_tile(float* s, int count, float* m, float* l) {
    float tile_max = s[0];
MNT_UNROLL
    for (int j = 1; j < MNT_ATTN_MAX_TILE; ++j) {
        if (j < count) tile_max = fmaxf(tile_max, s[j]);
    }
    const float m_new = fmaxf(*m, tile_max);
    const float alpha = *m == -INFINITY ? 0.0f : expf(*m - m_new);  // first tile: nothing to rescale
    float sum = *l * alpha;
MNT_UNROLL
    for (int j = 0; j < MNT_ATTN_MAX_TILE; ++j) {
        if (j < count) {
            s[j] = expf(s[j] - m_new);
            sum += s[j];
        }
    }
    *m = m_new;
    *l = sum;
    return alpha;
}

// acc[i] = alpha * acc[i] + sum_j p[j] * V[j][lane + 32 i] over the tile's `count` value rows.
template <typename T>
MNT_HD inline void mnt_attn_accumulate(float* acc, float alpha, const float* p, const T* values, int count,
                                       int lane, int Dv) {
MNT_UNROLL
    for (int i = 0; i < MNT_ATTN_SLOTS; ++i) acc[i] *= alpha;
MNT_UNROLL
    for (int j = 0; j < MNT_ATTN_MAX_TILE; ++j) {  // fully unrolled: p stays in registers
        if (j >= count) break;
        const T* row = values + (long long)j * Dv;
MNT_UNROLL
        for (int i = 0; i < MNT_ATTN_SLOTS; ++i) {
            const int d = lane + MNT_ATTN_LANES * i;
            if (d < Dv) acc[i] = fmaf(p[j], mnt_load(row[d]), acc[i]);
        }
    }
}

// Lane's output elements: acc / l.
template <typename T>
MNT_HD inline void mnt_attn_store(T* out_row, const float* acc, float l, int lane, int Dv) {
    const float inv = 1.0f / l;
MNT_UNROLL
    for (int i = 0; i < MNT_ATTN_SLOTS; ++i) {
        const int d = lane + MNT_ATTN_LANES * i;
        if (d < Dv) mnt_store(out_row + d, acc[i] * inv);
    }
}

// The xor-butterfly all-reduce of 32 lane values as __shfl_xor_sync performs it (offsets
// 16, 8, 4, 2, 1); every lane ends with the same sum, returned. Host side of the kernel's
// warp reduction.
inline float mnt_attn_butterfly_sum(const float* lanes) {
    float v[MNT_ATTN_LANES], next[MNT_ATTN_LANES];
    for (int l = 0; l < MNT_ATTN_LANES; ++l) v[l] = lanes[l];
    for (int offset = MNT_ATTN_LANES / 2; offset > 0; offset /= 2) {
        for (int l = 0; l < MNT_ATTN_LANES; ++l) next[l] = v[l] + v[l ^ offset];
        for (int l = 0; l < MNT_ATTN_LANES; ++l) v[l] = next[l];
    }
    return v[0];
}

#endif  // MNT_KERNELS_CROSS_ATTENTION_H
