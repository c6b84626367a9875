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
 * All functions return SPPQ_OK (0) or a positive error code; nothing aborts.
 */
#ifndef SPPQUANT_SPP_KERNELS_H
#define SPPQUANT_SPP_KERNELS_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SPPQ_API __declspec(dllexport)
#else
#define SPPQ_API __attribute__((visibility("default")))
#endif

enum SppqDType { SPPQ_FLOAT32 = 0, SPPQ_FLOAT16 = 1, SPPQ_INT8 = 2 };
enum SppqPooling { SPPQ_MAX = 0, SPPQ_AVG = 1 };

enum SppqStatus {
    SPPQ_OK = 0,
    SPPQ_ERR_NULL_POINTER = 1,  /* in, out or levels is NULL */
    SPPQ_ERR_DTYPE = 2,         /* dtype not 0, 1 or 2 */
    SPPQ_ERR_POOLING = 3,       /* pooling not 0 or 1 */
    SPPQ_ERR_SHAPE = 4,         /* N, C, H or W not positive, H or W > 65535, or too large */
    SPPQ_ERR_LEVELS = 5,        /* num_levels not in 1..16, a level not in 1..SPPQ_MAX_LEVEL_BINS or sum too big */
    SPPQ_ERR_SCALE = 6,         /* INT8 scale not finite and positive */
    SPPQ_ERR_UNSUPPORTED = 7,   /* the pooling grid of this shape does not fit in shared memory */
    SPPQ_ERR_CUDA = 8           /* a CUDA call failed; sppq_last_cuda_error() says which */
};

#define SPPQ_MAX_LEVELS 16      /* number of pyramid levels */
#define SPPQ_MAX_LEVEL_BINS 64  /* largest n of one level */
#define SPPQ_MAX_SUM_BINS 128   /* sum of n over all levels */
#define SPPQ_MAX_DIM 65535      /* largest H and W */

/* Number of output features per image, C * sum(n*n); -1 when the arguments are invalid. */
SPPQ_API long long sppq_spp_output_width(int C, const int* levels, int num_levels);

/* Checks the arguments of sppq_spp_forward without touching the GPU. */
SPPQ_API int sppq_spp_validate(int dtype, int pooling, int N, int C, int H, int W, const int* levels,
    int num_levels, float in_scale, float out_scale);

/* SPP forward on `stream`. in: N*C*H*W elements, out: N*sppq_spp_output_width(C, ...) elements,
 * both of the type `dtype`, device memory. in_scale/out_scale are used for INT8 only. */
SPPQ_API int sppq_spp_forward(const void* in, void* out, int dtype, int pooling, int N, int C, int H, int W,
    const int* levels, int num_levels, float in_scale, float out_scale, cudaStream_t stream);

/* A static message for a status code. */
SPPQ_API const char* sppq_error_string(int status);

/* The CUDA error behind the last SPPQ_ERR_CUDA returned on this thread (cudaSuccess if none). */
SPPQ_API int sppq_last_cuda_error(void);

/* An empty kernel with the same launch path, for measuring launch overhead. */
SPPQ_API int sppq_empty_launch(cudaStream_t stream);

/* Version of this library's C API. */
SPPQ_API int sppq_api_version(void);

#ifdef __cplusplus
}
#endif

#endif /* SPPQUANT_SPP_KERNELS_H */
