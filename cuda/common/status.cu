// Status strings, the last CUDA error, device facts and the empty launch shared by every op.
#include "cuda_check.h"
#include "device_info.h"

#include <cuda_runtime.h>

namespace {
thread_local int g_last_cuda_error = 0;
__global__ void sppq_empty_kernel() {}
}  // namespace

namespace sppq {

int record_cuda_error(cudaError_t e) {
    if (e == cudaSuccess) return SPPQ_OK;
    g_last_cuda_error = static_cast<int>(e);
    return SPPQ_ERR_CUDA;
}

int current_device_info(DeviceInfo* out) {
    static thread_local int cached_dev = -1;
    static thread_local DeviceInfo cached;
    int dev = 0;
    SPPQ_CUDA_RETURN(cudaGetDevice(&dev));
    if (dev != cached_dev) {
        DeviceInfo d;
        SPPQ_CUDA_RETURN(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
        SPPQ_CUDA_RETURN(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        SPPQ_CUDA_RETURN(cudaDeviceGetAttribute(&d.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
        SPPQ_CUDA_RETURN(cudaDeviceGetAttribute(&d.l2_bytes, cudaDevAttrL2CacheSize, dev));
        cached = d;
        cached_dev = dev;
    }
    *out = cached;
    return SPPQ_OK;
}

}  // namespace sppq

extern "C" {

const char* sppq_error_string(int status) {
    switch (status) {
    case SPPQ_OK: return "success";
    case SPPQ_ERR_NULL_POINTER: return "null pointer argument (input, output, rois or levels)";
    case SPPQ_ERR_DTYPE: return "unsupported dtype (expected 0 float32, 1 float16, 2 int8)";
    case SPPQ_ERR_POOLING: return "unsupported pooling (SPP: 0 max, 1 avg; RoI SPP: 0 max)";
    case SPPQ_ERR_SHAPE: return "invalid shape (N, C, H, W must be positive, H and W at most 65535, R >= 0)";
    case SPPQ_ERR_LEVELS: return "invalid levels (1..16 levels, each 1..64, sum at most 128)";
    case SPPQ_ERR_SCALE: return "invalid int8 scale (must be finite and positive)";
    case SPPQ_ERR_UNSUPPORTED: return "the buffers of this shape do not fit in shared memory";
    case SPPQ_ERR_CUDA: return "CUDA error (see sppq_last_cuda_error)";
    case SPPQ_ERR_SPATIAL_SCALE: return "invalid spatial_scale (must be finite and positive)";
    default: return "unknown sppquant status";
    }
}

int sppq_last_cuda_error(void) { return g_last_cuda_error; }

int sppq_empty_launch(cudaStream_t stream) {
    sppq_empty_kernel<<<1, 32, 0, stream>>>();
    return SPPQ_LAUNCH_STATUS();
}

int sppq_api_version(void) { return 2; }

}  // extern "C"
