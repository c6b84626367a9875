"""Quantized and reduced-precision model forms: Q/DQ (explicit INT8) export and FP16 conversion."""

from sppquant.quantize import _ort_bridge

_ort_bridge.install()  # TEMPORARY: see sppquant/quantize/_ort_bridge.py (remove at merge)
