// Launch planning for the RoI SPP kernel (pure host code; device facts come in as DeviceInfo).
// One block per (RoI, group of `cc` channels); per block, one barrier after the RoI's bin
// table, one after pass 1, one after pass 2 when levels are derived:
//   pass 1  Cb[c][root bin row][x] = max over the rows of that bin of the window's column x
//           (consecutive threads read consecutive columns: coalesced row segments);
//   pass 2  every root-level bin = max over its columns of Cb (written; kept in RB);
//   pass 3  levels dividing a root level: max over k x k root bins (the window is read once).
#ifndef SPPQUANT_ROI_SPP_PLAN_H
#define SPPQUANT_ROI_SPP_PLAN_H

#include "device_info.h"
#include "level_plan.h"
#include "sppq_common.h"

#include <cstddef>

namespace sppq {

constexpr int kRoiBlock = 256;
constexpr float kRoiCoordLimit = 1073741824.0f;  // 2^30: rounded corners are clamped to +-this

struct RoiArgs {
    int dtype, pooling, N, C, H, W, R;
    const int* levels;
    int num_levels;
    float spatial_scale, in_scale, out_scale;
};

struct RoiParams {
    int N, C, H, W, R;
    int cc;            // channels per block
    int nchunks;       // blocks per RoI, ceil(C / cc)
    int wcap;          // Cb row length (W: the widest clipped window)
    float spatial_scale;
    float ratio;       // int8: in_scale / out_scale
    int requant;       // int8: 0 = copy values
    int nlev, sum_n, total_bins;
    int sr;            // root bin rows (sum of n over root levels)
    int fastdiv;       // pass 1 divides by float reciprocal (1) or integer division (0)
    int srb;           // root bins per channel kept for derived levels (0: nothing derived)
    unsigned char lev[SPPQ_MAX_LEVELS], root_of[SPPQ_MAX_LEVELS], k[SPPQ_MAX_LEVELS];
    unsigned short out_off[SPPQ_MAX_LEVELS], row_off[SPPQ_MAX_LEVELS], rb_off[SPPQ_MAX_LEVELS];
    unsigned short bin_off[SPPQ_MAX_LEVELS];
    unsigned char rrow[SPPQ_MAX_SUM_BINS];  // root bin row -> index into the per-RoI bin table
};

struct RoiLaunch {
    int grid = 0, threads = kRoiBlock;
    size_t smem = 0;
    RoiParams p;
};

// Knobs for experiments only (read once from the environment): SPPQ_ROI_CC (channels per
// block; default 32 fp32, 64 fp16, 128 int8), SPPQ_ROI_DERIVE (0: every level read from the window),
// SPPQ_ROI_FASTDIV (0: pass 1 with integer divisions, as before v6).
struct RoiKnobs {
    long long cc = 0;
    bool derive = true;
    bool fastdiv = true;
};
RoiKnobs roi_knobs();

// Valid arguments with R > 0 (sppq_roi_spp_validate first). SPPQ_OK, SPPQ_ERR_UNSUPPORTED or _SHAPE.
int plan_roi_spp(const RoiArgs& a, const DeviceInfo& dev, const RoiKnobs& knobs, RoiLaunch* out);

// Dynamic shared memory of one block: Cb then RB (16-byte aligned parts).
size_t roi_smem_bytes(const RoiParams& p, size_t esize);

}  // namespace sppq

#endif  // SPPQUANT_ROI_SPP_PLAN_H
