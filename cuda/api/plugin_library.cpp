// libsppquant_plugins.so entry points: every plugin creator of the library, for both loading
// routes, and the C registration helpers the Python loader calls.
//   - IPluginRegistry::loadLibrary / trtexec --dynamicPlugins: getCreators() + setLoggerFinder();
//   - ctypes.CDLL(..., RTLD_GLOBAL) after TensorRT is loaded: a load-time constructor registers
//     the creators with getPluginRegistry() of the libnvinfer already in the process (found with
//     dlopen(RTLD_NOLOAD): no link dependency on libnvinfer, so the library also loads for
//     kernel-only use without TensorRT). sppq_register_plugins() retries explicitly.
//   When loadLibrary calls getCreators() after the constructor registered, the global
//   registrations are withdrawn first so no creator is ever registered twice.
// Set SPPQUANT_NO_STATIC_REGISTRATION=1 to skip the load-time registration.

#include "plugin_utils.h"
#include "roi_spp_plugin.h"
#include "spp_plugin.h"

#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#define SPPQ_EXPORT __attribute__((visibility("default")))

using namespace nvinfer1;

namespace sppquant {
namespace {

constexpr int kNbCreators = 2;

IPluginCreatorInterface* const* creators() {
    static IPluginCreatorInterface* const list[kNbCreators] = {&sppPluginCreator(), &roiSppPluginCreator()};
    return list;
}

std::mutex gRegMutex;
IPluginRegistry* gRegisteredWith = nullptr;

IPluginRegistry* globalRegistry() {
    void* h = plugin::nvinferHandle();
    if (h == nullptr) return nullptr;
    using GetRegistry = IPluginRegistry* (*)();
    auto fn = reinterpret_cast<GetRegistry>(dlsym(h, "getPluginRegistry"));
    return fn ? fn() : nullptr;
}

// All creators or none: a refusal withdraws the ones registered before it.
int registerGlobal() {
    std::lock_guard<std::mutex> lock(gRegMutex);
    if (gRegisteredWith != nullptr) return 1;
    IPluginRegistry* reg = globalRegistry();
    if (reg == nullptr) return 0;
    for (int i = 0; i < kNbCreators; ++i) {
        if (!reg->registerCreator(*creators()[i], plugin::kNamespace)) {
            plugin::logError("library", "TensorRT's plugin registry refused a creator; none registered");
            for (int j = 0; j < i; ++j) reg->deregisterCreator(*creators()[j]);
            return 0;
        }
    }
    gRegisteredWith = reg;
    return 1;
}

void deregisterGlobal() {
    std::lock_guard<std::mutex> lock(gRegMutex);
    if (gRegisteredWith == nullptr) return;
    for (int i = 0; i < kNbCreators; ++i) gRegisteredWith->deregisterCreator(*creators()[i]);
    gRegisteredWith = nullptr;
}

struct LoadTimeRegistration {
    LoadTimeRegistration() {
        char const* off = std::getenv("SPPQUANT_NO_STATIC_REGISTRATION");
        if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return;
        registerGlobal();
    }
};
LoadTimeRegistration gLoadTimeRegistration;

}  // namespace
}  // namespace sppquant

extern "C" {

SPPQ_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { sppquant::plugin::setLoggerFinder(finder); }

SPPQ_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    sppquant::deregisterGlobal();  // loadLibrary registers what we return
    nbCreators = sppquant::kNbCreators;
    return sppquant::creators();
}

// Registers every creator with the global registry of the libnvinfer already loaded in this
// process. Returns 1 when registered (now or before), 0 when TensorRT is not loaded or refused.
SPPQ_EXPORT int sppq_register_plugins(void) { return sppquant::registerGlobal(); }

// 1 when the creators are registered with the global registry.
SPPQ_EXPORT int sppq_plugins_registered(void) {
    std::lock_guard<std::mutex> lock(sppquant::gRegMutex);
    return sppquant::gRegisteredWith != nullptr ? 1 : 0;
}

}  // extern "C"
