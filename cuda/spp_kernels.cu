// sppquant: Spatial Pyramid Pooling forward kernels (see spp_kernels.h for the semantics).
//
// Structure (one launch, every input element read once for all levels):
//   The bins of all levels along an axis start and end on a small set of boundaries; the
//   gaps between consecutive boundaries are disjoint "segments" and every bin of every
//   level is a run of consecutive segments (bins may overlap each other, segments never
//   do). So per (n, c) plane:
//     step 1  column reduce: Cbuf[sy][x] = op over the rows of row-segment sy of in[y][x]
//             (coalesced, vectorised global loads, each element read exactly once);
//     step 2  Gbuf[sy][sx] = op over x in column-segment sx of Cbuf[sy][x] (shared memory);
//     step 3  each output bin = op over its block of Gbuf cells, written level-major.
//   The segment grid has at most (2*sum(n))^2 cells, far fewer than H*W for real SPP shapes.
//   A block handles P consecutive planes (small planes) and walks W in chunks when the
//   column buffer would not fit in shared memory (large W).
//
// Maps with H <= 16 and W <= 64 (SPP-net's 13x13) take spp_small_kernel instead: warp(s) per
// plane, the plane in shared memory after one flat load, separable bin reduction.
//
// The boundary tables are computed on the host per call (O(sum n)) and passed by value in
// the kernel parameters, so a launch needs no device allocation and is graph-capturable.

#include "spp_kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int kMaxSeg = 255;  // segments per axis (boundaries <= 256)
constexpr int kBlock = 256;

struct SppParams {
    long long nc;       // N * C planes
    int C, H, W;
    int nlev;
    int total_bins;     // sum n^2
    int sumn;           // sum n
    int sy, sx;         // segments along H and W
    int planes;         // planes per block
    int wc;             // chunk width along W (multiple of the vector width)
    int rows;           // rows per step-1 thread (row chunk); chunk starts are segment boundaries
    int nch;            // row chunks, ceil(H / rows)
    float ratio;        // int8: in_scale / out_scale
    int requant;        // int8: 0 = copy values
    unsigned char lev[SPPQ_MAX_LEVELS];
    unsigned short ybnd[kMaxSeg + 1];
    unsigned short xbnd[kMaxSeg + 1];
    unsigned char ylo[SPPQ_MAX_SUM_BINS], yhi[SPPQ_MAX_SUM_BINS];  // per (level, bin row): segment range
    unsigned char xlo[SPPQ_MAX_SUM_BINS], xhi[SPPQ_MAX_SUM_BINS];
    unsigned char cseg[kMaxSeg + 1];  // first row segment of each row chunk
};

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

// ---- step-1 strip accumulators -------------------------------------------------------------
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

// column-buffer element: the input type for max (exact), float sums for avg
template <typename T, int POOL> struct CBuf { using type = T; };
template <typename T> struct CBuf<T, SPPQ_AVG> { using type = float; };

__device__ __forceinline__ float cvt_cb(float v) { return v; }
__device__ __forceinline__ float cvt_cb(__half v) { return __half2float(v); }
__device__ __forceinline__ int cvt_cb(int8_t v) { return static_cast<int>(v); }

constexpr int kUnroll = 8;  // independent row loads in flight per thread (row chunks are multiples)
// avg keeps V float sums: 4 loads in flight for the wide vectors so nothing spills
template <int POOL, int V> struct Unroll { static constexpr int value = POOL != SPPQ_AVG ? kUnroll : (V > 8 ? 2 : (V > 4 ? 4 : kUnroll)); };

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

// ---- the kernel -----------------------------------------------------------------------------
template <typename T, int POOL, int V>
__global__ void __launch_bounds__(kBlock, 4) spp_forward_kernel(const T* __restrict__ in, T* __restrict__ out, const SppParams p) {
    using A = typename Acc<T, POOL>::type;
    using O = Op<POOL, A>;
    using CB = typename CBuf<T, POOL>::type;
    extern __shared__ __align__(16) unsigned char smem[];
    CB* cbuf = reinterpret_cast<CB*>(smem);                            // planes * sy * wc
    const size_t cb_bytes = (static_cast<size_t>(p.planes) * p.sy * p.wc * sizeof(CB) + 15) & ~static_cast<size_t>(15);
    A* gbuf = reinterpret_cast<A*>(smem + cb_bytes);                   // planes * sy * sx
    A* hbuf = gbuf + p.planes * p.sy * p.sx;                           // planes * sy * sumn
    unsigned short* ybnd = reinterpret_cast<unsigned short*>(hbuf + p.planes * p.sy * p.sumn);
    unsigned short* xbnd = ybnd + (p.sy + 1);
    unsigned char* ylo = reinterpret_cast<unsigned char*>(xbnd + (p.sx + 1));
    unsigned char* yhi = ylo + p.sumn;
    unsigned char* xlo = yhi + p.sumn;
    unsigned char* xhi = xlo + p.sumn;

    const int tid = threadIdx.x;
    for (int i = tid; i <= p.sy; i += blockDim.x) ybnd[i] = p.ybnd[i];
    for (int i = tid; i <= p.sx; i += blockDim.x) xbnd[i] = p.xbnd[i];
    for (int i = tid; i < p.sumn; i += blockDim.x) {
        ylo[i] = p.ylo[i]; yhi[i] = p.yhi[i]; xlo[i] = p.xlo[i]; xhi[i] = p.xhi[i];
    }
    __syncthreads();

    const long long p0 = static_cast<long long>(blockIdx.x) * p.planes;
    const int H = p.H, W = p.W;
    const size_t hw = static_cast<size_t>(H) * W;
    const int wcv = p.wc / V;
    const int per_plane = p.nch * wcv;
    const int items1 = p.planes * per_plane;
    const int items2 = p.planes * p.sy * p.sx;

    for (int cx0 = 0; cx0 < W; cx0 += p.wc) {
        // step 1: each thread walks rows [ch*R, ch*R+R) of V columns, U loads in flight,
        // flushing the column maxima (sums) at every row-segment boundary
        for (int it = tid; it < items1; it += blockDim.x) {
            const int pl = it / per_plane;
            const int r = it - pl * per_plane;
            const int ch = r / wcv;
            const int xv = r - ch * wcv;
            const int x = cx0 + xv * V;
            if (p0 + pl >= p.nc || x >= W) continue;
            const int ya = ch * p.rows, yb = min(H, ya + p.rows);
            int s = p.cseg[ch];
            int nb = ybnd[s + 1];
            CB* dst = cbuf + (static_cast<size_t>(pl) * p.sy + s) * p.wc + xv * V;
            const size_t sstride = static_cast<size_t>(p.wc);
            const T* src = in + static_cast<size_t>(p0 + pl) * hw + static_cast<size_t>(ya) * W + x;
            Strip<T, POOL, V> acc;
            acc.init();
            constexpr int U = Unroll<POOL, V>::value;
            for (int y = ya; y < yb; y += U) {
                Vec<T, V> buf[U];
#pragma unroll
                for (int u = 0; u < U; ++u)
                    if (y + u < yb) buf[u] = ldg_stream<T, V>(src + static_cast<size_t>(u) * W);
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    if (y + u < yb) {
                        acc.add(buf[u]);
                        if (y + u + 1 == nb) {  // end of a row segment (chunk ends are segment ends)
                            acc.store(dst);
                            acc.init();
                            dst += sstride;
                            ++s;
                            nb = s < p.sy ? ybnd[s + 1] : 0x7fffffff;
                        }
                    }
                }
                src += static_cast<size_t>(U) * W;
            }
        }
        __syncthreads();
        // step 2: row reduce over each column segment (accumulated over W chunks)
        const int cx1 = min(W, cx0 + p.wc);
        for (int it = tid; it < items2; it += blockDim.x) {
            const int pl = it / (p.sy * p.sx);
            const int r = it - pl * (p.sy * p.sx);
            const int sy = r / p.sx;
            const int sx = r - sy * p.sx;
            const int xa = max(static_cast<int>(xbnd[sx]), cx0), xb = min(static_cast<int>(xbnd[sx + 1]), cx1);
            A acc = cx0 == 0 ? O::init() : gbuf[it];
            const CB* row = cbuf + (static_cast<size_t>(pl) * p.sy + sy) * p.wc - cx0;
            for (int x = xa; x < xb; ++x) acc = O::apply(acc, cvt_cb(row[x]));
            gbuf[it] = acc;
        }
        __syncthreads();
    }

    // step 3a: per row segment, reduce the column segments of every x-bin of every level
    const int items3 = p.planes * p.sy * p.sumn;
    for (int it = tid; it < items3; it += blockDim.x) {
        const int pl = it / (p.sy * p.sumn);
        const int r = it - pl * (p.sy * p.sumn);
        const int sy = r / p.sumn;
        const int j = r - sy * p.sumn;
        const A* g = gbuf + (static_cast<size_t>(pl) * p.sy + sy) * p.sx;
        A acc = O::init();
        for (int sx = xlo[j]; sx < xhi[j]; ++sx) acc = O::apply(acc, g[sx]);
        hbuf[it] = acc;
    }
    __syncthreads();

    // step 3b: every bin of every level, written level-major / channel / bin row-major
    const long long per_image = static_cast<long long>(p.C) * p.total_bins;
    int base = 0;      // offset of this level in the per-axis bin tables
    int loff = 0;      // sum of n^2 of the previous levels
    for (int l = 0; l < p.nlev; ++l) {
        const int n = p.lev[l];
        const int nn = n * n;
        for (int it = tid; it < p.planes * nn; it += blockDim.x) {
            const int pl = it / nn;
            const int b = it - pl * nn;
            const long long plane = p0 + pl;
            if (plane >= p.nc) continue;
            const int by = b / n, bx = b - (b / n) * n;
            const int sy0 = ylo[base + by], sy1 = yhi[base + by];
            const A* h = hbuf + static_cast<size_t>(pl) * p.sy * p.sumn + base + bx;
            A acc = O::init();
            for (int sy = sy0; sy < sy1; ++sy) acc = O::apply(acc, h[sy * p.sumn]);
            const int cnt = (ybnd[sy1] - ybnd[sy0]) * (xbnd[xhi[base + bx]] - xbnd[xlo[base + bx]]);
            const long long img = plane / p.C;
            const long long c = plane - img * p.C;
            out[img * per_image + static_cast<long long>(p.C) * loff + c * nn + b] = Store<T, POOL>::get(acc, cnt, p);
        }
        base += n;
        loff += nn;
    }
}

// ---- small maps (H <= 16, W <= 64): one warp per plane, one block barrier --------------------
// The block loads its planes (contiguous in memory) as one flat span with 16-byte loads into
// shared memory, then each warp reduces its own plane separably: R[y][j] = op over the x of
// x-bin j (every level's bins) of row y, then every bin = op over its rows of R, written
// level-major. The two passes meet at __syncwarp (several planes per block, one warp each) or,
// for few planes (N*C < 8 per SM), at one more __syncthreads with 4 warps on the block's one plane.
struct SmallParams {
    long long nc;
    int C, H, W;
    int total_bins, sumn;
    int planes;  // planes per block
    int wpp;     // warps per plane (> 1 only with planes == 1)
    float ratio;
    int requant;
    unsigned char lev[SPPQ_MAX_LEVELS];
    unsigned char xs[SPPQ_MAX_SUM_BINS], xe[SPPQ_MAX_SUM_BINS];  // per (level, bin): [start, end) along W
    unsigned char ys[SPPQ_MAX_SUM_BINS], ye[SPPQ_MAX_SUM_BINS];  // along H
};
constexpr int kSmallMaxH = 16, kSmallMaxW = 64, kSmallMaxPlanes = 8;

template <typename T, int POOL>
__global__ void __launch_bounds__(32 * kSmallMaxPlanes) spp_small_kernel(const T* __restrict__ in, T* __restrict__ out,
    const SmallParams p) {
    using A = typename Acc<T, POOL>::type;
    using O = Op<POOL, A>;
    extern __shared__ __align__(16) unsigned char smem[];
    const int H = p.H, W = p.W, HW = H * W, sumn = p.sumn;
    A* rbuf = reinterpret_cast<A*>(smem);  // planes * H * sumn
    unsigned char* xs = reinterpret_cast<unsigned char*>(rbuf + p.planes * H * sumn);
    unsigned char* xe = xs + sumn;
    unsigned char* ys = xe + sumn;
    unsigned char* ye = ys + sumn;
    unsigned char* lev = ye + sumn;  // SPPQ_MAX_LEVELS entries
    const size_t tab_end = (static_cast<size_t>(lev + SPPQ_MAX_LEVELS - smem) + 15) & ~static_cast<size_t>(15);

    const int tid = threadIdx.x;
    const long long p0 = static_cast<long long>(blockIdx.x) * p.planes;
    const int np = static_cast<int>(min(static_cast<long long>(p.planes), p.nc - p0));
    const T* src = in + p0 * HW;
    const int pad = static_cast<int>(reinterpret_cast<uintptr_t>(src) & 15);
    // tile element e at smem byte tab_end + pad + e*sizeof(T): 16-aligned where the global address is
    T* tile = reinterpret_cast<T*>(smem + tab_end + pad);
    const int total = np * HW;
    const int head = min(total, ((16 - pad) & 15) / static_cast<int>(sizeof(T)));
    const int nw = static_cast<int>((static_cast<size_t>(total - head) * sizeof(T)) / 16);
    const int tail0 = head + nw * (16 / static_cast<int>(sizeof(T)));
    const uint4* gw = reinterpret_cast<const uint4*>(src + head);
    uint4* sw = reinterpret_cast<uint4*>(tile + head);
#pragma unroll 4
    for (int w = tid; w < nw; w += blockDim.x) sw[w] = __ldcs(gw + w);
    const int nscal = head + (total - tail0);
    for (int e = tid; e < nscal; e += blockDim.x) {
        const int k = e < head ? e : tail0 + (e - head);
        tile[k] = src[k];
    }
    for (int i = tid; i < sumn; i += blockDim.x) {
        xs[i] = p.xs[i]; xe[i] = p.xe[i]; ys[i] = p.ys[i]; ye[i] = p.ye[i];
    }
    if (tid < SPPQ_MAX_LEVELS) lev[tid] = p.lev[tid];
    __syncthreads();

    const int gsz = 32 * p.wpp;  // threads per plane
    const int pl = tid / gsz, lane = tid - pl * gsz;
    if (pl >= np) return;  // wpp > 1 only with one plane per block (np == 1): nobody leaves then
    const T* tp = tile + pl * HW;
    A* rp = rbuf + pl * H * sumn;
    const int items = H * sumn;
    for (int it = lane; it < items; it += gsz) {
        const int y = it / sumn;
        const int j = it - y * sumn;
        const T* row = tp + y * W;
        A acc = O::init();
        const int x1 = xe[j];
#pragma unroll 4
        for (int x = xs[j]; x < x1; ++x) acc = O::apply(acc, cvt(row[x]));
        rp[it] = acc;
    }
    if (p.wpp == 1) __syncwarp(); else __syncthreads();
    const long long plane = p0 + pl;
    const long long img = plane / p.C;
    const long long c = plane - img * p.C;
    T* ob = out + img * (static_cast<long long>(p.C) * p.total_bins);
    for (int it = lane; it < p.total_bins; it += gsz) {
        int b = it, base = 0, loff = 0, l = 0;
        int n = lev[0], nn = n * n;
        while (b >= nn) { b -= nn; base += n; loff += nn; ++l; n = lev[l]; nn = n * n; }
        const int by = b / n, bx = b - by * n;
        const int jy = base + by, jx = base + bx;
        const int y0 = ys[jy], y1 = ye[jy];
        A acc = O::init();
#pragma unroll 4
        for (int y = y0; y < y1; ++y) acc = O::apply(acc, rp[y * sumn + jx]);
        const int cnt = (y1 - y0) * (xe[jx] - xs[jx]);
        ob[static_cast<long long>(p.C) * loff + c * nn + b] = Store<T, POOL>::get(acc, cnt, p);
    }
}

__global__ void sppq_empty_kernel() {}

thread_local int g_last_cuda_error = 0;

// Sorted, de-duplicated bin boundaries of one axis and each bin's segment range.
// step > 0: also a boundary at every multiple of step (row chunks of the step-1 threads); at
// most kMaxSeg + 1 boundaries in all, else false.
bool plan_axis(int a, const int* levels, int nlev, unsigned short* bnd, int* nseg, unsigned char* lo,
    unsigned char* hi, int step = 0) {
    int vals[2 * SPPQ_MAX_SUM_BINS + 2 * (kMaxSeg + 1) + 2];
    int nv = 0;
    for (int l = 0; l < nlev; ++l) {
        const long long n = levels[l];
        for (long long i = 0; i < n; ++i) {
            vals[nv++] = static_cast<int>((i * a) / n);
            vals[nv++] = static_cast<int>(((i + 1) * a + n - 1) / n);
        }
    }
    if (step > 0) {
        if ((a + step - 1) / step > kMaxSeg + 1) return false;
        for (int y = step; y < a; y += step) vals[nv++] = y;
    }
    std::sort(vals, vals + nv);
    nv = static_cast<int>(std::unique(vals, vals + nv) - vals);
    if (nv - 1 > kMaxSeg) return false;
    for (int i = 0; i < nv; ++i) bnd[i] = static_cast<unsigned short>(vals[i]);
    *nseg = nv - 1;
    int k = 0;
    for (int l = 0; l < nlev; ++l) {
        const long long n = levels[l];
        for (long long i = 0; i < n; ++i, ++k) {
            const int s = static_cast<int>((i * a) / n);
            const int e = static_cast<int>(((i + 1) * a + n - 1) / n);
            lo[k] = static_cast<unsigned char>(std::lower_bound(vals, vals + nv, s) - vals);
            hi[k] = static_cast<unsigned char>(std::lower_bound(vals, vals + nv, e) - vals);
        }
    }
    return true;
}

struct DeviceInfo {
    int sms = 0;
    int smem_optin = 48 * 1024;
};

DeviceInfo device_info(int* err) {
    static thread_local int cached_dev = -1;
    static thread_local DeviceInfo cached;
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) { *err = e; return cached; }
    if (dev != cached_dev) {
        DeviceInfo d;
        e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev);
        if (e == cudaSuccess) e = cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        if (e != cudaSuccess) { *err = e; return cached; }
        cached = d;
        cached_dev = dev;
    }
    *err = 0;
    return cached;
}

template <typename T, int POOL, int V>
int launch_v(const void* in, void* out, const SppParams& p, size_t smem, int grid, int threads, cudaStream_t s) {
    auto kern = spp_forward_kernel<T, POOL, V>;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (e != cudaSuccess) { g_last_cuda_error = e; return SPPQ_ERR_CUDA; }
    }
    kern<<<grid, threads, smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) { g_last_cuda_error = e; return SPPQ_ERR_CUDA; }
    return SPPQ_OK;
}

template <typename T, int POOL>
int launch_small(const void* in, void* out, const SmallParams& p, size_t smem, int grid, cudaStream_t s) {
    spp_small_kernel<T, POOL><<<grid, 32 * p.planes * p.wpp, smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) { g_last_cuda_error = e; return SPPQ_ERR_CUDA; }
    return SPPQ_OK;
}

template <typename T, int POOL>
int launch_t(const void* in, void* out, const SppParams& p, int vec, size_t smem, int grid, int threads, cudaStream_t s) {
    constexpr int kMaxV = 16 / static_cast<int>(sizeof(T));
    switch (vec) {
    case 1: return launch_v<T, POOL, 1>(in, out, p, smem, grid, threads, s);
    case 2: return launch_v<T, POOL, 2>(in, out, p, smem, grid, threads, s);
    case 4: return launch_v<T, POOL, (kMaxV >= 4 ? 4 : 1)>(in, out, p, smem, grid, threads, s);
    case 8: return launch_v<T, POOL, (kMaxV >= 8 ? 8 : 1)>(in, out, p, smem, grid, threads, s);
    case 16: return launch_v<T, POOL, (kMaxV >= 16 ? 16 : 1)>(in, out, p, smem, grid, threads, s);
    default: return SPPQ_ERR_UNSUPPORTED;
    }
}

}  // namespace

extern "C" {

long long sppq_spp_output_width(int C, const int* levels, int num_levels) {
    if (C <= 0 || levels == nullptr || num_levels < 1 || num_levels > SPPQ_MAX_LEVELS) return -1;
    long long s = 0;
    for (int i = 0; i < num_levels; ++i) {
        if (levels[i] < 1 || levels[i] > SPPQ_MAX_LEVEL_BINS) return -1;
        s += static_cast<long long>(levels[i]) * levels[i];
    }
    return s * C;
}

int sppq_spp_validate(int dtype, int pooling, int N, int C, int H, int W, const int* levels, int num_levels,
    float in_scale, float out_scale) {
    if (levels == nullptr) return SPPQ_ERR_NULL_POINTER;
    if (dtype < SPPQ_FLOAT32 || dtype > SPPQ_INT8) return SPPQ_ERR_DTYPE;
    if (pooling != SPPQ_MAX && pooling != SPPQ_AVG) return SPPQ_ERR_POOLING;
    if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || H > SPPQ_MAX_DIM || W > SPPQ_MAX_DIM) return SPPQ_ERR_SHAPE;
    if (num_levels < 1 || num_levels > SPPQ_MAX_LEVELS) return SPPQ_ERR_LEVELS;
    int sumn = 0;
    for (int i = 0; i < num_levels; ++i) {
        if (levels[i] < 1 || levels[i] > SPPQ_MAX_LEVEL_BINS) return SPPQ_ERR_LEVELS;
        sumn += levels[i];
    }
    if (sumn > SPPQ_MAX_SUM_BINS) return SPPQ_ERR_LEVELS;
    const long long nc = static_cast<long long>(N) * C;
    const long long width = sppq_spp_output_width(C, levels, num_levels);
    // grid.x limit and 64-bit element counts
    if (nc > (1LL << 40) || static_cast<double>(N) * width > 9.0e18) return SPPQ_ERR_SHAPE;
    if (dtype == SPPQ_INT8) {
        if (!(std::isfinite(in_scale) && in_scale > 0.0f && std::isfinite(out_scale) && out_scale > 0.0f))
            return SPPQ_ERR_SCALE;
    }
    return SPPQ_OK;
}

int sppq_spp_forward(const void* in, void* out, int dtype, int pooling, int N, int C, int H, int W,
    const int* levels, int num_levels, float in_scale, float out_scale, cudaStream_t stream) {
    if (in == nullptr || out == nullptr) return SPPQ_ERR_NULL_POINTER;
    int st = sppq_spp_validate(dtype, pooling, N, C, H, W, levels, num_levels, in_scale, out_scale);
    if (st != SPPQ_OK) return st;

    SppParams p;
    std::memset(&p, 0, sizeof(p));
    p.nc = static_cast<long long>(N) * C;
    p.C = C; p.H = H; p.W = W;
    p.nlev = num_levels;
    for (int i = 0; i < num_levels; ++i) {
        p.lev[i] = static_cast<unsigned char>(levels[i]);
        p.total_bins += levels[i] * levels[i];
        p.sumn += levels[i];
    }
    if (!plan_axis(W, levels, num_levels, p.xbnd, &p.sx, p.xlo, p.xhi)) return SPPQ_ERR_UNSUPPORTED;
    if (dtype == SPPQ_INT8) {
        p.requant = std::memcmp(&in_scale, &out_scale, sizeof(float)) != 0;
        p.ratio = in_scale / out_scale;
    } else {
        p.ratio = 1.0f;
    }

    int err = 0;
    const DeviceInfo dev = device_info(&err);
    if (err != 0) { g_last_cuda_error = err; return SPPQ_ERR_CUDA; }
    const size_t esize = dtype == SPPQ_FLOAT32 ? 4 : (dtype == SPPQ_FLOAT16 ? 2 : 1);
    auto knob = [](const char* name, long long dflt) {  // tuning experiments only
        const char* e = std::getenv(name);
        return e ? std::atoll(e) : dflt;
    };
    static const bool small_on = knob("SPPQ_SMALL", 1) != 0;

    // Small maps: one warp per plane (spp_small_kernel).
    if (small_on && H <= kSmallMaxH && W <= kSmallMaxW) {
        SmallParams sp;
        std::memset(&sp, 0, sizeof(sp));
        sp.nc = p.nc; sp.C = C; sp.H = H; sp.W = W;
        sp.total_bins = p.total_bins; sp.sumn = p.sumn;
        sp.ratio = p.ratio; sp.requant = p.requant;
        for (int l = 0, j = 0; l < num_levels; ++l) {
            const int n = levels[l];
            sp.lev[l] = static_cast<unsigned char>(n);
            for (int i = 0; i < n; ++i, ++j) {
                sp.xs[j] = static_cast<unsigned char>((i * W) / n);
                sp.xe[j] = static_cast<unsigned char>(((i + 1) * W + n - 1) / n);
                sp.ys[j] = static_cast<unsigned char>((i * H) / n);
                sp.ye[j] = static_cast<unsigned char>(((i + 1) * H + n - 1) / n);
            }
        }
        const size_t acc = 4;
        auto small_smem = [&](long long pl) {
            const size_t r = static_cast<size_t>(pl) * H * p.sumn * acc + 4 * p.sumn + SPPQ_MAX_LEVELS;
            return ((r + 15) & ~static_cast<size_t>(15)) + static_cast<size_t>(pl) * H * W * esize + 16;
        };
        long long planes = std::min<long long>(kSmallMaxPlanes, std::max<long long>(1, p.nc / (4LL * std::max(1, dev.sms))));
        while (planes > 1 && small_smem(planes) > 48 * 1024) --planes;
        sp.planes = static_cast<int>(planes);
        static const long long wpp_knob = knob("SPPQ_SMALL_WPP", 4);
        sp.wpp = planes == 1 ? static_cast<int>(std::min<long long>(8, std::max<long long>(1, wpp_knob))) : 1;
        const long long grid = (p.nc + planes - 1) / planes;
        if (grid > 0x7fffffffLL) return SPPQ_ERR_SHAPE;
        const size_t smem = small_smem(planes);
        const int g = static_cast<int>(grid);
        if (dtype == SPPQ_FLOAT32)
            return pooling == SPPQ_MAX ? launch_small<float, SPPQ_MAX>(in, out, sp, smem, g, stream)
                                       : launch_small<float, SPPQ_AVG>(in, out, sp, smem, g, stream);
        if (dtype == SPPQ_FLOAT16)
            return pooling == SPPQ_MAX ? launch_small<__half, SPPQ_MAX>(in, out, sp, smem, g, stream)
                                       : launch_small<__half, SPPQ_AVG>(in, out, sp, smem, g, stream);
        return pooling == SPPQ_MAX ? launch_small<int8_t, SPPQ_MAX>(in, out, sp, smem, g, stream)
                                   : launch_small<int8_t, SPPQ_AVG>(in, out, sp, smem, g, stream);
    }

    const uintptr_t addr = reinterpret_cast<uintptr_t>(in);
    // widest vector load that every row start allows
    int vec = static_cast<int>(16 / esize);
    while (vec > 1 && ((W % vec) != 0 || (addr % (vec * esize)) != 0)) vec /= 2;
    const long long wvec = (W + vec - 1) / vec;

    // Row chunks: a step-1 thread walks `rows` rows of V columns. Enough chunks that the
    // whole launch has about 2048 threads per SM (so ~16-32 loads of 16 bytes in flight per
    // SM scheduler), chunk length a multiple of the unroll; chunk starts become segment bounds.
    static const long long threads_per_sm = [] {
        const char* e = std::getenv("SPPQ_THREADS_PER_SM");  // tuning experiments only
        const long long v = e ? std::atoll(e) : 0;
        return v > 0 ? v : 2048LL;
    }();
    const long long want = threads_per_sm * std::max(1, dev.sms);
    const long long strips = p.nc * wvec;
    int rows = H;
    if (strips < want && H > kUnroll) {
        long long nch = std::min<long long>(H, (want + strips - 1) / strips);
        // keep one plane's step-1 items within one block pass (no thread walks two strips)
        nch = std::max<long long>(1, std::min<long long>(nch, kBlock / std::max<long long>(1, wvec)));
        rows = static_cast<int>((H + nch - 1) / nch);
        rows = std::max(kUnroll, (rows + kUnroll - 1) / kUnroll * kUnroll);
    }
    const size_t acc = 4;  // float or int accumulators
    const size_t cbsize = pooling == SPPQ_MAX ? esize : 4;  // column buffer: input type (max) or float (avg)
    const size_t tables = 2 * (kMaxSeg + 1) * sizeof(unsigned short) + 4 * SPPQ_MAX_SUM_BINS + 16 + 16;
    // shared memory besides the column buffer: segment grid G and the per-x-bin buffer H
    auto grid_bytes = [&](long long pl) { return static_cast<size_t>(pl) * p.sy * (p.sx + p.sumn) * acc; };
    auto cb_bytes = [&](long long pl, long long w) { return static_cast<size_t>(pl) * p.sy * w * cbsize; };
    const size_t optin = static_cast<size_t>(std::max(dev.smem_optin, 48 * 1024));
    // more segments than the tables or shared memory allow: longer chunks (rows == H adds no
    // boundary, the plan of the previous versions)
    for (;;) {
        const bool ok = plan_axis(H, levels, num_levels, p.ybnd, &p.sy, p.ylo, p.yhi, rows < H ? rows : 0);
        if (ok && (rows >= H || grid_bytes(1) + tables + cb_bytes(1, vec) <= optin)) break;
        if (rows >= H) return SPPQ_ERR_UNSUPPORTED;
        rows = std::min(H, rows * 2);
    }
    p.rows = rows;
    p.nch = (H + rows - 1) / rows;
    for (int c = 0, sgi = 0; c < p.nch; ++c) {
        while (p.ybnd[sgi] < c * rows) ++sgi;
        p.cseg[c] = static_cast<unsigned char>(sgi);
    }

    size_t budget = 48 * 1024;
    if (grid_bytes(1) + tables + cb_bytes(1, vec) > budget) {
        budget = static_cast<size_t>(dev.smem_optin);
        if (grid_bytes(1) + tables + cb_bytes(1, vec) > budget) return SPPQ_ERR_UNSUPPORTED;
    }
    // Planes per block: one step-1 item per thread of a 256-thread block (full width W).
    long long planes = std::max<long long>(1, kBlock / std::max<long long>(1, p.nch * wvec));
    planes = std::min<long long>(planes, 256);
    // few planes (small N*C): one plane per block beats fewer, longer blocks on latency
    planes = std::min<long long>(planes, std::max<long long>(1, p.nc / (8LL * std::max(1, dev.sms))));
    while (planes > 1 && grid_bytes(planes) + tables + cb_bytes(planes, std::min<long long>(wvec * vec, 64)) > budget) planes /= 2;
    const size_t room = budget - tables - grid_bytes(planes);
    long long wc = static_cast<long long>(room / (static_cast<size_t>(planes) * p.sy * cbsize));
    wc = std::min<long long>(wc, wvec * vec);
    wc = (wc / vec) * vec;
    if (wc < vec) return SPPQ_ERR_UNSUPPORTED;
    p.planes = static_cast<int>(planes);
    p.wc = static_cast<int>(wc);
    const size_t smem = ((cb_bytes(planes, wc) + 15) & ~static_cast<size_t>(15)) + grid_bytes(planes) + tables;

    const long long grid = (p.nc + planes - 1) / planes;
    if (grid > 0x7fffffffLL) return SPPQ_ERR_SHAPE;
    const long long work = std::max(std::max<long long>(planes * p.nch * (wc / vec), planes * p.sy * p.sumn),
        std::max<long long>(planes * p.total_bins, planes * p.sy * p.sx));
    const int threads = static_cast<int>(std::min<long long>(kBlock, std::max<long long>(32, (work + 31) / 32 * 32)));

    const int g = static_cast<int>(grid);
    if (dtype == SPPQ_FLOAT32)
        return pooling == SPPQ_MAX ? launch_t<float, SPPQ_MAX>(in, out, p, vec, smem, g, threads, stream)
                                   : launch_t<float, SPPQ_AVG>(in, out, p, vec, smem, g, threads, stream);
    if (dtype == SPPQ_FLOAT16)
        return pooling == SPPQ_MAX ? launch_t<__half, SPPQ_MAX>(in, out, p, vec, smem, g, threads, stream)
                                   : launch_t<__half, SPPQ_AVG>(in, out, p, vec, smem, g, threads, stream);
    return pooling == SPPQ_MAX ? launch_t<int8_t, SPPQ_MAX>(in, out, p, vec, smem, g, threads, stream)
                               : launch_t<int8_t, SPPQ_AVG>(in, out, p, vec, smem, g, threads, stream);
}

const char* sppq_error_string(int status) {
    switch (status) {
    case SPPQ_OK: return "success";
    case SPPQ_ERR_NULL_POINTER: return "null pointer argument (input, output or levels)";
    case SPPQ_ERR_DTYPE: return "unsupported dtype (expected 0 float32, 1 float16, 2 int8)";
    case SPPQ_ERR_POOLING: return "unsupported pooling (expected 0 max, 1 avg)";
    case SPPQ_ERR_SHAPE: return "invalid shape (N, C, H, W must be positive, H and W at most 65535)";
    case SPPQ_ERR_LEVELS: return "invalid levels (1..16 levels, each 1..64, sum at most 128)";
    case SPPQ_ERR_SCALE: return "invalid int8 scale (must be finite and positive)";
    case SPPQ_ERR_UNSUPPORTED: return "pooling grid of this shape does not fit in shared memory";
    case SPPQ_ERR_CUDA: return "CUDA error (see sppq_last_cuda_error)";
    default: return "unknown sppquant status";
    }
}

int sppq_last_cuda_error(void) { return g_last_cuda_error; }

int sppq_empty_launch(cudaStream_t stream) {
    sppq_empty_kernel<<<1, 32, 0, stream>>>();
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) { g_last_cuda_error = e; return SPPQ_ERR_CUDA; }
    return SPPQ_OK;
}

int sppq_api_version(void) { return 1; }

}  // extern "C"
