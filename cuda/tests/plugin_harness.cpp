// Drives the SpatialPyramidPooling IPluginV3 through its own interfaces without a TensorRT
// runtime: creator and fields, capabilities, output types and shapes (through a stand-in
// IExprBuilder), format combinations, configurePlugin / onShapeChange / enqueue with
// hand-built tensor descriptors, clone / serialize round trips, and error paths.
// Device parts compare enqueue's output with a CPU reference of sppquant/ops/spp/reference.py;
// without a GPU they are skipped (exit 0) unless --require-gpu is given.
//
// Exit code 0 when every check passed; prints one line per failure and a summary.

#include "harness_common.h"
#include "spp_kernels.h"

#include <random>

using namespace nvinfer1;
using namespace harness;

namespace {

// in: values as float (exact for f16/i8). Returns output values as float per element (before
// storing to the dtype) so the comparison is dtype-aware.
std::vector<float> reference(std::vector<float> const& x, int dtype, int pooling, int N, int C, int H, int W,
    std::vector<int> const& levels, float inScale, float outScale) {
    int64_t bins = 0;
    for (int n : levels) bins += n * n;
    std::vector<float> out(static_cast<size_t>(N) * C * bins);
    bool const requantize = std::memcmp(&inScale, &outScale, 4) != 0;
    float const ratio = inScale / outScale;
    for (int n = 0; n < N; ++n) {
        int64_t loff = 0;
        for (int L : levels) {
            for (int c = 0; c < C; ++c) {
                float const* plane = x.data() + (static_cast<size_t>(n) * C + c) * H * W;
                for (int by = 0; by < L; ++by) {
                    int const y0 = static_cast<int>((int64_t(by) * H) / L), y1 = static_cast<int>(((by + 1) * int64_t(H) + L - 1) / L);
                    for (int bx = 0; bx < L; ++bx) {
                        int const x0 = static_cast<int>((int64_t(bx) * W) / L), x1 = static_cast<int>(((bx + 1) * int64_t(W) + L - 1) / L);
                        double s = 0.0;
                        float m = -INFINITY;
                        bool nan = false;
                        for (int y = y0; y < y1; ++y)
                            for (int xx = x0; xx < x1; ++xx) {
                                float v = plane[y * W + xx];
                                if (std::isnan(v)) nan = true;
                                m = v > m ? v : m;
                                s += v;
                            }
                        float r;
                        if (pooling == SPPQ_MAX) {
                            r = nan ? NAN : m;
                            if (dtype == SPPQ_INT8 && requantize) r = requant(r, ratio);
                        } else {
                            r = static_cast<float>(s / ((y1 - y0) * (x1 - x0)));
                            if (dtype == SPPQ_INT8) r = requant(r, requantize ? ratio : 1.0f);
                        }
                        out[static_cast<size_t>(n) * C * bins + C * loff + static_cast<int64_t>(c) * L * L + by * L + bx] = r;
                    }
                }
            }
            loff += int64_t(L) * L;
        }
    }
    return out;
}

struct Fields {
    std::vector<int32_t> levels;
    std::string pooling;
    std::vector<PluginField> f;
    PluginFieldCollection fc{};
    Fields(std::vector<int32_t> l, std::string p, bool withVersion = true) : levels(std::move(l)), pooling(std::move(p)) {
        static char const version[] = "1";
        if (withVersion) f.emplace_back("plugin_version", version, PluginFieldType::kCHAR, 1);
        f.emplace_back("levels", levels.data(), PluginFieldType::kINT32, static_cast<int32_t>(levels.size()));
        if (!pooling.empty()) f.emplace_back("pooling", pooling.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(pooling.size()));
        fc.nbFields = static_cast<int32_t>(f.size());
        fc.fields = f.data();
    }
};


// Runs one configured case through configurePlugin / onShapeChange / enqueue and compares.
void runCase(Caps const& k, int dtype, int pooling, int N, int C, int H, int W, std::vector<int> const& levels,
    float inScale, float outScale, std::mt19937& rng, char const* label) {
    int64_t bins = 0;
    for (int n : levels) bins += n * n;
    DataType const t = dtypeOf(dtype);
    DynamicPluginTensorDesc din{}, dout{};
    din.desc = desc(t, {-1, C, -1, -1}, inScale);
    dout.desc = desc(t, {-1, C * bins}, outScale);
    din.min = desc(t, {1, C, 1, 1}, 0).dims;
    din.max = desc(t, {N, C, H, W}, 0).dims;
    din.opt = din.max;
    CHECK(k.build->configurePlugin(&din, 1, &dout, 1) == 0, "%s configurePlugin", label);
    PluginTensorDesc in = desc(t, {N, C, H, W}, inScale), out = desc(t, {N, C * bins}, outScale);
    CHECK(k.rt->onShapeChange(&in, 1, &out, 1) == 0, "%s onShapeChange", label);
    if (!gHaveGpu) return;

    size_t const nin = static_cast<size_t>(N) * C * H * W, nout = static_cast<size_t>(N) * C * bins;
    std::vector<float> xv(nin);
    std::vector<unsigned char> hostIn(nin * esize(dtype));
    std::uniform_real_distribution<float> uf(-4.0f, 4.0f);
    std::uniform_int_distribution<int> ui(-128, 127);
    for (size_t i = 0; i < nin; ++i) {
        if (dtype == SPPQ_INT8) {
            int8_t q = static_cast<int8_t>(ui(rng));
            xv[i] = q;
            hostIn[i] = static_cast<unsigned char>(q);
        } else if (dtype == SPPQ_FLOAT16) {
            uint16_t h = f2h(uf(rng));
            if (i % 97 == 5) h = 0x7e00;  // NaN now and then
            xv[i] = h2f(h);
            std::memcpy(&hostIn[i * 2], &h, 2);
        } else {
            float v = std::round(uf(rng) * 8.0f) / 8.0f;  // ties
            if (i % 89 == 3) v = NAN;
            xv[i] = v;
            std::memcpy(&hostIn[i * 4], &v, 4);
        }
    }
    void *dIn = nullptr, *dOut = nullptr;
    CHECK(cudaMalloc(&dIn, hostIn.size()) == cudaSuccess, "cudaMalloc");
    CHECK(cudaMalloc(&dOut, nout * esize(dtype)) == cudaSuccess, "cudaMalloc");
    cudaMemcpy(dIn, hostIn.data(), hostIn.size(), cudaMemcpyHostToDevice);
    cudaMemset(dOut, 0xFF, nout * esize(dtype));  // poison
    void const* ins[] = {dIn};
    void* outs[] = {dOut};
    CHECK(k.rt->enqueue(&in, &out, ins, outs, nullptr, nullptr) == 0, "%s enqueue", label);
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "%s sync", label);
    std::vector<unsigned char> got(nout * esize(dtype));
    cudaMemcpy(got.data(), dOut, got.size(), cudaMemcpyDeviceToHost);
    std::vector<float> ref = reference(xv, dtype, pooling, N, C, H, W, levels, inScale, outScale);
    size_t bad = 0;
    for (size_t i = 0; i < nout; ++i) {
        float g;
        if (dtype == SPPQ_INT8) g = static_cast<int8_t>(got[i]);
        else if (dtype == SPPQ_FLOAT16) { uint16_t h; std::memcpy(&h, &got[i * 2], 2); g = h2f(h); }
        else std::memcpy(&g, &got[i * 4], 4);
        float r = ref[i];
        if (dtype == SPPQ_FLOAT16) r = h2f(f2h(r));
        bool ok;
        if (std::isnan(r) || std::isnan(g)) ok = std::isnan(r) && std::isnan(g);
        else if (pooling == SPPQ_MAX) ok = g == r;
        else if (dtype == SPPQ_INT8) ok = std::fabs(g - r) <= 1.0f;
        else ok = std::fabs(g - r) <= 1e-5f + (dtype == SPPQ_FLOAT16 ? 2e-3f : 1e-5f) * std::fabs(r);
        if (!ok && ++bad <= 3) std::printf("  %s: element %zu got %g want %g\n", label, i, g, r);
    }
    CHECK(bad == 0, "%s: %zu of %zu elements differ", label, bad, nout);
    cudaFree(dIn);
    cudaFree(dOut);
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
    CountingLogger& logger = gFinder.logger;

    IPluginCreatorV3One* creator = findCreator("SpatialPyramidPooling");
    CHECK(creator != nullptr, "getCreators has no SpatialPyramidPooling V3 creator");
    if (creator == nullptr) return 1;
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0, "version");
    CHECK(std::strcmp(creator->getPluginNamespace(), "sppquant") == 0, "namespace");
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 2, "field names");

    // invalid creations: nullptr + a logged error, never a crash
    {
        int const e0 = logger.errors;
        Fields noLevels({}, "max");
        noLevels.f.erase(noLevels.f.begin() + 1);
        noLevels.fc.nbFields = static_cast<int32_t>(noLevels.f.size());
        noLevels.fc.fields = noLevels.f.data();
        CHECK(creator->createPlugin("x", &noLevels.fc, TensorRTPhase::kBUILD) == nullptr, "missing levels accepted");
        Fields zero({1, 0}, "max");
        CHECK(creator->createPlugin("x", &zero.fc, TensorRTPhase::kBUILD) == nullptr, "level 0 accepted");
        Fields badPool({1, 2}, "median");
        CHECK(creator->createPlugin("x", &badPool.fc, TensorRTPhase::kBUILD) == nullptr, "pooling 'median' accepted");
        CHECK(creator->createPlugin("x", nullptr, TensorRTPhase::kBUILD) == nullptr, "null field collection accepted");
        CHECK(logger.errors >= e0 + 4, "errors were not logged (%d)", logger.errors - e0);
    }
    // INT32 pooling field
    {
        int32_t one = 1;
        int32_t lv[] = {2, 1};
        PluginField f[] = {{"levels", lv, PluginFieldType::kINT32, 2}, {"pooling", &one, PluginFieldType::kINT32, 1}};
        PluginFieldCollection fc{2, f};
        IPluginV3* p = creator->createPlugin("int-pooling", &fc, TensorRTPhase::kBUILD);
        CHECK(p != nullptr, "INT32 pooling field rejected");
        if (p) {
            PluginFieldCollection const* s = caps(p).rt->getFieldsToSerialize();
            bool avg = false;
            for (int i = 0; s && i < s->nbFields; ++i)
                if (std::strcmp(s->fields[i].name, "pooling") == 0) avg = std::strcmp(static_cast<char const*>(s->fields[i].data), "avg") == 0;
            CHECK(avg, "INT32 pooling=1 did not serialize as avg");
            delete p;
        }
    }

    Fields f124({1, 2, 4}, "max");
    IPluginV3* plugin = creator->createPlugin("spp", &f124.fc, TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr, "createPlugin(levels=[1,2,4])");
    if (plugin == nullptr) return 1;
    Caps k = caps(plugin);
    CHECK(k.core && k.build && k.rt, "capabilities");
    CHECK(std::strcmp(k.core->getPluginName(), "SpatialPyramidPooling") == 0, "name");
    CHECK(k.build->getNbOutputs() == 1, "nb outputs");

    // output types
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8}) {
        DataType o = DataType::kBOOL;
        CHECK(k.build->getOutputDataTypes(&o, 1, &t, 1) == 0 && o == t, "output type %d", static_cast<int>(t));
    }
    {
        DataType t = DataType::kINT32, o;
        int const e0 = logger.errors;
        CHECK(k.build->getOutputDataTypes(&o, 1, &t, 1) != 0 && logger.errors > e0, "INT32 input accepted");
    }
    // output shapes (stand-in expression builder)
    {
        Builder eb;
        Dim n(3), c(5), h(13), w(7);
        DimsExprs in{};
        in.nbDims = 4;
        in.d[0] = &n; in.d[1] = &c; in.d[2] = &h; in.d[3] = &w;
        DimsExprs out{};
        CHECK(k.build->getOutputShapes(&in, 1, nullptr, 0, &out, 1, eb) == 0, "getOutputShapes");
        CHECK(out.nbDims == 2 && out.d[0]->getConstantValue() == 3 && out.d[1]->getConstantValue() == 5 * 21,
            "output shape (%d, %lld)", out.nbDims, static_cast<long long>(out.d[1] ? out.d[1]->getConstantValue() : -1));
        in.nbDims = 3;
        CHECK(k.build->getOutputShapes(&in, 1, nullptr, 0, &out, 1, eb) != 0, "3-D input accepted");
    }
    // format combinations
    {
        DynamicPluginTensorDesc io[2]{};
        DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32, DataType::kBF16};
        for (DataType a : types) {
            io[0].desc = desc(a, {-1, 3, -1, -1}, -1);
            bool const okIn = a == DataType::kFLOAT || a == DataType::kHALF || a == DataType::kINT8;
            CHECK(k.build->supportsFormatCombination(0, io, 1, 1) == okIn, "input type %d", static_cast<int>(a));
            for (DataType b : types) {
                io[1].desc = desc(b, {-1, 63}, -1);
                CHECK(k.build->supportsFormatCombination(1, io, 1, 1) == (a == b), "output %d for input %d",
                    static_cast<int>(b), static_cast<int>(a));
            }
        }
        io[0].desc = desc(DataType::kFLOAT, {-1, 3, -1, -1}, -1);
        io[0].desc.format = TensorFormat::kCHW32;
        CHECK(!k.build->supportsFormatCombination(0, io, 1, 1), "CHW32 accepted");
        CHECK(!k.build->supportsFormatCombination(2, io, 1, 1), "pos 2 accepted");
    }
    // error paths at run time: wrong output shape, bad int8 scale
    {
        int const e0 = logger.errors;
        PluginTensorDesc in = desc(DataType::kFLOAT, {2, 3, 8, 8}, -1), out = desc(DataType::kFLOAT, {2, 62}, -1);
        CHECK(k.rt->onShapeChange(&in, 1, &out, 1) != 0, "wrong output width accepted");
        void const* ins[] = {reinterpret_cast<void*>(0x1000)};
        void* outs[] = {reinterpret_cast<void*>(0x2000)};
        CHECK(k.rt->enqueue(&in, &out, ins, outs, nullptr, nullptr) != 0, "enqueue with wrong output width ran");
        PluginTensorDesc qi = desc(DataType::kINT8, {2, 3, 8, 8}, -1.0f), qo = desc(DataType::kINT8, {2, 63}, -1.0f);
        Fields f2({1, 2, 4}, "max");
        IPluginV3* fresh = creator->createPlugin("fresh", &f2.fc, TensorRTPhase::kRUNTIME);
        CHECK(fresh && caps(fresh).rt->enqueue(&qi, &qo, ins, outs, nullptr, nullptr) != 0, "int8 without scales ran");
        delete fresh;
        CHECK(logger.errors >= e0 + 3, "run-time errors not logged");
    }

    std::mt19937 rng(1234);
    // enqueue path, every dtype and pooling, a few shapes and level sets
    struct Shape { int n, c, h, w; };
    Shape const shapes[] = {{2, 3, 13, 13}, {1, 1, 1, 1}, {3, 5, 3, 2}, {2, 7, 37, 53}, {1, 16, 64, 64}, {8, 64, 13, 13}, {3, 40, 20, 21}};
    std::vector<std::vector<int>> const levelSets = {{1, 2, 4}, {6, 3, 2, 1}, {5, 3}};
    for (auto const& lv : levelSets) {
        for (char const* pool : {"max", "avg"}) {
            Fields fl(std::vector<int32_t>(lv.begin(), lv.end()), pool);
            IPluginV3* p = creator->createPlugin("spp", &fl.fc, TensorRTPhase::kBUILD);
            CHECK(p != nullptr, "createPlugin");
            if (!p) continue;
            Caps c = caps(p);
            int const pooling = std::strcmp(pool, "avg") == 0 ? SPPQ_AVG : SPPQ_MAX;
            for (Shape const& s : shapes) {
                for (int dt = 0; dt < 3; ++dt) {
                    char label[160];
                    std::snprintf(label, sizeof label, "%s levels[0]=%d %dx%dx%dx%d dtype %d", pool, lv[0], s.n, s.c, s.h, s.w, dt);
                    runCase(c, dt, pooling, s.n, s.c, s.h, s.w, lv, dt == 2 ? 0.05f : -1.0f, dt == 2 ? 0.05f : -1.0f, rng, label);
                    if (dt == 2) {
                        std::snprintf(label, sizeof label, "%s requant %dx%dx%dx%d", pool, s.n, s.c, s.h, s.w);
                        runCase(c, dt, pooling, s.n, s.c, s.h, s.w, lv, 0.05f, 0.0371f, rng, label);
                    }
                }
            }
            // clone and serialize round trips compute the same thing
            IPluginV3* cl = p->clone();
            CHECK(cl != nullptr, "clone");
            if (cl) {
                runCase(caps(cl), 0, pooling, 2, 3, 13, 13, lv, -1, -1, rng, "clone");
                IPluginV3* att = caps(cl).rt->attachToContext(nullptr);
                CHECK(att != nullptr, "attachToContext");
                if (att) runCase(caps(att), 1, pooling, 2, 3, 13, 13, lv, -1, -1, rng, "attached");
                delete att;
                delete cl;
            }
            PluginFieldCollection const* ser = c.rt->getFieldsToSerialize();
            CHECK(ser != nullptr && ser->nbFields == 2, "serialized fields");
            IPluginV3* de = ser ? creator->createPlugin("deser", ser, TensorRTPhase::kRUNTIME) : nullptr;
            CHECK(de != nullptr, "recreate from serialized fields");
            if (de) {
                runCase(caps(de), 2, pooling, 2, 7, 37, 53, lv, 0.02f, 0.03f, rng, "deserialized");
                delete de;
            }
            delete p;
        }
    }
    delete plugin;
    std::printf("plugin harness: %d checks, %d failures%s\n", gChecks, gFailures, gHaveGpu ? "" : " (CPU-only)");
    return gFailures == 0 ? 0 : 1;
}
