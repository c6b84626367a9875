// Launch planning for the whole-map SPP kernels: parameter blocks passed by value to the
// kernels, and pure host functions that fill them (no CUDA calls here; the device facts come in
// as a DeviceInfo). Six kernels, picked by plan_spp() (rule and evidence in spp_plan.cpp):
//   rows     max pooling on maps of more than 16 rows or 64 columns whose row fits one warp (W / V <= 32
//            lanes of V-element vectors, e.g. 20x20 .. 64x64) with N*C >= 1024: each warp streams whole
//            planes (or row chunks) through registers, no block barrier (v9, spp_rows.cu).
//   fixed    max pooling on an instantiated (H, W, levels) of spp_fixed.h (7x7, 11x11, 13x13 with
//            the common level sets) with N*C >= 4096: the lane kernel's spans with the shape and
//            levels at compile time; every bin in registers, no tables (v7).
//   stream   max pooling on small maps of many planes: warps stream spans of whole
//            planes (small maps) or row chunks of one plane (large maps) into double-buffered
//            shared memory with cp.async and reduce one span while the next is in flight:
//            column maxima per root bin row (lanes along x), then bins along x; levels
//            dividing a larger level are derived from its bins (LevelPlan).
//   lane     max pooling on tiny planes (H*W <= 256) of very many planes (v6): one lane per
//            plane, so every loop bound and table index is the same across the warp (no
//            per-item division); a warp copies spans of 32*k whole planes into shared memory
//            with cp.async (one tile, refilled once pass 1 has read it; SPPQ_LANE_STAGES=2:
//            double-buffered); R in the input type, bins in 4-byte slots (conflict-free
//            strides), leaving through coalesced stores.
//   small    H <= 16 and W <= 64 otherwise (few planes, avg): warps per plane (v4).
//   segment  everything else: column strips reduced into a segment grid (v3).
#ifndef SPPQUANT_SPP_PLAN_H
#define SPPQUANT_SPP_PLAN_H

#include "device_info.h"
#include "level_plan.h"
#include "sppq_common.h"

#include <cstddef>

namespace sppq {

struct SppArgs {
    int dtype, pooling, N, C, H, W;
    const int* levels;
    int num_levels;
    float in_scale, out_scale;
    unsigned long long in_addr;  // input address: vector width and alignment
};

// ---- segment kernel (v3) --------------------------------------------------------------------
constexpr int kMaxSeg = 255;  // segments per axis (boundaries <= 256)
constexpr int kSegBlock = 256;
constexpr int kSegUnroll = 8;  // independent row loads in flight per step-1 thread (row chunks are multiples)

struct SppParams {
    long long nc;       // N * C planes
    int C, H, W;
    int nlev;
    int total_bins;     // sum n^2
    int sumn;           // sum n
    int sy, sx;         // segments along H and W
    int planes;         // planes per block
    int wc;             // chunk width along W (multiple of the vector width)
    int rows;           // rows per step-1 thread (row chunk); chunk starts are segment boundaries
    int nch;            // row chunks, ceil(H / rows)
    float ratio;        // int8: in_scale / out_scale
    int requant;        // int8: 0 = copy values
    unsigned char lev[SPPQ_MAX_LEVELS];
    unsigned short ybnd[kMaxSeg + 1];
    unsigned short xbnd[kMaxSeg + 1];
    unsigned char ylo[SPPQ_MAX_SUM_BINS], yhi[SPPQ_MAX_SUM_BINS];  // per (level, bin row): segment range
    unsigned char xlo[SPPQ_MAX_SUM_BINS], xhi[SPPQ_MAX_SUM_BINS];
    unsigned char cseg[kMaxSeg + 1];  // first row segment of each row chunk
};

// ---- small kernel (v4) ----------------------------------------------------------------------
constexpr int kSmallMaxH = 16, kSmallMaxW = 64, kSmallMaxPlanes = 8;

struct SmallParams {
    long long nc;
    int C, H, W;
    int total_bins, sumn;
    int planes;  // planes per block
    int wpp;     // warps per plane (> 1 only with planes == 1)
    float ratio;
    int requant;
    unsigned char lev[SPPQ_MAX_LEVELS];
    unsigned char xs[SPPQ_MAX_SUM_BINS], xe[SPPQ_MAX_SUM_BINS];  // per (level, bin): [start, end) along W
    unsigned char ys[SPPQ_MAX_SUM_BINS], ye[SPPQ_MAX_SUM_BINS];  // along H
};

// ---- stream kernel (v5) ---------------------------------------------------------------------
// n / d for 0 <= n < 2^31 with a multiply-high (divisors fixed per launch; the kernel's loops
// divide per item and a hardware-less 32-bit division costs ~20 instructions).
struct FastDiv {
    unsigned mul = 0, shift = 0, one = 1;
};
FastDiv make_fastdiv(unsigned d);

constexpr int kStreamWarps = 4;        // warps per block; every warp works alone (no block barrier)
constexpr int kStreamBlocksPerSm = 8;  // __launch_bounds__ minimum: <= 64 registers per thread

struct StreamParams {
    long long nc;          // planes
    long long units;       // small mode: spans of `planes` planes; row mode: planes
    int C, H, W;
    int planes;            // planes per span (row mode: 1)
    int rows;              // rows per span (small mode: H)
    int chunks;            // spans per unit (small mode: 1)
    int tile_bytes;        // one shared-memory tile (span bytes + 32 for 16-byte word rounding)
    int warp_bytes;        // shared memory per warp: 2 tiles + R + RB
    int cb_elems;          // Cb: planes x root bin rows x pitch (input type)
    int pitch;             // Cb row length: >= W, an odd number of 4-byte words (no bank conflicts)
    int total_bins;        // sum n^2 (output features per channel)
    int sr;                // sum of n over root levels: root bin rows per plane
    int srb;               // sum of n^2 over root levels: RB's length per plane (0: nothing derived)
    int nlev;
    float ratio;           // int8: in_scale / out_scale
    int requant;           // int8: 0 = copy values
    unsigned char lev[SPPQ_MAX_LEVELS], root_of[SPPQ_MAX_LEVELS], k[SPPQ_MAX_LEVELS];
    unsigned short out_off[SPPQ_MAX_LEVELS], row_off[SPPQ_MAX_LEVELS], rb_off[SPPQ_MAX_LEVELS];
    // per root bin row / column j < sr: [start, end) along H and W
    unsigned short rys[SPPQ_MAX_SUM_BINS], rye[SPPQ_MAX_SUM_BINS];
    unsigned short rxs[SPPQ_MAX_SUM_BINS], rxe[SPPQ_MAX_SUM_BINS];
    FastDiv div_w, div_sr;  // by W and by sr
};

// ---- lane kernel (v6) -------------------------------------------------------------------------
constexpr int kLaneWarps = 4;        // warps per block; every warp works alone (no block barrier)
constexpr int kLaneBlocksPerSm = 8;  // __launch_bounds__ minimum: <= 64 registers per thread
constexpr int kLaneMaxHW = 256;      // plane elements (H, W <= 255 for the byte tables)

struct LaneParams {
    long long nc;          // planes
    long long units;       // spans of 32 * k planes
    long long nw;          // fixed kernel: warps of the launch (grid x warps per block; set at launch)
    int C, H, W, HW;
    int k;                 // groups of 32 planes per span
    int stages;            // span tiles per warp: 1 (refilled after pass 1) or 2 (copy during the whole span)
    int tile_bytes;        // one span tile (span bytes + 32 for 16-byte word rounding)
    int warp_bytes;        // shared memory per warp: `stages` tiles + R + O
    int r_off, o_off;      // byte offsets of R (H x sr x 32 input elements) and O (sum of 32 x ostride 4-byte slots)
    int sr;                // root bin columns (sum of n over root levels)
    int nlev, total_bins;
    float ratio;           // int8: in_scale / out_scale
    int requant;           // int8: 0 = copy values
    int body;              // fixed kernel, int8: 0 one int per bin, 1 / 2 packed pairs (fixed_i8_rule)
    unsigned char lev[SPPQ_MAX_LEVELS], root_of[SPPQ_MAX_LEVELS], k_of[SPPQ_MAX_LEVELS];
    unsigned short out_off[SPPQ_MAX_LEVELS], row_off[SPPQ_MAX_LEVELS];
    unsigned short ostride[SPPQ_MAX_LEVELS];  // O slots per plane of each level: n^2 rounded up to odd
    unsigned short obase[SPPQ_MAX_LEVELS];    // O slot offset of each level's region (32 planes)
    FastDiv div_nn[SPPQ_MAX_LEVELS];
    unsigned char rys[SPPQ_MAX_SUM_BINS], rye[SPPQ_MAX_SUM_BINS];  // per root bin row / column j < sr
    unsigned char rxs[SPPQ_MAX_SUM_BINS], rxe[SPPQ_MAX_SUM_BINS];
};

// ---- fixed kernel (v7): the lane layout with compile-time shape and levels (spp_fixed.h) ---------
constexpr int kFixedBlocksPerSm = 4;  // __launch_bounds__ minimum: <= 128 registers per thread (bins in registers)

// ---- rows kernel (v9): max pooling on 17..255-wide maps whose rows fit one warp (spp_rows.cu) ------
// A warp reduces G = 32 / vpr whole planes at once: each lane owns V adjacent columns of one plane
// and walks all H rows with kRowsUnroll independent vector loads in flight, flushing its column
// maxima at every row-segment end into the warp's shared-memory column table CM; then the warp
// reads every root bin from CM, derives the other levels from the nearest finer level's bins, and
// stores. Warps never wait for each other (no block barrier).
constexpr int kRowsWarps = 4;        // warps per block
constexpr int kRowsBlocksPerSm = 8;  // __launch_bounds__ minimum: <= 64 registers per thread
constexpr int kRowsUnroll = 8;       // row loads in flight per lane
constexpr int kRowsNoSrc = 255;      // RowsParams::src of a root level

struct RowsParams {
    long long nc;          // planes
    long long groups;      // warps' work items: G planes each
    int C, H, W, HW;
    int vpr;               // lanes per plane: W / V
    int G;                 // planes per warp
    int rc, rows;          // row chunks per plane (lanes per plane = vpr x rc) and rows per chunk
    int sy;                // row segments (disjoint; every bin row and every chunk is a run of them)
    int cw;                // CM row length in elements: >= W, an odd number of 4-byte words (no bank conflicts)
    int nlev, total_bins, sumn;
    int cm_bytes;          // CM per warp: G x sy x cw input elements, 16-byte aligned
    int warp_bytes;        // CM + RB (G x total_bins 4-byte slots) + the bin table (sumn words)
    float ratio;           // int8: in_scale / out_scale
    int requant;           // int8: 0 = copy values
    unsigned char lev[SPPQ_MAX_LEVELS], src[SPPQ_MAX_LEVELS], k[SPPQ_MAX_LEVELS];
    unsigned char order[SPPQ_MAX_LEVELS];   // levels by decreasing n (a source before its derived levels)
    unsigned short off[SPPQ_MAX_LEVELS];    // sum of n^2 of the previous levels (output and RB offset)
    unsigned short base[SPPQ_MAX_LEVELS];   // sum of n of the previous levels (bin table offset)
    unsigned short yend[kMaxSeg + 1];       // row segment s ends before row yend[s]
    unsigned char cseg[32];                 // first row segment of each row chunk
    unsigned tab[SPPQ_MAX_SUM_BINS];        // per (level, bin i): first | end segment << 8 (rows), x0 << 16 | x1 << 24
};

enum class SppKernel { kStream, kSmall, kSegment, kLane, kFixed, kRows };

struct SppLaunch {
    SppKernel kind;
    int grid = 0, threads = 0, vec = 1;
    int fixed_id = -1;  // kFixed: index into SPPQ_FIXED_SHAPES
    size_t smem = 0;
    SppParams seg;
    SmallParams small;
    StreamParams stream;
    LaneParams lane;
    RowsParams rows;
};

// Knobs for experiments only (read once from the environment): SPPQ_STREAM (0: never the stream
// kernel, 2: wherever it fits, 1: the choice rule), SPPQ_STREAM_TILE (span bytes, default 4096), SPPQ_STREAM_BLOCKS (cap on the stream
// grid: a test knob that gives every warp many spans), SPPQ_SMALL_PLANES (N*C up to which small
// maps take the small kernel, default 4096), SPPQ_SMALL (0: no small kernel),
// SPPQ_SMALL_WPP, SPPQ_THREADS_PER_SM (segment kernel), SPPQ_LANE (0 never, 1 rule, 2 wherever it
// fits), SPPQ_LANE_TILE (span bytes, default 4096), SPPQ_LANE_WARP_BYTES (rule's shared-memory cap),
// SPPQ_LANE_STAGES (span tiles per warp, 1 or 2), SPPQ_LANE_PLANES (rule's least N*C, default 32768),
// SPPQ_FIXED (0 never, 1 rule, 2 every instantiated shape), SPPQ_FIXED_PLANES (rule's least N*C; 0: by
// shape and dtype),
// SPPQ_FIXED_WARPS (fixed kernel's warps per block: 1, 2 or 4; 0: fixed_warps_rule),
// SPPQ_ROWS (rows kernel: 0 never, 1 rule, 2 every map it fits), SPPQ_ROWS_CHUNK_BELOW / SPPQ_ROWS_WARPS (row
// chunks when whole planes per lane give fewer warps per SM than the first, default 12, then until the second,
// default 64; SPPQ_ROWS_WARPS=0: no chunks), SPPQ_ROWS_PLANES (rule's least N*C, default 1024).
struct SppKnobs {
    int stream_mode = 1;  // 0 never, 1 the choice rule of plan_spp, 2 every map it fits
    long long stream_tile = 4096;
    long long stream_blocks = 0;  // 0: no cap
    long long small_planes = 4096;  // N*C up to this on H <= 16, W <= 64: the small kernel (latency-bound sizes)
    bool small = true;
    long long small_wpp = 4;
    long long threads_per_sm = 2048;
    int lane_mode = 1;               // 0 never, 1 the choice rule, 2 every map it fits
    long long lane_tile = 4096;      // target span bytes (>= 32 planes)
    long long lane_warp_bytes = 32 * 1024;  // choice rule: shared memory per warp at most this
    int lane_stages = 1;             // span tiles per warp (1: measured faster, twice the warps per SM; or 2)
    long long lane_planes = 32768;   // choice rule: N*C at least this
    int fixed_mode = 1;              // 0 never, 1 the choice rule, 2 every instantiated shape
    long long fixed_planes = 0;      // choice rule: N*C at least this; 0: by shape and dtype (fixed_rule)
    int fixed_warps = 0;             // fixed kernel's warps per block (1, 2, 4); 0: fixed_warps_rule
    int fixed_i8 = -1;               // fixed kernel's int8 body (0, 1, 2: LaneParams::body); -1: fixed_i8_rule
    int rows_mode = 1;               // rows kernel: 0 never, 1 the choice rule, 2 every map it fits
    long long rows_chunk_below = 12; // rows kernel: row chunks only when whole planes give fewer warps per SM than this,
    long long rows_warps = 64;       //   then until the launch has this many warps per SM
    long long rows_planes = 1024;    // rows kernel choice rule: N*C at least this
};
SppKnobs spp_knobs();

// Fills `out` for valid arguments (sppq_spp_validate first). SPPQ_OK or SPPQ_ERR_UNSUPPORTED / _SHAPE.
int plan_spp(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, SppLaunch* out);

// The parts, exposed for tests and for the choice rule.
bool plan_lane(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, LaneParams* p, int* grid,
    size_t* smem);
// The lane kernel's part of the choice rule (measured; spp_plan.cpp).
bool lane_rule(const SppArgs& a, const SppKnobs& knobs, const LaneParams& lp);
// The fixed kernel's int8 body (LaneParams::body; measured, spp_plan.cpp).
int fixed_i8_rule(const SppArgs& a);
// Index of (H, W, levels) in SPPQ_FIXED_SHAPES, or -1.
int fixed_shape_id(int H, int W, const int* levels, int num_levels);
// Fixed kernel (lane layout, no R, O from spp_fixed.h): false when the shape is not instantiated.
// *threads: 32 x warps per block (knobs.fixed_warps, or fixed_warps_rule when that is 0).
bool plan_fixed(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, LaneParams* p, int* id, int* grid,
    int* threads, size_t* smem);
// Warps per block of the fixed kernel for `units` spans (v8 round: one-warp blocks when four-warp
// blocks would leave SMs without a block).
int fixed_warps_rule(long long units, int sms);
// The fixed kernel's part of the choice rule (measured; spp_plan.cpp).
bool fixed_rule(const SppArgs& a, const SppKnobs& knobs);
// Worst shared-memory bank conflict of the lane kernel's tile reads (lane l reads plane l).
int lane_conflict_ways(int hw, int esize);
// Rows kernel (v9): false when a row does not fit one warp or CM / RB exceed the shared memory.
bool plan_rows(const SppArgs& a, const DeviceInfo& dev, long long chunk_below, long long warps_per_sm, RowsParams* p,
    int* vec, int* grid, size_t* smem);
// The rows kernel's part of the choice rule (measured; spp_plan.cpp).
bool rows_rule(const SppArgs& a, const SppKnobs& knobs, const RowsParams& p, int vec);
bool plan_stream(const SppArgs& a, const DeviceInfo& dev, const SppKnobs& knobs, StreamParams* p, int* grid,
    size_t* smem);
void plan_small(const SppArgs& a, const DeviceInfo& dev, long long wpp, SmallParams* p, int* grid, int* threads,
    size_t* smem);
int plan_segment(const SppArgs& a, const DeviceInfo& dev, long long threads_per_sm, SppParams* p, int* vec,
    int* grid, int* threads, size_t* smem);
bool plan_axis(int a, const int* levels, int nlev, unsigned short* bnd, int* nseg, unsigned char* lo,
    unsigned char* hi, int step = 0);

}  // namespace sppq

#endif  // SPPQUANT_SPP_PLAN_H
