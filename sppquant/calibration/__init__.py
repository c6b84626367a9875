"""Calibration: streaming |x| histograms, threshold algorithms, TensorRT calibration tables."""

from sppquant.calibration.algorithms import (
    ALGORITHMS,
    Algorithm,
    compute_amax,
    entropy_amax,
    entropy_kl_curve,
    minmax_amax,
    percentile_amax,
)
from sppquant.calibration.histogram import NUM_BINS, Histogram
from sppquant.calibration.table import (
    CalibrationTable,
    format_table,
    from_bytes,
    parse_table,
    read_table,
    scale_from_amax,
    table_bytes,
    trt_version_code,
    write_table,
)

__all__ = [
    "ALGORITHMS",
    "NUM_BINS",
    "Algorithm",
    "CalibrationTable",
    "Histogram",
    "compute_amax",
    "entropy_amax",
    "entropy_kl_curve",
    "format_table",
    "from_bytes",
    "minmax_amax",
    "parse_table",
    "percentile_amax",
    "read_table",
    "scale_from_amax",
    "table_bytes",
    "trt_version_code",
    "write_table",
]
