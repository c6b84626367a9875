"""The single adapter between the benchmark and sppquant (only public pieces; see README.md).

sppquant is being restructured: at merge time only this file should need changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx

from sppquant.backends.onnxruntime import OrtRunner, activation_names
from sppquant.calibration import CalibrationTable, Histogram
from sppquant.calibration.collect import ActivationCollector
from sppquant.calibration.thresholds import ZERO_TENSOR_AMAX, thresholds
from sppquant.calibration.tying import apply_ties, tie_sources
from sppquant.config import CalibrationConfig
from sppquant.model import weighted_layer_inputs
from sppquant.quantize.qdq import build_qdq_model
from sppquant.quantize.weight_rounding import RoundedWeight, RoundingPass

log = logging.getLogger(__name__)

TRT_VERSION = 101601
GPTQ_IMAGES = CalibrationConfig.weight_rounding_images  # the product's default: the first 32 calibration images
QUANTIZE_INPUT_LAYER = CalibrationConfig.input_layer == "int8"  # the product's default: False (first layers float)
HEADERS = {"entropy2": "EntropyCalibration2", "minmax": "MinMaxCalibration"}


MIN_OPSET = 13


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Benchmark-side workaround: sppquant's ONNX Runtime path refuses opset < 13 even without an
    SPP node (FIRST_CONTACT.md), so older models are converted with onnx's version converter."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter
    log.info("converting opset %d -> %d for sppquant", opset, MIN_OPSET)
    return version_converter.convert_version(model, MIN_OPSET)


def collect(model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]],
            threads: int = 2) -> tuple[dict[str, Histogram], dict[str, np.ndarray]]:
    """One streaming |x| histogram per float activation of the original graph, and the per-channel means
    of every Conv/Gemm input (bias correction), as `sppquant calibrate` collects them."""
    names = activation_names(model)
    runner = OrtRunner(model, extra_outputs=names, threads=threads)
    collector = ActivationCollector(names, mean_axes=weighted_layer_inputs(model))
    for feeds in batches:
        values = runner.run(feeds, [n for n in names if n not in feeds])
        collector.observe_all({n: feeds[n] if n in feeds else values[n] for n in names})
    return collector.histograms, collector.channel_means.means()


def collect_histograms(model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]],
                       threads: int = 2) -> dict[str, Histogram]:
    return collect(model, batches, threads)[0]


def amax_table(model: onnx.ModelProto, hists: dict[str, Histogram], algorithm: str,
               **params: float) -> dict[str, float]:
    """amax per tensor with sppquant's rule (all-zero tensors, e.g. an RNN's initial state, as `calibrate` treats
    them), then its scale ties (pool/reshape outputs)."""
    amax, _degenerate = thresholds(hists, algorithm, params)
    apply_ties(amax, tie_sources(model))
    return amax


def gptq(model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]], seed: int = 0,
         threads: int = 2) -> dict[str, RoundedWeight]:
    """GPTQ-rounded INT8 weights from these FP32 batches, as `calibration.weight_rounding: gptq` does (the
    product default; the product feeds the first 32 calibration images)."""
    rounding = RoundingPass(model, seed)
    run = OrtRunner(model, extra_outputs=rounding.inputs, threads=threads)
    for feeds in batches:
        rounding.observe({**feeds, **run.run(feeds, [t for t in rounding.inputs if t not in feeds])})
    return rounding.result()


def qdq_model(model: onnx.ModelProto, amax: dict[str, float], algorithm: str,
              keep: Iterable[str] = (), means: dict[str, np.ndarray] | None = None,
              rounded: dict[str, RoundedWeight] | None = None,
              input_layer: str = CalibrationConfig.input_layer) -> onnx.ModelProto:
    """sppquant's Q/DQ model; ``means``: bias correction from these per-channel input means, ``rounded``: GPTQ
    weights (both the product default; None: without); ``input_layer``: as `calibration.input_layer` (default:
    the product's, the first layers' input left float)."""
    table = CalibrationTable.from_amax(TRT_VERSION, HEADERS.get(algorithm, "EntropyCalibration2"), amax)
    # FP32 between the Q/DQ pairs, as ORT quantize_static leaves it: the benchmark judges INT8 thresholds. (The
    # export's TensorRT 11 default, FP16 there, alone takes the recognizer to 5.9 dB: RESULTS.md, issue 10 part 2.)
    qdq, _info = build_qdq_model(model, table, high_precision="fp32", keep_high_precision=keep, channel_means=means,
                                 rounded_weights=rounded, quantize_input_layer=input_layer == "int8")
    return qdq


def runner(model: onnx.ModelProto, extra_outputs: list[str] | None = None, threads: int = 2) -> OrtRunner:
    return OrtRunner(model, extra_outputs=extra_outputs or [], threads=threads)


def activations(model: onnx.ModelProto) -> list[str]:
    return activation_names(model)


def histogram_arrays(h: Histogram) -> tuple[np.ndarray, float, float]:
    """(counts, bin_width, max_abs) of one histogram."""
    return h.counts, h.bin_width, h.max_abs


def tie(model: onnx.ModelProto, amax: dict[str, float]) -> dict[str, float]:
    """Apply sppquant's scale ties to an amax dict computed outside sppquant (no range: `calibrate`'s amax)."""
    for n, v in amax.items():
        if not (np.isfinite(v) and v > 0):
            amax[n] = ZERO_TENSOR_AMAX
    apply_ties(amax, tie_sources(model))
    return amax
