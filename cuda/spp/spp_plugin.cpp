// sppquant: TensorRT IPluginV3 "SpatialPyramidPooling" (version "1", namespace "sppquant").
//
// Fields (ONNX attributes arrive as plugin fields):
//   levels   INT32 array (INT64 and INT16 are accepted too), e.g. [1, 2, 4]
//   pooling  CHAR string "max" / "avg", or an INT32 0 (max) / 1 (avg); default "max"
//   anything else (plugin_version, plugin_namespace, ...) is ignored with a verbose log line.
// I/O: one NCHW input, linear FP32 / FP16 / INT8; output (N, C*sum(n^2)), same type.
// INT8 scales come from PluginTensorDesc::scale (configurePlugin, onShapeChange, enqueue).
// Registration and the library's exported entry points: cuda/api/plugin_library.cpp.

#include "spp_plugin.h"

#include "plugin_utils.h"
#include "spp_kernels.h"

#include <NvInferRuntime.h>

#include <string>
#include <vector>

using namespace nvinfer1;

namespace sppquant {
namespace {

constexpr char const* kPluginName = "SpatialPyramidPooling";
constexpr char const* kPluginVersion = "1";

using plugin::dtypeCode;
using plugin::kNamespace;
void logError(std::string const& msg) noexcept { plugin::logError(kPluginName, msg); }

// ---- plugin -------------------------------------------------------------------------------
class SppPlugin final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    SppPlugin(std::vector<int32_t> levels, int32_t pooling) : mLevels(std::move(levels)), mPooling(pooling) { initFields(); }
    SppPlugin(SppPlugin const& o)
        : IPluginV3(o), IPluginV3OneCore(o), IPluginV3OneBuild(o), IPluginV3OneRuntime(o), mLevels(o.mLevels),
          mPooling(o.mPooling), mInScale(o.mInScale), mOutScale(o.mOutScale) {
        initFields();
    }
    SppPlugin& operator=(SppPlugin const&) = delete;
    ~SppPlugin() override = default;

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override {
        try {
            return new SppPlugin(*this);
        } catch (...) {
            logError("clone failed: out of memory");
            return nullptr;
        }
    }

    // IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != 1 || nbOutputs != 1) {
            logError("getOutputDataTypes: expected 1 input and 1 output");
            return 1;
        }
        if (dtypeCode(inputTypes[0]) < 0) {
            logError("getOutputDataTypes: input type must be FP32, FP16 or INT8");
            return 1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
        int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override {
        if (inputs == nullptr || outputs == nullptr || nbInputs != 1 || nbOutputs != 1) {
            logError("getOutputShapes: expected 1 input and 1 output");
            return 1;
        }
        if (inputs[0].nbDims != 4) {
            logError("getOutputShapes: input must be 4-D NCHW, got rank " + std::to_string(inputs[0].nbDims));
            return 1;
        }
        IDimensionExpr const* bins = exprBuilder.constant(binsPerChannel());
        IDimensionExpr const* width = bins ? exprBuilder.operation(DimensionOperation::kPROD, *inputs[0].d[1], *bins) : nullptr;
        if (width == nullptr) {
            logError("getOutputShapes: could not build the output width expression");
            return 1;
        }
        outputs[0].nbDims = 2;
        outputs[0].d[0] = inputs[0].d[0];
        outputs[0].d[1] = width;
        return 0;
    }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override {
        if (inOut == nullptr || nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1) return false;
        PluginTensorDesc const& d = inOut[pos].desc;
        if (d.format != TensorFormat::kLINEAR) return false;
        if (pos == 0) return dtypeCode(d.type) >= 0;
        return d.type == inOut[0].desc.type;
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override {
        if (in == nullptr || out == nullptr || nbInputs != 1 || nbOutputs != 1) {
            logError("configurePlugin: expected 1 input and 1 output");
            return 1;
        }
        if (in[0].desc.dims.nbDims != 4 || out[0].desc.dims.nbDims != 2) {
            logError("configurePlugin: expected a 4-D input and a 2-D output");
            return 1;
        }
        if (in[0].desc.type != out[0].desc.type || dtypeCode(in[0].desc.type) < 0) {
            logError("configurePlugin: input and output must both be FP32, FP16 or INT8");
            return 1;
        }
        mInScale = in[0].desc.scale;
        mOutScale = out[0].desc.scale;
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override {
        if (in == nullptr || out == nullptr || nbInputs != 1 || nbOutputs != 1) {
            logError("onShapeChange: expected 1 input and 1 output");
            return 1;
        }
        int32_t const st = check(in[0], out[0], "onShapeChange");
        if (st == 0) {
            mInScale = in[0].scale;
            mOutScale = out[0].scale;
        }
        return st;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) {
            logError("enqueue: null descriptor or buffer list");
            return 1;
        }
        int32_t const st = check(inputDesc[0], outputDesc[0], "enqueue");
        if (st != 0) return st;
        Dims const& d = inputDesc[0].dims;
        int const dtype = dtypeCode(inputDesc[0].type);
        // enqueue's descriptors carry the scales; fall back to those seen at configure time.
        float inScale = inputDesc[0].scale > 0.0f ? inputDesc[0].scale : mInScale;
        float outScale = outputDesc[0].scale > 0.0f ? outputDesc[0].scale : mOutScale;
        int const rc = sppq_spp_forward(inputs[0], outputs[0], dtype, mPooling, static_cast<int>(d.d[0]),
            static_cast<int>(d.d[1]), static_cast<int>(d.d[2]), static_cast<int>(d.d[3]), mLevels.data(),
            static_cast<int>(mLevels.size()), inScale, outScale, stream);
        if (rc != SPPQ_OK) {
            std::string msg = std::string("enqueue: ") + sppq_error_string(rc);
            if (rc == SPPQ_ERR_CUDA) msg += std::string(" (") + cudaGetErrorString(static_cast<cudaError_t>(sppq_last_cuda_error())) + ")";
            logError(msg);
            return rc;
        }
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFc; }

    std::vector<int32_t> const& levels() const { return mLevels; }

private:
    int64_t binsPerChannel() const {
        int64_t s = 0;
        for (int32_t n : mLevels) s += static_cast<int64_t>(n) * n;
        return s;
    }

    void initFields() {
        mPoolingName = mPooling == SPPQ_AVG ? "avg" : "max";
        mFields.clear();
        mFields.emplace_back("levels", mLevels.data(), PluginFieldType::kINT32, static_cast<int32_t>(mLevels.size()));
        mFields.emplace_back("pooling", mPoolingName.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(mPoolingName.size() + 1));
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
    }

    int32_t check(PluginTensorDesc const& in, PluginTensorDesc const& out, char const* where) const {
        if (in.dims.nbDims != 4 || out.dims.nbDims != 2) {
            logError(std::string(where) + ": expected a 4-D input and a 2-D output");
            return 1;
        }
        int const dtype = dtypeCode(in.type);
        if (dtype < 0 || in.type != out.type) {
            logError(std::string(where) + ": input and output must both be FP32, FP16 or INT8");
            return 1;
        }
        for (int i = 0; i < 4; ++i) {
            if (in.dims.d[i] <= 0 || in.dims.d[i] > 0x7fffffff) {
                logError(std::string(where) + ": input dimensions must be positive 32-bit values");
                return 1;
            }
        }
        int64_t const width = in.dims.d[1] * binsPerChannel();
        if (out.dims.d[0] != in.dims.d[0] || out.dims.d[1] != width) {
            logError(std::string(where) + ": output shape does not match (N, C*sum(n^2))");
            return 1;
        }
        float const inScale = in.scale, outScale = out.scale;
        int const rc = sppq_spp_validate(dtype, mPooling, static_cast<int>(in.dims.d[0]), static_cast<int>(in.dims.d[1]),
            static_cast<int>(in.dims.d[2]), static_cast<int>(in.dims.d[3]), mLevels.data(), static_cast<int>(mLevels.size()),
            dtype == SPPQ_INT8 ? (inScale > 0.0f ? inScale : mInScale) : 1.0f,
            dtype == SPPQ_INT8 ? (outScale > 0.0f ? outScale : mOutScale) : 1.0f);
        if (rc != SPPQ_OK) {
            logError(std::string(where) + ": " + sppq_error_string(rc));
            return rc;
        }
        return 0;
    }

    std::vector<int32_t> mLevels;
    int32_t mPooling;
    float mInScale{-1.0f};
    float mOutScale{-1.0f};
    std::string mPoolingName;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

// ---- creator ------------------------------------------------------------------------------
class SppPluginCreator final : public IPluginCreatorV3One {
public:
    SppPluginCreator() {
        mFields.emplace_back("levels", nullptr, PluginFieldType::kINT32, 0);
        mFields.emplace_back("pooling", nullptr, PluginFieldType::kCHAR, 0);
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
    }

    IPluginV3* createPlugin(AsciiChar const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept override {
        try {
            std::string const who = std::string("createPlugin(") + (name ? name : "") + "): ";
            std::vector<int32_t> levels;
            int32_t pooling = SPPQ_MAX;
            bool haveLevels = false;
            for (int32_t i = 0; fc != nullptr && fc->fields != nullptr && i < fc->nbFields; ++i) {
                PluginField const& f = fc->fields[i];
                std::string const fname = f.name ? f.name : "";
                if (fname == "levels") {
                    if (!plugin::readInts(f, levels)) {
                        logError(who + "field 'levels' must be an integer array");
                        return nullptr;
                    }
                    haveLevels = true;
                } else if (fname == "pooling") {
                    std::string err;
                    if (!plugin::readPooling(f, &pooling, &err)) {
                        logError(who + err);
                        return nullptr;
                    }
                } else {
                    plugin::log(ILogger::Severity::kVERBOSE, kPluginName, who + "ignoring field '" + fname + "'");
                }
            }
            if (!haveLevels) {
                logError(who + "missing field 'levels'");
                return nullptr;
            }
            if (sppq_spp_output_width(1, levels.data(), static_cast<int>(levels.size())) < 0) {
                logError(who + "invalid 'levels': 1..16 levels, each 1..64");
                return nullptr;
            }
            int32_t sum = 0;
            for (int32_t n : levels) sum += n;
            if (sum > SPPQ_MAX_SUM_BINS) {
                logError(who + "invalid 'levels': the sum of the levels must be at most 128");
                return nullptr;
            }
            return new SppPlugin(std::move(levels), pooling);
        } catch (...) {
            logError("createPlugin failed: out of memory");
            return nullptr;
        }
    }

    PluginFieldCollection const* getFieldNames() noexcept override { return &mFc; }
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

}  // namespace

IPluginCreatorV3One& sppPluginCreator() {
    static SppPluginCreator c;
    return c;
}

}  // namespace sppquant
