// CPU check of the whole-map SPP planner's fixed-kernel rules (spp_plan.cpp, v8 / v9 rounds): which kernel,
// block size and int8 body plan_spp picks for hand-chosen shapes on an H200-like device (132 SMs), with the default
// knobs and with the v7 knobs. Prints one line per failure and "plan rule check: N checks, F failures".
#include "spp_plan.h"

#include <cstdio>
#include <initializer_list>

using namespace sppq;

namespace {

int g_checks = 0, g_fail = 0;

void expect(bool ok, const char* what, int n, int c, int hw, int dtype) {
    ++g_checks;
    if (!ok) {
        ++g_fail;
        std::printf("FAIL %s: %dx%dx%dx%d dtype %d\n", what, n, c, hw, hw, dtype);
    }
}

DeviceInfo h200() {  // the device the rules were measured on
    DeviceInfo dev;
    dev.sms = 132;
    dev.smem_optin = 227 * 1024;
    dev.smem_per_sm = 228 * 1024;
    dev.l2_bytes = 60 << 20;
    return dev;
}

// kind and threads of the plan (threads 0 when not the fixed kernel)
bool plan_of(const SppKnobs& knobs, int n, int c, int hw, int dtype, const int* lv, int nl, SppLaunch* l) {
    const SppArgs a{dtype, SPPQ_MAX, n, c, hw, hw, lv, nl, 1.0f, 1.0f, 256};
    return plan_spp(a, h200(), knobs, l) == SPPQ_OK;
}

void check_fixed(const SppKnobs& knobs, int n, int c, int hw, int dtype, bool fixed, int threads) {
    static const int lv[4] = {6, 3, 2, 1};
    SppLaunch l{};
    expect(plan_of(knobs, n, c, hw, dtype, lv, 4, &l), "plan", n, c, hw, dtype);
    expect((l.kind == SppKernel::kFixed) == fixed, fixed ? "fixed kernel expected" : "no fixed kernel expected", n, c,
        hw, dtype);
    if (!fixed || l.kind != SppKernel::kFixed) return;
    expect(l.threads == threads, "warps per block", n, c, hw, dtype);
    // every span has a warp or the warps stride over them; shared memory is one warp's share per warp
    expect(static_cast<long long>(l.grid) * (l.threads / 32) >= 1 && l.smem == static_cast<size_t>(l.lane.warp_bytes) * (l.threads / 32),
        "grid / shared memory", n, c, hw, dtype);
    if (l.threads == 32) expect(static_cast<long long>(l.grid) == l.lane.units, "one-warp blocks: a block per span", n, c, hw, dtype);
}

// the fixed kernel's int8 body (v9 round): packed pairs unless the levels are all odd on a launch of
// N*C <= 16384; fp32 / fp16 always 0; SPPQ_FIXED_I8 (knobs.fixed_i8) forces a body
void check_body(const SppKnobs& knobs, int n, int c, int hw, int dtype, const int* lv, int nl, int body) {
    SppLaunch l{};
    expect(plan_of(knobs, n, c, hw, dtype, lv, nl, &l) && l.kind == SppKernel::kFixed, "fixed kernel expected", n, c,
        hw, dtype);
    expect(l.lane.body == body, "int8 body", n, c, hw, dtype);
}

void check_bodies() {
    const SppKnobs def{};
    static const int l8421[4] = {8, 4, 2, 1}, l6321[4] = {6, 3, 2, 1}, l531[3] = {5, 3, 1}, l124[3] = {1, 2, 4};
    for (int hw : {7, 13}) {
        check_body(def, 8, 512, hw, SPPQ_INT8, l8421, 4, 1);
        check_body(def, 128, 2048, hw, SPPQ_INT8, l6321, 4, 1);
        check_body(def, 8, 512, hw, SPPQ_INT8, l124, 3, 1);
        check_body(def, 8, 2048, hw, SPPQ_INT8, l531, 3, 0);    // 16384 planes: one group per warp
        check_body(def, 64, 512, hw, SPPQ_INT8, l531, 3, 1);    // 32768
        check_body(def, 128, 2048, hw, SPPQ_FLOAT16, l8421, 4, 0);
        check_body(def, 8, 512, hw, SPPQ_FLOAT32, l531, 3, 0);
    }
    SppKnobs forced{};
    for (int b = 0; b < 3; ++b) {
        forced.fixed_i8 = b;
        check_body(forced, 8, 512, 7, SPPQ_INT8, l531, 3, b);
        check_body(forced, 128, 2048, 13, SPPQ_INT8, l8421, 4, b);
        check_body(forced, 128, 2048, 13, SPPQ_FLOAT16, l8421, 4, 0);
    }
}

// The rows kernel (v9): kind, vector width and warp layout of the plan for an H x W map.
void check_rows(const SppKnobs& knobs, int n, int c, int h, int w, int dtype, int pooling, const int* lv, int nl,
    bool rows, int vec) {
    const DeviceInfo dev = h200();
    const SppArgs a{dtype, pooling, n, c, h, w, lv, nl, 1.0f, 1.0f, 256};
    SppLaunch l{};
    expect(plan_spp(a, dev, knobs, &l) == SPPQ_OK, "plan", n, c, h, dtype);
    expect((l.kind == SppKernel::kRows) == rows, rows ? "rows kernel expected" : "no rows kernel expected", n, c, h, dtype);
    if (!rows || l.kind != SppKernel::kRows) return;
    const RowsParams& p = l.rows;
    expect(l.vec == vec && p.vpr == w / vec && p.G == 32 / (p.vpr * p.rc) && p.G >= 1 && p.rows * p.rc >= h &&
        p.rows >= (p.rc > 1 ? 8 : 1), "rows: vector width / lanes per plane / row chunks", n, c, h, dtype);
    // row chunks only while the launch is short of warps (default: 64 per SM), and chunk starts are segment starts
    // row chunks only when whole planes give < 12 warps per SM, then doubled while < 64 warps per SM (knob defaults)
    const long long nc = static_cast<long long>(n) * c;
    const long long g1 = 32 / p.vpr, gh = p.rc > 1 ? 32 / (p.vpr * (p.rc / 2)) : 1;  // planes per warp: 1 and rc / 2 chunks
    expect(p.rc == 1 ? ((nc + g1 - 1) / g1 >= 12LL * 132 || 2 * p.vpr > 32 || (h + 1) / 2 < 8 ||
                           (nc + 32 / (2 * p.vpr) - 1) / (32 / (2 * p.vpr)) >= 64LL * 132 || knobs.rows_warps == 0)
                     : ((nc + g1 - 1) / g1 < 12LL * 132 && (nc + gh - 1) / gh < 64LL * 132 && p.vpr * p.rc <= 32),
        "rows: chunk count", n, c, h, dtype);
    for (int ch = 0; ch < p.rc && ch * p.rows < h; ++ch)
        expect(ch == 0 ? p.cseg[0] == 0 : p.yend[p.cseg[ch] - 1] == ch * p.rows, "rows: chunk start is a segment start", n, c, h, dtype);
    expect(p.groups == (static_cast<long long>(n) * c + p.G - 1) / p.G && l.threads == 32 * kRowsWarps &&
        static_cast<long long>(l.grid) * kRowsWarps >= p.groups && l.smem == static_cast<size_t>(p.warp_bytes) * kRowsWarps,
        "rows: groups / grid / shared memory", n, c, h, dtype);
    // every level's source is a finer level it divides (or none), and comes earlier in the order
    int pos[SPPQ_MAX_LEVELS] = {};
    for (int r = 0; r < nl; ++r) pos[p.order[r]] = r;
    bool ok = p.yend[p.sy - 1] == h;
    for (int i = 0; i < nl; ++i) {
        if (p.src[i] == kRowsNoSrc) continue;
        ok = ok && lv[p.src[i]] > lv[i] && lv[p.src[i]] % lv[i] == 0 && pos[p.src[i]] < pos[i] && p.k[i] == lv[p.src[i]] / lv[i];
    }
    expect(ok, "rows: level sources / segments", n, c, h, dtype);
}

}  // namespace

int main() {
    const SppKnobs def{};  // the shipped rule
    for (int dt = 0; dt < 3; ++dt) {
        check_fixed(def, 1, 512, 7, dt, false, 0);        // below 1024 planes: small kernel
        check_fixed(def, 1, 1024, 7, dt, true, 32);       // 7x7 from 1024 planes, one-warp blocks
        check_fixed(def, 8, 256, 7, dt, true, 32);
        check_fixed(def, 64, 256, 7, dt, true, 32);       // 512 groups: 128 four-warp blocks < 132 SMs
        check_fixed(def, 128, 256, 7, dt, true, 128);     // 1024 groups: four-warp blocks
        check_fixed(def, 1, 1024, 13, dt, false, 0);      // 13x13 below 2048 planes
        check_fixed(def, 1, 2048, 13, dt, dt != SPPQ_FLOAT32, 32);  // fp16 / int8 from 2048, fp32 from 4096
        check_fixed(def, 1, 2048, 11, dt, dt != SPPQ_FLOAT32, 32);  // 11x11 takes 13x13's thresholds
        check_fixed(def, 8, 512, 13, dt, true, 32);
        check_fixed(def, 128, 256, 13, dt, true, 128);
        check_fixed(def, 1, 4096, 20, dt, false, 0);      // not an instantiated shape
    }
    SppKnobs v7{};  // the v7 rule: 4096 planes, four-warp blocks
    v7.fixed_planes = 4096;
    v7.fixed_warps = 4;
    check_fixed(v7, 1, 2048, 7, SPPQ_FLOAT16, false, 0);
    check_fixed(v7, 8, 512, 7, SPPQ_INT8, true, 128);
    check_bodies();
    static const int l6321[4] = {6, 3, 2, 1}, l8421[4] = {8, 4, 2, 1}, l531[3] = {5, 3, 1}, l124[3] = {1, 2, 4};
    for (int dt = 0; dt < 3; ++dt) {
        const int v = 4 << dt;  // 16-byte vectors where the row pitch allows: 4 fp32, 8 fp16, 16 int8
        check_rows(def, 64, 2048, 20, 20, dt, SPPQ_MAX, l8421, 4, true, 4);  // 80 / 40 / 20-byte rows: 4-element vectors
        check_rows(def, 8, 512, 40, 40, dt, SPPQ_MAX, l6321, 4, true, dt == SPPQ_INT8 ? 8 : v);
        check_rows(def, 128, 1024, 64, 64, dt, SPPQ_MAX, l531, 3, true, v);
        check_rows(def, 32, 512, 64, 64, dt, SPPQ_MAX, l124, 3, true, v);
        check_rows(def, 32, 512, 64, 64, dt, SPPQ_AVG, l124, 3, false, 0);  // max only
        check_rows(def, 2, 64, 300, 300, dt, SPPQ_MAX, l6321, 4, false, 0);  // rows wider than a warp
        check_rows(def, 128, 256, 13, 13, dt, SPPQ_MAX, l6321, 4, false, 0);  // fixed kernel
    }
    check_rows(def, 8, 384, 37, 53, SPPQ_FLOAT32, SPPQ_MAX, l124, 3, false, 0);  // odd W: 53 scalar lanes > 32
    check_rows(def, 1, 512, 64, 64, SPPQ_FLOAT32, SPPQ_MAX, l124, 3, false, 0);   // under 1024 planes: segment kernel
    check_rows(def, 1, 1024, 64, 64, SPPQ_FLOAT32, SPPQ_MAX, l124, 3, true, 4);   // from 1024 planes (with row chunks)
    check_rows(def, 16, 1024, 40, 40, SPPQ_FLOAT16, SPPQ_MAX, l531, 3, true, 8);  // 2731 warps >= 12 per SM: no chunks
    {  // few planes: row chunks (8 rows each at most 8 chunks) until 64 warps per SM or 32 lanes per plane
        SppLaunch l{};
        DeviceInfo dev;
        dev.sms = 132;
        dev.smem_optin = 227 * 1024;
        const SppArgs a{SPPQ_INT8, SPPQ_MAX, 1, 2048, 64, 64, l6321, 4, 1.0f, 1.0f, 256};
        expect(plan_spp(a, dev, def, &l) == SPPQ_OK && l.kind == SppKernel::kRows && l.rows.rc == 8 && l.rows.rows == 8 &&
            l.rows.G == 1, "rows: 2048 int8 64x64 planes take 8 chunks of 8 rows", 1, 2048, 64, SPPQ_INT8);
        SppKnobs nochunk{};
        nochunk.rows_warps = 0;
        expect(plan_spp(a, dev, nochunk, &l) == SPPQ_OK && l.kind == SppKernel::kRows && l.rows.rc == 1 && l.rows.G == 8,
            "rows: SPPQ_ROWS_WARPS=0 keeps whole planes per lane", 1, 2048, 64, SPPQ_INT8);
    }
    SppKnobs off{};
    off.rows_mode = 0;
    check_rows(off, 64, 2048, 20, 20, SPPQ_FLOAT32, SPPQ_MAX, l8421, 4, false, 0);
    SppKnobs forced{};
    forced.rows_mode = 2;
    check_rows(forced, 128, 256, 13, 13, SPPQ_FLOAT16, SPPQ_MAX, l6321, 4, true, 1);  // 26-byte rows: 2-byte lanes
    std::printf("plan rule check: %d checks, %d failures\n", g_checks, g_fail);
    return g_fail == 0 ? 0 : 1;
}
