"""RoI Spatial Pyramid Pooling (SPP-net detection): ONNX helpers and the ONNX Runtime rewrite."""
