// sppquant: TensorRT IPluginV3 "RoiSpatialPyramidPooling" (version "1", namespace "sppquant").
//
// Fields (ONNX attributes arrive as plugin fields: INT/INTS as INT32, FLOAT as FLOAT32):
//   levels         INT32 array (INT64 / INT16 accepted), e.g. [6, 3, 2, 1]; required
//   spatial_scale  FLOAT32 (FLOAT64 / FLOAT16 accepted), 1 / feature stride; default 1.0
//   pooling        CHAR "max" or INT32 0; default "max" ("avg" is refused: not implemented)
//   anything else (plugin_version, plugin_namespace, ...) is ignored with a verbose log line.
// I/O: features (N, C, H, W) linear FP32 / FP16 / INT8; rois (R, 5) linear FP32 (R dynamic);
// output (R, C*sum(n^2)) of the features' type. INT8 scales: PluginTensorDesc::scale.
// Registration and the library's exported entry points: cuda/api/plugin_library.cpp.

#include "roi_spp_plugin.h"

#include "plugin_utils.h"
#include "roi_spp_kernels.h"

#include <NvInferRuntime.h>

#include <cmath>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace sppquant {
namespace {

constexpr char const* kPluginName = "RoiSpatialPyramidPooling";
constexpr char const* kPluginVersion = "1";
using plugin::dtypeCode;
using plugin::kNamespace;
void logError(std::string const& msg) noexcept { plugin::logError(kPluginName, msg); }

class RoiSppPlugin final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    RoiSppPlugin(std::vector<int32_t> levels, float spatialScale) : mLevels(std::move(levels)), mScale(spatialScale) {
        initFields();
    }
    RoiSppPlugin(RoiSppPlugin const& o)
        : IPluginV3(o), IPluginV3OneCore(o), IPluginV3OneBuild(o), IPluginV3OneRuntime(o), mLevels(o.mLevels),
          mScale(o.mScale), mInScale(o.mInScale), mOutScale(o.mOutScale) {
        initFields();
    }
    RoiSppPlugin& operator=(RoiSppPlugin const&) = delete;
    ~RoiSppPlugin() override = default;

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
            return new RoiSppPlugin(*this);
        } catch (...) {
            logError("clone failed: out of memory");
            return nullptr;
        }
    }

    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override {
        SPPQ_PLUGIN_CHECK(outputTypes && inputTypes && nbInputs == 2 && nbOutputs == 1, kPluginName,
            "getOutputDataTypes: expected 2 inputs (features, rois) and 1 output");
        SPPQ_PLUGIN_CHECK(dtypeCode(inputTypes[0]) >= 0, kPluginName, "getOutputDataTypes: features must be FP32, FP16 or INT8");
        SPPQ_PLUGIN_CHECK(inputTypes[1] == DataType::kFLOAT, kPluginName, "getOutputDataTypes: rois must be FP32");
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
        int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override {
        SPPQ_PLUGIN_CHECK(inputs && outputs && nbInputs == 2 && nbOutputs == 1, kPluginName,
            "getOutputShapes: expected 2 inputs (features, rois) and 1 output");
        SPPQ_PLUGIN_CHECK(inputs[0].nbDims == 4, kPluginName,
            "getOutputShapes: features must be 4-D NCHW, got rank " + std::to_string(inputs[0].nbDims));
        SPPQ_PLUGIN_CHECK(inputs[1].nbDims == 2, kPluginName,
            "getOutputShapes: rois must be 2-D (R, 5), got rank " + std::to_string(inputs[1].nbDims));
        IDimensionExpr const* bins = exprBuilder.constant(binsPerChannel());
        IDimensionExpr const* width = bins ? exprBuilder.operation(DimensionOperation::kPROD, *inputs[0].d[1], *bins) : nullptr;
        SPPQ_PLUGIN_CHECK(width != nullptr, kPluginName, "getOutputShapes: could not build the output width expression");
        outputs[0].nbDims = 2;
        outputs[0].d[0] = inputs[1].d[0];  // R: dynamic, from the rois tensor
        outputs[0].d[1] = width;
        return 0;
    }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override {
        if (inOut == nullptr || nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos > 2) return false;
        PluginTensorDesc const& d = inOut[pos].desc;
        if (d.format != TensorFormat::kLINEAR) return false;
        if (pos == 0) return dtypeCode(d.type) >= 0;
        if (pos == 1) return d.type == DataType::kFLOAT;
        return d.type == inOut[0].desc.type;
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override {
        SPPQ_PLUGIN_CHECK(in && out && nbInputs == 2 && nbOutputs == 1, kPluginName,
            "configurePlugin: expected 2 inputs (features, rois) and 1 output");
        SPPQ_PLUGIN_CHECK(in[0].desc.dims.nbDims == 4 && in[1].desc.dims.nbDims == 2 && out[0].desc.dims.nbDims == 2,
            kPluginName, "configurePlugin: expected 4-D features, 2-D rois and a 2-D output");
        SPPQ_PLUGIN_CHECK(in[1].desc.type == DataType::kFLOAT, kPluginName, "configurePlugin: rois must be FP32");
        SPPQ_PLUGIN_CHECK(in[0].desc.type == out[0].desc.type && dtypeCode(in[0].desc.type) >= 0, kPluginName,
            "configurePlugin: features and output must both be FP32, FP16 or INT8");
        mInScale = in[0].desc.scale;
        mOutScale = out[0].desc.scale;
        return 0;
    }

    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override {
        SPPQ_PLUGIN_CHECK(in && out && nbInputs == 2 && nbOutputs == 1, kPluginName,
            "onShapeChange: expected 2 inputs (features, rois) and 1 output");
        int32_t const st = check(in, out[0], "onShapeChange");
        if (st == 0) {
            mInScale = in[0].scale;
            mOutScale = out[0].scale;
        }
        return st;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override {
        SPPQ_PLUGIN_CHECK(inputDesc && outputDesc && inputs && outputs, kPluginName, "enqueue: null descriptor or buffer list");
        int32_t const st = check(inputDesc, outputDesc[0], "enqueue");
        if (st != 0) return st;
        Dims const& d = inputDesc[0].dims;
        int const rc = sppq_roi_spp_forward(inputs[0], static_cast<float const*>(inputs[1]), outputs[0],
            dtypeCode(inputDesc[0].type), SPPQ_MAX, static_cast<int>(d.d[0]), static_cast<int>(d.d[1]),
            static_cast<int>(d.d[2]), static_cast<int>(d.d[3]), static_cast<int>(inputDesc[1].dims.d[0]), mLevels.data(),
            static_cast<int>(mLevels.size()), mScale, scaleOr(inputDesc[0].scale, mInScale),
            scaleOr(outputDesc[0].scale, mOutScale), stream);
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

private:
    // enqueue's descriptors carry the scales; fall back to those seen at configure time.
    static float scaleOr(float s, float fallback) { return s > 0.0f ? s : fallback; }

    int64_t binsPerChannel() const {
        int64_t s = 0;
        for (int32_t n : mLevels) s += static_cast<int64_t>(n) * n;
        return s;
    }

    void initFields() {
        mFields.clear();
        mFields.emplace_back("levels", mLevels.data(), PluginFieldType::kINT32, static_cast<int32_t>(mLevels.size()));
        mFields.emplace_back("spatial_scale", &mScale, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("pooling", "max", PluginFieldType::kCHAR, 4);
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
    }

    // Shapes, types and arguments of a run-time call: in[0] features, in[1] rois, out.
    int32_t check(PluginTensorDesc const* in, PluginTensorDesc const& out, char const* where) const {
        std::string const w(where);
        SPPQ_PLUGIN_CHECK(in[0].dims.nbDims == 4 && in[1].dims.nbDims == 2 && out.dims.nbDims == 2, kPluginName,
            w + ": expected 4-D features, 2-D rois and a 2-D output");
        int const dtype = dtypeCode(in[0].type);
        SPPQ_PLUGIN_CHECK(dtype >= 0 && in[0].type == out.type && in[1].type == DataType::kFLOAT, kPluginName,
            w + ": features and output must both be FP32, FP16 or INT8, rois FP32");
        for (int i = 0; i < 4; ++i)
            SPPQ_PLUGIN_CHECK(in[0].dims.d[i] > 0 && in[0].dims.d[i] <= 0x7fffffff, kPluginName,
                w + ": feature dimensions must be positive 32-bit values");
        int64_t const R = in[1].dims.d[0];
        SPPQ_PLUGIN_CHECK(R >= 0 && R <= 0x7fffffff && in[1].dims.d[1] == 5, kPluginName, w + ": rois must be (R, 5)");
        SPPQ_PLUGIN_CHECK(out.dims.d[0] == R && out.dims.d[1] == in[0].dims.d[1] * binsPerChannel(), kPluginName,
            w + ": output shape does not match (R, C*sum(n^2))");
        bool const q = dtype == SPPQ_INT8;
        int const rc = sppq_roi_spp_validate(dtype, SPPQ_MAX, static_cast<int>(in[0].dims.d[0]),
            static_cast<int>(in[0].dims.d[1]), static_cast<int>(in[0].dims.d[2]), static_cast<int>(in[0].dims.d[3]),
            static_cast<int>(R), mLevels.data(), static_cast<int>(mLevels.size()), mScale,
            q ? scaleOr(in[0].scale, mInScale) : 1.0f, q ? scaleOr(out.scale, mOutScale) : 1.0f);
        if (rc != SPPQ_OK) {
            logError(w + ": " + sppq_error_string(rc));
            return rc;
        }
        return 0;
    }

    std::vector<int32_t> mLevels;
    float mScale;
    float mInScale{-1.0f};
    float mOutScale{-1.0f};
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

// ---- creator ------------------------------------------------------------------------------
class RoiSppPluginCreator final : public IPluginCreatorV3One {
public:
    RoiSppPluginCreator() {
        mFields.emplace_back("levels", nullptr, PluginFieldType::kINT32, 0);
        mFields.emplace_back("spatial_scale", nullptr, PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("pooling", nullptr, PluginFieldType::kCHAR, 0);
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
    }

    IPluginV3* createPlugin(AsciiChar const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept override {
        try {
            std::string const who = std::string("createPlugin(") + (name ? name : "") + "): ";
            std::vector<int32_t> levels;
            float scale = 1.0f;
            bool haveLevels = false;
            for (int32_t i = 0; fc != nullptr && fc->fields != nullptr && i < fc->nbFields; ++i) {
                std::string err;
                if (!readField(fc->fields[i], levels, scale, haveLevels, &err)) {
                    logError(who + err);
                    return nullptr;
                }
            }
            std::string const err = checkArgs(haveLevels, levels, scale);
            if (!err.empty()) {
                logError(who + err);
                return nullptr;
            }
            return new RoiSppPlugin(std::move(levels), scale);
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
    static bool readField(PluginField const& f, std::vector<int32_t>& levels, float& scale, bool& haveLevels, std::string* err) {
        std::string const fname = f.name ? f.name : "";
        if (fname == "levels") {
            haveLevels = true;
            if (plugin::readInts(f, levels)) return true;
            *err = "field 'levels' must be an integer array";
            return false;
        }
        if (fname == "spatial_scale") {
            if (plugin::readFloat(f, &scale)) return true;
            *err = "field 'spatial_scale' must be one float";
            return false;
        }
        if (fname == "pooling") {
            int pooling = SPPQ_MAX;
            if (!plugin::readPooling(f, &pooling, err)) return false;
            if (pooling == SPPQ_MAX) return true;
            *err = "field 'pooling': only \"max\" is implemented for RoI SPP";
            return false;
        }
        plugin::log(ILogger::Severity::kVERBOSE, kPluginName, "ignoring field '" + fname + "'");
        return true;
    }

    static std::string checkArgs(bool haveLevels, std::vector<int32_t> const& levels, float scale) {
        if (!haveLevels) return "missing field 'levels'";
        if (sppq_roi_spp_output_width(1, levels.data(), static_cast<int>(levels.size())) < 0)
            return "invalid 'levels': 1..16 levels, each 1..64, sum at most 128";
        if (!(std::isfinite(scale) && scale > 0.0f)) return "invalid 'spatial_scale': must be finite and positive";
        return "";
    }

    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

}  // namespace

IPluginCreatorV3One& roiSppPluginCreator() {
    static RoiSppPluginCreator c;
    return c;
}

}  // namespace sppquant
