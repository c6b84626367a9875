"""One place per closed set: a toy algorithm registered once flows through config, CLI, calibrate,
provenance, staleness, TensorRT routing and the report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from sppquant.calibration.algorithms import ALGORITHMS, Algorithm, Param, minmax_amax
from sppquant.calibration.histogram import Histogram
from sppquant.cli import build_parser, main
from sppquant.config import config_from_dict, load_config
from sppquant.errors import BackendUnavailable, ConfigError
from sppquant.ops import OPS, find_op
from sppquant.ops.spp.onnx import make_spp_node
from sppquant.pipeline.calibrate import calibrate, choose_backend
from sppquant.pipeline.report import build_report
from sppquant.pipeline.tables import check_table


def _half_max(hist: Histogram, fraction: float = 0.5) -> float:
    return fraction * minmax_amax(hist)


@pytest.fixture
def toy() -> Iterator[Algorithm]:
    algo = Algorithm("toy", _half_max, "EntropyCalibration2", None,
                     (Param("toy_fraction", float, 0.5, lambda v: None if 0 < v <= 1 else "a number in (0, 1]"),),
                     help="a fraction of max|x|")
    # the rule takes its parameter by the parameter's name
    algo = Algorithm(algo.name, lambda h, toy_fraction=0.5: _half_max(h, toy_fraction), algo.trt_header,
                     algo.trt_calibrator, algo.params, algo.help)
    ALGORITHMS.register("toy", algo)
    yield algo
    ALGORITHMS.unregister("toy")


def _project(tiny_project: Path, **calibration: object) -> Path:
    data = yaml.safe_load(tiny_project.read_text())
    data["calibration"].update(calibration)
    data["report"] = {"images": data["calibration"]["images"], "labels": "none", "batch_size": 4,
                      "output_dir": "report"}
    tiny_project.write_text(yaml.safe_dump(data))
    return tiny_project


def test_toy_algorithm_flows_everywhere(tiny_project: Path, toy: Algorithm) -> None:
    cfg_path = _project(tiny_project, algorithm="toy", toy_fraction=0.25)
    cfg = load_config(cfg_path)  # config: the name and the parameter key come from the registry
    assert cfg.calibration.algorithm_params() == {"toy_fraction": 0.25}
    assert build_parser().parse_args(["calibrate", "--config", "c.yaml", "--algorithm", "toy"]).algorithm == "toy"
    result = calibrate(cfg, progress=False)
    prov = result.provenance
    assert prov.algorithm == {"name": "toy", "params": {"toy_fraction": 0.25}, "trt_header": "EntropyCalibration2"}
    assert result.table.amax("image") == pytest.approx(0.25 * prov.tensors["image"]["histogram"]["max_abs"], rel=1e-6)
    assert check_table(result.table_path, cfg).valid
    changed = load_config(_project(cfg_path, toy_fraction=0.5))
    assert any("parameters changed" in r for r in check_table(result.table_path, changed).reasons)
    assert choose_backend(cfg, "toy", "onnxruntime") == "onnxruntime"
    with pytest.raises(BackendUnavailable, match="no calibrator for 'toy'"):
        _tensorrt_refuses(cfg)
    rep = build_report(cfg, algorithms=["entropy2", "toy"], layer_images=4, progress=False).report
    assert rep.precisions["int8_toy"].algorithm == "toy" and rep.tables["toy"].source in ("config", "calibrated")
    assert main(["calibrate", "--config", str(cfg_path), "--algorithm", "toy"]) == 0


def _tensorrt_refuses(cfg) -> None:
    """With TensorRT resolved, an algorithm without a TensorRT calibrator is refused, never mislabelled."""
    import sppquant.pipeline.calibrate as C

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(C, "resolve_backend", lambda requested: "tensorrt")
        assert C.choose_backend(cfg, "toy", "auto") == "onnxruntime"  # auto: sppquant computes it itself
        C.choose_backend(cfg, "toy", "tensorrt")


def test_unknown_algorithm_parameter_is_a_config_error(toy: Algorithm) -> None:
    base = {"model": {"path": "m.onnx"}, "input": {"sizes": [[8, 8]]}}
    with pytest.raises(ConfigError, match="calibration.toy_fraction: expected a number in \\(0, 1\\]"):
        config_from_dict({**base, "calibration": {"toy_fraction": 2.0}}, "c.yaml")
    with pytest.raises(ConfigError, match="calibration.toy_fractoin: unknown key; did you mean 'toy_fraction'"):
        config_from_dict({**base, "calibration": {"toy_fractoin": 0.5}}, "c.yaml")


def test_op_registry_finds_spp_and_enforces_kernel_limits() -> None:
    node = make_spp_node("x", "y", [4, 2, 1])
    spec = find_op(node)
    assert spec is OPS.get("spp") and spec.node_attributes(node) == {"levels": (4, 2, 1), "pooling": "max"}
    assert spec.ties_output_to_input(spec.node_attributes(node)) == 0
    assert spec.output_shape([["N", 8, "H", "W"]], spec.node_attributes(node)) == ["N", 8 * 21]
    x = np.arange(2 * 8 * 5 * 5, dtype=np.float32).reshape(2, 8, 5, 5)
    assert spec.reference(x, levels=(1,)).shape == (2, 8)
    with pytest.raises(ValueError, match="kernel's limits"):
        make_spp_node("x", "y", [100])


def test_report_label_csv_resolves_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"model": {"path": "m.onnx"}, "input": {"sizes": [[8, 8]]}}
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({**base, "report": {"labels": "labels.csv"}}, "c.yaml", tmp_path / "configs")
    assert cfg.report.labels == str(tmp_path / "configs" / "labels.csv")
    for keyword in ("folders", "none"):
        assert config_from_dict({**base, "report": {"labels": keyword}}, "c.yaml", tmp_path).report.labels == keyword


def test_infinite_activations_are_a_user_error(tiny_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model that overflows to inf on the calibration data: exit 2 naming the tensor, not an internal error."""
    import onnx
    from onnx import helper, numpy_helper

    cfg = load_config(tiny_project)
    model = onnx.load(str(cfg.model.path))
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.inf, np.float32), "big"))
    first = model.graph.node[0]
    model.graph.node.insert(1, helper.make_node("Mul", [first.output[0], "big"], ["conv_inf"]))
    for node in model.graph.node[2:]:
        for i, name in enumerate(node.input):
            if name == first.output[0]:
                node.input[i] = "conv_inf"
    onnx.save(model, str(cfg.model.path))
    assert main(["calibrate", "--config", str(tiny_project)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inf" in err[0] and "tensor" in err[0]


def test_plugin_search_never_looks_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sppquant.ops import plugin_library

    monkeypatch.delenv(plugin_library.ENV_LIBRARY, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / plugin_library.PLUGIN_LIBRARY).write_bytes(b"planted")
    assert all(p.parent != tmp_path for p in plugin_library.candidate_paths())
    assert not any("shared" in p.parts for p in plugin_library.candidate_paths())
