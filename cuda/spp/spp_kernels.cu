// sppquant: whole-map Spatial Pyramid Pooling forward kernels (semantics: spp_kernels.h).
//
// Six kernels, chosen per call by plan_spp() (spp_plan.cpp; one launch each, every input
// element read once for all levels, tables passed by value so launches are graph-capturable):
//
// rows (v9, max pooling on maps whose row fits one warp, 20x20 .. 64x64): in spp_rows.cu.
// fixed (v7, max pooling on the tiny-map shapes SPP networks run, spp_fixed.h): the lane layout
//   with H, W and the levels as template parameters, so each lane reduces its plane in
//   registers with compile-time indices (spp_fixed_kernel below); int8 (v9) as packed pairs of
//   bins, two per max.s16x2, the plane read as 32-bit words (fixed_rows_i8 / fixed_finish_i8).
// lane (v6, max pooling on tiny maps of very many planes): one lane per plane, 32 planes per warp,
//   warp-uniform loops and tables, coalesced stores (see spp_lane_kernel below).
// stream (v5, max pooling): a persistent grid of independent warps. A warp's work is a sequence
//   of spans: whole planes (small maps, ~4 KB of planes per span) or row chunks of one plane
//   (large maps). The next span is copied into the warp's second shared-memory tile with
//   cp.async while the current one is reduced, so loads stay in flight without block barriers:
//     pass 1  Cb[i][x] = max over the rows of root bin row i of column x (lanes along x);
//     pass 2  every root bin = max over its columns of Cb (written out, kept in RB);
//     pass 3  levels dividing a root: max over k x k root bins of RB.
// segment (v3): column strips reduced into a grid of disjoint segments (any H, W, avg too).
//   The bins of all levels along an axis start and end on a small set of boundaries; the
//   gaps between consecutive boundaries are disjoint "segments" and every bin of every
//   level is a run of consecutive segments. Per (n, c) plane:
//     step 1  column reduce: Cbuf[sy][x] = op over the rows of row-segment sy of in[y][x];
//     step 2  Gbuf[sy][sx] = op over x in column-segment sx of Cbuf[sy][x] (shared memory);
//     step 3  each output bin = op over its block of Gbuf cells, written level-major.
// small (v4, avg pooling on H <= 16, W <= 64): warp(s) per plane, plane in shared memory.

#include "spp_kernels.h"

#include "cuda_check.h"
#include "device_info.h"
#include "kernel_common.cuh"
#include "spp_fixed.h"
#include "spp_plan.h"
#include "spp_rows.h"
#include "spp_strip.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace sppq {
namespace {

// column-buffer element: the input type for max (exact), float sums for avg
template <typename T, int POOL> struct CBuf { using type = T; };
template <typename T> struct CBuf<T, SPPQ_AVG> { using type = float; };

__device__ __forceinline__ float cvt_cb(float v) { return v; }
__device__ __forceinline__ float cvt_cb(__half v) { return __half2float(v); }
__device__ __forceinline__ int cvt_cb(int8_t v) { return static_cast<int>(v); }

// avg keeps V float sums: 4 loads in flight for the wide vectors so nothing spills
template <int POOL, int V> struct Unroll { static constexpr int value = POOL != SPPQ_AVG ? kSegUnroll : (V > 8 ? 2 : (V > 4 ? 4 : kSegUnroll)); };

// ---- the kernel -----------------------------------------------------------------------------
template <typename T, int POOL, int V>
__global__ void __launch_bounds__(kSegBlock, 4) spp_forward_kernel(const T* __restrict__ in, T* __restrict__ out, const SppParams p) {
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

// ---- stream kernel (v5, max) --------------------------------------------------------------------
__device__ __forceinline__ float from_acc(float a, float*) { return a; }
__device__ __forceinline__ __half from_acc(float a, __half*) { return __float2half_rn(a); }  // exact: a is a half
__device__ __forceinline__ int8_t from_acc(int a, int8_t*) { return static_cast<int8_t>(a); }

struct Span {
    long long plane0;  // first plane
    int np;            // planes (row mode: 1)
    int row0, nrows;   // rows of each plane in the span (small mode: 0, H)
    bool last;         // the span completes its planes: passes 2 and 3 run
};

__device__ __forceinline__ Span make_span(const StreamParams& p, long long unit, int chunk) {
    Span s;
    s.plane0 = unit * p.planes;
    s.np = static_cast<int>(min(static_cast<long long>(p.planes), p.nc - s.plane0));
    s.row0 = chunk * p.rows;
    s.nrows = min(p.rows, p.H - s.row0);
    s.last = chunk == p.chunks - 1;
    return s;
}

// Starts copying `count` elements from element e0 into `buf`, rounded out to whole 16-byte words:
// words wholly inside the tensor by cp.async (one commit group per call), the partial first /
// last word of the tensor element by element. Returns where element e0 will be in `buf`.
template <typename T>
__device__ T* issue_elems(const T* in, long long total, long long e0, long long count, unsigned char* buf, int lane) {
    const uintptr_t gb = reinterpret_cast<uintptr_t>(in + e0), ge = reinterpret_cast<uintptr_t>(in + e0 + count);
    const uintptr_t tb = reinterpret_cast<uintptr_t>(in), te = reinterpret_cast<uintptr_t>(in + total);
    const uintptr_t w0 = gb & ~static_cast<uintptr_t>(15), w1 = (ge + 15) & ~static_cast<uintptr_t>(15);
    const int nwords = static_cast<int>((w1 - w0) >> 4);
#pragma unroll 4
    for (int w = lane; w < nwords; w += 32) {
        const uintptr_t wa = w0 + (static_cast<uintptr_t>(w) << 4);
        unsigned char* dst = buf + (w << 4);
        if (wa >= tb && wa + 16 <= te) {
            cp_async16(dst, reinterpret_cast<const void*>(wa));
        } else {  // a tensor end inside this word: only the tensor's elements
            for (uintptr_t a = max(wa, tb); a < min(wa + 16, te); a += sizeof(T))
                *reinterpret_cast<T*>(dst + (a - wa)) = *reinterpret_cast<const T*>(a);
        }
    }
    cp_async_commit();
    return reinterpret_cast<T*>(buf + (gb - w0));
}

template <typename T>
__device__ T* issue_span(const T* in, long long total, const Span& s, const StreamParams& p, unsigned char* buf,
    int lane) {
    const long long e0 = (s.plane0 * p.H + s.row0) * p.W;
    const long long count = static_cast<long long>(s.np) * s.nrows * p.W;
    return issue_elems(in, total, e0, count, buf, lane);
}

__device__ __forceinline__ unsigned fdiv(unsigned n, const FastDiv& d) {
    return d.one ? n : (__umulhi(n, d.mul) >> d.shift);
}

// Pass 1: Cb[lp][i][x] = max over the span's rows of root bin row i of column x. Consecutive
// lanes take consecutive x (conflict-free shared-memory reads); in row mode a bin row spanning
// several chunks accumulates (its first chunk starts it).
template <typename T>
__device__ void column_pass(const T* tile, T* cb, const Span& s, const StreamParams& p, const unsigned short* ys,
    const unsigned short* ye, int lane) {
    using A = typename Acc<T, SPPQ_MAX>::type;
    using O = Op<SPPQ_MAX, A>;
    const int W = p.W, S = p.sr;
    const int items = s.np * S * W;
    const int r0 = s.row0, r1 = s.row0 + s.nrows;
    for (int it = lane; it < items; it += 32) {
        const unsigned q = fdiv(static_cast<unsigned>(it), p.div_w);
        const int x = it - static_cast<int>(q) * W;
        const unsigned lp = fdiv(q, p.div_sr);
        const int i = static_cast<int>(q - lp * S);
        const int b0 = ys[i], b1 = ye[i];
        const int y0 = max(b0, r0), y1 = min(b1, r1);
        if (y0 >= y1) continue;  // row mode: this bin row has no rows in the chunk
        T* dst = cb + (static_cast<int>(lp) * S + i) * p.pitch + x;
        A acc = b0 >= r0 ? O::init() : cvt(*dst);
        const T* src = tile + (static_cast<int>(lp) * s.nrows + (y0 - r0)) * W + x;
        int y = y0;
        for (; y + 4 <= y1; y += 4, src += 4 * W) {
            const A v0 = cvt(src[0]), v1 = cvt(src[W]), v2 = cvt(src[2 * W]), v3 = cvt(src[3 * W]);
            acc = O::apply(acc, O::apply(O::apply(v0, v1), O::apply(v2, v3)));
        }
        for (; y < y1; ++y, src += W) acc = O::apply(acc, cvt(*src));
        *dst = from_acc(acc, static_cast<T*>(nullptr));
    }
}

// Output element of plane (img0, c0) + lp, level offset `off` (sum n^2 before), bin b of nn.
__device__ __forceinline__ long long out_index(const StreamParams& p, long long img0, int c0, int lp, int off, int nn,
    int b) {
    int c = c0 + lp;
    long long img = img0;
    if (c >= p.C) { img += c / p.C; c %= p.C; }
    return img * (static_cast<long long>(p.C) * p.total_bins) + static_cast<long long>(p.C) * off +
        static_cast<long long>(c) * nn + b;
}

// Passes 2 and 3: root bins = max along x of Cb rows (kept in RB when levels derive from them),
// then the derived levels from RB.
template <typename T>
__device__ void reduce_bins(const T* cb, T* RB, T* __restrict__ out, const Span& s, const StreamParams& p,
    const unsigned short* xs, const unsigned short* xe, int lane) {
    using A = typename Acc<T, SPPQ_MAX>::type;
    using O = Op<SPPQ_MAX, A>;
    const int S = p.sr;
    const long long img0 = s.plane0 / p.C;
    const int c0 = static_cast<int>(s.plane0 - img0 * p.C);
    for (int l = 0; l < p.nlev; ++l) {
        if (p.root_of[l] != l) continue;
        const int n = p.lev[l], nn = n * n, ro = p.row_off[l];
        for (int it = lane; it < s.np * nn; it += 32) {
            const int lp = it / nn, b = it - lp * nn, by = b / n, bx = b - by * n;
            const T* row = cb + (lp * S + ro + by) * p.pitch;
            A acc = O::init();
            for (int x = xs[ro + bx]; x < xe[ro + bx]; ++x) acc = O::apply(acc, cvt(row[x]));
            if (p.srb) RB[lp * p.srb + p.rb_off[l] + b] = from_acc(acc, static_cast<T*>(nullptr));
            out[out_index(p, img0, c0, lp, p.out_off[l], nn, b)] = Store<T, SPPQ_MAX>::get(acc, 0, p);
        }
    }
    if (!p.srb) return;
    __syncwarp();
    for (int l = 0; l < p.nlev; ++l) {
        const int rt = p.root_of[l];
        if (rt == l) continue;
        const int n = p.lev[l], nn = n * n, kk = p.k[l], nr = p.lev[rt];
        for (int it = lane; it < s.np * nn; it += 32) {
            const int lp = it / nn, b = it - lp * nn, by = b / n, bx = b - by * n;
            const T* rb = RB + lp * p.srb + p.rb_off[rt] + kk * by * nr + kk * bx;
            A acc = O::init();
            for (int u = 0; u < kk; ++u)
                for (int v = 0; v < kk; ++v) acc = O::apply(acc, cvt(rb[u * nr + v]));
            out[out_index(p, img0, c0, lp, p.out_off[l], nn, b)] = Store<T, SPPQ_MAX>::get(acc, 0, p);
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(32 * kStreamWarps, kStreamBlocksPerSm) spp_stream_kernel(const T* __restrict__ in, T* __restrict__ out,
    const StreamParams p) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ unsigned short tab[4][SPPQ_MAX_SUM_BINS];  // root bin rows / columns: ys, ye, xs, xe
    for (int i = threadIdx.x; i < p.sr; i += blockDim.x) {
        tab[0][i] = p.rys[i]; tab[1][i] = p.rye[i]; tab[2][i] = p.rxs[i]; tab[3][i] = p.rxe[i];
    }
    __syncthreads();  // the only block barrier: warps are independent from here on
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
    unsigned char* wbase = smem + static_cast<size_t>(wib) * p.warp_bytes;
    T* cb = reinterpret_cast<T*>(wbase + 2 * p.tile_bytes);
    T* RB = reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(cb) + ((p.cb_elems * sizeof(T) + 15) & ~size_t(15)));
    const long long nw = static_cast<long long>(gridDim.x) * kStreamWarps;
    const long long total = p.nc * p.H * p.W;
    long long unit = static_cast<long long>(blockIdx.x) * kStreamWarps + wib;
    int chunk = 0, ib = 0;
    if (unit >= p.units) return;
    Span cur = make_span(p, unit, chunk);
    T* tcur = issue_span(in, total, cur, p, wbase, lane);
    for (;;) {
        long long nunit = unit;
        int nchunk = chunk + 1;
        if (nchunk == p.chunks) { nchunk = 0; nunit += nw; }
        const bool more = nunit < p.units;
        Span nxt = cur;
        T* tnext = nullptr;
        if (more) {
            nxt = make_span(p, nunit, nchunk);
            tnext = issue_span(in, total, nxt, p, wbase + (ib ^ 1) * p.tile_bytes, lane);
        } else {
            cp_async_commit();  // one group per iteration: wait<1> below always means "current span landed"
        }
        cp_async_wait<1>();
        __syncwarp();
        column_pass(tcur, cb, cur, p, tab[0], tab[1], lane);
        if (cur.last) {
            __syncwarp();
            reduce_bins(cb, RB, out, cur, p, tab[2], tab[3], lane);
        }
        __syncwarp();  // tile, Cb and RB are rewritten next
        if (!more) break;
        cur = nxt; tcur = tnext; unit = nunit; chunk = nchunk; ib ^= 1;
    }
}


// ---- lane kernel (v6, max on tiny planes) ----------------------------------------------------------
// Lane l of a warp owns plane l of a group of 32 contiguous planes, so all lanes run the same
// loops over the same table entries (read from the parameter bank with a warp-uniform index)
// and differ only in their plane's base address: no per-item division or 64-bit index math.
// Per group: pass 1 R[y][j] = max over root x-bin j of row y (tile -> R); pass 2 root bins =
// max over their rows of R (-> O); pass 3 derived levels = max over k x k root bins (O -> O);
// then the warp copies each level's bins of its 32 planes to the output, which is contiguous
// there (level-major, channel, bin), with consecutive lanes on consecutive elements.
// R holds input-type elements, lane-interleaved (a warp's access is 32 consecutive elements); O
// holds 4-byte slots with odd per-plane strides: either way the lanes of one access fall into
// different banks.
template <typename T> struct LaneT;
template <> struct LaneT<float> {
    using A = float;
    using RS = float;  // R element: the input type (lane-interleaved, so 1- and 2-byte slots cannot conflict)
    static __device__ __forceinline__ RS rs(A a) { return a; }
    static __device__ __forceinline__ A unrs(RS v) { return v; }
    static __device__ __forceinline__ A init() { return -INFINITY; }
    static __device__ __forceinline__ A ld(const float* q) { return *q; }
    static __device__ __forceinline__ A mx(A a, A b) { return fmax_nan(a, b); }
    static __device__ __forceinline__ unsigned slot(A a) { return __float_as_uint(a); }
    static __device__ __forceinline__ A unslot(unsigned v) { return __uint_as_float(v); }
    template <class PP> static __device__ __forceinline__ float out(A a, const PP&) { return a; }
};
template <> struct LaneT<__half> {
    using A = __half;
    using RS = __half;
    static __device__ __forceinline__ RS rs(A a) { return a; }
    static __device__ __forceinline__ A unrs(RS v) { return v; }
    static __device__ __forceinline__ A init() { return __ushort_as_half(0xFC00); }
    static __device__ __forceinline__ A ld(const __half* q) { return *q; }
    static __device__ __forceinline__ A mx(A a, A b) { return __hmax_nan(a, b); }
    static __device__ __forceinline__ unsigned slot(A a) { return __half_as_ushort(a); }
    static __device__ __forceinline__ A unslot(unsigned v) { return __ushort_as_half(static_cast<unsigned short>(v)); }
    template <class PP> static __device__ __forceinline__ __half out(A a, const PP&) { return a; }
};
template <> struct LaneT<int8_t> {
    using A = int;
    using RS = int8_t;
    static __device__ __forceinline__ RS rs(A a) { return static_cast<int8_t>(a); }
    static __device__ __forceinline__ A unrs(RS v) { return v; }
    static __device__ __forceinline__ A init() { return -128; }
    static __device__ __forceinline__ A ld(const int8_t* q) { return *q; }
    static __device__ __forceinline__ A mx(A a, A b) { return max(a, b); }
    static __device__ __forceinline__ unsigned slot(A a) { return static_cast<unsigned>(a); }
    static __device__ __forceinline__ A unslot(unsigned v) { return static_cast<int>(v); }
    template <class PP> static __device__ __forceinline__ int8_t out(A a, const PP& p) {
        return p.requant ? requant(static_cast<float>(a), p.ratio) : static_cast<int8_t>(a);
    }
};

// Pass 1 for the calling lane's plane `pl` (R: this lane's first slot): the only tile reads.
template <typename T>
__device__ __forceinline__ void lane_rows(const T* pl, typename LaneT<T>::RS* R, const LaneParams& p) {
    using L = LaneT<T>;
    using A = typename L::A;
    const int H = p.H, W = p.W, S = p.sr;
    typename L::RS* r = R;
    for (int y = 0; y < H; ++y, pl += W) {
        for (int j = 0; j < S; ++j, r += 32) {
            const int x1 = p.rxe[j];
            A acc = L::init();
#pragma unroll 4
            for (int x = p.rxs[j]; x < x1; ++x) acc = L::mx(acc, L::ld(pl + x));
            *r = L::rs(acc);
        }
    }
}

// Passes 2 and 3 for the calling lane's plane (R: this lane's first slot; O: the group's O).
template <typename T>
__device__ __forceinline__ void lane_bins(const typename LaneT<T>::RS* R, unsigned* O, const LaneParams& p, int lane) {
    using L = LaneT<T>;
    using A = typename L::A;
    const int S = p.sr;
    for (int l = 0; l < p.nlev; ++l) {
        if (p.root_of[l] != l) continue;
        const int n = p.lev[l], ro = p.row_off[l];
        unsigned* o = O + p.obase[l] + lane * p.ostride[l];
        for (int by = 0; by < n; ++by) {
            const int y0 = p.rys[ro + by], y1 = p.rye[ro + by];
            const typename L::RS* c0 = R + (y0 * S + ro) * 32;
            for (int bx = 0; bx < n; ++bx, c0 += 32) {
                A acc = L::init();
                const typename L::RS* c = c0;
#pragma unroll 4
                for (int y = y0; y < y1; ++y, c += S * 32) acc = L::mx(acc, L::unrs(*c));
                o[by * n + bx] = L::slot(acc);
            }
        }
    }
    for (int l = 0; l < p.nlev; ++l) {
        const int rt = p.root_of[l];
        if (rt == l) continue;
        const int n = p.lev[l], kk = p.k_of[l], nr = p.lev[rt];
        const unsigned* rb = O + p.obase[rt] + lane * p.ostride[rt];
        unsigned* o = O + p.obase[l] + lane * p.ostride[l];
        for (int by = 0; by < n; ++by) {
            for (int bx = 0; bx < n; ++bx) {
                const unsigned* q = rb + kk * by * nr + kk * bx;
                A acc = L::init();
                for (int u = 0; u < kk; ++u, q += nr)
                    for (int v = 0; v < kk; ++v) acc = L::mx(acc, L::unslot(q[v]));
                o[by * n + bx] = L::slot(acc);
            }
        }
    }
}

// Every level's bins of the group's ng planes (from plane0) to the output, coalesced.
template <typename T>
__device__ __forceinline__ void lane_store(const unsigned* O, T* __restrict__ out, const LaneParams& p,
    long long plane0, int ng, int lane) {
    using L = LaneT<T>;
    const long long img0 = plane0 / p.C;
    const int c0 = static_cast<int>(plane0 - img0 * p.C);
    const bool one_image = c0 + ng <= p.C;
    const long long per_image = static_cast<long long>(p.C) * p.total_bins;
    for (int l = 0; l < p.nlev; ++l) {
        const int nn = p.lev[l] * p.lev[l], pad = p.ostride[l] - nn, cnt = ng * nn;
        const unsigned* o = O + p.obase[l];
        const long long lbase = static_cast<long long>(p.C) * p.out_off[l];
        if (one_image) {
            T* dst = out + img0 * per_image + lbase + static_cast<long long>(c0) * nn;
#pragma unroll 2
            for (int e = lane; e < cnt; e += 32) {
                const int li = static_cast<int>(fdiv(static_cast<unsigned>(e), p.div_nn[l]));
                dst[e] = L::out(L::unslot(o[e + li * pad]), p);
            }
        } else {  // the group crosses an image boundary
            for (int e = lane; e < cnt; e += 32) {
                const int li = static_cast<int>(fdiv(static_cast<unsigned>(e), p.div_nn[l]));
                const int b = e - li * nn;
                const long long pl = plane0 + li, img = pl / p.C, c = pl - img * p.C;
                out[img * per_image + lbase + c * nn + b] = L::out(L::unslot(o[e + li * pad]), p);
            }
        }
    }
}

// STAGES 2: the next span is copied into the second tile while this one is reduced; STAGES 1:
// one tile, refilled as soon as pass 1 of the span's last group has read it (passes 2-3 and the
// stores overlap the copy), for twice the warps per SM.
template <typename T, int STAGES>
__global__ void __launch_bounds__(32 * kLaneWarps, kLaneBlocksPerSm) spp_lane_kernel(const T* __restrict__ in,
    T* __restrict__ out, const LaneParams p) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
    unsigned char* wbase = smem + static_cast<size_t>(wib) * p.warp_bytes;
    typename LaneT<T>::RS* R = reinterpret_cast<typename LaneT<T>::RS*>(wbase + p.r_off) + lane;
    unsigned* O = reinterpret_cast<unsigned*>(wbase + p.o_off);
    const long long nw = static_cast<long long>(gridDim.x) * kLaneWarps;
    const long long total = p.nc * p.HW;
    const int span = 32 * p.k;
    long long unit = static_cast<long long>(blockIdx.x) * kLaneWarps + wib;
    if (unit >= p.units) return;
    int ib = 0;
    auto planes_of = [&](long long u) { return static_cast<int>(min(static_cast<long long>(span), p.nc - u * span)); };
    const T* tcur = issue_elems(in, total, unit * span * p.HW, static_cast<long long>(planes_of(unit)) * p.HW, wbase, lane);
    for (;;) {
        const long long nunit = unit + nw;
        const bool more = nunit < p.units;
        const T* tnext = nullptr;
        if (STAGES == 2) {
            if (more) {
                tnext = issue_elems(in, total, nunit * span * p.HW, static_cast<long long>(planes_of(nunit)) * p.HW,
                    wbase + (ib ^ 1) * p.tile_bytes, lane);
            } else {
                cp_async_commit();  // one group per iteration: wait<1> means "current span landed"
            }
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncwarp();
        const long long plane0 = unit * span;
        const int np = planes_of(unit);
        for (int g = 0; g * 32 < np; ++g) {
            const int ng = min(32, np - g * 32);
            if (lane < ng) lane_rows(tcur + (g * 32 + lane) * p.HW, R, p);
            if (STAGES == 1 && more && (g + 1) * 32 >= np) {  // the tile is free: refill it now
                __syncwarp();
                tnext = issue_elems(in, total, nunit * span * p.HW, static_cast<long long>(planes_of(nunit)) * p.HW,
                    wbase, lane);
            }
            if (lane < ng) lane_bins<T>(R, O, p, lane);
            __syncwarp();
            lane_store(O, out, p, plane0 + g * 32, ng, lane);
            __syncwarp();  // O is rewritten by the next group
        }
        if (!more) break;
        unit = nunit; tcur = tnext; ib ^= 1;
    }
}

// ---- fixed kernel (v7, max on tiny planes of compile-time shape; spp_fixed.h) -------------------
// The lane kernel's span loop; per group each lane reduces its plane in registers: pass 1 reads
// the plane row by row from the tile and folds every root x-bin's row maximum into the bins of
// the bin rows holding that row, then the derived levels come from the nearest finer level's
// bins; the bins go to the staging area O and leave through coalesced (4-byte where possible)
// stores. All indices are compile-time constants: no tables, no loops at run time per plane.
template <int... Is, class Fn>
__device__ __forceinline__ void static_for_impl(std::integer_sequence<int, Is...>, Fn&& f) {
    (f(std::integral_constant<int, Is>{}), ...);
}
template <int N, class Fn> __device__ __forceinline__ void static_for(Fn&& f) {
    static_for_impl(std::make_integer_sequence<int, N>{}, f);
}

template <int H_, int W_, int L0, int L1, int L2, int L3> struct FixedShape {
    static constexpr int H = H_, W = W_, HW = H_ * W_;
    static constexpr int NL = 1 + (L1 > 0) + (L2 > 0) + (L3 > 0);
    SPPQ_HD static constexpr int lev(int l) { return fx_lev(L0, L1, L2, L3, l); }
    SPPQ_HD static constexpr int off(int l) {  // sum of n^2 of the previous levels
        int s = 0;
        for (int i = 0; i < l; ++i) s += lev(i) * lev(i);
        return s;
    }
    static constexpr int TB = off(NL);
    // the level a level is derived from: the smallest larger level it divides; -1: read from the plane
    SPPQ_HD static constexpr int src(int l) {
        int best = -1;
        for (int i = 0; i < NL; ++i)
            if (lev(i) > lev(l) && lev(i) % lev(l) == 0 && (best < 0 || lev(i) < lev(best))) best = i;
        return best;
    }
    // the r-th level by decreasing n (sources come before the levels derived from them)
    SPPQ_HD static constexpr int order(int r) {
        for (int i = 0; i < NL; ++i) {
            int rank = 0;
            for (int j = 0; j < NL; ++j) rank += lev(j) > lev(i) || (lev(j) == lev(i) && j < i);
            if (rank == r) return i;
        }
        return 0;
    }
    SPPQ_HD static constexpr int bs(int i, int len, int n) { return i * len / n; }
    SPPQ_HD static constexpr int be(int i, int len, int n) { return ((i + 1) * len + n - 1) / n; }
    template <typename T> SPPQ_HD static constexpr int obase(int l) { return fx_obase(L0, L1, L2, L3, l, sizeof(T)); }
};

// Pass 1: every bin of every root level (a level no finer level in the list is a multiple of)
// of the plane at `pl` (tile) into b (registers). The tile's only reads.
template <typename T, class F>
__device__ __forceinline__ void fixed_rows(const T* pl, typename LaneT<T>::A* b) {
    using L = LaneT<T>;
    using A = typename L::A;
    static_for<F::H>([&](auto Y) {
        constexpr int y = decltype(Y)::value;
        A v[F::W];
        static_for<F::W>([&](auto X) { v[decltype(X)::value] = L::ld(pl + y * F::W + decltype(X)::value); });
        static_for<F::NL>([&](auto LI) {
            constexpr int l = decltype(LI)::value;
            if constexpr (F::src(l) < 0) {
                constexpr int n = F::lev(l);
                static_for<n>([&](auto BX) {
                    constexpr int bx = decltype(BX)::value;
                    constexpr int xs = F::bs(bx, F::W, n), xe = F::be(bx, F::W, n);
                    A rm = v[xs];
                    static_for<xe - xs - 1>([&](auto XI) { rm = L::mx(rm, v[xs + 1 + decltype(XI)::value]); });
                    static_for<n>([&](auto BY) {
                        constexpr int by = decltype(BY)::value;
                        constexpr int ys = F::bs(by, F::H, n), ye = F::be(by, F::H, n);
                        constexpr int i = F::off(l) + by * n + bx;
                        if constexpr (y == ys) b[i] = rm;
                        else if constexpr (y > ys && y < ye) b[i] = L::mx(b[i], rm);
                    });
                });
            }
        });
    });
}

template <typename T> __device__ __forceinline__ int fx_pad(int q) { return q + (q / fx_g(sizeof(T))) * fx_p(sizeof(T)); }

// The bin's value in the input type (exact for max); int8 requantization happens in fixed_store.
template <typename T> __device__ __forceinline__ T fx_raw(typename LaneT<T>::A a) {
    if constexpr (std::is_same<T, int8_t>::value) return static_cast<int8_t>(a);
    else return a;
}

// int8 requantization of 4 packed values (requant's arithmetic, element by element).
__device__ __forceinline__ unsigned requant4(unsigned w, float ratio) {
    unsigned r = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int q = static_cast<int>(static_cast<signed char>((w >> (8 * i)) & 0xffu));
        r |= (static_cast<unsigned>(static_cast<unsigned char>(requant(static_cast<float>(q), ratio)))) << (8 * i);
    }
    return r;
}

// Levels by decreasing n: derived ones from the nearest finer level's bins (k x k each); every
// level goes to O (input-type values) as soon as it is complete, so its registers free up early.
// One instantiation per shape and dtype: int8 requantization is applied on the way out (fixed_store),
// so the unrolled body is not duplicated for requant on / off (a duplicated 8,4,2,1 body measured
// 4-8% slower for int8 than fp16 on 7x7, call 2 of the v7 round).
template <typename T, class F>
__device__ __forceinline__ void fixed_finish(typename LaneT<T>::A* b, T* O, int lane) {
    using L = LaneT<T>;
    using A = typename L::A;
    static_for<F::NL>([&](auto R) {
        constexpr int l = F::order(decltype(R)::value);
        constexpr int n = F::lev(l), nn = n * n;
        if constexpr (F::src(l) >= 0) {
            constexpr int m = F::src(l), nm = F::lev(m), k = nm / n;
            static_for<nn>([&](auto B) {
                constexpr int by = decltype(B)::value / n, bx = decltype(B)::value % n;
                constexpr int s0 = F::off(m) + k * by * nm + k * bx;
                A acc = b[s0];
                static_for<k * k - 1>([&](auto U) {
                    constexpr int u = (decltype(U)::value + 1) / k, w = (decltype(U)::value + 1) % k;
                    acc = L::mx(acc, b[s0 + u * nm + w]);
                });
                b[F::off(l) + decltype(B)::value] = acc;
            });
        }
        const int q0 = F::template obase<T>(l) + lane * nn;
        static_for<nn>([&](auto I) { O[fx_pad<T>(q0 + decltype(I)::value)] = fx_raw<T>(b[F::off(l) + decltype(I)::value]); });
    });
}

// A staged value as output: int8 requantized when the scales differ (same arithmetic as requant4).
template <typename T> __device__ __forceinline__ T fx_final(T v, const LaneParams& p) {
    if constexpr (std::is_same<T, int8_t>::value) return p.requant ? requant(static_cast<float>(v), p.ratio) : v;
    else return v;
}

// Every level's bins of the group's ng planes (from plane0) to the output: consecutive lanes on
// consecutive elements, 4-byte words for fp16 / int8 when the group is whole and aligned.
template <typename T, class F>
__device__ __forceinline__ void fixed_store(const T* O, T* __restrict__ out, const LaneParams& p, long long plane0,
    int ng, int lane) {
    const long long img0 = plane0 / p.C;
    const int c0 = static_cast<int>(plane0 - img0 * p.C);
    const bool one_image = c0 + ng <= p.C;
    const long long per_image = static_cast<long long>(p.C) * F::TB;
    constexpr int V = 4 / static_cast<int>(sizeof(T));
    constexpr bool kInt8 = std::is_same<T, int8_t>::value;
    static_for<F::NL>([&](auto LI) {
        constexpr int l = decltype(LI)::value, nn = F::lev(l) * F::lev(l), base = F::template obase<T>(l);
        const long long lbase = static_cast<long long>(p.C) * F::off(l);
        const int cnt = ng * nn;
        if (one_image) {
            T* dst = out + img0 * per_image + lbase + static_cast<long long>(c0) * nn;
            if (V > 1 && ng == 32 && (reinterpret_cast<uintptr_t>(dst) & 3) == 0) {
                constexpr int NWD = 32 * nn / V;  // whole words: 32 planes x nn x sizeof(T) bytes
                auto copy = [&](auto rq) {
                    static_for<(NWD + 31) / 32>([&](auto t) {
                        const int w = lane + 32 * decltype(t)::value;
                        if (NWD % 32 == 0 || w < NWD) {
                            unsigned v = *reinterpret_cast<const unsigned*>(O + fx_pad<T>(base + w * V));
                            if constexpr (decltype(rq)::value) v = requant4(v, p.ratio);
                            reinterpret_cast<unsigned*>(dst)[w] = v;
                        }
                    });
                };
                if (kInt8 && p.requant) copy(std::true_type{});
                else copy(std::false_type{});
            } else {
                static_for<nn>([&](auto t) {
                    const int e = lane + 32 * decltype(t)::value;
                    if (e < cnt) dst[e] = fx_final<T>(O[fx_pad<T>(base + e)], p);
                });
            }
        } else {  // the group crosses an image boundary
            for (int e = lane; e < cnt; e += 32) {
                const int li = e / nn, bb = e - li * nn;
                const long long pl = plane0 + li, img = pl / p.C, c = pl - img * p.C;
                out[img * per_image + lbase + c * nn + bb] = fx_final<T>(O[fx_pad<T>(base + e)], p);
            }
        }
    });
}

// ---- fixed kernel, int8 on packed pairs (v9) -----------------------------------------------------
// A "pair" word holds two int8 bins of one level, one per 16-bit half, and max.s16x2 takes the
// maxima of both in one instruction. Two formats (FMT), each built from any two plane bytes by one
// byte permute: 1 = the bins in bytes 1 and 3 (bytes 0 and 2: whatever the permute put there; a
// half compares as hi * 256 + lo, so the high byte of the maximum is the maximum of the high bytes
// whatever the low bytes hold); 2 = the bins sign-extended to 16 bits (bytes 0 and 2 hold them, so
// a low bin is stored to O without a shift). Level l's pair (by, j), j < h = ceil(n / 2), holds bins (by, j) (byte 1) and
// (by, j + h) (byte 3; bin (by, j) again when j + h == n): a level of even n derived from a level
// of 2n, 4n, ... takes elementwise maxima of whole pairs, since (x, x + h) maps onto (kx, kx + kh).
// The plane is read as 32-bit words (realigned by a funnel shift: planes of odd H*W are not
// word-aligned in the tile) instead of one byte per load.
template <class F> struct FxPk {
    SPPQ_HD static constexpr int h(int l) { return (F::lev(l) + 1) / 2; }
    SPPQ_HD static constexpr int hib(int l, int j) { return j + h(l) < F::lev(l) ? j + h(l) : j; }
    SPPQ_HD static constexpr int off(int l) {  // pairs of the previous levels
        int s = 0;
        for (int i = 0; i < l; ++i) s += F::lev(i) * h(i);
        return s;
    }
    static constexpr int TP = off(F::NL);
    // column c of level l: the pair column holding it, and the half (0: byte 1, 1: byte 3)
    SPPQ_HD static constexpr int pj(int l, int c) { return c < h(l) ? c : c - h(l); }
    SPPQ_HD static constexpr int phalf(int l, int c) { return c < h(l) ? 0 : 1; }
    // may column c be read from half hf of its pair? (a duplicated pair holds its column in both)
    SPPQ_HD static constexpr bool can(int l, int c, int hf) {
        return phalf(l, c) == hf || (c < h(l) && c + h(l) >= F::lev(l));
    }
    // Derived level l from m = src(l), pair column j: term t (t < k) of its maximum takes its low
    // bin from column k*j + t of m and its high bin from column k*hib(l, j) + mt(l, j, t) (greedy:
    // the first unused high column in the same pair and half, so the term is a whole pair of m).
    SPPQ_HD static constexpr int mt(int l, int j, int t) {
        const int m = F::src(l), k = F::lev(m) / F::lev(l);
        bool used[8] = {false, false, false, false, false, false, false, false};
        int pick = 0;
        for (int u = 0; u <= t; ++u) {
            const int a = k * j + u;
            pick = -1;
            for (int s = 0; s < k && pick < 0; ++s) {
                const int b = k * hib(l, j) + s;
                if (!used[s] && pj(m, a) == pj(m, b) && can(m, a, 0) && can(m, b, 1)) pick = s;
            }
            for (int s = 0; s < k && pick < 0; ++s)
                if (!used[s]) pick = s;
            used[pick] = true;
        }
        return pick;
    }
};

// bytes 1 and 3 of a word: a from x's byte xa (0-3), b from y's byte yb (0-3)
SPPQ_HD constexpr unsigned fx_sel2(int xa, int yb) {
    return static_cast<unsigned>(xa | (xa << 4) | ((4 + yb) << 8) | ((4 + yb) << 12));
}
// the same bytes sign-extended to 16 bits (prmt's sign-replicate mode, bit 3 of a selector nibble)
SPPQ_HD constexpr unsigned fx_sel2s(int xa, int yb) {
    return static_cast<unsigned>(xa | ((xa | 8) << 4) | ((4 + yb) << 8) | (((4 + yb) | 8) << 12));
}
// low half from x's half ha, high half from y's half hb (whole 16-bit halves; format 2)
SPPQ_HD constexpr unsigned fx_selh(int ha, int hb) {
    return static_cast<unsigned>((2 * ha) | ((2 * ha + 1) << 4) | ((4 + 2 * hb) << 8) | ((5 + 2 * hb) << 12));
}

// Pass 1 (int8): every pair of every root level of the plane at `pl` (tile) into b.
template <class F, int FMT>
__device__ __forceinline__ void fixed_rows_i8(const int8_t* pl, unsigned* b) {
    using P = FxPk<F>;
    constexpr int NA = (F::HW + 3) / 4;      // plane words
    constexpr int NR = (F::HW + 2) / 4 + 1;  // tile words holding them at any byte offset
    const int o = static_cast<int>(reinterpret_cast<uintptr_t>(pl) & 3u);
    const unsigned* raw = reinterpret_cast<const unsigned*>(pl - o);
    const unsigned sh = 8u * static_cast<unsigned>(o);
    unsigned r[NR], w[NA];
    static_for<NR>([&](auto I) { r[decltype(I)::value] = raw[decltype(I)::value]; });
    static_for<NA>([&](auto I) {
        constexpr int i = decltype(I)::value;
        if constexpr (i + 1 < NR) w[i] = __funnelshift_r(r[i], r[i + 1], sh);
        else w[i] = r[i] >> sh;
    });
    // plane bytes a and b as one pair (a in byte 1, b in byte 3)
    auto pair = [&](auto A, auto B) {
        constexpr int a = decltype(A)::value, bb = decltype(B)::value;
        if constexpr (FMT == 2) return prmt(w[a >> 2], w[bb >> 2], fx_sel2s(a & 3, bb & 3));
        else return __byte_perm(w[a >> 2], w[bb >> 2], fx_sel2(a & 3, bb & 3));
    };
    static_for<F::H>([&](auto Y) {
        constexpr int y = decltype(Y)::value;
        static_for<F::NL>([&](auto LI) {
            constexpr int l = decltype(LI)::value;
            if constexpr (F::src(l) < 0) {
                constexpr int n = F::lev(l), h = P::h(l);
                static_for<h>([&](auto J) {
                    constexpr int j = decltype(J)::value, j2 = P::hib(l, j);
                    constexpr int xs = F::bs(j, F::W, n), la = F::be(j, F::W, n) - xs;
                    constexpr int xs2 = F::bs(j2, F::W, n), lb = F::be(j2, F::W, n) - xs2;
                    constexpr int len = la > lb ? la : lb;
                    unsigned rm = pair(std::integral_constant<int, y * F::W + xs>{},
                        std::integral_constant<int, y * F::W + xs2>{});
                    static_for<len - 1>([&](auto TI) {
                        constexpr int t = decltype(TI)::value + 1;
                        constexpr int ta = t < la ? t : la - 1, tb = t < lb ? t : lb - 1;
                        rm = vmax_s16x2(rm, pair(std::integral_constant<int, y * F::W + xs + ta>{},
                            std::integral_constant<int, y * F::W + xs2 + tb>{}));
                    });
                    static_for<n>([&](auto BY) {
                        constexpr int by = decltype(BY)::value;
                        constexpr int ys = F::bs(by, F::H, n), ye = F::be(by, F::H, n);
                        constexpr int i = P::off(l) + by * h + j;
                        if constexpr (y == ys) b[i] = rm;
                        else if constexpr (y > ys && y < ye) b[i] = vmax_s16x2(b[i], rm);
                    });
                });
            }
        });
    });
}

// Word of 4 staged bins: bin e of level l (row-major) is byte 1 or 3 of pair src_pair(l, e).
template <class F, int FMT> struct FxStage {
    using P = FxPk<F>;
    SPPQ_HD static constexpr int pr(int l, int e) {  // pair index (within b) holding bin e of level l
        const int n = F::lev(l), by = e / n, bx = e % n;
        return P::off(l) + by * P::h(l) + P::pj(l, bx);
    }
    static constexpr int B0 = FMT == 2 ? 0 : 1;  // byte of a pair's low bin
    SPPQ_HD static constexpr int by(int l, int e) { return B0 + 2 * P::phalf(l, e % F::lev(l)); }
    // distinct pairs among bins e0..e0+3, in order of first use: index u (0..3) -> bin slot, or -1
    SPPQ_HD static constexpr int reg(int l, int e0, int u) {
        int seen = 0;
        for (int i = 0; i < 4; ++i) {
            bool fresh = true;
            for (int q = 0; q < i; ++q) fresh = fresh && pr(l, e0 + q) != pr(l, e0 + i);
            if (fresh) {
                if (seen == u) return i;
                ++seen;
            }
        }
        return -1;
    }
    SPPQ_HD static constexpr int nreg(int l, int e0) {
        return reg(l, e0, 3) >= 0 ? 4 : reg(l, e0, 2) >= 0 ? 3 : reg(l, e0, 1) >= 0 ? 2 : 1;
    }
    SPPQ_HD static constexpr int slot(int l, int e0, int i) {  // which distinct pair bin e0 + i uses
        for (int u = 0; u < 4; ++u)
            if (reg(l, e0, u) >= 0 && pr(l, e0 + reg(l, e0, u)) == pr(l, e0 + i)) return u;
        return 0;
    }
    // <= 2 distinct pairs: one permute of (pair 0, pair 1)
    SPPQ_HD static constexpr unsigned sel_direct(int l, int e0) {
        unsigned s = 0;
        for (int i = 0; i < 4; ++i) s |= static_cast<unsigned>(4 * slot(l, e0, i) + by(l, e0 + i)) << (4 * i);
        return s;
    }
    // 3-4 distinct pairs: X = the bin bytes of pairs 0 and 1, Y likewise of pairs 2 and 3, then one permute
    SPPQ_HD static constexpr unsigned sel_xy(int l, int e0) {
        unsigned s = 0;
        for (int i = 0; i < 4; ++i) s |= static_cast<unsigned>(2 * slot(l, e0, i) + (by(l, e0 + i) > 1)) << (4 * i);
        return s;
    }
};

// Derived levels from pairs (levels by decreasing n), then every level's bins to O as bytes (4 per
// 32-bit store where a lane's bins are word-aligned in O, i.e. n^2 % 4 == 0).
template <class F, int FMT>
__device__ __forceinline__ void fixed_finish_i8(unsigned* b, int8_t* O, int lane) {
    using P = FxPk<F>;
    using S = FxStage<F, FMT>;
    constexpr unsigned kBins = FMT == 2 ? 0x6420u : 0x7531u;  // the bin bytes of two pairs
    static_for<F::NL>([&](auto R) {
        constexpr int l = F::order(decltype(R)::value);
        constexpr int n = F::lev(l), nn = n * n, hl = P::h(l);
        if constexpr (F::src(l) >= 0) {
            constexpr int m = F::src(l), nm = F::lev(m), k = nm / n, hm = P::h(m);
            unsigned rr[n * hm];  // m's pairs folded over the k rows of each of l's bin rows
            static_for<n * hm>([&](auto I) {
                constexpr int by = decltype(I)::value / hm, jm = decltype(I)::value % hm;
                unsigned acc = b[P::off(m) + (k * by) * hm + jm];
                static_for<k - 1>([&](auto U) { acc = vmax_s16x2(acc, b[P::off(m) + (k * by + decltype(U)::value + 1) * hm + jm]); });
                rr[decltype(I)::value] = acc;
            });
            static_for<n * hl>([&](auto I) {
                constexpr int by = decltype(I)::value / hl, j = decltype(I)::value % hl;
                auto term = [&](auto TI) {
                    constexpr int t = decltype(TI)::value;
                    constexpr int ca = k * j + t, cb = k * P::hib(l, j) + P::mt(l, j, t);
                    constexpr int ja = P::pj(m, ca), jb = P::pj(m, cb);
                    constexpr int ha = P::can(m, ca, 0) ? 0 : 1, hb = P::can(m, cb, 1) ? 1 : 0;
                    if constexpr (ja == jb && ha == 0 && hb == 1) return rr[by * hm + ja];
                    else return __byte_perm(rr[by * hm + ja], rr[by * hm + jb],
                        FMT == 2 ? fx_selh(ha, hb) : fx_sel2(2 * ha + 1, 2 * hb + 1));
                };
                unsigned acc = term(std::integral_constant<int, 0>{});
                static_for<k - 1>([&](auto TI) { acc = vmax_s16x2(acc, term(std::integral_constant<int, decltype(TI)::value + 1>{})); });
                b[P::off(l) + decltype(I)::value] = acc;
            });
        }
        const int q0 = F::template obase<int8_t>(l) + lane * nn;
        if constexpr (nn % 4 == 0) {
            static_for<nn / 4>([&](auto G) {
                constexpr int e0 = 4 * decltype(G)::value;
                constexpr int nr = S::nreg(l, e0);
                auto rg = [&](auto U) {
                    constexpr int u = decltype(U)::value;
                    constexpr int i = S::reg(l, e0, u < nr ? u : nr - 1);
                    return b[S::pr(l, e0 + i)];
                };
                unsigned v;
                if constexpr (nr <= 2) {
                    v = __byte_perm(rg(std::integral_constant<int, 0>{}), rg(std::integral_constant<int, 1>{}), S::sel_direct(l, e0));
                } else {
                    const unsigned x = __byte_perm(rg(std::integral_constant<int, 0>{}), rg(std::integral_constant<int, 1>{}), kBins);
                    const unsigned y = __byte_perm(rg(std::integral_constant<int, 2>{}), rg(std::integral_constant<int, 3>{}), kBins);
                    v = __byte_perm(x, y, S::sel_xy(l, e0));
                }
                *reinterpret_cast<unsigned*>(O + fx_pad<int8_t>(q0 + e0)) = v;
            });
        } else {
            static_for<nn>([&](auto E) {
                constexpr int e = decltype(E)::value;
                O[fx_pad<int8_t>(q0 + e)] = static_cast<int8_t>(b[S::pr(l, e)] >> (8 * S::by(l, e)));
            });
        }
    });
}

// PK (int8 only; LaneParams::body, from the planner): 0 = one int per bin (the v7/v8 body), 1 / 2 =
// packed pairs in format 1 / 2 (fixed_rows_i8 / fixed_finish_i8).
template <typename T, class F, int PK>
__global__ void __launch_bounds__(32 * kLaneWarps, kFixedBlocksPerSm) spp_fixed_kernel(const T* __restrict__ in,
    T* __restrict__ out, const LaneParams p) {
    using A = typename LaneT<T>::A;
    static_assert(PK == 0 || std::is_same<T, int8_t>::value, "packed pairs are the int8 path");
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
    unsigned char* wbase = smem + static_cast<size_t>(wib) * p.warp_bytes;
    T* O = reinterpret_cast<T*>(wbase + p.o_off);
    const long long nw = p.nw;  // grid x (1, 2 or 4) warps per block: a kernel parameter, not a live register
    const long long total = p.nc * F::HW;
    const int span = 32 * p.k;
    long long unit = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + wib;
    if (unit >= p.units) return;
    auto planes_of = [&](long long u) { return static_cast<int>(min(static_cast<long long>(span), p.nc - u * span)); };
    const T* tcur = issue_elems(in, total, unit * span * F::HW, static_cast<long long>(planes_of(unit)) * F::HW, wbase, lane);
    for (;;) {
        const long long nunit = unit + nw;
        const bool more = nunit < p.units;
        const T* tnext = nullptr;
        cp_async_wait<0>();
        __syncwarp();
        const long long plane0 = unit * span;
        const int np = planes_of(unit);
        for (int g = 0; g * 32 < np; ++g) {
            const int ng = min(32, np - g * 32);
            if constexpr (PK > 0) {
                unsigned b[FxPk<F>::TP];
                if (lane < ng) fixed_rows_i8<F, PK>(tcur + (g * 32 + lane) * F::HW, b);
                if (more && (g + 1) * 32 >= np) {  // the tile is free: refill it while the bins go out
                    __syncwarp();
                    tnext = issue_elems(in, total, nunit * span * F::HW, static_cast<long long>(planes_of(nunit)) * F::HW,
                        wbase, lane);
                }
                if (lane < ng) fixed_finish_i8<F, PK>(b, O, lane);
            } else {
                A b[F::TB];
                if (lane < ng) fixed_rows<T, F>(tcur + (g * 32 + lane) * F::HW, b);
                if (more && (g + 1) * 32 >= np) {  // the tile is free: refill it while the bins go out
                    __syncwarp();
                    tnext = issue_elems(in, total, nunit * span * F::HW, static_cast<long long>(planes_of(nunit)) * F::HW,
                        wbase, lane);
                }
                if (lane < ng) fixed_finish<T, F>(b, O, lane);
            }
            __syncwarp();
            fixed_store<T, F>(O, out, p, plane0 + g * 32, ng, lane);
            __syncwarp();  // O is rewritten by the next group
        }
        if (!more) break;
        unit = nunit; tcur = tnext;
    }
}

// ---- launch -----------------------------------------------------------------------------------
// Dynamic shared memory beyond 48 KB (with the kernel's static part) needs the opt-in.
template <typename K>
int set_smem(K kern, size_t smem, size_t static_bytes = 0) {
    if (smem + static_bytes > 48 * 1024) SPPQ_CUDA_RETURN(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    return SPPQ_OK;
}

template <typename T, int POOL, int V>
int launch_segment_v(const void* in, void* out, const SppLaunch& l, cudaStream_t s) {
    auto kern = spp_forward_kernel<T, POOL, V>;
    SPPQ_RETURN_IF_ERROR(set_smem(kern, l.smem));
    kern<<<l.grid, l.threads, l.smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), l.seg);
    return SPPQ_LAUNCH_STATUS();
}

template <typename T, int POOL>
int launch_segment(const void* in, void* out, const SppLaunch& l, cudaStream_t s) {
    constexpr int kMaxV = 16 / static_cast<int>(sizeof(T));
    switch (l.vec) {
    case 1: return launch_segment_v<T, POOL, 1>(in, out, l, s);
    case 2: return launch_segment_v<T, POOL, 2>(in, out, l, s);
    case 4: return launch_segment_v<T, POOL, (kMaxV >= 4 ? 4 : 1)>(in, out, l, s);
    case 8: return launch_segment_v<T, POOL, (kMaxV >= 8 ? 8 : 1)>(in, out, l, s);
    case 16: return launch_segment_v<T, POOL, (kMaxV >= 16 ? 16 : 1)>(in, out, l, s);
    default: return SPPQ_ERR_UNSUPPORTED;
    }
}

template <typename T, int POOL>
int launch_pool(const void* in, void* out, const SppLaunch& l, cudaStream_t s) {
    if (l.kind == SppKernel::kSmall) {
        spp_small_kernel<T, POOL><<<l.grid, l.threads, l.smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), l.small);
        return SPPQ_LAUNCH_STATUS();
    }
    return launch_segment<T, POOL>(in, out, l, s);
}

template <typename T, class F>
int launch_fixed_shape(const void* in, void* out, const SppLaunch& l, cudaStream_t s) {
    auto kern = spp_fixed_kernel<T, F, 0>;
    if constexpr (std::is_same<T, int8_t>::value) {
        if (l.lane.body == 1) kern = spp_fixed_kernel<T, F, 1>;
        if (l.lane.body == 2) kern = spp_fixed_kernel<T, F, 2>;
    }
    SPPQ_RETURN_IF_ERROR(set_smem(kern, l.smem));
    // the planner sized the persistent grid by shared memory; registers may allow fewer blocks
    int occ = 0, dev = 0, sms = 0;
    SPPQ_CUDA_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, l.threads, l.smem));
    SPPQ_CUDA_RETURN(cudaGetDevice(&dev));
    SPPQ_CUDA_RETURN(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const int grid = std::max(1, std::min(l.grid, std::max(1, occ) * sms));
    LaneParams p = l.lane;
    p.nw = static_cast<long long>(grid) * (l.threads / 32);
    kern<<<grid, l.threads, l.smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), p);
    return SPPQ_LAUNCH_STATUS();
}

// l.fixed_id indexes SPPQ_FIXED_SHAPES (the planner's fixed_shape_id numbers it the same way)
template <typename T>
int launch_fixed(const void* in, void* out, const SppLaunch& l, cudaStream_t s) {
    int id = 0;
#define SPPQ_FX_CASE(h, w, a, b, c, d) \
    if (l.fixed_id == id++) return launch_fixed_shape<T, FixedShape<h, w, a, b, c, d>>(in, out, l, s);
    SPPQ_FIXED_SHAPES(SPPQ_FX_CASE)
#undef SPPQ_FX_CASE
    return SPPQ_ERR_UNSUPPORTED;
}

template <typename T>
int launch_dtype(const void* in, void* out, int pooling, const SppLaunch& l, cudaStream_t s) {
    if (l.kind == SppKernel::kFixed) return launch_fixed<T>(in, out, l, s);
    if (l.kind == SppKernel::kLane) {
        auto kern = l.lane.stages == 1 ? spp_lane_kernel<T, 1> : spp_lane_kernel<T, 2>;
        SPPQ_RETURN_IF_ERROR(set_smem(kern, l.smem));
        kern<<<l.grid, l.threads, l.smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), l.lane);
        return SPPQ_LAUNCH_STATUS();
    }
    if (l.kind == SppKernel::kStream) {
        auto kern = spp_stream_kernel<T>;
        SPPQ_RETURN_IF_ERROR(set_smem(kern, l.smem, 4 * SPPQ_MAX_SUM_BINS * sizeof(unsigned short)));
        kern<<<l.grid, l.threads, l.smem, s>>>(static_cast<const T*>(in), static_cast<T*>(out), l.stream);
        return SPPQ_LAUNCH_STATUS();
    }
    return pooling == SPPQ_MAX ? launch_pool<T, SPPQ_MAX>(in, out, l, s) : launch_pool<T, SPPQ_AVG>(in, out, l, s);
}

}  // namespace
}  // namespace sppq

extern "C" {

long long sppq_spp_output_width(int C, const int* levels, int num_levels) {
    // unchanged since API 1: each level checked, not their sum (sppq_spp_validate does that)
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
    SPPQ_RETURN_IF_ERROR(sppq::check_levels(levels, num_levels));
    const long long nc = static_cast<long long>(N) * C;
    const long long width = sppq_spp_output_width(C, levels, num_levels);
    // grid.x limit and 64-bit element counts
    if (nc > (1LL << 40) || static_cast<double>(N) * width > 9.0e18 || static_cast<double>(nc) * H * W > 9.0e18)
        return SPPQ_ERR_SHAPE;
    if (dtype == SPPQ_INT8) {
        if (!(std::isfinite(in_scale) && in_scale > 0.0f && std::isfinite(out_scale) && out_scale > 0.0f))
            return SPPQ_ERR_SCALE;
    }
    return SPPQ_OK;
}

int sppq_spp_forward(const void* in, void* out, int dtype, int pooling, int N, int C, int H, int W,
    const int* levels, int num_levels, float in_scale, float out_scale, cudaStream_t stream) {
    if (in == nullptr || out == nullptr) return SPPQ_ERR_NULL_POINTER;
    SPPQ_RETURN_IF_ERROR(sppq_spp_validate(dtype, pooling, N, C, H, W, levels, num_levels, in_scale, out_scale));
    sppq::DeviceInfo dev;
    SPPQ_RETURN_IF_ERROR(sppq::current_device_info(&dev));
    const sppq::SppArgs a{dtype, pooling, N, C, H, W, levels, num_levels, in_scale, out_scale,
        static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(in))};
    static thread_local sppq::SppLaunch l;  // large (tables); one per thread, filled per call
    SPPQ_RETURN_IF_ERROR(sppq::plan_spp(a, dev, sppq::spp_knobs(), &l));
    if (l.kind == sppq::SppKernel::kRows) return sppq::launch_rows(in, out, dtype, l, stream);
    if (dtype == SPPQ_FLOAT32) return sppq::launch_dtype<float>(in, out, pooling, l, stream);
    if (dtype == SPPQ_FLOAT16) return sppq::launch_dtype<__half>(in, out, pooling, l, stream);
    return sppq::launch_dtype<int8_t>(in, out, pooling, l, stream);
}

int sppq_spp_kernel_choice(int dtype, int pooling, int N, int C, int H, int W, const int* levels, int num_levels) {
    if (sppq_spp_validate(dtype, pooling, N, C, H, W, levels, num_levels, 1.0f, 1.0f) != SPPQ_OK) return -1;
    sppq::DeviceInfo dev;
    if (sppq::current_device_info(&dev) != SPPQ_OK) return -1;
    const sppq::SppArgs a{dtype, pooling, N, C, H, W, levels, num_levels, 1.0f, 1.0f, 0};
    static thread_local sppq::SppLaunch l;
    if (sppq::plan_spp(a, dev, sppq::spp_knobs(), &l) != SPPQ_OK) return -1;
    return static_cast<int>(l.kind);
}

}  // extern "C"
