// Per-device facts the launch planners need, read once per device and thread.
#ifndef SPPQUANT_DEVICE_INFO_H
#define SPPQUANT_DEVICE_INFO_H

#include <cstddef>

namespace sppq {

struct DeviceInfo {
    int sms = 0;                  // multiprocessors
    int smem_optin = 48 * 1024;   // largest dynamic shared memory per block after opt-in
    int smem_per_sm = 228 * 1024; // shared memory per multiprocessor
    int l2_bytes = 0;
};

// SPPQ_OK and the current device's facts, or SPPQ_ERR_CUDA (error recorded).
int current_device_info(DeviceInfo* out);

}  // namespace sppq

#endif  // SPPQUANT_DEVICE_INFO_H
