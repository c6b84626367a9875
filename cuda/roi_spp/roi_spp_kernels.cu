// sppquant: RoI spatial pyramid pooling forward kernel (semantics: roi_spp_kernels.h, plan:
// roi_spp_plan.h). One launch for all levels and RoIs; tables by value (graph-capturable).
#include "roi_spp_kernels.h"

#include "cuda_check.h"
#include "device_info.h"
#include "kernel_common.cuh"
#include "roi_spp_plan.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace sppq {
namespace {

__device__ __forceinline__ float acc_to(float a, float*) { return a; }
__device__ __forceinline__ __half acc_to(float a, __half*) { return __float2half_rn(a); }  // exact: a is a half
__device__ __forceinline__ int8_t acc_to(int a, int8_t*) { return static_cast<int8_t>(a); }
template <typename T> __device__ __forceinline__ T zero_of() { return T(0); }
template <> __device__ __forceinline__ __half zero_of<__half>() { return __float2half_rn(0.0f); }

struct Region {
    bool valid;
    int b;                // image
    long long x0, y0;     // region start (unclipped, feature-map pixels)
    long long w, h;       // roi_w, roi_h (>= 1)
};

// round(v * scale): one float32 multiply, half away from zero (roundf), clamped to +-2^30.
__device__ __forceinline__ long long corner(float v, float scale) {
    const float q = roundf(__fmul_rn(v, scale));
    return static_cast<long long>(fminf(fmaxf(q, -kRoiCoordLimit), kRoiCoordLimit));
}

__device__ __forceinline__ Region read_roi(const float* __restrict__ roi, const RoiParams& p) {
    Region g;
    const float bf = __ldg(roi), x1 = __ldg(roi + 1), y1 = __ldg(roi + 2), x2 = __ldg(roi + 3), y2 = __ldg(roi + 4);
    g.valid = isfinite(bf) && isfinite(x1) && isfinite(y1) && isfinite(x2) && isfinite(y2) && bf >= 0.0f &&
        bf < static_cast<float>(p.N);
    g.b = g.valid ? static_cast<int>(bf) : 0;
    g.x0 = corner(x1, p.spatial_scale);
    g.y0 = corner(y1, p.spatial_scale);
    g.w = max(corner(x2, p.spatial_scale) - g.x0 + 1, 1LL);
    g.h = max(corner(y2, p.spatial_scale) - g.y0 + 1, 1LL);
    return g;
}

__device__ __forceinline__ int clip(long long v, int hi) { return static_cast<int>(min(max(v, 0LL), static_cast<long long>(hi))); }

// floor(i*len/n) and ceil((i+1)*len/n), exact: 32-bit division when (i+1)*len fits (len < 2^24,
// i < 64: every real box), 64-bit otherwise.
__device__ __forceinline__ long long bin_lo(int i, long long len, int n) {
    return len < (1LL << 24) ? static_cast<long long>(static_cast<unsigned>(i * len) / static_cast<unsigned>(n))
                             : (i * len) / n;
}
__device__ __forceinline__ long long bin_hi(int i, long long len, int n) {
    return len < (1LL << 24) ? static_cast<long long>(static_cast<unsigned>((i + 1) * len + n - 1) / static_cast<unsigned>(n))
                             : ((i + 1) * len + n - 1) / n;
}

// Clipped [start, end) of every bin of every level along both axes, exact integer arithmetic.
__device__ __forceinline__ void fill_bin_table(const Region& g, const RoiParams& p, int (*tab)[SPPQ_MAX_SUM_BINS]) {
    for (int t = threadIdx.x; t < p.sum_n; t += blockDim.x) {
        int l = 0;
        while (l + 1 < p.nlev && p.bin_off[l + 1] <= t) ++l;
        const int n = p.lev[l], i = t - p.bin_off[l];
        tab[0][t] = clip(g.y0 + bin_lo(i, g.h, n), p.H);
        tab[1][t] = clip(g.y0 + bin_hi(i, g.h, n), p.H);
        tab[2][t] = clip(g.x0 + bin_lo(i, g.w, n), p.W);
        tab[3][t] = clip(g.x0 + bin_hi(i, g.w, n), p.W);
    }
}

template <typename T>
__device__ void write_zero_rows(T* __restrict__ orow, const RoiParams& p, int c0, int ncc) {
    for (int l = 0; l < p.nlev; ++l) {
        const int nn = p.lev[l] * p.lev[l];
        T* o = orow + static_cast<long long>(p.C) * p.out_off[l] + static_cast<long long>(c0) * nn;
        for (int it = threadIdx.x; it < ncc * nn; it += blockDim.x) o[it] = zero_of<T>();
    }
}

template <typename T> __device__ __forceinline__ T lowest_of();
template <> __device__ __forceinline__ float lowest_of<float>() { return -INFINITY; }
template <> __device__ __forceinline__ __half lowest_of<__half>() { return __ushort_as_half(0xFC00); }
template <> __device__ __forceinline__ int8_t lowest_of<int8_t>() { return -128; }

constexpr int kRoiItems = 4;  // column items per thread at once: 2 rows each, 8 loads in flight

// Pass 1: Cb[c][rr][x - wx0] = max over the rows of root bin row rr of column x. A thread takes
// kRoiItems items (blockDim apart, so a warp's loads stay coalesced along x) and loads two rows
// of each before reducing: the L2 round trips of the items overlap instead of queueing.
template <typename T, bool FASTDIV>
__device__ void column_pass(const T* __restrict__ plane0, T* cb, const RoiParams& p, const int (*tab)[SPPQ_MAX_SUM_BINS],
    int ncc, int wx0, int rwc) {
    using A = typename Acc<T, SPPQ_MAX>::type;
    using O = Op<SPPQ_MAX, A>;
    const int S = p.sr, W = p.W;
    const long long hw = static_cast<long long>(p.H) * W;
    const int items = ncc * S * rwc;
    // quotients below ncc * S <= 2^14: the float-reciprocal division is exact
    const DivS div_rwc = make_divs(rwc), div_s = make_divs(S);
    for (int base = threadIdx.x; base < items; base += kRoiItems * blockDim.x) {
        const T* src[kRoiItems];
        int rows[kRoiItems], dst[kRoiItems];
        A acc[kRoiItems];
        int most = 0;
#pragma unroll
        for (int g = 0; g < kRoiItems; ++g) {
            const int it = base + g * blockDim.x;
            const int q = FASTDIV ? divs(it, div_rwc) : it / rwc, xo = it - q * rwc;
            const int c = FASTDIV ? divs(q, div_s) : q / S, rr = q - c * S;
            const int t = p.rrow[it < items ? rr : 0];
            const int y0 = tab[0][t];
            rows[g] = it < items ? tab[1][t] - y0 : 0;
            src[g] = plane0 + c * hw + static_cast<long long>(y0) * W + wx0 + xo;
            dst[g] = it < items ? (c * S + rr) * p.wcap + xo : -1;
            acc[g] = O::init();
            most = max(most, rows[g]);
        }
        for (int r = 0; r < most; r += 2) {
            T v[kRoiItems][2];
#pragma unroll
            for (int g = 0; g < kRoiItems; ++g) {
                v[g][0] = r < rows[g] ? __ldg(src[g] + static_cast<long long>(r) * W) : lowest_of<T>();
                v[g][1] = r + 1 < rows[g] ? __ldg(src[g] + static_cast<long long>(r + 1) * W) : lowest_of<T>();
            }
#pragma unroll
            for (int g = 0; g < kRoiItems; ++g) acc[g] = O::apply(acc[g], O::apply(cvt(v[g][0]), cvt(v[g][1])));
        }
#pragma unroll
        for (int g = 0; g < kRoiItems; ++g)
            if (dst[g] >= 0) cb[dst[g]] = acc_to(acc[g], static_cast<T*>(nullptr));
    }
}

// Pass 2: root-level bins from Cb; written out and kept in RB (identity for empty bins).
template <typename T>
__device__ void root_pass(const T* cb, T* rb, T* __restrict__ orow, const RoiParams& p,
    const int (*tab)[SPPQ_MAX_SUM_BINS], int c0, int ncc, int wx0) {
    using A = typename Acc<T, SPPQ_MAX>::type;
    using O = Op<SPPQ_MAX, A>;
    for (int l = 0; l < p.nlev; ++l) {
        if (p.root_of[l] != l) continue;
        const int n = p.lev[l], nn = n * n;
        T* o = orow + static_cast<long long>(p.C) * p.out_off[l] + static_cast<long long>(c0) * nn;
        for (int it = threadIdx.x; it < ncc * nn; it += blockDim.x) {
            const int c = it / nn, b = it - c * nn, by = b / n, bx = b - by * n;
            const int ty = p.bin_off[l] + by, tx = p.bin_off[l] + bx;
            const int x0 = tab[2][tx], x1 = tab[3][tx];
            const bool empty = tab[0][ty] >= tab[1][ty] || x0 >= x1;
            A acc = O::init();
            const T* row = cb + (c * p.sr + p.row_off[l] + by) * p.wcap - wx0;
            for (int x = x0; x < x1; ++x) acc = O::apply(acc, cvt(row[x]));
            if (p.srb) rb[c * p.srb + p.rb_off[l] + b] = acc_to(acc, static_cast<T*>(nullptr));
            o[it] = empty ? zero_of<T>() : Store<T, SPPQ_MAX>::get(acc, 0, p);
        }
    }
}

// Pass 3: levels derived from a root level: max over k x k root bins.
template <typename T>
__device__ void derived_pass(const T* rb, T* __restrict__ orow, const RoiParams& p,
    const int (*tab)[SPPQ_MAX_SUM_BINS], int c0, int ncc) {
    using A = typename Acc<T, SPPQ_MAX>::type;
    using O = Op<SPPQ_MAX, A>;
    for (int l = 0; l < p.nlev; ++l) {
        const int rt = p.root_of[l];
        if (rt == l) continue;
        const int n = p.lev[l], nn = n * n, kk = p.k[l], nr = p.lev[rt];
        T* o = orow + static_cast<long long>(p.C) * p.out_off[l] + static_cast<long long>(c0) * nn;
        for (int it = threadIdx.x; it < ncc * nn; it += blockDim.x) {
            const int c = it / nn, b = it - c * nn, by = b / n, bx = b - by * n;
            const int ty = p.bin_off[l] + by, tx = p.bin_off[l] + bx;
            const bool empty = tab[0][ty] >= tab[1][ty] || tab[2][tx] >= tab[3][tx];
            const T* r = rb + c * p.srb + p.rb_off[rt] + kk * by * nr + kk * bx;
            A acc = O::init();
            for (int u = 0; u < kk; ++u)
                for (int v = 0; v < kk; ++v) acc = O::apply(acc, cvt(r[u * nr + v]));
            o[it] = empty ? zero_of<T>() : Store<T, SPPQ_MAX>::get(acc, 0, p);
        }
    }
}

template <typename T, bool FASTDIV>
__global__ void __launch_bounds__(kRoiBlock) roi_spp_kernel(const T* __restrict__ feat, const float* __restrict__ rois,
    T* __restrict__ out, const RoiParams p) {
    __shared__ int tab[4][SPPQ_MAX_SUM_BINS];  // per level bin: y start, y end, x start, x end (clipped)
    extern __shared__ __align__(16) unsigned char smem[];
    const int r = blockIdx.x / p.nchunks;
    const int c0 = (blockIdx.x - r * p.nchunks) * p.cc;
    const int ncc = min(p.cc, p.C - c0);
    T* orow = out + static_cast<long long>(r) * p.C * p.total_bins;
    const Region g = read_roi(rois + 5LL * r, p);  // every thread: same values, no barrier needed
    if (!g.valid) {
        write_zero_rows(orow, p, c0, ncc);
        return;
    }
    fill_bin_table(g, p, tab);
    __syncthreads();
    T* cb = reinterpret_cast<T*>(smem);
    T* rb = reinterpret_cast<T*>(smem + ((static_cast<size_t>(p.cc) * p.sr * p.wcap * sizeof(T) + 15) & ~size_t(15)));
    const int wx0 = clip(g.x0, p.W), rwc = clip(g.x0 + g.w, p.W) - wx0;
    const T* plane0 = feat + (static_cast<long long>(g.b) * p.C + c0) * p.H * p.W;
    column_pass<T, FASTDIV>(plane0, cb, p, tab, ncc, wx0, rwc);
    __syncthreads();
    root_pass(cb, rb, orow, p, tab, c0, ncc, wx0);
    if (!p.srb) return;
    __syncthreads();
    derived_pass(rb, orow, p, tab, c0, ncc);
}

template <typename T>
int launch(const void* feat, const float* rois, void* out, const RoiLaunch& l, cudaStream_t s) {
    auto kern = l.p.fastdiv ? roi_spp_kernel<T, true> : roi_spp_kernel<T, false>;
    if (l.smem > 48 * 1024 - sizeof(int) * 4 * SPPQ_MAX_SUM_BINS)
        SPPQ_CUDA_RETURN(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(l.smem)));
    kern<<<l.grid, l.threads, l.smem, s>>>(static_cast<const T*>(feat), rois, static_cast<T*>(out), l.p);
    return SPPQ_LAUNCH_STATUS();
}

}  // namespace
}  // namespace sppq

extern "C" {

long long sppq_roi_spp_output_width(int C, const int* levels, int num_levels) {
    if (C <= 0 || sppq::check_levels(levels, num_levels) != SPPQ_OK) return -1;
    long long s = 0;
    for (int i = 0; i < num_levels; ++i) s += static_cast<long long>(levels[i]) * levels[i];
    return s * C;
}

int sppq_roi_spp_validate(int dtype, int pooling, int N, int C, int H, int W, int R, const int* levels, int num_levels,
    float spatial_scale, float in_scale, float out_scale) {
    if (levels == nullptr) return SPPQ_ERR_NULL_POINTER;
    if (dtype < SPPQ_FLOAT32 || dtype > SPPQ_INT8) return SPPQ_ERR_DTYPE;
    if (pooling != SPPQ_MAX) return SPPQ_ERR_POOLING;
    if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || R < 0 || H > SPPQ_MAX_DIM || W > SPPQ_MAX_DIM) return SPPQ_ERR_SHAPE;
    SPPQ_RETURN_IF_ERROR(sppq::check_levels(levels, num_levels));
    const double width = static_cast<double>(sppq_roi_spp_output_width(C, levels, num_levels));
    if (static_cast<double>(N) * C * H * W > 9.0e18 || static_cast<double>(R) * width > 9.0e18) return SPPQ_ERR_SHAPE;
    if (!(std::isfinite(spatial_scale) && spatial_scale > 0.0f)) return SPPQ_ERR_SPATIAL_SCALE;
    if (dtype == SPPQ_INT8) {
        if (!(std::isfinite(in_scale) && in_scale > 0.0f && std::isfinite(out_scale) && out_scale > 0.0f))
            return SPPQ_ERR_SCALE;
    }
    return SPPQ_OK;
}

int sppq_roi_spp_forward(const void* features, const float* rois, void* out, int dtype, int pooling, int N, int C,
    int H, int W, int R, const int* levels, int num_levels, float spatial_scale, float in_scale, float out_scale,
    cudaStream_t stream) {
    SPPQ_RETURN_IF_ERROR(sppq_roi_spp_validate(dtype, pooling, N, C, H, W, R, levels, num_levels, spatial_scale,
        in_scale, out_scale));
    if (R == 0) return SPPQ_OK;  // nothing to read or write
    if (features == nullptr || rois == nullptr || out == nullptr) return SPPQ_ERR_NULL_POINTER;
    sppq::DeviceInfo dev;
    SPPQ_RETURN_IF_ERROR(sppq::current_device_info(&dev));
    const sppq::RoiArgs a{dtype, pooling, N, C, H, W, R, levels, num_levels, spatial_scale, in_scale, out_scale};
    static thread_local sppq::RoiLaunch l;
    SPPQ_RETURN_IF_ERROR(sppq::plan_roi_spp(a, dev, sppq::roi_knobs(), &l));
    if (dtype == SPPQ_FLOAT32) return sppq::launch<float>(features, rois, out, l, stream);
    if (dtype == SPPQ_FLOAT16) return sppq::launch<__half>(features, rois, out, l, stream);
    return sppq::launch<int8_t>(features, rois, out, l, stream);
}

}  // extern "C"
