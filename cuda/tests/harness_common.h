// What the plugin harnesses share: check counters, a counting logger, a stand-in
// IExprBuilder with concrete values, fp16 helpers, the kernels' INT8 requantization on the
// CPU, creator lookup through getCreators(), capability access and tensor descriptors.
#ifndef SPPQUANT_HARNESS_COMMON_H
#define SPPQUANT_HARNESS_COMMON_H

#include "sppq_common.h"

#include <NvInferImpl.h>
#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

namespace harness {
using namespace nvinfer1;


inline int gFailures = 0;
inline int gChecks = 0;
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        ++gChecks;                                                                         \
        if (!(cond)) {                                                                     \
            ++gFailures;                                                                   \
            std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
            std::printf(__VA_ARGS__);                                                      \
            std::printf("\n");                                                             \
        }                                                                                  \
    } while (0)

// ---- logger -------------------------------------------------------------------------------
struct CountingLogger : ILogger {
    int errors = 0;
    bool quiet = true;
    void log(Severity s, AsciiChar const* msg) noexcept override {
        if (s <= Severity::kERROR) ++errors;
        if (!quiet || s <= Severity::kWARNING) std::printf("  [log %d] %s\n", static_cast<int>(s), msg);
    }
};
struct Finder : ILoggerFinder {
    CountingLogger logger;
    ILogger* findLogger() override { return &logger; }
};
inline Finder gFinder;

// ---- a stand-in expression builder (concrete values) ---------------------------------------
struct DimImpl : apiv::VDimensionExpr {
    int64_t v;
    explicit DimImpl(int64_t x) : v(x) {}
    bool isConstant() const override { return true; }
    int64_t getConstantValue() const override { return v; }
    bool isSizeTensor() const override { return false; }
};
struct Dim : IDimensionExpr {
    DimImpl impl;
    explicit Dim(int64_t x) : impl(x) { mImpl = &impl; }
    ~Dim() noexcept override = default;
};
struct BuilderImpl : apiv::VExprBuilder {
    std::deque<std::unique_ptr<Dim>> pool;
    IDimensionExpr const* make(int64_t v) {
        pool.emplace_back(new Dim(v));
        return pool.back().get();
    }
    IDimensionExpr const* constant(int64_t value) override { return make(value); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override {
        int64_t x = a.getConstantValue(), y = b.getConstantValue();
        switch (op) {
        case DimensionOperation::kSUM: return make(x + y);
        case DimensionOperation::kPROD: return make(x * y);
        case DimensionOperation::kMAX: return make(x > y ? x : y);
        case DimensionOperation::kMIN: return make(x < y ? x : y);
        case DimensionOperation::kSUB: return make(x - y);
        default: return nullptr;
        }
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override { return nullptr; }
};
struct Builder : IExprBuilder {
    BuilderImpl impl;
    Builder() { mImpl = &impl; }
    ~Builder() noexcept override = default;
};

// ---- CPU reference ------------------------------------------------------------------------
inline float h2f(uint16_t h) { __half_raw r; r.x = h; return __half2float(__half(r)); }
inline uint16_t f2h(float f) { __half_raw r = __half(__float2half_rn(f)); return r.x; }

inline int8_t requant(float q, float ratio) {
    volatile float prod = q * ratio;  // one float32 multiply
    float r = std::nearbyint(prod);   // default rounding mode: half to even
    r = std::fmin(std::fmax(r, -128.0f), 127.0f);
    return static_cast<int8_t>(static_cast<int>(r));
}

// ---- plugin helpers ------------------------------------------------------------------------
inline IPluginCreatorV3One* findCreator(char const* name) {
    int32_t nb = 0;
    IPluginCreatorInterface* const* list = getCreators(nb);
    for (int32_t i = 0; list != nullptr && i < nb; ++i) {
        auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
        if (std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0 &&
            std::strcmp(c->getPluginName(), name) == 0)
            return c;
    }
    return nullptr;
}

struct Caps {
    IPluginV3* p;
    IPluginV3OneCore* core;
    IPluginV3OneBuild* build;
    IPluginV3OneRuntime* rt;
};
inline Caps caps(IPluginV3* p) {
    return {p, static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE)),
        static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD)),
        static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME))};
}

inline PluginTensorDesc desc(DataType t, std::vector<int64_t> const& d, float scale) {
    PluginTensorDesc r{};
    r.dims.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i) r.dims.d[i] = d[i];
    r.type = t;
    r.format = TensorFormat::kLINEAR;
    r.scale = scale;
    return r;
}

inline DataType dtypeOf(int code) { return code == 0 ? DataType::kFLOAT : (code == 1 ? DataType::kHALF : DataType::kINT8); }
inline size_t esize(int code) { return code == 0 ? 4 : (code == 1 ? 2 : 1); }

inline bool gHaveGpu = false;

}  // namespace harness

#endif  // SPPQUANT_HARNESS_COMMON_H
