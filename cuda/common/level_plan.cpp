#include "level_plan.h"

#include <algorithm>

namespace sppq {

int check_levels(const int* levels, int num_levels) {
    if (levels == nullptr) return SPPQ_ERR_NULL_POINTER;
    if (num_levels < 1 || num_levels > SPPQ_MAX_LEVELS) return SPPQ_ERR_LEVELS;
    int sum = 0;
    for (int i = 0; i < num_levels; ++i) {
        if (levels[i] < 1 || levels[i] > SPPQ_MAX_LEVEL_BINS) return SPPQ_ERR_LEVELS;
        sum += levels[i];
    }
    return sum > SPPQ_MAX_SUM_BINS ? SPPQ_ERR_LEVELS : SPPQ_OK;
}

LevelPlan plan_levels(const int* levels, int num_levels, bool derive) {
    LevelPlan p;
    p.nlev = num_levels;
    int order[SPPQ_MAX_LEVELS];
    for (int i = 0; i < num_levels; ++i) {
        p.lev[i] = static_cast<unsigned char>(levels[i]);
        p.bin_off[i] = static_cast<unsigned short>(p.sum_n);
        p.out_off[i] = static_cast<unsigned short>(p.total_bins);
        p.sum_n += levels[i];
        p.total_bins += levels[i] * levels[i];
        order[i] = i;
    }
    // largest first (stable: equal levels keep their order, the first becomes the root)
    std::stable_sort(order, order + num_levels, [&](int a, int b) { return levels[a] > levels[b]; });
    for (int oi = 0; oi < num_levels; ++oi) {
        const int i = order[oi];
        int best = -1;
        for (int oj = 0; derive && oj < oi; ++oj) {
            const int j = order[oj];
            if (p.root_of[j] != j || levels[j] % levels[i] != 0) continue;
            if (best < 0 || levels[j] < levels[best]) best = j;
        }
        if (best >= 0) {
            p.root_of[i] = static_cast<unsigned char>(best);
            p.k[i] = static_cast<unsigned char>(levels[best] / levels[i]);
            p.derived = true;
        } else {
            p.root_of[i] = static_cast<unsigned char>(i);
            p.k[i] = 1;
            p.row_off[i] = static_cast<unsigned short>(p.sum_root_n);
            p.rb_off[i] = static_cast<unsigned short>(p.sum_root_bins);
            p.sum_root_n += levels[i];
            p.sum_root_bins += levels[i] * levels[i];
            ++p.nroots;
        }
    }
    return p;
}

}  // namespace sppq
