"""End-to-end calibration on a tiny SPP model: table, provenance, staleness, bad input, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sppquant.backends.onnxruntime import OrtRunner, activation_names, load_model
from sppquant.calibration.provenance import provenance_path
from sppquant.calibration.table import read_table
from sppquant.calibration.tying import apply_ties
from sppquant.cli import main
from sppquant.config import load_config
from sppquant.errors import DataError, ModelError, TableError
from sppquant.pipeline import calibrate as calibrate_mod
from sppquant.pipeline.calibrate import calibrate
from sppquant.pipeline.tables import check_table
from tests.conftest import write_tiny_spp_model


def test_table_covers_original_tensors_only_with_ties(tiny_project: Path) -> None:
    cfg = load_config(tiny_project)
    result = calibrate(cfg, progress=False)
    table = read_table(result.table_path)
    assert table.header == "TRT-101601-EntropyCalibration2"
    assert list(table.scales) == ["image", "conv1", "relu1", "pool1", "spp", "spp_flat", "logits"]
    assert not any("__spp" in n for n in table.scales)  # rewrite helpers are not part of the table
    assert table.scales["pool1"] == table.scales["spp"] == table.scales["spp_flat"] == table.scales["relu1"]
    prov = json.loads(provenance_path(result.table_path).read_text())
    assert prov["tying"]["tied"] == {"pool1": "relu1", "spp": "relu1", "spp_flat": "relu1"}
    assert prov["images"]["count"] == 8 and prov["images"]["used"] == 8
    # the default rule (percentile) has no TensorRT calibrator: its table loads under the entropy calibrator's header
    assert prov["input_sizes"] == [[16, 16], [24, 20]] and prov["algorithm"]["name"] == "percentile"
    assert prov["algorithm"]["params"] == {"percentile": 99.99}
    assert check_table(result.table_path, cfg).valid


def test_a_tied_group_takes_its_largest_amax() -> None:
    """relu -> maxpool -> flatten: a clipping rule on the relu's many small values would clip the pooled
    maxima the next layer reads; the group takes the largest member's amax (hand-computed)."""
    amax = {"relu": 1.0, "pool": 3.0, "flat": 2.5, "other": 7.0}
    applied = apply_ties(amax, {"pool": "relu", "flat": "relu", "missing": "relu"})
    assert amax == {"relu": 3.0, "pool": 3.0, "flat": 3.0, "other": 7.0}
    assert applied == {"pool": "relu", "flat": "relu"}
    amax = {"relu": 4.0, "pool": 4.0}  # minmax: a range-preserving output never exceeds its root
    apply_ties(amax, {"pool": "relu"})
    assert amax == {"relu": 4.0, "pool": 4.0}


def test_untied_and_minmax(tiny_project: Path) -> None:
    cfg = load_config(tiny_project)
    cfg = dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, tie_scales=False))
    table = calibrate(cfg, algorithm="minmax", progress=False).table
    assert table.algorithm == "MinMaxCalibration"
    # minmax of max pooling's output equals its input's max exactly: tying is a no-op there
    assert table.scales["pool1"] == table.scales["relu1"]
    # the input is in [-2, 2] after (x - 0.5) / 0.25
    assert table.amax("image") == pytest.approx(2.0, rel=1e-6)


def test_multi_size_histograms_are_the_sum_of_single_sizes(tiny_project: Path) -> None:
    cfg = load_config(tiny_project)
    captured = {}
    real = calibrate_mod.collect_activations

    def spy(*args, **kwargs):
        collector, bad = real(*args, **kwargs)
        captured[len(captured)] = collector.histograms
        return collector, bad

    collect_mod_calib = pytest.MonkeyPatch()
    collect_mod_calib.setattr("sppquant.pipeline.calibrate.collect_activations", spy)
    try:
        calibrate(cfg, progress=False)
        for size in cfg.input.sizes:
            one = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, sizes=(size,)))
            calibrate(one, output=cfg.calibration.output.with_name(f"{size}.cache"), progress=False)
    finally:
        collect_mod_calib.undo()
    both, a, b = captured[0], captured[1], captured[2]
    for name in both:
        assert both[name] == a[name].merge(b[name]), name


def test_staleness_reasons(tiny_project: Path, image_folder: Path) -> None:
    cfg = load_config(tiny_project)
    path = calibrate(cfg, progress=False).table_path
    assert not check_table(path, cfg, algorithm="minmax").valid
    other_pp = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, pad_value=0.5))
    assert "preprocessing changed" in check_table(path, other_pp).explain()
    untied = dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, tie_scales=False))
    assert "tie_scales changed" in check_table(path, untied).explain()
    write_tiny_spp_model(cfg.model.path, seed=1)
    assert "model changed" in check_table(path, cfg).explain()
    write_tiny_spp_model(cfg.model.path, seed=0)
    assert check_table(path, cfg).valid
    (image_folder / "a" / "img1.png").unlink()
    assert "calibration images changed" in check_table(path, cfg).explain()
    lines = path.read_text().splitlines()
    lines[2] = lines[2].split(": ")[0] + ": 3f800000"  # a valid but different scale
    path.write_text("\n".join(lines) + "\n")
    assert "table file was changed" in check_table(path, cfg).explain()


def test_interrupted_run_keeps_previous_table(tiny_project: Path, monkeypatch) -> None:
    cfg = load_config(tiny_project)
    path = calibrate(cfg, progress=False).table_path
    before = (path.read_bytes(), provenance_path(path).read_bytes())

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sppquant.pipeline.calibrate.collect_activations", interrupt)
    with pytest.raises(KeyboardInterrupt):
        calibrate(cfg, algorithm="minmax", progress=False)
    assert (path.read_bytes(), provenance_path(path).read_bytes()) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.cache", "tiny.cache.json"]  # no temp files


def test_calibration_and_inference_feed_identical_bytes(tiny_project: Path, image_folder: Path, monkeypatch) -> None:
    """The exact tensor calibration observes for an image is the one `predict` feeds the model."""
    from sppquant.pipeline.predict import predict

    cfg = load_config(tiny_project)
    fed: list[np.ndarray] = []
    real_run = OrtRunner.run

    def recording_run(self, feeds, outputs=None):
        fed.append(feeds["image"].copy())
        return real_run(self, feeds, outputs)

    monkeypatch.setattr(OrtRunner, "run", recording_run)
    calibrate(cfg, progress=False)
    calib_first = fed[0][0]  # first image of the first batch at the first size
    fed.clear()
    first_image = sorted(image_folder.rglob("*.png"), key=lambda p: p.relative_to(image_folder).as_posix())[0]
    predict(cfg, [first_image])
    assert fed[0][0].tobytes() == calib_first.tobytes()


def test_bad_inputs(tiny_project: Path, tmp_path: Path) -> None:
    cfg = load_config(tiny_project)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="has no images"):
        calibrate(dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, images=empty)), progress=False)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"")
    (junk / "b.jpg").write_text("text")
    with pytest.raises(DataError, match="all 2 image"):
        calibrate(dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, images=junk)), progress=False)
    not_table = tmp_path / "model_copy.onnx"
    not_table.write_bytes(cfg.model.path.read_bytes())
    with pytest.raises(TableError, match="is not a calibration table"):
        calibrate(cfg, output=not_table, progress=False)
    write_tiny_spp_model(tmp_path / "int_out.onnx", output_type=7)  # INT64 output
    with pytest.raises(ModelError, match="expected a float tensor"):
        calibrate(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=tmp_path / "int_out.onnx")),
                  progress=False)
    with pytest.raises(ModelError, match="no input named 'pixels'"):
        load_model(cfg.model.path, "pixels")


def test_activation_names_in_graph_order(tiny_project: Path) -> None:
    model = load_model(load_config(tiny_project).model.path)
    assert activation_names(model) == ["image", "conv1", "relu1", "pool1", "spp", "spp_flat", "logits"]


def test_cli_exit_codes(tiny_project: Path, tmp_path: Path, capsys) -> None:
    assert main(["calibrate", "--config", str(tiny_project)]) == 0
    table = tiny_project.parent / "out" / "tiny.cache"
    capsys.readouterr()
    assert main(["inspect", str(table), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["header"] == "TRT-101601-EntropyCalibration2" and info["provenance"]["images"]["used"] == 8
    assert main(["inspect", str(table)]) == 0
    out = capsys.readouterr().out
    assert "EntropyCalibration2" in out and "spp" in out
    assert main(["calibrate", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config file not found" in err
    assert main(["inspect", str(tiny_project)]) == 2
    assert main(["predict", "--config", str(tiny_project), str(tmp_path / "nope.png")]) == 2
    assert main(["calibrate", "--config", str(tiny_project), "--backend", "tensorrt"]) == 2


def test_missing_model_and_unwritable_output_fail_before_any_work(tiny_project: Path, tmp_path: Path, capsys) -> None:
    cfg = load_config(tiny_project)
    with pytest.raises(ModelError, match="model file not found"):
        calibrate(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=tmp_path / "gone.onnx")),
                  progress=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["calibrate", "--config", str(tiny_project), "--output", str(blocker / "t.cache")]) == 2
    assert "cannot be created" in capsys.readouterr().err
    assert not (tiny_project.parent / "out").exists()  # nothing was written
