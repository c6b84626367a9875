/*
 * sppquant: Spatial Pyramid Pooling forward kernels, plain C launch API.
 *
 * Semantics are those of sppquant/ops/spp/reference.py:
 *   - input NCHW, linear layout, output (N, C * sum(n*n)), level-major, then channel,
 *     then bin row-major (Caffe's SPP layout);
 *   - bin i of n along an axis of length a spans [floor(i*a/n), ceil((i+1)*a/n))
 *     (PyTorch AdaptiveMaxPool2d rule, also when a < n);
 *   - max: NaN in a bin gives NaN (like np.max); avg: float32 accumulation;
 *   - INT8: when in_scale == out_scale (bit-identical floats) max copies the input
 *     values. Otherwise q_out = clamp(rintf(q * r), -128, 127) with the float32
 *     r = in_scale / out_scale (IEEE division, then one float32 multiply, rintf rounds
 *     half to even). For avg, q is the float32 mean of the bin's int8 values.
 *
 * Status codes, dtypes, limits and the shared functions (sppq_error_string, ...): sppq_common.h.
 * All functions return SPPQ_OK (0) or a positive error code; nothing aborts.
 */
#ifndef SPPQUANT_SPP_KERNELS_H
#define SPPQUANT_SPP_KERNELS_H

#include "sppq_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of output features per image, C * sum(n*n); -1 when the arguments are invalid. */
SPPQ_API long long sppq_spp_output_width(int C, const int* levels, int num_levels);

/* Checks the arguments of sppq_spp_forward without touching the GPU. */
SPPQ_API int sppq_spp_validate(int dtype, int pooling, int N, int C, int H, int W, const int* levels,
    int num_levels, float in_scale, float out_scale);

/* SPP forward on `stream`. in: N*C*H*W elements, out: N*sppq_spp_output_width(C, ...) elements,
 * both of the type `dtype`, device memory. in_scale/out_scale are used for INT8 only. */
SPPQ_API int sppq_spp_forward(const void* in, void* out, int dtype, int pooling, int N, int C, int H, int W,
    const int* levels, int num_levels, float in_scale, float out_scale, cudaStream_t stream);

/* Which kernel sppq_spp_forward takes for these arguments on the current device: 0 stream,
 * 1 small, 2 segment, 3 lane (spp_plan.h); -1 for invalid arguments. For benchmarks and tests. */
SPPQ_API int sppq_spp_kernel_choice(int dtype, int pooling, int N, int C, int H, int W, const int* levels,
    int num_levels);

#ifdef __cplusplus
}
#endif

#endif /* SPPQUANT_SPP_KERNELS_H */
