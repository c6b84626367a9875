// A stand-in libnvinfer.so.10 for tests: only getPluginRegistry() / getLogger(), backed by a
// registry that records (de)registrations. Lets the load-time registration of
// libsppquant_plugins.so be checked on machines without TensorRT.
#include <NvInferRuntime.h>

#include <cstring>
#include <vector>

using namespace nvinfer1;

namespace {
class FakeRegistry : public IPluginRegistry {
public:
    std::vector<IPluginCreatorInterface*> creators;
    std::vector<const char*> namespaces;
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override { *n = 0; return nullptr; }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override { return nullptr; }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& c, AsciiChar const* const ns) noexcept override {
        for (auto* x : creators) if (x == &c) return false;
        creators.push_back(&c);
        namespaces.push_back(ns);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override {
        *n = static_cast<int32_t>(creators.size());
        return creators.data();
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreatorInterface const& c) noexcept override {
        for (size_t i = 0; i < creators.size(); ++i)
            if (creators[i] == &c) { creators.erase(creators.begin() + i); namespaces.erase(namespaces.begin() + i); return true; }
        return false;
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return 0; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override { return getAllCreators(n); }
    ~FakeRegistry() override = default;
};
FakeRegistry gRegistry;
}  // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept { return &gRegistry; }
extern "C" __attribute__((visibility("default"))) ILogger* getLogger() noexcept { return nullptr; }

// Test hooks: number of registered creators; name and namespace of the i-th.
extern "C" __attribute__((visibility("default"))) int fake_registered_count() { return static_cast<int>(gRegistry.creators.size()); }
extern "C" __attribute__((visibility("default"))) const char* fake_registered_name(int i) {
    auto* c = static_cast<IPluginCreatorV3One*>(gRegistry.creators.at(i));
    return c->getPluginName();
}
extern "C" __attribute__((visibility("default"))) const char* fake_registered_namespace(int i) { return gRegistry.namespaces.at(i); }
