"""Quantized and reduced-precision model forms: Q/DQ (explicit INT8) export and FP16 conversion."""
