// Drives the RoiSpatialPyramidPooling IPluginV3 through its own interfaces without a TensorRT
// runtime: both creators from getCreators(), fields (INT32 levels, FLOAT32 spatial_scale as the
// ONNX parser passes them), capabilities, output types, shapes with a dynamic R (stand-in
// IExprBuilder), format combinations of the two inputs, configurePlugin / onShapeChange /
// enqueue with hand-built descriptors (R = 0 too), clone / attach / serialize round trips and
// error paths. Device parts compare enqueue's output with a CPU reference of
// sppquant/ops/roi_spp/reference.py; without a GPU they are skipped unless --require-gpu.
//
// Exit code 0 when every check passed; prints one line per failure and a summary.

#include "harness_common.h"
#include "roi_spp_kernels.h"

#include <algorithm>
#include <random>

using namespace nvinfer1;
using namespace harness;

namespace {

char const* const kName = "RoiSpatialPyramidPooling";

// ---- CPU reference (reference.py's rules, written out again) -----------------------------------
long long corner(float v, float s) {
    volatile float p = v * s;  // one float32 multiply
    float q = std::round(static_cast<float>(p));  // C round: half away from zero
    q = std::fmin(std::fmax(q, -1073741824.0f), 1073741824.0f);
    return static_cast<long long>(q);
}

std::vector<float> reference(std::vector<float> const& x, std::vector<float> const& rois, int dtype, int N, int C, int H,
    int W, std::vector<int> const& levels, float scale, float inScale, float outScale) {
    int64_t bins = 0;
    for (int n : levels) bins += n * n;
    int const R = static_cast<int>(rois.size() / 5);
    std::vector<float> out(static_cast<size_t>(R) * C * bins, 0.0f);
    bool const requantize = std::memcmp(&inScale, &outScale, 4) != 0;
    float const ratio = inScale / outScale;
    for (int r = 0; r < R; ++r) {
        float const* q = &rois[5 * r];
        bool ok = q[0] >= 0.0f && q[0] < static_cast<float>(N);
        for (int i = 0; i < 5; ++i) ok = ok && std::isfinite(q[i]);
        if (!ok) continue;
        int const b = static_cast<int>(q[0]);
        long long const xs = corner(q[1], scale), ys = corner(q[2], scale);
        long long const rw = std::max(corner(q[3], scale) - xs + 1, 1LL), rh = std::max(corner(q[4], scale) - ys + 1, 1LL);
        int64_t col = 0;
        for (int n : levels) {
            for (int c = 0; c < C; ++c) {
                float const* plane = x.data() + (static_cast<size_t>(b) * C + c) * H * W;
                for (int by = 0; by < n; ++by) {
                    long long const y0 = std::clamp(ys + by * rh / n, 0LL, (long long)H);
                    long long const y1 = std::clamp(ys + ((by + 1) * rh + n - 1) / n, 0LL, (long long)H);
                    for (int bx = 0; bx < n; ++bx, ++col) {
                        long long const x0 = std::clamp(xs + bx * rw / n, 0LL, (long long)W);
                        long long const x1 = std::clamp(xs + ((bx + 1) * rw + n - 1) / n, 0LL, (long long)W);
                        if (y0 >= y1 || x0 >= x1) continue;
                        float m = -INFINITY;
                        bool nan = false;
                        for (long long y = y0; y < y1; ++y)
                            for (long long xx = x0; xx < x1; ++xx) {
                                float const v = plane[y * W + xx];
                                nan |= std::isnan(v);
                                m = v > m ? v : m;
                            }
                        float res = nan ? NAN : m;
                        if (dtype == SPPQ_INT8 && requantize) res = requant(res, ratio);
                        out[static_cast<size_t>(r) * C * bins + col] = res;
                    }
                }
            }
        }
    }
    return out;
}

// ---- fields ---------------------------------------------------------------------------------
struct Fields {
    std::vector<int32_t> levels;
    float scale;
    std::vector<PluginField> f;
    PluginFieldCollection fc{};
    Fields(std::vector<int32_t> l, float s, char const* pooling = "max") : levels(std::move(l)), scale(s) {
        static char const version[] = "1";
        f.emplace_back("plugin_version", version, PluginFieldType::kCHAR, 1);  // the parser passes it along
        f.emplace_back("levels", levels.data(), PluginFieldType::kINT32, static_cast<int32_t>(levels.size()));
        f.emplace_back("spatial_scale", &scale, PluginFieldType::kFLOAT32, 1);
        if (pooling) f.emplace_back("pooling", pooling, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(pooling)));
        fc.nbFields = static_cast<int32_t>(f.size());
        fc.fields = f.data();
    }
};

std::vector<float> randomRois(std::mt19937& rng, int R, int N, int H, int W, float stride) {
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> r(5 * static_cast<size_t>(R));
    for (int i = 0; i < R; ++i) {
        float* q = &r[5 * i];
        q[0] = static_cast<float>(static_cast<int>(u(rng) * N));
        q[1] = (u(rng) * 1.4f - 0.3f) * W * stride;
        q[2] = (u(rng) * 1.4f - 0.3f) * H * stride;
        q[3] = q[1] + (u(rng) * 0.9f - 0.1f) * W * stride;
        q[4] = q[2] + (u(rng) * 0.9f - 0.1f) * H * stride;
        if (i % 11 == 3) q[0] = -1.0f;                  // padding row
        if (i % 13 == 5) q[0] = static_cast<float>(N);  // out of range
        if (i % 17 == 7) q[3] = NAN;
    }
    return r;
}

void fillFeatures(std::mt19937& rng, int dtype, size_t n, std::vector<float>& xv, std::vector<unsigned char>& host) {
    std::uniform_real_distribution<float> uf(-4.0f, 4.0f);
    std::uniform_int_distribution<int> ui(-128, 127);
    xv.resize(n);
    host.resize(n * esize(dtype));
    for (size_t i = 0; i < n; ++i) {
        if (dtype == SPPQ_INT8) {
            int8_t const q = static_cast<int8_t>(ui(rng));
            xv[i] = q;
            host[i] = static_cast<unsigned char>(q);
        } else if (dtype == SPPQ_FLOAT16) {
            uint16_t h = f2h(uf(rng));
            if (i % 97 == 5) h = 0x7e00;
            xv[i] = h2f(h);
            std::memcpy(&host[i * 2], &h, 2);
        } else {
            float v = std::round(uf(rng) * 8.0f) / 8.0f;
            if (i % 89 == 3) v = NAN;
            xv[i] = v;
            std::memcpy(&host[i * 4], &v, 4);
        }
    }
}

size_t countMismatches(std::vector<unsigned char> const& got, std::vector<float> const& ref, int dtype, char const* label) {
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        float g;
        if (dtype == SPPQ_INT8) g = static_cast<int8_t>(got[i]);
        else if (dtype == SPPQ_FLOAT16) { uint16_t h; std::memcpy(&h, &got[i * 2], 2); g = h2f(h); }
        else std::memcpy(&g, &got[i * 4], 4);
        float const r = dtype == SPPQ_FLOAT16 ? h2f(f2h(ref[i])) : ref[i];
        bool const ok = (std::isnan(r) || std::isnan(g)) ? (std::isnan(r) && std::isnan(g)) : g == r;
        if (!ok && ++bad <= 3) std::printf("  %s: element %zu got %g want %g\n", label, i, g, r);
    }
    return bad;
}

// One case through configurePlugin / onShapeChange / enqueue, compared with the reference.
void runCase(Caps const& k, int dtype, int N, int C, int H, int W, int R, std::vector<int> const& levels, float scale,
    float inScale, float outScale, std::mt19937& rng, char const* label) {
    int64_t bins = 0;
    for (int n : levels) bins += n * n;
    DataType const t = dtypeOf(dtype);
    DynamicPluginTensorDesc din[2]{}, dout{};
    din[0].desc = desc(t, {-1, C, -1, -1}, inScale);
    din[1].desc = desc(DataType::kFLOAT, {-1, 5}, -1.0f);
    dout.desc = desc(t, {-1, C * bins}, outScale);
    CHECK(k.build->configurePlugin(din, 2, &dout, 1) == 0, "%s configurePlugin", label);
    PluginTensorDesc in[2] = {desc(t, {N, C, H, W}, inScale), desc(DataType::kFLOAT, {R, 5}, -1.0f)};
    PluginTensorDesc out = desc(t, {R, C * bins}, outScale);
    CHECK(k.rt->onShapeChange(in, 2, &out, 1) == 0, "%s onShapeChange", label);
    if (!gHaveGpu) return;

    size_t const nin = static_cast<size_t>(N) * C * H * W, nout = static_cast<size_t>(R) * C * bins;
    std::vector<float> xv;
    std::vector<unsigned char> hostIn;
    fillFeatures(rng, dtype, nin, xv, hostIn);
    std::vector<float> const rois = randomRois(rng, R, N, H, W, 1.0f / scale);
    void *dIn = nullptr, *dRois = nullptr, *dOut = nullptr;
    CHECK(cudaMalloc(&dIn, hostIn.size()) == cudaSuccess, "cudaMalloc");
    CHECK(cudaMalloc(&dRois, rois.size() * 4 + 4) == cudaSuccess, "cudaMalloc");
    CHECK(cudaMalloc(&dOut, nout * esize(dtype) + 1) == cudaSuccess, "cudaMalloc");
    cudaMemcpy(dIn, hostIn.data(), hostIn.size(), cudaMemcpyHostToDevice);
    cudaMemcpy(dRois, rois.data(), rois.size() * 4, cudaMemcpyHostToDevice);
    std::vector<float> const ref = reference(xv, rois, dtype, N, C, H, W, levels, scale, inScale, outScale);
    for (int poison : {0xFF, 0x11}) {
        cudaMemset(dOut, poison, nout * esize(dtype));
        void const* ins[] = {dIn, dRois};
        void* outs[] = {dOut};
        CHECK(k.rt->enqueue(in, &out, ins, outs, nullptr, nullptr) == 0, "%s enqueue", label);
        CHECK(cudaDeviceSynchronize() == cudaSuccess, "%s sync", label);
        std::vector<unsigned char> got(nout * esize(dtype));
        cudaMemcpy(got.data(), dOut, got.size(), cudaMemcpyDeviceToHost);
        size_t const bad = countMismatches(got, ref, dtype, label);
        CHECK(bad == 0, "%s (poison 0x%02x): %zu of %zu elements differ", label, poison, bad, nout);
    }
    cudaFree(dIn);
    cudaFree(dRois);
    cudaFree(dOut);
}

void checkCreators(IPluginCreatorV3One* creator) {
    int32_t nb = 0;
    IPluginCreatorInterface* const* list = getCreators(nb);
    CHECK(nb == 2 && list != nullptr, "getCreators returned %d creators", nb);
    CHECK(findCreator("SpatialPyramidPooling") != nullptr, "SpatialPyramidPooling creator missing");
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0, "version");
    CHECK(std::strcmp(creator->getPluginNamespace(), "sppquant") == 0, "namespace");
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 3, "field names");
    CountingLogger& logger = gFinder.logger;
    int const e0 = logger.errors;
    Fields noLevels({1}, 0.0625f);
    noLevels.f.erase(noLevels.f.begin() + 1);
    noLevels.fc.nbFields = static_cast<int32_t>(noLevels.f.size());
    noLevels.fc.fields = noLevels.f.data();
    CHECK(creator->createPlugin("x", &noLevels.fc, TensorRTPhase::kBUILD) == nullptr, "missing levels accepted");
    Fields zero({2, 0}, 0.0625f), avg({2, 1}, 0.0625f, "avg"), s0({2}, 0.0f), sneg({2}, -1.0f), snan({2}, NAN);
    for (Fields* f : {&zero, &avg, &s0, &sneg, &snan})
        CHECK(creator->createPlugin("x", &f->fc, TensorRTPhase::kBUILD) == nullptr, "invalid fields accepted");
    int32_t lv[] = {2, 1}, notFloat = 1;
    PluginField bad[] = {{"levels", lv, PluginFieldType::kINT32, 2}, {"spatial_scale", &notFloat, PluginFieldType::kINT32, 1}};
    PluginFieldCollection badFc{2, bad};
    CHECK(creator->createPlugin("x", &badFc, TensorRTPhase::kBUILD) == nullptr, "INT32 spatial_scale accepted");
    CHECK(creator->createPlugin("x", nullptr, TensorRTPhase::kBUILD) == nullptr, "null field collection accepted");
    CHECK(logger.errors >= e0 + 8, "errors were not logged (%d)", logger.errors - e0);
    // spatial_scale defaults to 1 when absent; FLOAT64 accepted
    double const d = 0.25;
    PluginField f64[] = {{"levels", lv, PluginFieldType::kINT32, 2}, {"spatial_scale", &d, PluginFieldType::kFLOAT64, 1}};
    PluginFieldCollection f64Fc{2, f64};
    IPluginV3* p = creator->createPlugin("f64", &f64Fc, TensorRTPhase::kBUILD);
    CHECK(p != nullptr, "FLOAT64 spatial_scale rejected");
    delete p;
}

void checkBuildInterfaces(Caps const& k) {
    CountingLogger& logger = gFinder.logger;
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8}) {
        DataType o = DataType::kBOOL;
        DataType const ins[] = {t, DataType::kFLOAT};
        CHECK(k.build->getOutputDataTypes(&o, 1, ins, 2) == 0 && o == t, "output type %d", static_cast<int>(t));
    }
    {
        DataType o;
        DataType const halfRois[] = {DataType::kFLOAT, DataType::kHALF}, intFeat[] = {DataType::kINT32, DataType::kFLOAT};
        int const e0 = logger.errors;
        CHECK(k.build->getOutputDataTypes(&o, 1, halfRois, 2) != 0, "FP16 rois accepted");
        CHECK(k.build->getOutputDataTypes(&o, 1, intFeat, 2) != 0, "INT32 features accepted");
        CHECK(k.build->getOutputDataTypes(&o, 1, intFeat, 1) != 0, "one input accepted");
        CHECK(logger.errors >= e0 + 3, "type errors not logged");
    }
    {
        Builder eb;
        Dim n(3), c(5), h(13), w(7), r(11), five(5);
        DimsExprs in[2]{};
        in[0].nbDims = 4;
        in[0].d[0] = &n; in[0].d[1] = &c; in[0].d[2] = &h; in[0].d[3] = &w;
        in[1].nbDims = 2;
        in[1].d[0] = &r; in[1].d[1] = &five;
        DimsExprs out{};
        CHECK(k.build->getOutputShapes(in, 2, nullptr, 0, &out, 1, eb) == 0, "getOutputShapes");
        CHECK(out.nbDims == 2 && out.d[0] == &r && out.d[1]->getConstantValue() == 5 * 50, "output shape (R, C*50)");
        in[1].nbDims = 3;
        CHECK(k.build->getOutputShapes(in, 2, nullptr, 0, &out, 1, eb) != 0, "3-D rois accepted");
        in[1].nbDims = 2;
        in[0].nbDims = 3;
        CHECK(k.build->getOutputShapes(in, 2, nullptr, 0, &out, 1, eb) != 0, "3-D features accepted");
    }
    DynamicPluginTensorDesc io[3]{};
    DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32, DataType::kBF16};
    for (DataType a : types) {
        io[0].desc = desc(a, {-1, 3, -1, -1}, -1);
        bool const okIn = a == DataType::kFLOAT || a == DataType::kHALF || a == DataType::kINT8;
        CHECK(k.build->supportsFormatCombination(0, io, 2, 1) == okIn, "features type %d", static_cast<int>(a));
        io[1].desc = desc(a, {-1, 5}, -1);
        CHECK(k.build->supportsFormatCombination(1, io, 2, 1) == (a == DataType::kFLOAT), "rois type %d", static_cast<int>(a));
        for (DataType b : types) {
            io[2].desc = desc(b, {-1, 150}, -1);
            CHECK(k.build->supportsFormatCombination(2, io, 2, 1) == (a == b), "output %d for features %d",
                static_cast<int>(b), static_cast<int>(a));
        }
    }
    io[0].desc = desc(DataType::kFLOAT, {-1, 3, -1, -1}, -1);
    io[0].desc.format = TensorFormat::kCHW32;
    CHECK(!k.build->supportsFormatCombination(0, io, 2, 1), "CHW32 accepted");
    CHECK(!k.build->supportsFormatCombination(3, io, 2, 1), "pos 3 accepted");
    CHECK(!k.build->supportsFormatCombination(0, io, 1, 1), "one input accepted");
}

void checkRuntimeErrors(Caps const& k, IPluginCreatorV3One* creator) {
    CountingLogger& logger = gFinder.logger;
    int const e0 = logger.errors;
    void const* ins[] = {reinterpret_cast<void*>(0x1000), reinterpret_cast<void*>(0x2000)};
    void* outs[] = {reinterpret_cast<void*>(0x3000)};
    PluginTensorDesc in[2] = {desc(DataType::kFLOAT, {2, 3, 8, 8}, -1), desc(DataType::kFLOAT, {4, 5}, -1)};
    PluginTensorDesc out = desc(DataType::kFLOAT, {4, 149}, -1);
    CHECK(k.rt->onShapeChange(in, 2, &out, 1) != 0, "wrong output width accepted");
    CHECK(k.rt->enqueue(in, &out, ins, outs, nullptr, nullptr) != 0, "enqueue with wrong output width ran");
    in[1] = desc(DataType::kFLOAT, {4, 4}, -1);
    out = desc(DataType::kFLOAT, {4, 150}, -1);
    CHECK(k.rt->onShapeChange(in, 2, &out, 1) != 0, "rois (R, 4) accepted");
    PluginTensorDesc qi[2] = {desc(DataType::kINT8, {2, 3, 8, 8}, -1.0f), desc(DataType::kFLOAT, {4, 5}, -1)};
    PluginTensorDesc qo = desc(DataType::kINT8, {4, 150}, -1.0f);
    Fields f({6, 3, 2, 1}, 0.0625f);
    IPluginV3* fresh = creator->createPlugin("fresh", &f.fc, TensorRTPhase::kRUNTIME);
    CHECK(fresh && caps(fresh).rt->enqueue(qi, &qo, ins, outs, nullptr, nullptr) != 0, "int8 without scales ran");
    delete fresh;
    CHECK(logger.errors >= e0 + 4, "run-time errors not logged");
    // R = 0: nothing to do, no pointer is touched
    PluginTensorDesc z[2] = {desc(DataType::kFLOAT, {2, 3, 8, 8}, -1), desc(DataType::kFLOAT, {0, 5}, -1)};
    PluginTensorDesc zo = desc(DataType::kFLOAT, {0, 150}, -1);
    void const* nullIns[] = {reinterpret_cast<void*>(0x1000), nullptr};
    void* nullOuts[] = {nullptr};
    CHECK(k.rt->onShapeChange(z, 2, &zo, 1) == 0, "R = 0 refused by onShapeChange");
    CHECK(k.rt->enqueue(z, &zo, nullIns, nullOuts, nullptr, nullptr) == 0, "R = 0 enqueue failed");
}

// Enqueue over shapes, dtypes and level sets, then clone / attach / serialize round trips.
void checkEnqueue(IPluginCreatorV3One* creator) {
    std::mt19937 rng(4321);
    struct Shape { int n, c, h, w, r; float scale; };
    Shape const shapes[] = {{1, 8, 43, 43, 37, 1.0f / 16}, {3, 5, 13, 7, 21, 1.0f / 8}, {2, 3, 1, 1, 9, 1.0f}, {2, 40, 20, 30, 17, 0.5f}};
    std::vector<std::vector<int>> const levelSets = {{6, 3, 2, 1}, {4, 2, 1}, {5, 3, 1}, {1}};
    for (auto const& lv : levelSets) {
        for (Shape const& s : shapes) {
            Fields fl(std::vector<int32_t>(lv.begin(), lv.end()), s.scale);
            IPluginV3* p = creator->createPlugin("roi", &fl.fc, TensorRTPhase::kBUILD);
            CHECK(p != nullptr, "createPlugin");
            if (!p) continue;
            Caps const c = caps(p);
            for (int dt = 0; dt < 3; ++dt) {
                char label[160];
                std::snprintf(label, sizeof label, "levels[0]=%d %dx%dx%dx%d R=%d dtype %d", lv[0], s.n, s.c, s.h, s.w, s.r, dt);
                runCase(c, dt, s.n, s.c, s.h, s.w, s.r, lv, s.scale, dt == 2 ? 0.05f : -1.0f, dt == 2 ? 0.05f : -1.0f, rng, label);
                if (dt == 2) {
                    std::snprintf(label, sizeof label, "requant %dx%dx%dx%d", s.n, s.c, s.h, s.w);
                    runCase(c, dt, s.n, s.c, s.h, s.w, s.r, lv, s.scale, 0.05f, 0.0371f, rng, label);
                }
            }
            IPluginV3* cl = p->clone();
            CHECK(cl != nullptr, "clone");
            if (cl) {
                runCase(caps(cl), 0, s.n, s.c, s.h, s.w, s.r, lv, s.scale, -1, -1, rng, "clone");
                IPluginV3* att = caps(cl).rt->attachToContext(nullptr);
                CHECK(att != nullptr, "attachToContext");
                if (att) runCase(caps(att), 1, s.n, s.c, s.h, s.w, s.r, lv, s.scale, -1, -1, rng, "attached");
                delete att;
                delete cl;
            }
            PluginFieldCollection const* ser = c.rt->getFieldsToSerialize();
            CHECK(ser != nullptr && ser->nbFields == 3, "serialized fields");
            bool scaleOk = false;
            for (int i = 0; ser && i < ser->nbFields; ++i)
                if (std::strcmp(ser->fields[i].name, "spatial_scale") == 0)
                    scaleOk = ser->fields[i].type == PluginFieldType::kFLOAT32 && *static_cast<float const*>(ser->fields[i].data) == s.scale;
            CHECK(scaleOk, "spatial_scale not serialized as FLOAT32 %g", s.scale);
            IPluginV3* de = ser ? creator->createPlugin("deser", ser, TensorRTPhase::kRUNTIME) : nullptr;
            CHECK(de != nullptr, "recreate from serialized fields");
            if (de) {
                runCase(caps(de), 2, s.n, s.c, s.h, s.w, s.r, lv, s.scale, 0.02f, 0.03f, rng, "deserialized");
                delete de;
            }
            delete p;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    bool requireGpu = false;
    for (int i = 1; i < argc; ++i) requireGpu |= std::strcmp(argv[i], "--require-gpu") == 0;
    int ndev = 0;
    gHaveGpu = cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0;
    if (!gHaveGpu) {
        std::printf("no GPU: device checks skipped\n");
        if (requireGpu) return 2;
    }
    setLoggerFinder(&gFinder);
    IPluginCreatorV3One* creator = findCreator(kName);
    CHECK(creator != nullptr, "getCreators has no RoiSpatialPyramidPooling V3 creator");
    if (creator == nullptr) return 1;
    checkCreators(creator);
    Fields f({6, 3, 2, 1}, 0.0625f);
    IPluginV3* plugin = creator->createPlugin("roi", &f.fc, TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr, "createPlugin(levels=[6,3,2,1], spatial_scale=1/16)");
    if (plugin == nullptr) return 1;
    Caps const k = caps(plugin);
    CHECK(k.core && k.build && k.rt, "capabilities");
    CHECK(std::strcmp(k.core->getPluginName(), kName) == 0, "name");
    CHECK(k.build->getNbOutputs() == 1, "nb outputs");
    checkBuildInterfaces(k);
    checkRuntimeErrors(k, creator);
    checkEnqueue(creator);
    delete plugin;
    std::printf("roi plugin harness: %d checks, %d failures%s\n", gChecks, gFailures, gHaveGpu ? "" : " (CPU-only)");
    return gFailures == 0 ? 0 : 1;
}
