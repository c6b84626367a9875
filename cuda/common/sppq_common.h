/*
 * sppquant CUDA library: what every op's C API shares (export macro, dtypes, status codes,
 * limits, error strings, the last CUDA error, an empty launch for overhead measurements).
 * All functions return SPPQ_OK (0) or a positive status; nothing aborts.
 */
#ifndef SPPQUANT_COMMON_H
#define SPPQUANT_COMMON_H

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
    SPPQ_ERR_NULL_POINTER = 1,   /* a required pointer (input, output, rois, levels) is NULL */
    SPPQ_ERR_DTYPE = 2,          /* dtype not 0, 1 or 2 */
    SPPQ_ERR_POOLING = 3,        /* pooling not supported by this op */
    SPPQ_ERR_SHAPE = 4,          /* a dimension not positive (R may be 0), H or W > 65535, or too large */
    SPPQ_ERR_LEVELS = 5,         /* num_levels not in 1..16, a level not in 1..SPPQ_MAX_LEVEL_BINS or sum too big */
    SPPQ_ERR_SCALE = 6,          /* INT8 scale not finite and positive */
    SPPQ_ERR_UNSUPPORTED = 7,    /* the buffers this shape needs do not fit in shared memory */
    SPPQ_ERR_CUDA = 8,           /* a CUDA call failed; sppq_last_cuda_error() says which */
    SPPQ_ERR_SPATIAL_SCALE = 9   /* RoI SPP: spatial_scale not finite and positive */
};

#define SPPQ_MAX_LEVELS 16      /* number of pyramid levels */
#define SPPQ_MAX_LEVEL_BINS 64  /* largest n of one level */
#define SPPQ_MAX_SUM_BINS 128   /* sum of n over all levels */
#define SPPQ_MAX_DIM 65535      /* largest H and W */

/* A static message for a status code. */
SPPQ_API const char* sppq_error_string(int status);

/* The CUDA error behind the last SPPQ_ERR_CUDA returned on this thread (cudaSuccess if none). */
SPPQ_API int sppq_last_cuda_error(void);

/* An empty kernel with the same launch path, for measuring launch overhead. */
SPPQ_API int sppq_empty_launch(cudaStream_t stream);

/* Version of this library's C API: 2 = SPP + RoI SPP. */
SPPQ_API int sppq_api_version(void);

#ifdef __cplusplus
}
#endif

#endif /* SPPQUANT_COMMON_H */
