// The RoiSpatialPyramidPooling plugin's creator (one instance per library).
#ifndef SPPQUANT_ROI_SPP_PLUGIN_H
#define SPPQUANT_ROI_SPP_PLUGIN_H

#include <NvInferRuntime.h>

namespace sppquant {
nvinfer1::IPluginCreatorV3One& roiSppPluginCreator();
}

#endif  // SPPQUANT_ROI_SPP_PLUGIN_H
