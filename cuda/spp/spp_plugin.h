// The SpatialPyramidPooling plugin's creator (one instance per library).
#ifndef SPPQUANT_SPP_PLUGIN_H
#define SPPQUANT_SPP_PLUGIN_H

#include <NvInferRuntime.h>

namespace sppquant {
nvinfer1::IPluginCreatorV3One& sppPluginCreator();
}

#endif  // SPPQUANT_SPP_PLUGIN_H
