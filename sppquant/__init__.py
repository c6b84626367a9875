"""sppquant: INT8 calibration for CNNs with Spatial Pyramid Pooling, for TensorRT."""

__version__ = "0.1.0"
