// Device helpers shared by the SPP and RoI SPP kernels: accumulator types, NaN-propagating
// max, INT8 requantization (one definition, so both ops round identically), stores, streaming
// loads. Included by .cu files only.
#ifndef SPPQUANT_KERNEL_COMMON_CUH
#define SPPQUANT_KERNEL_COMMON_CUH

#include "sppq_common.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sppq {

// ---- element traits ---------------------------------------------------------------------
template <typename T, int POOL> struct Acc;
template <> struct Acc<float, SPPQ_MAX> { using type = float; };
template <> struct Acc<__half, SPPQ_MAX> { using type = float; };
template <> struct Acc<int8_t, SPPQ_MAX> { using type = int; };
template <typename T> struct Acc<T, SPPQ_AVG> { using type = float; };

__device__ __forceinline__ float cvt(float v) { return v; }
__device__ __forceinline__ float cvt(__half v) { return __half2float(v); }
__device__ __forceinline__ int cvt(int8_t v) { return static_cast<int>(v); }

template <int POOL, typename A> struct Op;
template <> struct Op<SPPQ_MAX, float> {
    static __device__ __forceinline__ float init() { return -INFINITY; }
    // NaN-propagating max: once NaN, stays NaN; a NaN operand wins.
    static __device__ __forceinline__ float apply(float a, float b) { return (b > a || b != b) ? b : a; }
};
template <> struct Op<SPPQ_MAX, int> {
    static __device__ __forceinline__ int init() { return -128; }
    static __device__ __forceinline__ int apply(int a, int b) { return max(a, b); }
};
template <> struct Op<SPPQ_AVG, float> {
    static __device__ __forceinline__ float init() { return 0.0f; }
    static __device__ __forceinline__ float apply(float a, float b) { return a + b; }
};

template <typename T, int V> struct alignas(sizeof(T) * V) Vec { T v[V]; };

__device__ __forceinline__ int8_t requant(float q, float ratio) {
    float r = rintf(__fmul_rn(q, ratio));
    r = fminf(fmaxf(r, -128.0f), 127.0f);
    return static_cast<int8_t>(static_cast<int>(r));
}

template <typename T, int POOL> struct Store;  // PP: any parameter struct with requant and ratio
template <> struct Store<float, SPPQ_MAX> {
    template <class PP> static __device__ __forceinline__ float get(float a, int, const PP&) { return a; }
};
template <> struct Store<float, SPPQ_AVG> {
    template <class PP> static __device__ __forceinline__ float get(float a, int cnt, const PP&) { return a / static_cast<float>(cnt); }
};
template <> struct Store<__half, SPPQ_MAX> {
    template <class PP> static __device__ __forceinline__ __half get(float a, int, const PP&) { return __float2half_rn(a); }
};
template <> struct Store<__half, SPPQ_AVG> {
    template <class PP> static __device__ __forceinline__ __half get(float a, int cnt, const PP&) {
        return __float2half_rn(a / static_cast<float>(cnt));
    }
};
template <> struct Store<int8_t, SPPQ_MAX> {
    template <class PP> static __device__ __forceinline__ int8_t get(int a, int, const PP& p) {
        return p.requant ? requant(static_cast<float>(a), p.ratio) : static_cast<int8_t>(a);
    }
};
template <> struct Store<int8_t, SPPQ_AVG> {
    template <class PP> static __device__ __forceinline__ int8_t get(float a, int cnt, const PP& p) {
        return requant(a / static_cast<float>(cnt), p.requant ? p.ratio : 1.0f);
    }
};

// One thread owns V adjacent columns of one plane and walks a chunk of rows with U independent
// 16-byte loads in flight, reducing in registers and flushing one value per column at every
// row-segment boundary into the column buffer (native type for max, float sums for avg).
// Max keeps NaN (PTX max.NaN: a NaN operand wins), int8 max runs on sign-extended s16x2 pairs.
__device__ __forceinline__ float fmax_nan(float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
#else
    return (b > a || b != b) ? b : a;
#endif
}
__device__ __forceinline__ unsigned prmt(unsigned a, unsigned b, unsigned sel) {
    unsigned r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}
__device__ __forceinline__ unsigned vmax_s16x2(unsigned a, unsigned b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned r;
    asm("max.s16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return __vmaxs2(a, b);
#endif
}

// read-once input: streaming (evict-first) loads of the vector's width
template <int B> struct Word;
template <> struct Word<16> { using type = uint4; };
template <> struct Word<8> { using type = uint2; };
template <> struct Word<4> { using type = unsigned int; };
template <> struct Word<2> { using type = unsigned short; };
template <> struct Word<1> { using type = unsigned char; };

template <typename T, int V>
__device__ __forceinline__ Vec<T, V> ldg_stream(const T* p) {
    using Wd = typename Word<sizeof(T) * V>::type;
    union { Wd w; Vec<T, V> v; } u;
    u.w = __ldcs(reinterpret_cast<const Wd*>(p));
    return u.v;
}

// 16-byte asynchronous global -> shared copy (sm_80+; a plain copy through registers before).
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src) : "memory");
#else
    *reinterpret_cast<uint4*>(smem_dst) = __ldcs(reinterpret_cast<const uint4*>(gmem_src));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Wait until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// n / d for a divisor fixed per block when the quotient is < 2^22: a float reciprocal, then one
// correction step (the product's error is below one for such quotients, so q is off by at most
// one). Inline, ~7 instructions instead of the ~20 of a 32-bit integer division.
struct DivS {
    int d;
    float inv;
};
__device__ __forceinline__ DivS make_divs(int d) { return DivS{d, 1.0f / static_cast<float>(d > 0 ? d : 1)}; }
__device__ __forceinline__ int divs(int n, const DivS& s) {
    int q = __float2int_rz(__int2float_rn(n) * s.inv);
    const int r = n - q * s.d;
    q += r < 0 ? -1 : (r >= s.d ? 1 : 0);
    return q;
}

}  // namespace sppq

#endif  // SPPQUANT_KERNEL_COMMON_CUH
