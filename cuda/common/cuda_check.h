// Shared status / CUDA-error check macros for the C launch APIs (host code).
#ifndef SPPQUANT_CUDA_CHECK_H
#define SPPQUANT_CUDA_CHECK_H

#include "sppq_common.h"

#include <cuda_runtime_api.h>

namespace sppq {
// Records `e` as this thread's last CUDA error; returns SPPQ_ERR_CUDA (SPPQ_OK for cudaSuccess).
int record_cuda_error(cudaError_t e);
}  // namespace sppq

// Return a non-OK status from the enclosing function.
#define SPPQ_RETURN_IF_ERROR(expr)                \
    do {                                          \
        const int sppq_st_ = (expr);              \
        if (sppq_st_ != SPPQ_OK) return sppq_st_; \
    } while (0)

// Return SPPQ_ERR_CUDA (and record the error) when a CUDA runtime call fails.
#define SPPQ_CUDA_RETURN(expr)                                                      \
    do {                                                                            \
        const cudaError_t sppq_ce_ = (expr);                                        \
        if (sppq_ce_ != cudaSuccess) return ::sppq::record_cuda_error(sppq_ce_);    \
    } while (0)

// After a <<<...>>> launch: a launch error becomes SPPQ_ERR_CUDA, else SPPQ_OK.
#define SPPQ_LAUNCH_STATUS() ::sppq::record_cuda_error(cudaGetLastError())

#endif  // SPPQUANT_CUDA_CHECK_H
