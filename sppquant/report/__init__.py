"""Precision reports: FP32 vs FP16 vs INT8 metrics, per-layer error, Markdown/JSON/PNG output."""
