// sppquant: the segment and rows kernels' strip accumulators (one thread, V adjacent columns of
// one plane, reduced in registers over rows; included by .cu files only).
#ifndef SPPQUANT_SPP_STRIP_CUH
#define SPPQUANT_SPP_STRIP_CUH

#include "kernel_common.cuh"

#include <cuda_fp16.h>

#include <cstdint>

namespace sppq {

// One thread owns V adjacent columns of one plane and walks a chunk of rows with U independent
// 16-byte loads in flight, reducing in registers and flushing one value per column at every
// row-segment boundary into the column buffer (native type for max, float sums for avg).
// Max keeps NaN (PTX max.NaN: a NaN operand wins), int8 max runs on sign-extended s16x2 pairs.
template <typename T, int POOL, int V> struct Strip;

template <int V> struct Strip<float, SPPQ_MAX, V> {
    float a[V];
    __device__ __forceinline__ void init() {
#pragma unroll
        for (int k = 0; k < V; ++k) a[k] = -INFINITY;
    }
    __device__ __forceinline__ void add(const Vec<float, V>& x) {
#pragma unroll
        for (int k = 0; k < V; ++k) a[k] = fmax_nan(a[k], x.v[k]);
    }
    __device__ __forceinline__ void store(float* dst) const {
        Vec<float, V> o;
#pragma unroll
        for (int k = 0; k < V; ++k) o.v[k] = a[k];
        *reinterpret_cast<Vec<float, V>*>(dst) = o;
    }
};

template <int V> struct Strip<__half, SPPQ_MAX, V> {
    static constexpr int NW = (V + 1) / 2;  // V == 1: one half in the low bits
    unsigned a[NW];
    __device__ __forceinline__ void init() {
#pragma unroll
        for (int k = 0; k < NW; ++k) a[k] = 0xFC00FC00u;  // -inf, -inf
    }
    __device__ __forceinline__ void add(const Vec<__half, V>& x) {
        if constexpr (V == 1) {
            const __half r = __hmax_nan(__ushort_as_half(static_cast<unsigned short>(a[0])), x.v[0]);
            a[0] = __half_as_ushort(r);
        } else {
            const unsigned* w = reinterpret_cast<const unsigned*>(&x);
#pragma unroll
            for (int k = 0; k < NW; ++k) {
                const __half2 r = __hmax2_nan(*reinterpret_cast<const __half2*>(&a[k]),
                    *reinterpret_cast<const __half2*>(&w[k]));
                a[k] = *reinterpret_cast<const unsigned*>(&r);
            }
        }
    }
    __device__ __forceinline__ void store(__half* dst) const {
        if constexpr (V == 1) {
            *dst = __ushort_as_half(static_cast<unsigned short>(a[0]));
        } else {
            Vec<__half, V> o;
            unsigned* w = reinterpret_cast<unsigned*>(&o);
#pragma unroll
            for (int k = 0; k < NW; ++k) w[k] = a[k];
            *reinterpret_cast<Vec<__half, V>*>(dst) = o;
        }
    }
};

template <int V> struct Strip<int8_t, SPPQ_MAX, V> {
    // V % 4 == 0: V/2 words of two sign-extended int16 lanes; otherwise V ints.
    static constexpr bool kPacked = V % 4 == 0;
    static constexpr int NA = kPacked ? V / 2 : V;
    unsigned a[NA];
    __device__ __forceinline__ void init() {
#pragma unroll
        for (int k = 0; k < NA; ++k) a[k] = kPacked ? 0xFF80FF80u : static_cast<unsigned>(-128);
    }
    __device__ __forceinline__ void add(const Vec<int8_t, V>& x) {
        if constexpr (kPacked) {
            const unsigned* w = reinterpret_cast<const unsigned*>(&x);
#pragma unroll
            for (int k = 0; k < V / 4; ++k) {
                a[2 * k] = vmax_s16x2(a[2 * k], prmt(w[k], 0u, 0x9180u));       // elements 0, 1
                a[2 * k + 1] = vmax_s16x2(a[2 * k + 1], prmt(w[k], 0u, 0xB3A2u));  // elements 2, 3
            }
        } else {
#pragma unroll
            for (int k = 0; k < V; ++k)
                a[k] = static_cast<unsigned>(max(static_cast<int>(a[k]), static_cast<int>(x.v[k])));
        }
    }
    __device__ __forceinline__ void store(int8_t* dst) const {
        Vec<int8_t, V> o;
        if constexpr (kPacked) {
            unsigned* w = reinterpret_cast<unsigned*>(&o);
#pragma unroll
            for (int k = 0; k < V / 4; ++k) w[k] = prmt(a[2 * k], a[2 * k + 1], 0x6420u);
        } else {
#pragma unroll
            for (int k = 0; k < V; ++k) o.v[k] = static_cast<int8_t>(static_cast<int>(a[k]));
        }
        *reinterpret_cast<Vec<int8_t, V>*>(dst) = o;
    }
};

template <typename T, int V> struct Strip<T, SPPQ_AVG, V> {
    float a[V];  // same summation order as a plain row loop: rows in order, per column
    __device__ __forceinline__ void init() {
#pragma unroll
        for (int k = 0; k < V; ++k) a[k] = 0.0f;
    }
    __device__ __forceinline__ void add(const Vec<T, V>& x) {
#pragma unroll
        for (int k = 0; k < V; ++k) a[k] = a[k] + static_cast<float>(cvt(x.v[k]));
    }
    __device__ __forceinline__ void store(float* dst) const {
#pragma unroll
        for (int k = 0; k < V; ++k) dst[k] = a[k];
    }
};

}  // namespace sppq

#endif  // SPPQUANT_SPP_STRIP_CUH
