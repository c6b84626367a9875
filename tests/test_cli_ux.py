"""First-hour CLI: default input name, --set, -q/-v, --json on every verb that writes something."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sppquant.cli import main
from sppquant.config import load_config
from sppquant.errors import ConfigError


def write_plain_cnn(path: Path, input_name: str = "data", inputs: int = 1) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, no custom op, input not called ``image``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", [input_name, "w1"], ["conv1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv1"], ["relu1"]),
             helper.make_node("GlobalAveragePool", ["relu1"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w2"], ["logits"], transB=1)]
    ins = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, 16, 16])]
    if inputs > 1:
        ins.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 1]))
    graph = helper.make_graph(nodes, "plain", ins, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def plain_project(tmp_path: Path, image_folder: Path) -> Path:
    """A minimal config (no model.input_name) for a plain CNN whose input is ``data``."""
    write_plain_cnn(tmp_path / "plain.onnx")
    cfg = tmp_path / "plain.yaml"
    cfg.write_text("model: {path: plain.onnx}\ninput: {sizes: [[16, 16]]}\n"
                   "calibration: {images: imgs, batch_size: 4, output: out/plain.cache}\nbackend: onnxruntime\n")
    return cfg


def test_input_name_defaults_to_the_single_input(plain_project: Path) -> None:
    assert load_config(plain_project).model.input_name == "data"


def test_input_name_required_when_ambiguous(tmp_path: Path) -> None:
    write_plain_cnn(tmp_path / "two.onnx", inputs=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {path: two.onnx}\ninput: {sizes: [[16, 16]]}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: model.input_name: .*2 inputs \(data, extra\)"):
        load_config(cfg)


def test_set_overrides_are_typed_and_validated(plain_project: Path) -> None:
    cfg = load_config(plain_project, ["calibration.batch_size=2", "input.sizes=[[8, 8], [16, 16]]",
                                      "calibration.algorithm=percentile", "calibration.percentile=99.5"])
    assert cfg.calibration.batch_size == 2 and cfg.input.sizes == ((8, 8), (16, 16))
    assert cfg.calibration.algorithm_params()["percentile"] == 99.5
    with pytest.raises(ConfigError, match=r"plain.yaml: calibration.batch_size: expected an integer, got 'x'"):
        load_config(plain_project, ["calibration.batch_size=x"])
    with pytest.raises(ConfigError, match=r"calibration.algoritm: unknown key; did you mean 'algorithm'"):
        load_config(plain_project, ["calibration.algoritm=minmax"])
    with pytest.raises(ConfigError, match=r"--set 'calibration': expected KEY.PATH=VALUE"):
        load_config(plain_project, ["calibration"])
    with pytest.raises(ConfigError, match=r"calibration.batch_size: is not a section"):
        load_config(plain_project, ["calibration.batch_size.x=1"])


@pytest.mark.parametrize("argv", [
    ["calibrate", "--set", "calibration.batch_size=0"],
    ["calibrate", "--set", "nope"],
    ["calibrate", "--trt-version", "10.x"],
    ["report", "--set", "report.batch_size=-1"],
    ["export-qdq", "--output", "q.onnx", "--set", "calibration.algorithm=bogus"],
    ["build", "--set", "build.max_batch=0"],
    ["predict", "--set", "model.channels=2", "img.png"],
])
def test_cli_bad_set_is_one_line_exit_2(plain_project: Path, argv: list[str], capsys) -> None:
    argv = [argv[0], "--config", str(plain_project), *argv[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sppquant: error: ")
    assert "plain.yaml" in err or "--set" in err


def test_calibrate_json_quiet_set_and_trt_version(plain_project: Path, capsys, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sppquant"):
        rc = main(["calibrate", "--config", str(plain_project), "-q", "--json", "--trt-version", "10.8.0",
                   "--set", "calibration.algorithm=percentile"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["algorithm"] == "percentile" and out["trt_version"] == "10.8.0" and out["images"] == 8
    table_text = Path(out["table"]).read_text()
    assert table_text.startswith("TRT-100800-")
    assert logging.getLogger().level == logging.WARNING


def test_quiet_and_verbose_exclude_each_other(plain_project: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--config", str(plain_project), "-q", "-v"])
    assert exc.value.code == 2


def test_common_flags_on_every_config_command() -> None:
    from sppquant.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("calibrate", "build", "predict", "report", "export-qdq"):
        opts = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert {"--config", "--set", "-q", "-v", "--json"} <= opts, name
    assert {"-q", "-v", "--json"} <= {o for a in sub.choices["inspect"]._actions for o in a.option_strings}


def test_report_and_export_json(plain_project: Path, capsys) -> None:
    assert main(["calibrate", "--config", str(plain_project), "-q"]) == 0
    capsys.readouterr()
    out_q = plain_project.parent / "q.onnx"
    assert main(["export-qdq", "--config", str(plain_project), "--output", str(out_q), "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["output"] == str(out_q) and data["int8_activations"] > 0
    assert main(["report", "--config", str(plain_project), "--json", "-q", "--set", "report.images=imgs",
                 "--set", "report.labels=none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert Path(data["markdown"]).is_file() and "fp32" in data["precisions"]


def test_every_subcommand_help_renders_and_names_the_default_algorithm(capsys: pytest.CaptureFixture) -> None:
    """argparse formats help with %: a '%' in a registered algorithm's help once crashed `calibrate --help`."""
    from sppquant.calibration.algorithms import DEFAULT_ALGORITHM
    from sppquant.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        if name == "calibrate":
            assert f"({DEFAULT_ALGORITHM} when the config sets none)" in " ".join(capsys.readouterr().out.split())
