// Pure launch planning for the whole-map SPP kernels (see spp_plan.h).
#include "spp_plan.h"

#include "spp_fixed.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace sppq {
namespace {

long long env_knob(const char* name, long long dflt) {
    const char* e = std::getenv(name);
    return e && *e ? std::atoll(e) : dflt;
}

size_t esize_of(int dtype) { return dtype == SPPQ_FLOAT32 ? 4 : (dtype == SPPQ_FLOAT16 ? 2 : 1); }
size_t align16(size_t v) { return (v + 15) & ~static_cast<size_t>(15); }

void int8_ratio(const SppArgs& a, float* ratio, int* requant) {
    if (a.dtype == SPPQ_INT8) {
        *requant = std::memcmp(&a.in_scale, &a.out_scale, sizeof(float)) != 0;
        *ratio = a.in_scale / a.out_scale;
    } else {
        *requant = 0;
        *ratio = 1.0f;
    }
}

// Adaptive bin [start, end) of bin i of n over an axis of length len.
int bin_start(long long i, long long len, long long n) { return static_cast<int>((i * len) / n); }
int bin_end(long long i, long long len, long long n) { return static_cast<int>(((i + 1) * len + n - 1) / n); }

// A root level's bin ranges along H (rows) and W (columns), at rows row_off .. row_off + n - 1 of the tables
// (stream kernel: 16-bit entries; lane and small kernels: 8-bit, their maps being at most 255 wide).
template <class T>
void fill_root_bins(const SppArgs& a, int n, int row_off, T* ys, T* ye, T* xs, T* xe) {
    for (int i = 0; i < n; ++i) {
        const int j = row_off + i;
        ys[j] = static_cast<T>(bin_start(i, a.H, n));
        ye[j] = static_cast<T>(bin_end(i, a.H, n));
        xs[j] = static_cast<T>(bin_start(i, a.W, n));
        xe[j] = static_cast<T>(bin_end(i, a.W, n));
    }
}

// Root tables of the stream kernel: per root bin row/column j, its range along H and W.
void fill_stream_levels(const SppArgs& a, StreamParams* p) {
    const LevelPlan lp = plan_levels(a.levels, a.num_levels, /*derive=*/true);
    p->nlev = lp.nlev;
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
        if (lp.root_of[l] != l) continue;
        fill_root_bins(a, lp.lev[l], lp.row_off[l], p->rys, p->rye, p->rxs, p->rxe);
    }
}

// Cb row length in elements: at least W, an odd number of 4-byte words so that the rows of
// the x-bin pass fall into different banks.
int cb_pitch(int W, size_t esize) {
    long long words = (static_cast<long long>(W) * static_cast<long long>(esize) + 3) / 4;
    if (words % 2 == 0) ++words;
    return static_cast<int>(words * 4 / static_cast<long long>(esize));
}

// Shared memory of one warp: two span tiles, the column maxima Cb, the root bins RB.
size_t stream_warp_bytes(const StreamParams& p, size_t esize, long long span_bytes) {
    const size_t tile = align16(static_cast<size_t>(span_bytes) + 32);
    const size_t cb = static_cast<size_t>(p.planes) * p.sr * p.pitch * esize;
    const size_t rb = static_cast<size_t>(p.planes) * p.srb * esize;
    return 2 * tile + align16(cb) + align16(rb);
}

}  // namespace

FastDiv make_fastdiv(unsigned d) {
    FastDiv f;
    if (d <= 1) return f;  // one = 1: n / 1
    unsigned s = 0;
    while ((1ULL << s) < d) ++s;
    f.mul = static_cast<unsigned>(((1ULL << (31 + s)) + d - 1) / d);
    f.shift = s - 1;
    f.one = 0;
    return f;
}

SppKnobs spp_knobs() {
    static const SppKnobs k = [] {
        SppKnobs s;
        s.stream_mode = static_cast<int>(std::min(2LL, std::max(0LL, env_knob("SPPQ_STREAM", 1))));
        s.stream_tile = std::max(256LL, env_knob("SPPQ_STREAM_TILE", 4096));
        s.stream_blocks = std::max(0LL, env_knob("SPPQ_STREAM_BLOCKS", 0));
        s.small_planes = env_knob("SPPQ_SMALL_PLANES", 4096);
        s.small = env_knob("SPPQ_SMALL", 1) != 0;
        s.small_wpp = env_knob("SPPQ_SMALL_WPP", 4);
        const long long t = env_knob("SPPQ_THREADS_PER_SM", 2048);
        s.threads_per_sm = t > 0 ? t : 2048;
        s.lane_mode = static_cast<int>(std::min(2LL, std::max(0LL, env_knob("SPPQ_LANE", 1))));
        s.lane_tile = std::max(64LL, env_knob("SPPQ_LANE_TILE", 4096));
        s.lane_warp_bytes = std::max(1024LL, env_knob("SPPQ_LANE_WARP_BYTES", 32 * 1024));
        s.lane_stages = env_knob("SPPQ_LANE_STAGES", 1) == 2 ? 2 : 1;
        s.lane_planes = std::max(1LL, env_knob("SPPQ_LANE_PLANES", 32768));
        s.fixed_mode = static_cast<int>(std::min(2LL, std::max(0LL, env_knob("SPPQ_FIXED", 1))));
        s.fixed_planes = std::max(0LL, env_knob("SPPQ_FIXED_PLANES", s.fixed_planes));
        const long long fw = env_knob("SPPQ_FIXED_WARPS", s.fixed_warps);
        s.fixed_warps = fw == 0 || fw == 1 || fw == 2 ? static_cast<int>(fw) : 4;
        const long long fi = env_knob("SPPQ_FIXED_I8", -1);
        s.fixed_i8 = fi >= 0 && fi <= 2 ? static_cast<int>(fi) : -1;
        s.rows_mode = static_cast<int>(std::min(2LL, std::max(0LL, env_knob("SPPQ_ROWS", 1))));
        s.rows_chunk_below = std::max(0LL, env_knob("SPPQ_ROWS_CHUNK_BELOW", s.rows_chunk_below));
        s.rows_warps = std::max(0LL, env_knob("SPPQ_ROWS_WARPS", s.rows_warps));
        s.rows_planes = std::max(1LL, env_knob("SPPQ_ROWS_PLANES", s.rows_planes));
        return s;
    }();
    return k;
}

// Span size: about `tile_target` bytes, less when that would leave warps idle (small inputs);
// whole planes per span when a plane fits (small mode), else row chunks of one plane.
bool plan_stream(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, StreamParams* p, int* grid,
    size_t* smem) {
    const long long tile_target = knobs.stream_tile;
    *p = StreamParams();
    const size_t es = esize_of(a.dtype);
    p->nc = static_cast<long long>(a.N) * a.C;
    p->C = a.C; p->H = a.H; p->W = a.W;
    int8_ratio(a, &p->ratio, &p->requant);
    fill_stream_levels(a, p);
    const long long plane_bytes = static_cast<long long>(a.H) * a.W * static_cast<long long>(es);
    const long long row_bytes = static_cast<long long>(a.W) * static_cast<long long>(es);
    const long long sms = std::max(1, dev.sms);
    const long long total = plane_bytes * p->nc;
    // at least ~32 spans per SM when the input allows, never under 512 bytes
    long long tile = std::min(tile_target, std::max(512LL, total / (32 * sms)));
    const size_t budget = static_cast<size_t>(std::min(dev.smem_optin, 96 * 1024)) / kStreamWarps;
    const bool small_mode = plane_bytes <= tile;
    p->pitch = cb_pitch(a.W, es);
    if (small_mode) {
        p->planes = static_cast<int>(std::max(1LL, tile / plane_bytes));
        p->rows = a.H;
        p->chunks = 1;
        while (p->planes > 1 && stream_warp_bytes(*p, es, plane_bytes * p->planes) > budget) p->planes /= 2;
        p->units = (p->nc + p->planes - 1) / p->planes;
    } else {
        tile = std::max(tile, row_bytes);
        if (tile > 16 * 1024) return false;  // very wide rows: the segment kernel
        p->planes = 1;
        p->rows = static_cast<int>(std::min<long long>(a.H, tile / row_bytes));
        p->chunks = (a.H + p->rows - 1) / p->rows;
        p->units = p->nc;
    }
    const long long span_bytes = static_cast<long long>(p->planes) * p->rows * row_bytes;
    const size_t wb = stream_warp_bytes(*p, es, span_bytes);
    if (wb > budget) return false;
    p->tile_bytes = static_cast<int>(align16(static_cast<size_t>(span_bytes) + 32));
    p->warp_bytes = static_cast<int>(wb);
    p->cb_elems = p->planes * p->sr * p->pitch;
    p->div_w = make_fastdiv(static_cast<unsigned>(a.W));
    p->div_sr = make_fastdiv(static_cast<unsigned>(p->sr));
    *smem = wb * kStreamWarps;
    // persistent grid: as many blocks as fit on the device at once, fewer for few units
    const long long per_sm = std::max<long long>(1, std::min<long long>(kStreamBlocksPerSm,
        static_cast<long long>(dev.smem_per_sm) / static_cast<long long>(*smem + 2048)));  // + static tables, reserved
    long long blocks = std::min(per_sm * sms, (p->units + kStreamWarps - 1) / kStreamWarps);
    if (knobs.stream_blocks > 0) blocks = std::min(blocks, knobs.stream_blocks);
    *grid = static_cast<int>(std::max(1LL, blocks));
    return true;
}

int lane_conflict_ways(int hw, int esize) {
    int worst = 1;
    for (int off = 0; off < 4; ++off) {  // byte offset of the element read (and of the tile start)
        long long words[32];
        for (int l = 0; l < 32; ++l) words[l] = (static_cast<long long>(l) * hw * esize + off) / 4;
        for (int b = 0; b < 32; ++b) {
            long long seen[32];
            int n = 0;
            for (int l = 0; l < 32; ++l) {
                if (words[l] % 32 != b) continue;
                bool dup = false;
                for (int i = 0; i < n; ++i) dup = dup || seen[i] == words[l];
                if (!dup) seen[n++] = words[l];
            }
            worst = std::max(worst, n);
        }
    }
    return worst;
}

namespace {

// Shared memory one warp of the lane / fixed kernels may use (a block of kLaneWarps within 200 KiB).
size_t span_warp_budget(const DeviceInfo& dev) {
    return static_cast<size_t>(std::min(dev.smem_optin, 200 * 1024)) / kLaneWarps;
}

// Blocks of ``wpb`` warps that fit on one SM by shared memory (registers may allow fewer: the launch clamps).
long long span_blocks_per_sm(size_t warp_bytes, int wpb, const DeviceInfo& dev) {
    return std::max<long long>(1, std::min<long long>(kLaneBlocksPerSm * kLaneWarps / wpb,
        static_cast<long long>(dev.smem_per_sm) / static_cast<long long>(warp_bytes * wpb + 1024)));
}

// Spans of the lane and fixed kernels: 32 * k whole planes, k from the target tile bytes, fewer while a
// warp's shared memory exceeds the budget or the resident warps would get fewer than ~2 spans each.
// Returns k; *grid gets the launch's blocks (at most what fits, at most one warp per span).
template <class WarpBytes>
long long plan_spans(const WarpBytes& warp_bytes, long long groups, long long plane_bytes, int wpb,
                     const DeviceInfo& dev, const SppKnobs& knobs, int* grid) {
    const size_t budget = span_warp_budget(dev);
    const long long sms = std::max(1, dev.sms);
    auto resident_warps = [&](size_t wb) {
        const long long b = span_blocks_per_sm(wb, wpb, dev) * sms;
        return (knobs.stream_blocks > 0 ? std::min(b, knobs.stream_blocks) : b) * wpb;
    };
    long long k = std::max<long long>(1, knobs.lane_tile / std::max<long long>(1, 32 * plane_bytes));
    while (k > 1 && (warp_bytes(k) > budget || groups / k < 2 * resident_warps(warp_bytes(k)))) --k;
    const long long units = (groups + k - 1) / k;
    const size_t wb = static_cast<size_t>(static_cast<int>(warp_bytes(k)));  // as the plan stores it
    long long blocks = std::min(span_blocks_per_sm(wb, wpb, dev) * sms, (units + wpb - 1) / wpb);
    if (knobs.stream_blocks > 0) blocks = std::min(blocks, knobs.stream_blocks);
    *grid = static_cast<int>(std::max(1LL, blocks));
    return k;
}

}  // namespace

// Lane kernel: spans of 32 * k whole planes (k from the target span bytes, fewer when warps
// would idle); per warp two span tiles, R (pass-1 column maxima of 32 planes, 4-byte slots,
// lane-interleaved) and O (every level's bins of 32 planes, odd slot strides).
bool plan_lane(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, LaneParams* p, int* grid,
    size_t* smem) {
    std::memset(p, 0, sizeof(*p));
    if (a.pooling != SPPQ_MAX || static_cast<long long>(a.H) * a.W > kLaneMaxHW || a.H > 255 || a.W > 255) return false;
    const size_t es = esize_of(a.dtype);
    p->nc = static_cast<long long>(a.N) * a.C;
    p->C = a.C; p->H = a.H; p->W = a.W; p->HW = a.H * a.W;
    int8_ratio(a, &p->ratio, &p->requant);
    const LevelPlan lp = plan_levels(a.levels, a.num_levels, /*derive=*/true);
    p->nlev = lp.nlev;
    p->total_bins = lp.total_bins;
    p->sr = lp.sum_root_n;
    int obase = 0;
    for (int l = 0; l < lp.nlev; ++l) {
        const int n = lp.lev[l], nn = n * n;
        p->lev[l] = lp.lev[l];
        p->root_of[l] = lp.root_of[l];
        p->k_of[l] = lp.k[l];
        p->out_off[l] = lp.out_off[l];
        p->row_off[l] = lp.row_off[l];
        p->ostride[l] = static_cast<unsigned short>(nn | 1);
        p->obase[l] = static_cast<unsigned short>(obase);
        p->div_nn[l] = make_fastdiv(static_cast<unsigned>(nn));
        obase += 32 * (nn | 1);
        if (lp.root_of[l] != l) continue;
        fill_root_bins(a, n, lp.row_off[l], p->rys, p->rye, p->rxs, p->rxe);
    }
    if (obase > 0xffff) return false;
    const long long plane_bytes = static_cast<long long>(p->HW) * static_cast<long long>(es);
    const long long groups = (p->nc + 31) / 32;
    const size_t r_bytes = static_cast<size_t>(a.H) * p->sr * 32 * es;
    const size_t o_bytes = static_cast<size_t>(obase) * 4;
    const int stages = knobs.lane_stages == 1 ? 1 : 2;
    auto warp_bytes = [&](long long k) {
        return stages * align16(static_cast<size_t>(32 * k * plane_bytes) + 32) + align16(r_bytes) + o_bytes;
    };
    const size_t budget = span_warp_budget(dev);
    if (warp_bytes(1) > budget) return false;
    const long long k = plan_spans(warp_bytes, groups, plane_bytes, kLaneWarps, dev, knobs, grid);
    p->k = static_cast<int>(k);
    p->stages = stages;
    p->units = (groups + k - 1) / k;
    p->tile_bytes = static_cast<int>(align16(static_cast<size_t>(32 * k * plane_bytes) + 32));
    p->r_off = stages * p->tile_bytes;
    p->o_off = p->r_off + static_cast<int>(align16(r_bytes));
    p->warp_bytes = static_cast<int>(warp_bytes(k));
    *smem = static_cast<size_t>(p->warp_bytes) * kLaneWarps;
    return true;
}

int fixed_shape_id(int H, int W, const int* levels, int num_levels) {
    int id = 0;
#define SPPQ_FX_MATCH(h, w, l0, l1, l2, l3)                                         \
    {                                                                               \
        const int fl[4] = {l0, l1, l2, l3};                                         \
        int fn = 0;                                                                 \
        while (fn < 4 && fl[fn] > 0) ++fn;                                          \
        bool ok = H == (h) && W == (w) && fn == num_levels;                         \
        for (int i = 0; ok && i < fn; ++i) ok = levels[i] == fl[i];                 \
        if (ok) return id;                                                          \
        ++id;                                                                       \
    }
    SPPQ_FIXED_SHAPES(SPPQ_FX_MATCH)
#undef SPPQ_FX_MATCH
    return -1;
}

// Fixed kernel: the lane kernel's spans (32 * k whole planes, one tile per warp, refilled once the
// last group's planes are in registers) and the staging area O of spp_fixed.h; no R.
bool plan_fixed(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, LaneParams* p, int* id, int* grid,
    int* threads, size_t* smem) {
    std::memset(p, 0, sizeof(*p));
    if (a.pooling != SPPQ_MAX) return false;
    *id = fixed_shape_id(a.H, a.W, a.levels, a.num_levels);
    if (*id < 0) return false;
    const int es = static_cast<int>(esize_of(a.dtype));
    p->nc = static_cast<long long>(a.N) * a.C;
    p->C = a.C; p->H = a.H; p->W = a.W; p->HW = a.H * a.W;
    int8_ratio(a, &p->ratio, &p->requant);
    p->body = a.dtype != SPPQ_INT8 ? 0 : knobs.fixed_i8 >= 0 ? knobs.fixed_i8 : fixed_i8_rule(a);
    int l[4] = {0, 0, 0, 0};
    p->nlev = a.num_levels;
    for (int i = 0; i < a.num_levels; ++i) {
        l[i] = a.levels[i];
        p->lev[i] = static_cast<unsigned char>(a.levels[i]);
        p->total_bins += a.levels[i] * a.levels[i];
    }
    const size_t o_bytes = static_cast<size_t>(fx_o_elems(l[0], l[1], l[2], l[3], es)) * es;
    const long long plane_bytes = static_cast<long long>(p->HW) * es;
    const long long groups = (p->nc + 31) / 32;
    auto warp_bytes = [&](long long k) { return align16(static_cast<size_t>(32 * k * plane_bytes) + 32) + align16(o_bytes); };
    const size_t budget = span_warp_budget(dev);
    if (warp_bytes(1) > budget) return false;
    const long long sms = std::max(1, dev.sms);
    // warps per block: the knob, or the rule on the four-warp plan's span count (k = 1 there: few groups)
    const int wpb = knobs.fixed_warps > 0 ? knobs.fixed_warps : fixed_warps_rule(groups, static_cast<int>(sms));
    const long long k = plan_spans(warp_bytes, groups, plane_bytes, wpb, dev, knobs, grid);
    p->k = static_cast<int>(k);
    p->stages = 1;
    p->units = (groups + k - 1) / k;
    p->tile_bytes = static_cast<int>(align16(static_cast<size_t>(32 * k * plane_bytes) + 32));
    p->r_off = p->tile_bytes;
    p->o_off = p->tile_bytes;
    p->warp_bytes = static_cast<int>(warp_bytes(k));
    *smem = static_cast<size_t>(p->warp_bytes) * wpb;
    *threads = 32 * wpb;
    return true;
}

// Warps per block of the fixed kernel (v8 round, benchmarks/gpu/NOTES.md): one-warp blocks against
// four-warp blocks on the 180 fixed-kernel sweep rows with N*C 4096-16384 (7x7, 13x13; same H200 call,
// two runs each, same-code rows within 0.15% median, 0.6% p90): 13x13 fp16 / int8 1.03-1.07x faster,
// 7x7 0.99-1.04x, fp32 0.98-1.04x (median 1.00); two-warp blocks within 1% of one-warp blocks.
// Where four-warp blocks would leave SMs without a block, the warps spread over more SMs.
int fixed_warps_rule(long long units, int sms) {
    return (units + kLaneWarps - 1) / kLaneWarps < sms ? 1 : kLaneWarps;
}

// int8 body of the fixed kernel (v9 round, benchmarks/gpu/NOTES.md; same H200 call, each body forced
// on the 140 int8 fixed-kernel rows of the sweep with H*W <= 169): packed pairs (two bins per max.s16x2, 4-byte plane
// loads and staging stores) won 1.06x median on 7x7 and 1.15x on 13x13, up to 1.34x, and took int8
// under fp16 on 7x7 8,4,2,1 / 6,3,2,1; on 5,3,1 (odd levels only: a third of the pairs hold one bin
// twice, and odd n^2 leaves byte stores) they lost 2-4.5% on launches of N*C <= 16384 (one group per
// warp: latency) and won 4-17% above. Format 2 (body 2) is
// correct on the device but was not timed: only by SPPQ_FIXED_I8=2.
int fixed_i8_rule(const SppArgs& a) {
    bool even = false;
    for (int i = 0; i < a.num_levels; ++i) even = even || a.levels[i] % 2 == 0;
    if (!even && static_cast<long long>(a.N) * a.C <= 16384) return 0;
    return 1;
}

// Fixed kernel part of the choice rule. v7 (call 1 of that round, four-warp blocks): the fixed kernel
// won every instantiated sweep row with N*C >= 4096 against the v6 rule's kernels, 1.21-7.35x.
// v8 (one-warp blocks where fixed_warps_rule picks them, same H200 call, fixed forced against the v7
// rule's small kernel on the rows under 4096 planes): 7x7 at N*C = 1024 1.08-1.31x (all 15 rows) and
// at 2048 1.11-1.71x (30 rows); 13x13 fp16 / int8 at 2048 1.16-1.80x (20 rows); 13x13 fp32 at 2048
// 0.96-1.41x (4 of 10 rows 3-4% slower) and at 1024 0.71-0.88x; 13x13 fp16 at 1024 0.985-1.19x.
// Rule: N*C >= 1024 for H*W <= 64, else N*C >= 2048 for fp16 / int8 and >= 4096 for fp32 (11x11 is
// not in the sweep under 4096 planes: it takes 13x13's thresholds). SPPQ_FIXED_PLANES > 0 overrides.
bool fixed_rule(const SppArgs& a, const SppKnobs& knobs) {
    const long long nc = static_cast<long long>(a.N) * a.C;
    if (knobs.fixed_planes > 0) return nc >= knobs.fixed_planes;
    if (static_cast<long long>(a.H) * a.W <= 64) return nc >= 1024;
    return nc >= (a.dtype == SPPQ_FLOAT32 ? 4096 : 2048);
}

void plan_small(const SppArgs& a, const DeviceInfo& dev, long long wpp, SmallParams* sp, int* grid, int* threads,
    size_t* smem) {
    std::memset(sp, 0, sizeof(*sp));
    const size_t es = esize_of(a.dtype);
    sp->nc = static_cast<long long>(a.N) * a.C;
    sp->C = a.C; sp->H = a.H; sp->W = a.W;
    int8_ratio(a, &sp->ratio, &sp->requant);
    for (int l = 0, j = 0; l < a.num_levels; ++l) {
        const int n = a.levels[l];
        sp->lev[l] = static_cast<unsigned char>(n);
        sp->total_bins += n * n;
        sp->sumn += n;
        fill_root_bins(a, n, j, sp->ys, sp->ye, sp->xs, sp->xe);
        j += n;
    }
    auto small_smem = [&](long long pl) {
        const size_t r = static_cast<size_t>(pl) * a.H * sp->sumn * 4 + 4 * sp->sumn + SPPQ_MAX_LEVELS;
        return align16(r) + static_cast<size_t>(pl) * a.H * a.W * es + 16;
    };
    long long planes = std::min<long long>(kSmallMaxPlanes, std::max<long long>(1, sp->nc / (4LL * std::max(1, dev.sms))));
    while (planes > 1 && small_smem(planes) > 48 * 1024) --planes;
    sp->planes = static_cast<int>(planes);
    sp->wpp = planes == 1 ? static_cast<int>(std::min<long long>(8, std::max<long long>(1, wpp))) : 1;
    const long long blocks = (sp->nc + planes - 1) / planes;
    *grid = blocks > 0x7fffffffLL ? 0 : static_cast<int>(blocks);
    *threads = 32 * sp->planes * sp->wpp;
    *smem = small_smem(planes);
}

// Sorted, de-duplicated bin boundaries of one axis and each bin's segment range.
// step > 0: also a boundary at every multiple of step (row chunks of the step-1 threads); at
// most kMaxSeg + 1 boundaries in all, else false.
bool plan_axis(int a, const int* levels, int nlev, unsigned short* bnd, int* nseg, unsigned char* lo,
    unsigned char* hi, int step) {
    int vals[2 * SPPQ_MAX_SUM_BINS + 2 * (kMaxSeg + 1) + 2];
    int nv = 0;
    for (int l = 0; l < nlev; ++l) {
        for (int i = 0; i < levels[l]; ++i) {
            vals[nv++] = bin_start(i, a, levels[l]);
            vals[nv++] = bin_end(i, a, levels[l]);
        }
    }
    if (step > 0) {
        if ((a + step - 1) / step > kMaxSeg + 1) return false;
        for (int y = step; y < a; y += step) vals[nv++] = y;
    }
    std::sort(vals, vals + nv);
    nv = static_cast<int>(std::unique(vals, vals + nv) - vals);
    if (nv - 1 > kMaxSeg) return false;
    for (int i = 0; i < nv; ++i) bnd[i] = static_cast<unsigned short>(vals[i]);
    *nseg = nv - 1;
    for (int l = 0, k = 0; l < nlev; ++l) {
        for (int i = 0; i < levels[l]; ++i, ++k) {
            lo[k] = static_cast<unsigned char>(std::lower_bound(vals, vals + nv, bin_start(i, a, levels[l])) - vals);
            hi[k] = static_cast<unsigned char>(std::lower_bound(vals, vals + nv, bin_end(i, a, levels[l])) - vals);
        }
    }
    return true;
}

namespace {

// Segment kernel, part 1: row chunks (a step-1 thread walks `rows` rows of V columns; enough
// chunks that the launch has ~threads_per_sm threads per SM; chunk starts become segment
// boundaries) and the H-axis segments. Returns false when no chunking fits.
bool plan_segment_rows(const SppArgs& a, const DeviceInfo& dev, long long threads_per_sm, int vec, long long wvec,
    size_t esize, SppParams* p) {
    const long long want = threads_per_sm * std::max(1, dev.sms);
    const long long strips = p->nc * wvec;
    const int H = a.H;
    int rows = H;
    if (strips < want && H > kSegUnroll) {
        long long nch = std::min<long long>(H, (want + strips - 1) / strips);
        // keep one plane's step-1 items within one block pass (no thread walks two strips)
        nch = std::max<long long>(1, std::min<long long>(nch, kSegBlock / std::max<long long>(1, wvec)));
        rows = static_cast<int>((H + nch - 1) / nch);
        rows = std::max(kSegUnroll, (rows + kSegUnroll - 1) / kSegUnroll * kSegUnroll);
    }
    const size_t cbsize = a.pooling == SPPQ_MAX ? esize : 4;
    const size_t tables = 2 * (kMaxSeg + 1) * sizeof(unsigned short) + 4 * SPPQ_MAX_SUM_BINS + 32;
    const size_t optin = static_cast<size_t>(std::max(dev.smem_optin, 48 * 1024));
    // more segments than the tables or shared memory allow: longer chunks (rows == H adds no boundary)
    for (;;) {
        const bool ok = plan_axis(H, a.levels, a.num_levels, p->ybnd, &p->sy, p->ylo, p->yhi, rows < H ? rows : 0);
        const size_t need = static_cast<size_t>(p->sy) * (p->sx + p->sumn) * 4 + tables + static_cast<size_t>(p->sy) * vec * cbsize;
        if (ok && (rows >= H || need <= optin)) break;
        if (rows >= H) return false;
        rows = std::min(H, rows * 2);
    }
    p->rows = rows;
    p->nch = (H + rows - 1) / rows;
    for (int c = 0, sgi = 0; c < p->nch; ++c) {
        while (p->ybnd[sgi] < c * rows) ++sgi;
        p->cseg[c] = static_cast<unsigned char>(sgi);
    }
    return true;
}

}  // namespace

// Segment kernel, part 2: planes per block, W chunk, shared memory, threads.
int plan_segment(const SppArgs& a, const DeviceInfo& dev, long long threads_per_sm, SppParams* p, int* vec_out,
    int* grid_out, int* threads_out, size_t* smem_out) {
    std::memset(p, 0, sizeof(*p));
    const size_t esize = esize_of(a.dtype);
    p->nc = static_cast<long long>(a.N) * a.C;
    p->C = a.C; p->H = a.H; p->W = a.W;
    p->nlev = a.num_levels;
    for (int i = 0; i < a.num_levels; ++i) {
        p->lev[i] = static_cast<unsigned char>(a.levels[i]);
        p->total_bins += a.levels[i] * a.levels[i];
        p->sumn += a.levels[i];
    }
    int8_ratio(a, &p->ratio, &p->requant);
    if (!plan_axis(a.W, a.levels, a.num_levels, p->xbnd, &p->sx, p->xlo, p->xhi)) return SPPQ_ERR_UNSUPPORTED;
    int vec = static_cast<int>(16 / esize);  // widest vector load that every row start allows
    while (vec > 1 && ((a.W % vec) != 0 || (a.in_addr % (vec * esize)) != 0)) vec /= 2;
    const long long wvec = (a.W + vec - 1) / vec;
    if (!plan_segment_rows(a, dev, threads_per_sm, vec, wvec, esize, p)) return SPPQ_ERR_UNSUPPORTED;

    const size_t cbsize = a.pooling == SPPQ_MAX ? esize : 4;
    const size_t tables = 2 * (kMaxSeg + 1) * sizeof(unsigned short) + 4 * SPPQ_MAX_SUM_BINS + 32;
    auto grid_bytes = [&](long long pl) { return static_cast<size_t>(pl) * p->sy * (p->sx + p->sumn) * 4; };
    auto cb_bytes = [&](long long pl, long long w) { return static_cast<size_t>(pl) * p->sy * w * cbsize; };
    size_t budget = 48 * 1024;
    if (grid_bytes(1) + tables + cb_bytes(1, vec) > budget) {
        budget = static_cast<size_t>(dev.smem_optin);
        if (grid_bytes(1) + tables + cb_bytes(1, vec) > budget) return SPPQ_ERR_UNSUPPORTED;
    }
    // one step-1 item per thread of a 256-thread block (full width W); few planes per block for small N*C
    long long planes = std::max<long long>(1, kSegBlock / std::max<long long>(1, p->nch * wvec));
    planes = std::min<long long>(planes, 256);
    planes = std::min<long long>(planes, std::max<long long>(1, p->nc / (8LL * std::max(1, dev.sms))));
    while (planes > 1 && grid_bytes(planes) + tables + cb_bytes(planes, std::min<long long>(wvec * vec, 64)) > budget)
        planes /= 2;
    const size_t room = budget - tables - grid_bytes(planes);
    long long wc = static_cast<long long>(room / (static_cast<size_t>(planes) * p->sy * cbsize));
    wc = std::min<long long>(wc, wvec * vec);
    wc = (wc / vec) * vec;
    if (wc < vec) return SPPQ_ERR_UNSUPPORTED;
    p->planes = static_cast<int>(planes);
    p->wc = static_cast<int>(wc);
    const long long grid = (p->nc + planes - 1) / planes;
    if (grid > 0x7fffffffLL) return SPPQ_ERR_SHAPE;
    const long long work = std::max(std::max<long long>(planes * p->nch * (wc / vec), planes * p->sy * p->sumn),
        std::max<long long>(planes * p->total_bins, planes * p->sy * p->sx));
    *threads_out = static_cast<int>(std::min<long long>(kSegBlock, std::max<long long>(32, (work + 31) / 32 * 32)));
    *smem_out = align16(cb_bytes(planes, wc)) + grid_bytes(planes) + tables;
    *grid_out = static_cast<int>(grid);
    *vec_out = vec;
    return SPPQ_OK;
}

namespace {

// Rows kernel: per-level offsets, each level's source (the smallest finer level it divides, as the fixed
// kernel) and the processing order (decreasing n, ties in list order, so a source precedes its levels).
void fill_rows_levels(const SppArgs& a, RowsParams* p) {
    p->nlev = a.num_levels;
    for (int l = 0; l < a.num_levels; ++l) {
        p->lev[l] = static_cast<unsigned char>(a.levels[l]);
        p->off[l] = static_cast<unsigned short>(p->total_bins);
        p->base[l] = static_cast<unsigned short>(p->sumn);
        p->total_bins += a.levels[l] * a.levels[l];
        p->sumn += a.levels[l];
        int best = -1;
        for (int i = 0; i < a.num_levels; ++i)
            if (a.levels[i] > a.levels[l] && a.levels[i] % a.levels[l] == 0 && (best < 0 || a.levels[i] < a.levels[best])) best = i;
        p->src[l] = static_cast<unsigned char>(best < 0 ? kRowsNoSrc : best);
        p->k[l] = static_cast<unsigned char>(best < 0 ? 1 : a.levels[best] / a.levels[l]);
    }
    for (int r = 0; r < a.num_levels; ++r) {
        for (int l = 0; l < a.num_levels; ++l) {
            int rank = 0;
            for (int j = 0; j < a.num_levels; ++j) rank += a.levels[j] > a.levels[l] || (a.levels[j] == a.levels[l] && j < l);
            if (rank == r) p->order[r] = static_cast<unsigned char>(l);
        }
    }
}

}  // namespace

// Rows kernel (v9): lanes over V-column vectors of a row (V from the row pitch and the input's
// alignment, as the segment kernel), rc row chunks per plane (when whole planes give fewer than
// chunk_below warps per SM: doubled while the launch has fewer than warps_per_sm warps per SM, a chunk
// keeps >= 8 rows and a plane <= 32 lanes), G = 32 / (W / V * rc)
// planes per warp, disjoint row segments at every bin boundary of every level and every chunk start,
// each level read from CM (roots) or derived from the nearest finer level that it divides (the fixed
// kernel's choice of source).
bool plan_rows(const SppArgs& a, const DeviceInfo& dev, long long chunk_below, long long warps_per_sm, RowsParams* p,
    int* vec_out, int* grid, size_t* smem) {
    if (a.pooling != SPPQ_MAX || a.W > 255 || a.H > 65535) return false;
    std::memset(p, 0, sizeof(*p));
    const size_t es = esize_of(a.dtype);
    int vec = static_cast<int>(16 / es);
    while (vec > 1 && ((a.W % vec) != 0 || (a.in_addr % (vec * es)) != 0)) vec /= 2;
    const int vpr = a.W / vec;
    if (vpr > 32) return false;
    p->vpr = vpr;
    p->nc = static_cast<long long>(a.N) * a.C;
    p->C = a.C; p->H = a.H; p->W = a.W; p->HW = a.H * a.W;
    int8_ratio(a, &p->ratio, &p->requant);
    fill_rows_levels(a, p);
    // row chunks: more, shorter lanes (more warps) when whole planes leave the launch short of warps (v9 call 3:
    // 1.1-3.4x at N*C <= 4096, 0.6-0.95x from ~12 warps per SM on, where the extra segments cost more)
    const long long sms = std::max(1, dev.sms);
    const long long want = (p->nc + 32 / vpr - 1) / (32 / vpr) < chunk_below * sms ? warps_per_sm * sms : 0;
    int rc = 1;
    while (2 * rc * vpr <= 32 && (a.H + 2 * rc - 1) / (2 * rc) >= 8 && (p->nc + 32 / (rc * vpr) - 1) / (32 / (rc * vpr)) < want)
        rc *= 2;
    const int rows = (a.H + rc - 1) / rc;
    p->rows = rows;
    p->rc = rc;  // lanes of chunks past H (when ceil(H / rows) < rc) stay idle
    p->G = 32 / (vpr * rc);
    unsigned short ybnd[kMaxSeg + 1];
    unsigned char ylo[SPPQ_MAX_SUM_BINS], yhi[SPPQ_MAX_SUM_BINS];
    if (!plan_axis(a.H, a.levels, a.num_levels, ybnd, &p->sy, ylo, yhi, rc > 1 ? rows : 0)) return false;
    for (int s = 0; s < p->sy; ++s) p->yend[s] = ybnd[s + 1];
    for (int ch = 0, s = 0; ch < rc && ch * rows < a.H; ++ch) {
        while (ybnd[s] < ch * rows) ++s;
        p->cseg[ch] = static_cast<unsigned char>(s);
    }
    for (int l = 0; l < a.num_levels; ++l) {
        const int n = a.levels[l];
        for (int i = 0; i < n; ++i) {
            const int j = p->base[l] + i;
            p->tab[j] = static_cast<unsigned>(ylo[j]) | (static_cast<unsigned>(yhi[j]) << 8) |
                (static_cast<unsigned>(bin_start(i, a.W, n)) << 16) | (static_cast<unsigned>(bin_end(i, a.W, n)) << 24);
        }
    }
    // CM rows: whole 4-byte words, an odd number of them (the bin phase's lanes read different rows)
    int words = static_cast<int>((static_cast<size_t>(a.W) * es + 3) / 4);
    if (words % 2 == 0) ++words;
    p->cw = static_cast<int>(static_cast<size_t>(words) * 4 / es);
    const size_t cm = align16(static_cast<size_t>(p->G) * p->sy * p->cw * es);
    const size_t wb = align16(cm + static_cast<size_t>(p->G) * p->total_bins * 4 + static_cast<size_t>(p->sumn) * 4);
    if (wb > 48 * 1024 / kRowsWarps) return false;  // 4 warps in the default 48 KB of a block
    p->cm_bytes = static_cast<int>(cm);
    p->warp_bytes = static_cast<int>(wb);
    p->groups = (p->nc + p->G - 1) / p->G;
    const long long blocks = (p->groups + kRowsWarps - 1) / kRowsWarps;
    if (blocks > 0x7fffffffLL) return false;
    *grid = static_cast<int>(blocks);
    *smem = wb * kRowsWarps;
    *vec_out = vec;
    return true;
}

// Rows kernel part of the choice rule (v9 round, benchmarks/gpu/NOTES.md): against the segment kernel on
// the 765 sweep rows with H*W >= 400 (same H200 call, the rows kernel forced with and without row chunks),
// the rows kernel with chunks below 12 warps per SM won every 20x20 / 40x40 / 64x64 row with N*C >= 1024
// (0.99-4.1x, median ~1.7x; one 20x20 fp32 row at 0.99) and lost some rows with N*C <= 512 (0.82-1.3x).
// Odd widths (33, 53) do not fit (W / V > 32 lanes): segment kernel. Vector loads of >= 4 bytes only.
bool rows_rule(const SppArgs& a, const SppKnobs& knobs, const RowsParams& p, int vec) {
    return static_cast<size_t>(vec) * esize_of(a.dtype) >= 4 && p.nc >= knobs.rows_planes;
}

// Lane kernel part of the choice rule (v6 round, benchmarks/gpu/NOTES.md): the lane kernel with one
// span tile per warp (SPPQ_LANE_STAGES=1, the default) forced on the 510 tiny-map sweep rows against
// the v5 rule's kernels (stream / small) on the same kind of H200. It needs many planes (a warp
// reduces 32 planes at once, serially): from N*C = 32768 on it won 1.15-3.5x on every 7x7 row and
// every fp16 / int8 row of 11x11 and 13x13 (1.05-2.7x); below it lost (0.13-0.8x at N*C <= 8192,
// 0.82-1.09x at 16384). fp32 on 11x11 / 13x13 lost on most level sets (0.68-1.08x; a 32-plane
// fp32 tile of 13x13 is 21.6 KB, so few warps fit): the stream kernel keeps those.
bool lane_rule(const SppArgs& a, const SppKnobs& knobs, const LaneParams& lp) {
    const int es = a.dtype == SPPQ_FLOAT32 ? 4 : (a.dtype == SPPQ_FLOAT16 ? 2 : 1);
    const long long hw = static_cast<long long>(a.H) * a.W;
    return (hw <= 64 || a.dtype != SPPQ_FLOAT32) && static_cast<long long>(a.N) * a.C >= knobs.lane_planes &&
        lane_conflict_ways(static_cast<int>(hw), es) <= 2 && static_cast<long long>(lp.warp_bytes) <= knobs.lane_warp_bytes;
}

// The choice rule, from same-run timings on an H200 (benchmarks/gpu/NOTES.md, v5, v6 and v7 rounds):
//   max pooling on an instantiated (H, W, levels) of spp_fixed.h with N*C >= 1024 on 7x7, >= 2048
//     (fp16 / int8) or 4096 (fp32) on 11x11 / 13x13 (fixed_rule): fixed kernel, one-warp blocks when
//     four-warp blocks would leave SMs idle (fixed_warps_rule); int8 on packed pairs except all-odd
//     level sets at N*C <= 16384 (fixed_i8_rule, v9 round);
//   max pooling on maps of more than 16 rows or 64 columns whose row fits a warp, N*C >= 1024 (rows_rule,
//     v9): rows kernel, row chunks below 12 warps per SM (plan_rows);
//   max pooling on tiny maps of very many planes (lane_rule above: N*C >= 32768, H*W <= 64, or
//     H*W <= 256 for fp16 / int8): lane kernel;
//   max pooling on other small maps (H <= 16, W <= 64) of many planes (N*C > 4096): stream kernel,
//     1.2-1.9x faster than the small kernel there (64x256x13x13, 128x256x13x13, 64x2048x7x7);
//   small maps of few planes: small kernel (launch-latency bound; stream measured 1.1-1.6x slower);
//   everything else, and avg pooling: the v4 kernels (small / segment). On larger maps the stream
//     kernel measured 1.4-2.2x slower than the segment kernel (32x512x64x64, 16x1024x40x40,
//     7x96x37x53): its shared-memory passes are instruction bound (ncu: 50-68% SM throughput,
//     25-50% occupancy from shared memory, DRAM 4-24%). SPPQ_STREAM=2 / SPPQ_LANE=2 force a kernel.
int plan_spp(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, SppLaunch* out) {
    const bool small_map = knobs.small && a.H <= kSmallMaxH && a.W <= kSmallMaxW;
    const bool few_planes = static_cast<long long>(a.N) * a.C <= knobs.small_planes;
    auto try_rows = [&](bool rule) {
        if (a.pooling != SPPQ_MAX) return false;
        int grid = 0, vec = 1;
        size_t smem = 0;
        if (!plan_rows(a, dev, knobs.rows_chunk_below, knobs.rows_warps, &out->rows, &vec, &grid, &smem) ||
            (rule && !rows_rule(a, knobs, out->rows, vec)))
            return false;
        out->kind = SppKernel::kRows;
        out->grid = grid;
        out->threads = 32 * kRowsWarps;
        out->vec = vec;
        out->smem = smem;
        return true;
    };
    if (knobs.rows_mode == 2 && try_rows(false)) return SPPQ_OK;
    if (a.pooling == SPPQ_MAX && knobs.fixed_mode > 0 && (knobs.fixed_mode == 2 || fixed_rule(a, knobs))) {
        int grid = 0, id = -1, threads = 0;
        size_t smem = 0;
        if (plan_fixed(a, dev, knobs, &out->lane, &id, &grid, &threads, &smem)) {
            out->kind = SppKernel::kFixed;
            out->fixed_id = id;
            out->grid = grid;
            out->threads = threads;
            out->smem = smem;
            return SPPQ_OK;
        }
    }
    if (a.pooling == SPPQ_MAX && knobs.lane_mode > 0) {
        int grid = 0;
        size_t smem = 0;
        if (plan_lane(a, dev, knobs, &out->lane, &grid, &smem)) {
            if (knobs.lane_mode == 2 || lane_rule(a, knobs, out->lane)) {
                out->kind = SppKernel::kLane;
                out->grid = grid;
                out->threads = 32 * kLaneWarps;
                out->smem = smem;
                return SPPQ_OK;
            }
        }
    }
    if (knobs.rows_mode == 1 && !small_map && try_rows(true)) return SPPQ_OK;
    const bool stream = knobs.stream_mode == 2 || (knobs.stream_mode == 1 && small_map && !few_planes);
    if (a.pooling == SPPQ_MAX && stream) {
        int grid = 0;
        size_t smem = 0;
        if (plan_stream(a, dev, knobs, &out->stream, &grid, &smem)) {
            out->kind = SppKernel::kStream;
            out->grid = grid;
            out->threads = 32 * kStreamWarps;
            out->smem = smem;
            return SPPQ_OK;
        }
    }
    if (small_map) {
        out->kind = SppKernel::kSmall;
        plan_small(a, dev, knobs.small_wpp, &out->small, &out->grid, &out->threads, &out->smem);
        return out->grid > 0 ? SPPQ_OK : SPPQ_ERR_SHAPE;
    }
    out->kind = SppKernel::kSegment;
    return plan_segment(a, dev, knobs.threads_per_sm, &out->seg, &out->vec, &out->grid, &out->threads, &out->smem);
}

}  // namespace sppq
