from __future__ import annotations

from pathlib import Path

import pytest

from sppquant.config import config_from_dict, load_config
from sppquant.errors import ConfigError

BASE = {"model": {"path": "m.onnx"}, "input": {"sizes": [[32, 32], [48, 48]]}}


def with_(section: str, **kv):
    data = {k: dict(v) for k, v in BASE.items()}
    data.setdefault(section, {}).update(kv)
    return data


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    cfg_file = tmp_path / "sub" / "c.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text("model: {path: ../m.onnx}\ninput: {sizes: [[8, 8]]}\ncalibration: {images: imgs}\n")
    cfg = load_config(cfg_file)
    assert cfg.model.path.resolve() == (tmp_path / "m.onnx").resolve()
    assert cfg.calibration.images == cfg_file.parent.resolve() / "imgs"
    assert cfg.calibration.output.parent == cfg_file.parent.resolve()  # defaults resolve too
    assert cfg.input.sizes == ((8, 8),)


@pytest.mark.parametrize("data, message", [
    (with_("calibraton"), "calibraton: unknown key; did you mean 'calibration'?"),
    (with_("calibration", batchsize=4), "calibration.batchsize: unknown key; did you mean 'batch_size'?"),
    (with_("calibration", batch_size="8"), "calibration.batch_size: expected an integer, got '8'"),
    (with_("calibration", batch_size=0), "calibration.batch_size: expected a positive integer"),
    (with_("calibration", algorithm="kl"), "calibration.algorithm: expected one of entropy2, minmax, percentile"),
    (with_("preprocess", mean=[0.5, 0.5]), "preprocess.mean: expected 3 values (model.channels), got 2"),
    (with_("preprocess", std=[1, 0, 1]), "preprocess.std: expected positive values"),
    (with_("preprocess", color="gray"), "preprocess.color: 'gray' gives 1 channel(s) but model.channels is 3"),
    (with_("input", sizes=[[32, 0]]), "input.sizes[0]: expected positive [H, W], got [32, 0]"),
    (with_("input", sizes=[[32]]), "input.sizes[0]: expected a list of 2 values"),
    (with_("input", dynamic={"min": [40, 40], "max": [64, 64]}), "input.sizes[0]: [32, 32] is outside input.dynamic"),
    ({"input": {"sizes": [[1, 1]]}}, "model: required key is missing"),
    (with_("backend"), "backend: expected one of auto, onnxruntime, tensorrt"),
    (with_("calibration", trt_version="ten"), "calibration.trt_version: expected a TensorRT version"),
])
def test_errors_name_key_and_expectation(data, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "c.yaml")
    text = str(info.value)
    assert text.startswith("c.yaml: ") and message in text and "\n" not in text


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  path: m.onnx\ninput: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: YAML syntax error at line \d+"):
        load_config(p)


def test_missing_and_empty_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="config is empty"):
        load_config(tmp_path / "empty.yaml")


def test_fingerprint_depends_only_on_preprocess() -> None:
    a = config_from_dict(with_("calibration", batch_size=4))
    b = config_from_dict(with_("calibration", batch_size=8))
    c = config_from_dict(with_("preprocess", pad_value=0.5))
    assert a.preprocess_fingerprint() == b.preprocess_fingerprint() != c.preprocess_fingerprint()
