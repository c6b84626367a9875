#include "plugin_utils.h"

#include "sppq_common.h"

#include <cuda_fp16.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <cstring>

using namespace nvinfer1;

namespace sppquant {
namespace plugin {
namespace {
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

ILogger* findLogger() {
    if (ILoggerFinder* f = gLoggerFinder.load()) {
        if (ILogger* l = f->findLogger()) return l;
    }
    if (void* h = nvinferHandle()) {
        using GetLogger = ILogger* (*)();
        if (auto fn = reinterpret_cast<GetLogger>(dlsym(h, "getLogger"))) return fn();
    }
    return nullptr;
}
}  // namespace

void setLoggerFinder(ILoggerFinder* finder) { gLoggerFinder.store(finder); }

void* nvinferHandle() {
    static char const* const names[] = {"libnvinfer.so.10", "libnvinfer.so"};
    for (char const* n : names) {
        if (void* h = dlopen(n, RTLD_LAZY | RTLD_NOLOAD)) return h;
    }
    return nullptr;
}

void log(ILogger::Severity sev, char const* plugin, std::string const& msg) noexcept {
    try {
        std::string const line = std::string("[sppquant ") + plugin + "] " + msg;
        if (ILogger* l = findLogger()) {
            l->log(sev, line.c_str());
        } else if (sev <= ILogger::Severity::kERROR) {
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    } catch (...) {
    }
}

int dtypeCode(DataType t) {
    switch (t) {
    case DataType::kFLOAT: return SPPQ_FLOAT32;
    case DataType::kHALF: return SPPQ_FLOAT16;
    case DataType::kINT8: return SPPQ_INT8;
    default: return -1;
    }
}

bool readInts(PluginField const& f, std::vector<int32_t>& out) {
    if (f.data == nullptr || f.length < 0) return false;
    out.clear();
    for (int32_t i = 0; i < f.length; ++i) {
        int64_t v;
        switch (f.type) {
        case PluginFieldType::kINT32: v = static_cast<int32_t const*>(f.data)[i]; break;
        case PluginFieldType::kINT64: v = static_cast<int64_t const*>(f.data)[i]; break;
        case PluginFieldType::kINT16: v = static_cast<int16_t const*>(f.data)[i]; break;
        case PluginFieldType::kINT8: v = static_cast<int8_t const*>(f.data)[i]; break;
        default: return false;
        }
        if (v < -0x7fffffffLL || v > 0x7fffffffLL) return false;
        out.push_back(static_cast<int32_t>(v));
    }
    return true;
}

bool readFloat(PluginField const& f, float* out) {
    if (f.data == nullptr || f.length != 1) return false;
    switch (f.type) {
    case PluginFieldType::kFLOAT32: *out = *static_cast<float const*>(f.data); return true;
    case PluginFieldType::kFLOAT64: *out = static_cast<float>(*static_cast<double const*>(f.data)); return true;
    case PluginFieldType::kFLOAT16: *out = __half2float(*static_cast<__half const*>(f.data)); return true;
    default: return false;
    }
}

bool readPooling(PluginField const& f, int* pooling, std::string* err) {
    if (f.type == PluginFieldType::kCHAR && f.data != nullptr) {
        std::string s(static_cast<char const*>(f.data), static_cast<size_t>(f.length > 0 ? f.length : 0));
        s = s.substr(0, s.find('\0'));
        if (s == "max") { *pooling = SPPQ_MAX; return true; }
        if (s == "avg" || s == "average") { *pooling = SPPQ_AVG; return true; }
        *err = "field 'pooling' must be \"max\" or \"avg\", got \"" + s + "\"";
        return false;
    }
    std::vector<int32_t> v;
    if (!readInts(f, v) || v.size() != 1 || (v[0] != SPPQ_MAX && v[0] != SPPQ_AVG)) {
        *err = "field 'pooling' must be \"max\"/\"avg\" or an integer 0/1";
        return false;
    }
    *pooling = v[0];
    return true;
}

PluginField field(char const* name, void const* data, PluginFieldType type, int32_t length) {
    return PluginField(name, data, type, length);
}

}  // namespace plugin
}  // namespace sppquant
