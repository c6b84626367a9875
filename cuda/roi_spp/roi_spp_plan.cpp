// Pure launch planning for the RoI SPP kernel (see roi_spp_plan.h).
#include "roi_spp_plan.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace sppq {
namespace {

long long env_knob(const char* name, long long dflt) {
    const char* e = std::getenv(name);
    return e && *e ? std::atoll(e) : dflt;
}

size_t align16(size_t v) { return (v + 15) & ~static_cast<size_t>(15); }

void fill_levels(const RoiArgs& a, bool derive, RoiParams* p) {
    const LevelPlan lp = plan_levels(a.levels, a.num_levels, derive);
    p->nlev = lp.nlev;
    p->sum_n = lp.sum_n;
    p->total_bins = lp.total_bins;
    p->sr = lp.sum_root_n;
    p->srb = lp.derived ? lp.sum_root_bins : 0;
    for (int l = 0; l < lp.nlev; ++l) {
        p->lev[l] = lp.lev[l];
        p->root_of[l] = lp.root_of[l];
        p->k[l] = lp.k[l];
        p->out_off[l] = lp.out_off[l];
        p->row_off[l] = lp.row_off[l];
        p->rb_off[l] = lp.rb_off[l];
        p->bin_off[l] = lp.bin_off[l];
        if (lp.root_of[l] != l) continue;
        for (int i = 0; i < lp.lev[l]; ++i) p->rrow[lp.row_off[l] + i] = static_cast<unsigned char>(lp.bin_off[l] + i);
    }
}

}  // namespace

RoiKnobs roi_knobs() {
    static const RoiKnobs k = [] {
        RoiKnobs s;
        s.cc = std::max(0LL, env_knob("SPPQ_ROI_CC", 0));
        s.derive = env_knob("SPPQ_ROI_DERIVE", 1) != 0;
        s.fastdiv = env_knob("SPPQ_ROI_FASTDIV", 1) != 0;
        return s;
    }();
    return k;
}

size_t roi_smem_bytes(const RoiParams& p, size_t esize) {
    const size_t cb = static_cast<size_t>(p.cc) * p.sr * p.wcap * esize;
    const size_t rb = static_cast<size_t>(p.cc) * p.srb * esize;
    return align16(cb) + align16(rb);
}

// Channels per block: about the same bytes per block for every dtype (32 fp32 channels), fewer
// when the per-block buffers would need more than 48 KB (more blocks per SM), down to one.
int plan_roi_spp(const RoiArgs& a, const DeviceInfo& dev, const RoiKnobs& knobs, RoiLaunch* out) {
    RoiParams& p = out->p;
    std::memset(&p, 0, sizeof(p));
    const size_t es = a.dtype == SPPQ_FLOAT32 ? 4 : (a.dtype == SPPQ_FLOAT16 ? 2 : 1);
    p.N = a.N; p.C = a.C; p.H = a.H; p.W = a.W; p.R = a.R;
    p.spatial_scale = a.spatial_scale;
    p.wcap = a.W;
    if (a.dtype == SPPQ_INT8) {
        p.requant = std::memcmp(&a.in_scale, &a.out_scale, sizeof(float)) != 0;
        p.ratio = a.in_scale / a.out_scale;
    } else {
        p.ratio = 1.0f;
    }
    fill_levels(a, knobs.derive, &p);
    long long cc = knobs.cc > 0 ? knobs.cc : static_cast<long long>(128 / es);
    cc = std::min<long long>(std::min<long long>(cc, a.C), 1024);  // pass-1 quotients < 2^22 (DivS)
    p.fastdiv = knobs.fastdiv ? 1 : 0;
    p.cc = static_cast<int>(cc);
    while (p.cc > 1 && roi_smem_bytes(p, es) > 48 * 1024) p.cc = (p.cc + 1) / 2;
    // few RoIs x channel groups: smaller groups until ~12 blocks per SM (v6 round, NOTES.md: odd
    // 3x96x37x53 int8 with 513 RoIs ran 130 us in 513 blocks of 96 channels, 75 us at 16 channels)
    const long long want = 12LL * std::max(1, dev.sms);
    while (knobs.cc == 0 && p.cc > 16 && static_cast<long long>(a.R) * ((a.C + p.cc - 1) / p.cc) < want)
        p.cc = (p.cc + 1) / 2;
    out->smem = roi_smem_bytes(p, es);
    if (out->smem > static_cast<size_t>(dev.smem_optin) - 2 * 1024) return SPPQ_ERR_UNSUPPORTED;
    p.nchunks = (a.C + p.cc - 1) / p.cc;
    const long long grid = static_cast<long long>(a.R) * p.nchunks;
    if (grid > 0x7fffffffLL) return SPPQ_ERR_SHAPE;
    out->grid = static_cast<int>(grid);
    out->threads = kRoiBlock;
    return SPPQ_OK;
}

}  // namespace sppq
