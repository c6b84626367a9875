// The fixed kernel's instantiations (v7, issue 15): the lane kernel's layout (one lane per plane,
// 32 planes per warp, a span tile filled by cp.async) with the plane shape and the levels known at
// compile time, so the whole plane is reduced in registers with constant indices: every bin of
// every root level is a straight-line max over the plane's values, levels dividing a finer level
// come from that level's bins (the nearest finer one, so 8,4,2,1 derives 4 from 8, 2 from 4, 1
// from 2), and nothing loops over tables. The shapes are the ones SPP networks run on tiny maps:
// 7x7 (ResNet-style last stage at 224 px), 11x11 and 13x13 (SPP-net conv5), each with the
// level sets of SPP-net, YOLO-style and the sweep. Other shapes take the table-driven kernels.
// Shared by the planner (host) and the kernels (device): the list and the staging layout.
#ifndef SPPQUANT_SPP_FIXED_H
#define SPPQUANT_SPP_FIXED_H

// X(H, W, L0, L1, L2, L3): levels in output order, 0 = no level
#define SPPQ_FIXED_SHAPES(X)                                                                                 \
    X(7, 7, 1, 2, 4, 0) X(7, 7, 4, 2, 1, 0) X(7, 7, 6, 3, 2, 1) X(7, 7, 8, 4, 2, 1) X(7, 7, 5, 3, 1, 0)     \
    X(7, 7, 3, 2, 1, 0) X(11, 11, 1, 2, 4, 0) X(11, 11, 4, 2, 1, 0) X(11, 11, 6, 3, 2, 1)                    \
    X(11, 11, 8, 4, 2, 1) X(11, 11, 5, 3, 1, 0) X(13, 13, 1, 2, 4, 0) X(13, 13, 4, 2, 1, 0)                 \
    X(13, 13, 6, 3, 2, 1) X(13, 13, 8, 4, 2, 1) X(13, 13, 5, 3, 1, 0) X(13, 13, 3, 2, 1, 0)

#if defined(__CUDACC__)
#define SPPQ_HD __host__ __device__
#else
#define SPPQ_HD
#endif

namespace sppq {

// Output staging O (per warp, input type): level l's bins of the group's 32 planes at element
// fx_obase(l) + plane * n^2 + bin, each level's region rounded up to G elements (128 bytes), and
// stored at q + (q / G) * P (one 4-byte word of padding per 128 bytes): the lanes' strided writes
// spread over the banks, and the coalesced read-out of 4-byte words stays aligned.
SPPQ_HD constexpr int fx_g(int es) { return 128 / es; }
SPPQ_HD constexpr int fx_p(int es) { return 4 / es; }
SPPQ_HD constexpr int fx_lev(int l0, int l1, int l2, int l3, int l) { return l == 0 ? l0 : l == 1 ? l1 : l == 2 ? l2 : l3; }
SPPQ_HD constexpr int fx_obase(int l0, int l1, int l2, int l3, int l, int es) {
    int s = 0;
    for (int i = 0; i < l; ++i) {
        const int n = fx_lev(l0, l1, l2, l3, i);
        s += (32 * n * n + fx_g(es) - 1) / fx_g(es) * fx_g(es);
    }
    return s;
}
// staged elements of all levels (with padding)
SPPQ_HD constexpr int fx_o_elems(int l0, int l1, int l2, int l3, int es) {
    return fx_obase(l0, l1, l2, l3, 4, es) / fx_g(es) * (fx_g(es) + fx_p(es));
}

}  // namespace sppq

#endif  // SPPQUANT_SPP_FIXED_H
