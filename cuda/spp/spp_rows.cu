// sppquant: the rows kernel (v9, issue 15): whole-map max SPP on maps whose row fits one warp
// (W / V <= 32 lanes of V-element vectors), e.g. 20x20 .. 64x64, with no block barrier.
//
// Why: the segment kernel spends its time in per-block serial steps between barriers (shared-memory
// segment grid, run-time divisions per item) while its loads idle (NOTES.md, v3/v4 ncu). Here a warp
// owns G = 32 / (W / V) whole planes and works alone:
//   rows   lane (g, vc) walks all H rows of columns [vc*V, vc*V + V) of plane g with kRowsUnroll
//          (or more, for narrow vectors) independent vector loads in flight, reducing in registers
//          (packed half2 / s16x2 maxima as the segment kernel's strips) and flushing its V column
//          maxima at each row-segment end into CM[g][segment][x] (shared memory, input type);
//   bins   levels by decreasing n: a root level's bin = max over its segments x columns of CM, a
//          derived level's bin = max over k x k bins of the nearest finer level it divides (RB),
//          stored with consecutive lanes on consecutive output elements of a level.
// Other warps' loads stay in flight while one warp runs its bin phase.
#include "spp_rows.h"

#include "cuda_check.h"
#include "kernel_common.cuh"
#include "spp_strip.cuh"

#include <cuda_fp16.h>

#include <cstdint>

namespace sppq {
namespace {

__device__ __forceinline__ float rmax(float a, float b) { return fmax_nan(a, b); }
__device__ __forceinline__ int rmax(int a, int b) { return max(a, b); }

template <typename T, int V>
__global__ void __launch_bounds__(32 * kRowsWarps, kRowsBlocksPerSm) spp_rows_kernel(const T* __restrict__ in,
    T* __restrict__ out, const RowsParams p) {
    using A = typename Acc<T, SPPQ_MAX>::type;
    using O = Op<SPPQ_MAX, A>;
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
    const long long grp = static_cast<long long>(blockIdx.x) * kRowsWarps + wib;
    if (grp >= p.groups) return;  // the whole warp: no barrier follows
    unsigned char* wb = smem + static_cast<size_t>(wib) * p.warp_bytes;
    T* cm = reinterpret_cast<T*>(wb);
    A* rb = reinterpret_cast<A*>(wb + p.cm_bytes);
    unsigned* tab = reinterpret_cast<unsigned*>(rb + p.G * p.total_bins);
    const long long plane0 = grp * p.G;
    const int np = static_cast<int>(min(static_cast<long long>(p.G), p.nc - plane0));
    const int H = p.H, W = p.W, sy = p.sy;

    // rows: this lane's chunk of rows of its V columns, U loads in flight, a flush per row segment
    const int lpp = p.vpr * p.rc;
    const int g = lane / lpp, rem = lane - g * lpp;
    const int ch = rem / p.vpr, vc = rem - ch * p.vpr;
    const int y0 = ch * p.rows, y1 = min(H, y0 + p.rows);
    if (g < np && y0 < H) {
        constexpr int B = static_cast<int>(sizeof(T)) * V;
        constexpr int U = B >= 16 ? kRowsUnroll : (B >= 8 && sizeof(T) == 1 ? 12 : 2 * kRowsUnroll);  // int8 x 8: 16 spilled
        const int cw = p.cw;
        const T* src = in + static_cast<size_t>(plane0 + g) * p.HW + static_cast<size_t>(y0) * W + vc * V;
        int s = p.cseg[ch];
        T* dst = cm + (g * sy + s) * cw + vc * V;
        Strip<T, SPPQ_MAX, V> acc;
        acc.init();
        int nb = p.yend[s];
        for (int y = y0; y < y1; y += U) {
            Vec<T, V> buf[U];
#pragma unroll
            for (int u = 0; u < U; ++u)
                if (y + u < y1) buf[u] = ldg_stream<T, V>(src + static_cast<size_t>(u) * W);
#pragma unroll
            for (int u = 0; u < U; ++u) {
                if (y + u < y1) {
                    acc.add(buf[u]);
                    if (y + u + 1 == nb) {  // a segment ends (chunk ends are segment ends)
                        Vec<T, V> o;
                        acc.store(o.v);
                        if constexpr (B % 4 == 0) {  // CM rows are 4-byte aligned (odd word count), not 16
#pragma unroll
                            for (int k = 0; k < B / 4; ++k) reinterpret_cast<unsigned*>(dst)[k] = reinterpret_cast<const unsigned*>(&o)[k];
                        } else {
#pragma unroll
                            for (int k = 0; k < V; ++k) dst[k] = o.v[k];
                        }
                        acc.init();
                        dst += cw;
                        ++s;
                        nb = s < sy ? p.yend[s] : 0x7fffffff;
                    }
                }
            }
            src += static_cast<size_t>(U) * W;
        }
    }
    for (int i = lane; i < p.sumn; i += 32) tab[i] = p.tab[i];
    __syncwarp();

    // bins: levels by decreasing n, each from CM (roots) or from its source level's bins in RB
    const long long img0 = plane0 / p.C;
    const int c0 = static_cast<int>(plane0 - img0 * p.C);
    const int TB = p.total_bins;
    for (int r = 0; r < p.nlev; ++r) {
        const int l = p.order[r];
        const int n = p.lev[l], nn = n * n, base = p.base[l], off = p.off[l], sl = p.src[l];
        const DivS dnn = make_divs(nn), dn = make_divs(n);
        const long long lbase = static_cast<long long>(p.C) * off;
        const int items = np * nn;
        for (int it = lane; it < items; it += 32) {
            const int gi = divs(it, dnn);
            const int b = it - gi * nn;
            const int by = divs(b, dn);
            const int bx = b - by * n;
            A acc = O::init();
            if (sl == kRowsNoSrc) {
                const unsigned ty = tab[base + by], tx = tab[base + bx];
                const int s0 = ty & 255, s1 = (ty >> 8) & 255, x0 = (tx >> 16) & 255, x1 = tx >> 24;
                const T* row = cm + (gi * sy + s0) * p.cw;
                for (int s = s0; s < s1; ++s, row += p.cw) {
#pragma unroll 4
                    for (int x = x0; x < x1; ++x) acc = rmax(acc, cvt(row[x]));
                }
            } else {
                const int m = p.lev[sl], k = p.k[l];
                const A* q = rb + gi * TB + p.off[sl] + k * by * m + k * bx;
                for (int u = 0; u < k; ++u, q += m) {
#pragma unroll 4
                    for (int w = 0; w < k; ++w) acc = rmax(acc, q[w]);
                }
            }
            rb[gi * TB + off + b] = acc;
            int c = c0 + gi;
            long long img = img0;
            while (c >= p.C) { c -= p.C; ++img; }
            out[img * p.C * TB + lbase + static_cast<long long>(c) * nn + b] = Store<T, SPPQ_MAX>::get(acc, 0, p);
        }
        __syncwarp();  // this level's RB slots are read by the levels derived from it
    }
}

template <typename T, int V>
int launch_v(const void* in, void* out, const SppLaunch& l, cudaStream_t s) {
    auto kern = spp_rows_kernel<T, V>;
    if (l.smem > 48 * 1024)
        SPPQ_CUDA_RETURN(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(l.smem)));
    kern<<<l.grid, l.threads, l.smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), l.rows);
    return SPPQ_LAUNCH_STATUS();
}

template <typename T>
int launch_t(const void* in, void* out, const SppLaunch& l, cudaStream_t s) {
    constexpr int kMaxV = 16 / static_cast<int>(sizeof(T));
    switch (l.vec) {
    case 1: return launch_v<T, 1>(in, out, l, s);
    case 2: return launch_v<T, 2>(in, out, l, s);
    case 4: return launch_v<T, 4>(in, out, l, s);
    case 8: return launch_v<T, (kMaxV >= 8 ? 8 : 4)>(in, out, l, s);
    case 16: return launch_v<T, (kMaxV >= 16 ? 16 : 4)>(in, out, l, s);
    default: return SPPQ_ERR_UNSUPPORTED;
    }
}

}  // namespace

int launch_rows(const void* in, void* out, int dtype, const SppLaunch& l, cudaStream_t s) {
    if (dtype == SPPQ_FLOAT32) return launch_t<float>(in, out, l, s);
    if (dtype == SPPQ_FLOAT16) return launch_t<__half>(in, out, l, s);
    return launch_t<int8_t>(in, out, l, s);
}

}  // namespace sppq
