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

// kind and threads of the plan (threads 0 when not the fixed kernel)
bool plan_of(const SppKnobs& knobs, int n, int c, int hw, int dtype, const int* lv, int nl, SppLaunch* l) {
    DeviceInfo dev;
    dev.sms = 132;
    dev.smem_optin = 227 * 1024;
    dev.smem_per_sm = 228 * 1024;
    dev.l2_bytes = 60 << 20;
    const SppArgs a{dtype, SPPQ_MAX, n, c, hw, hw, lv, nl, 1.0f, 1.0f, 256};
    return plan_spp(a, dev, knobs, l) == SPPQ_OK;
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
    std::printf("plan rule check: %d checks, %d failures\n", g_checks, g_fail);
    return g_fail == 0 ? 0 : 1;
}
