"""The TensorRT calibrators against TensorRT's real Python bindings (native libraries stubbed).

Host memory stands in for pycuda (the GPU check does the same with real device memory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from sppquant.backends.tensorrt.calibrator import make_calibrator
from sppquant.backends.tensorrt.memory import HostMemory
from sppquant.calibration.provenance import provenance_path
from sppquant.calibration.table import from_bytes, read_table, trt_version_code
from sppquant.config import Config, load_config
from sppquant.data import calibration_set
from sppquant.errors import DataError, TableError
from sppquant.pipeline import trt_settings as S
from sppquant.pipeline.calibrate import calibrate
from sppquant.pipeline.tables import check_table
from sppquant.pipeline.trt_cache import TableCache
from sppquant.pipeline.trt_feed import BatchFeeder
from sppquant.preprocess import load_image, preprocess_image
from tests.conftest import with_algorithm, write_tiny_spp_model
from tests.trt_stubs.fixtures import trt, trt_bindings

FIXTURES = (trt, trt_bindings)  # pytest fixtures, used by name

TRT_VERSION = "10.16.1"


def parts(cfg: Config, trt: ModuleType, algorithm: str = "entropy2", reuse: bool = True, path: Path | None = None):
    base, header = S.calibrator_base(algorithm)
    mem = HostMemory()
    feeder = BatchFeeder(cfg, S.calibration_shape(cfg), mem, progress=False)
    cache = TableCache(cfg, path or cfg.calibration.output, algorithm, header, TRT_VERSION, reuse=reuse)
    return make_calibrator(trt, base, feeder, cache), feeder, cache, mem


def ort_table(cfg: Config, monkeypatch: pytest.MonkeyPatch, algorithm: str = "entropy2") -> Path:
    """A table from `sppquant calibrate` (ONNX Runtime) with an OLD header version, 10.8.0."""
    monkeypatch.setattr("sppquant.pipeline.calibrate.tensorrt_version", lambda: None)
    cfg = dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, trt_version="10.8.0"))
    return calibrate(cfg, algorithm=algorithm, backend="onnxruntime", progress=False).table_path


@pytest.mark.parametrize("algorithm, base, algo_type", [
    ("entropy2", "IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2"),
    ("percentile", "IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2"),
    ("minmax", "IInt8MinMaxCalibrator", "MINMAX_CALIBRATION"),
])
def test_subclasses_the_real_base_classes(tiny_project: Path, trt: ModuleType, algorithm: str, base: str,
                                          algo_type: str) -> None:
    cfg = load_config(tiny_project)
    cal, *_ = parts(cfg, trt, algorithm)
    assert isinstance(cal, getattr(trt, base)) and isinstance(cal, trt.IInt8Calibrator)
    assert type(cal).__module__ == "sppquant.backends.tensorrt.calibrator"
    assert cal.get_algorithm() == getattr(trt.CalibrationAlgoType, algo_type)  # the real base method
    assert cal.get_batch_size() == cfg.calibration.batch_size == 3
    cal.close()


def test_batches_are_the_pipeline_output_in_fixed_buffers(tiny_project: Path, trt: ModuleType,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    cfg = with_algorithm(load_config(tiny_project), "entropy2")  # 8 images, batch 3, sizes [[16, 16], [24, 20]]
    cal, feeder, cache, mem = parts(cfg, trt)
    images = calibration_set(cfg.calibration)
    expected = [preprocess_image(load_image(p), cfg.preprocess, (16, 16)).tensor for p in images.paths]
    ptrs = []
    with caplog.at_level(logging.INFO):
        while (got := cal.get_batch(["image"])) is not None:
            ptrs.append(got[0])
            host = np.empty((3, 3, 16, 16), np.float32)
            mem.download(got[0], host)
            i = len(ptrs) - 1
            assert host.tobytes() == np.stack(expected[3 * i:3 * i + 3]).tobytes()
    assert len(ptrs) == 2 and len(set(ptrs)) == 1  # one buffer, reused
    assert mem.allocations == 1 and feeder.batches == 2 and feeder.images_used == 6
    assert "dropped the last partial batch of 2" in caplog.text  # fixed batch: partial batch dropped, logged
    assert cal.get_batch(["image"]) is None and mem.allocations == 1  # end of data stays the end
    assert not cal.errors
    cal.close()
    assert mem.live == 0 and mem.frees == 1
    cal.close()  # idempotent


def test_callback_exception_is_kept_and_reraised_with_its_traceback(tiny_project: Path, trt: ModuleType) -> None:
    cal, *_ = parts(with_algorithm(load_config(tiny_project), "entropy2"), trt)
    assert cal.get_batch(["image", "mask"]) is None  # TensorRT sees "no more data", not an exception
    assert cal.get_batch(["image"]) is None  # stops feeding after a failure
    with pytest.raises(KeyError, match="mask") as info:
        cal.raise_pending()
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "next_batch" in frames  # the original frame where it was raised
    cal.raise_pending()  # raised once only
    cal.close()


def test_valid_table_is_served_with_the_running_version_and_no_batches(
        tiny_project: Path, trt: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = with_algorithm(load_config(tiny_project), "entropy2")
    path = ort_table(cfg, monkeypatch)
    assert read_table(path).version == 100800
    cal, feeder, cache, mem = parts(cfg, trt)
    data = cal.read_calibration_cache()
    served = from_bytes(data)
    assert served.version == trt_version_code(TRT_VERSION) == 101601
    assert served.algorithm == "EntropyCalibration2" and served.scales == read_table(path).scales
    cal.write_calibration_cache(data)  # TensorRT echoing the cache must not rewrite the user's table
    assert read_table(path).version == 100800
    assert feeder.calls == 0 and mem.allocations == 0 and cache.reads == 1 and cache.writes == 0
    cal.close()


def test_percentile_table_is_served_through_the_entropy_calibrator(
        tiny_project: Path, trt: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = with_algorithm(load_config(tiny_project), "entropy2")
    ort_table(cfg, monkeypatch, "percentile")
    cal, *_ = parts(cfg, trt, "percentile")
    assert isinstance(cal, trt.IInt8EntropyCalibrator2)
    assert from_bytes(cal.read_calibration_cache()).algorithm == "EntropyCalibration2"


def test_stale_or_missing_table_is_not_served_and_the_reason_is_logged(
        tiny_project: Path, trt: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cfg = with_algorithm(load_config(tiny_project), "entropy2")
    cal, *_ = parts(cfg, trt)
    with caplog.at_level(logging.INFO):
        assert cal.read_calibration_cache() is None
    assert "no calibration table" in caplog.text
    ort_table(cfg, monkeypatch)
    write_tiny_spp_model(cfg.model.path, seed=1)  # the model changed after calibration
    cal, *_ = parts(cfg, trt)
    caplog.clear()
    assert cal.read_calibration_cache() is None
    assert "not reusing calibration table" in caplog.text and "model changed" in caplog.text
    cal, *_ = parts(cfg, trt, "minmax")  # table computed with another algorithm
    caplog.clear()
    assert cal.read_calibration_cache() is None and "algorithm changed" in caplog.text


def test_write_stores_table_and_provenance_atomically(tiny_project: Path, trt: ModuleType) -> None:
    cfg = with_algorithm(load_config(tiny_project), "entropy2")
    cal, feeder, cache, _ = parts(cfg, trt, reuse=False)
    while cal.get_batch(["image"]) is not None:
        pass
    data = b"TRT-101601-EntropyCalibration2\nimage: 3c010204\nconv1: 3d2aaaab\n(Unnamed Layer* 3) [Shuffle]_output: 3d2aaaab\n"
    cal.write_calibration_cache(memoryview(data))  # TensorRT hands over a buffer
    cal.raise_pending()
    path = cfg.calibration.output
    assert path.read_bytes() == data
    record = json.loads(provenance_path(path).read_text())
    assert record["backend"] == "tensorrt" and record["images"]["used"] == 6 and record["images"]["count"] == 8
    assert record["calibration_shape"] == [3, 3, 16, 16] and record["last_batch"] == "drop"
    assert check_table(path, cfg).valid
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.cache", "tiny.cache.json"]  # no temp files
    # A broken cache from TensorRT: nothing is written, the error surfaces after the build.
    cal2, *_ = parts(cfg, trt, reuse=False)
    cal2.write_calibration_cache(b"not a table")
    with pytest.raises(TableError):
        cal2.raise_pending()
    assert path.read_bytes() == data
    cal.close()
    cal2.close()


def test_context_manager_frees_device_memory(tiny_project: Path, trt: ModuleType) -> None:
    cal, _, _, mem = parts(with_algorithm(load_config(tiny_project), "entropy2"), trt)
    with cal:
        assert cal.get_batch(["image"]) is not None and mem.live == 1
    assert mem.live == 0


def test_no_table_is_written_when_calibration_stopped_on_an_error(tiny_project: Path, trt: ModuleType,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """get_batch answers None after a failure; TensorRT takes that for the end of the data and still
    hands over a cache computed from the batches before it: it must not become a 'valid' table."""
    cfg = with_algorithm(load_config(tiny_project), "entropy2")
    cal, feeder, cache, _ = parts(cfg, trt, reuse=False)
    assert cal.get_batch(["image"]) is not None  # one good batch

    def broken():
        raise DataError("img5.png: cannot decode")
        yield  # pragma: no cover

    feeder._it = broken()
    assert cal.get_batch(["image"]) is None
    data = b"TRT-101601-EntropyCalibration2\nimage: 3c010204\nconv1: 3d2aaaab\n"
    with caplog.at_level(logging.ERROR):
        cal.write_calibration_cache(memoryview(data))
    path = cfg.calibration.output
    assert not path.exists() and not provenance_path(path).exists() and cache.writes == 0
    assert "not writing the calibration table" in caplog.text
    with pytest.raises(DataError, match="cannot decode"):
        cal.raise_pending()
    cal.close()
