// Pyramid levels grouped so each input window is read once per "root" level: a level n that
// divides an already-read (larger) level m is derived from m's bins, since for the adaptive
// rule bin i of n = union of bins k*i .. k*i+k-1 of m = k*n ([floor(ki*a/kn), ceil((ki+k)*a/kn))
// = [floor(i*a/n), ceil((i+1)*a/n))), and max over a union = max of the maxima. Max only: the
// bins of one level overlap by up to one pixel, so sums (avg) cannot be derived this way.
// Pure host code (no CUDA calls), shared by the SPP and RoI SPP planners.
#ifndef SPPQUANT_LEVEL_PLAN_H
#define SPPQUANT_LEVEL_PLAN_H

#include "sppq_common.h"

namespace sppq {

struct LevelPlan {
    int nlev = 0;
    unsigned char lev[SPPQ_MAX_LEVELS] = {};     // levels in the caller's (output) order
    unsigned char root_of[SPPQ_MAX_LEVELS] = {}; // index (into lev) of the root level it is read from
    unsigned char k[SPPQ_MAX_LEVELS] = {};       // root n / level n (1 for a root itself)
    unsigned short out_off[SPPQ_MAX_LEVELS] = {};// sum of n^2 of the previous levels (output offset per channel)
    unsigned short row_off[SPPQ_MAX_LEVELS] = {};// roots: offset of this root's bin rows among all root bin rows
    unsigned short rb_off[SPPQ_MAX_LEVELS] = {}; // roots: offset of this root's n^2 bins among all root bins
    unsigned short bin_off[SPPQ_MAX_LEVELS] = {};// sum of n of the previous levels (per-axis bin tables)
    int nroots = 0;
    int sum_n = 0;          // sum of n, all levels
    int total_bins = 0;     // sum of n^2, all levels
    int sum_root_n = 0;     // sum of n over roots (bin rows read from the window)
    int sum_root_bins = 0;  // sum of n^2 over roots
    bool derived = false;   // some level is derived from a root
};

// SPPQ_OK or SPPQ_ERR_NULL_POINTER / SPPQ_ERR_LEVELS (1..16 levels, each 1..64, sum <= 128).
int check_levels(const int* levels, int num_levels);

// Groups valid levels (check_levels first): largest first; each level is derived from the
// smallest existing root it divides, else it becomes a root. `derive` false: every level is a root.
LevelPlan plan_levels(const int* levels, int num_levels, bool derive);

}  // namespace sppq

#endif  // SPPQUANT_LEVEL_PLAN_H
