// Helpers shared by the TensorRT plugins: logging through TensorRT's logger, dtype codes,
// plugin-field readers and the check macro every plugin method uses.
#ifndef SPPQUANT_PLUGIN_UTILS_H
#define SPPQUANT_PLUGIN_UTILS_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sppquant {
namespace plugin {

constexpr char const* kNamespace = "sppquant";

// The logger finder given by setLoggerFinder (loadLibrary / trtexec route); may be null.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

// A libnvinfer already loaded in this process (dlopen RTLD_NOLOAD), or null: never loads TensorRT.
void* nvinferHandle();

// "[sppquant <plugin>] msg" to TensorRT's logger; errors go to stderr when there is none.
void log(nvinfer1::ILogger::Severity sev, char const* plugin, std::string const& msg) noexcept;
inline void logError(char const* plugin, std::string const& msg) noexcept {
    log(nvinfer1::ILogger::Severity::kERROR, plugin, msg);
}

// SPPQ_FLOAT32 / SPPQ_FLOAT16 / SPPQ_INT8 for kFLOAT / kHALF / kINT8, else -1.
int dtypeCode(nvinfer1::DataType t);

// INT32 / INT64 / INT16 / INT8 field as int32 values; false for another type or out of range.
bool readInts(nvinfer1::PluginField const& f, std::vector<int32_t>& out);
// One FLOAT32 / FLOAT64 / FLOAT16 value; false otherwise.
bool readFloat(nvinfer1::PluginField const& f, float* out);
// "max" / "avg" (CHAR) or 0 / 1 (integer) into *pooling; false with a message otherwise.
bool readPooling(nvinfer1::PluginField const& f, int* pooling, std::string* err);

// Field of a serialization / creator field list (name, data, type, length).
nvinfer1::PluginField field(char const* name, void const* data, nvinfer1::PluginFieldType type, int32_t length);

}  // namespace plugin
}  // namespace sppquant

// Inside a plugin method returning int32_t: log `msg` (a std::string expression) and return 1.
#define SPPQ_PLUGIN_CHECK(cond, who, msg)                  \
    do {                                                   \
        if (!(cond)) {                                     \
            ::sppquant::plugin::logError((who), (msg));    \
            return 1;                                      \
        }                                                  \
    } while (0)

#endif  // SPPQUANT_PLUGIN_UTILS_H
