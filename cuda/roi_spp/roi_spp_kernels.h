/*
 * sppquant: RoI spatial pyramid pooling (SPP-net's detection layer), plain C launch API.
 *
 * Semantics are those of sppquant/ops/roi_spp/reference.py (and cuda/roi_spp/README.md):
 *   - features (N, C, H, W) NCHW linear, rois (R, 5) float32 rows [batch_index, x1, y1, x2, y2]
 *     in network-input pixels; output (R, C * sum(n*n)), level-major, then channel, then bin
 *     row-major (the layout of sppq_spp_forward);
 *   - corners x1' = roundf(x1 * spatial_scale) (one float32 multiply, half away from zero),
 *     clamped to [-2^30, 2^30]; roi_w = max(x2' - x1' + 1, 1), roi_h likewise;
 *   - level n, bin i spans [floor(i*h/n), ceil((i+1)*h/n)) of the region (exact integers),
 *     offset by the region start and clipped to the map; an empty bin gives 0;
 *   - a RoI whose batch index is not a finite number in [0, N) or with a non-finite
 *     coordinate gives an all-zero row (padding rows are harmless); a valid batch index is
 *     truncated toward zero;
 *   - max only (pooling must be SPPQ_MAX); NaN in a bin gives NaN;
 *   - INT8: features and output INT8 (rois stay float32); equal scales (bit-identical) copy
 *     values, otherwise q_out = clamp(rintf(q * (in_scale / out_scale)), -128, 127) exactly as
 *     sppq_spp_forward; empty bins and invalid RoIs give the quantized zero (0).
 *
 * Status codes and shared functions: sppq_common.h. Nothing aborts.
 */
#ifndef SPPQUANT_ROI_SPP_KERNELS_H
#define SPPQUANT_ROI_SPP_KERNELS_H

#include "sppq_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Features per RoI, C * sum(n*n); -1 when the arguments are invalid. */
SPPQ_API long long sppq_roi_spp_output_width(int C, const int* levels, int num_levels);

/* Checks the arguments of sppq_roi_spp_forward without touching the GPU (R may be 0). */
SPPQ_API int sppq_roi_spp_validate(int dtype, int pooling, int N, int C, int H, int W, int R, const int* levels,
    int num_levels, float spatial_scale, float in_scale, float out_scale);

/* RoI SPP forward on `stream`. features: N*C*H*W elements of `dtype`; rois: R*5 float32;
 * out: R * sppq_roi_spp_output_width(C, ...) elements of `dtype`; all device memory.
 * R == 0 launches nothing. in_scale/out_scale are used for INT8 only. */
SPPQ_API int sppq_roi_spp_forward(const void* features, const float* rois, void* out, int dtype, int pooling, int N,
    int C, int H, int W, int R, const int* levels, int num_levels, float spatial_scale, float in_scale,
    float out_scale, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* SPPQUANT_ROI_SPP_KERNELS_H */
