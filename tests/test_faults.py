"""Bad input and faults: one line, exit 2, nothing half-written (issue 16's classes, one test or more each)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from sppquant.atomic import atomic_write_text, remove_stale_temps
from sppquant.calibration.table import CalibrationTable, format_table, parse_table
from sppquant.cli import main
from sppquant.config import config_from_dict, load_config
from sppquant.errors import ConfigError, OutputError, TableError


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def _edit(cfg_path: Path, **sections: dict) -> Path:
    data = yaml.safe_load(cfg_path.read_text())
    for section, values in sections.items():
        if isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    cfg_path.write_text(yaml.safe_dump(data))
    return cfg_path


# -- 1. values that parse but make no sense ---------------------------------------------------


@pytest.mark.parametrize("section, values, key", [
    ("preprocess", {"mean": [float("nan"), 0.5, 0.5]}, "preprocess.mean[0]"),
    ("preprocess", {"std": [float("inf"), 1, 1]}, "preprocess.std[0]"),
    ("preprocess", {"pad_value": float("nan")}, "preprocess.pad_value"),
    ("preprocess", {"std": [1.0e-40, 1, 1]}, "preprocess.std"),
    ("input", {"sizes": [[200000, 200000]]}, "input.sizes[0]"),
    ("calibration", {"seed": -1}, "calibration.seed"),
])
def test_nonsense_values_are_refused_before_work(tiny_project: Path, section: str, values: dict, key: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["calibrate", "--config", str(_edit(tiny_project, **{section: values}))], capsys)
    assert code == 2 and key in err and len(err.splitlines()) == 1
    assert not (tiny_project.parent / "out").exists()  # nothing written


def test_batch_larger_than_the_images_with_drop(tiny_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _edit(tiny_project, calibration={"batch_size": 64, "last_batch": "drop"})
    code, err = _cli(["calibrate", "--config", str(cfg)], capsys)
    assert code == 2 and "no batch would be used" in err
    assert not (tiny_project.parent / "out" / "tiny.cache").exists()


# -- 2. config loading corner cases -----------------------------------------------------------


@pytest.mark.parametrize("text, needle", [
    ("model: {path: ~nosuchuser_sppq/m.onnx}\ninput: {sizes: [[8, 8]]}\n", "unknown user"),
    ("model: {path: m.onnx}\ninput: {sizes: [[8, !!int sixteen]]}\n", "YAML value error"),
    ("model: {path: m.onnx}\ninput: {sizes: [[8, 8]]}\ninput: {sizes: [[9, 9]]}\n", "duplicate key 'input'"),
    ("model: {path: m.onnx, path: n.onnx}\ninput: {sizes: [[8, 8]]}\n", "duplicate key 'path'"),
])
def test_config_loading_corner_cases(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert needle in str(err.value) and str(p) in str(err.value) and "\n" not in str(err.value)


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12))
def test_any_parsed_yaml_gives_a_config_or_one_line(data: object) -> None:
    try:
        config_from_dict({"model": {"path": "m.onnx"}, "input": {"sizes": [[8, 8]]}, "calibration": data}, "c.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("c.yaml: ")


# -- 3. model/config mismatches found from the declared inputs ----------------------------------


def _model_with_input(path: Path, elem: int, dims: list) -> Path:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", elem, dims)],
                              [helper.make_tensor_value_info("y", elem, dims)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.mark.parametrize("elem, dims, color, needle", [
    (TensorProto.FLOAT, ["N", 3, "H", "W"], "gray", "3 channel(s) but the config feeds 1"),
    (TensorProto.UINT8, ["N", 3, "H", "W"], "rgb", "is UINT8"),
    (TensorProto.FLOAT, ["N", 3, 32, 32], "rgb", "fixes H to 32"),
])
def test_model_mismatches_are_found_before_any_work(tiny_project: Path, elem: int, dims: list, color: str,
                                                    needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_with_input(tiny_project.parent / "m.onnx", elem, dims)
    channels = 1 if color == "gray" else 3
    cfg = _edit(tiny_project, model={"path": str(model), "input_name": "x", "channels": channels},
                preprocess={"color": color, "mean": [0.5] * channels, "std": [0.25] * channels})
    code, err = _cli(["calibrate", "--config", str(cfg)], capsys)
    assert code == 2 and needle in err and len(err.splitlines()) == 1


# -- 4. images ------------------------------------------------------------------------------------


def test_non_utf8_file_name_calibrates(tiny_project: Path, image_folder: Path) -> None:
    src = next(image_folder.rglob("*.png"))
    raw = os.fsencode(src.parent) + b"/bad\xff_name.png"
    os.link(os.fsencode(src), raw)
    assert main(["calibrate", "--config", str(tiny_project)]) == 0


def test_image_over_the_pixel_limit_is_skipped(tiny_project: Path, image_folder: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV refuses images above CV_IO_MAX_IMAGE_PIXELS with an exception: ``skip`` must cover it."""
    import cv2

    big = image_folder / "huge.png"
    cv2.imwrite(str(big), np.zeros((2000, 2000, 3), np.uint8))
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "1000000"}  # read at OpenCV's load: a child process
    res = subprocess.run(["python", "-m", "sppquant", "calibrate", "--config", str(tiny_project)], env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "huge.png" in res.stderr


# -- 6. output faults -----------------------------------------------------------------------------


def test_provenance_path_that_is_a_directory_is_refused_first(tiny_project: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tiny_project.parent / "out"
    (out / "tiny.cache.json").mkdir(parents=True)
    code, err = _cli(["calibrate", "--config", str(tiny_project)], capsys)
    assert code == 2 and "tiny.cache.json" in err and "directory" in err
    assert not (out / "tiny.cache").exists()


def test_stdout_full_is_exit_2(tiny_project: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this machine")
    assert main(["calibrate", "--config", str(tiny_project)]) == 0
    table = tiny_project.parent / "out" / "tiny.cache"
    with open("/dev/full", "w") as full:
        res = subprocess.run(["python", "-m", "sppquant", "inspect", "--json", str(table)], stdout=full,
                             stderr=subprocess.PIPE, text=True, check=False)
    assert res.returncode == 2 and "standard output" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_disk_full_names_the_path_and_leaves_no_orphan(tiny_project: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC on the table write (simulated: tmpfs needs privileges a CI runner may not have)."""
    import sppquant.calibration.table as table_mod

    real = table_mod.atomic_open

    def full(path, mode="w"):
        if str(path).endswith(".cache"):
            raise OutputError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")
        return real(path, mode)

    monkeypatch.setattr(table_mod, "atomic_open", full)
    code, err = _cli(["calibrate", "--config", str(tiny_project)], capsys)
    assert code == 2 and "tiny.cache" in err and "No space left" in err
    out = tiny_project.parent / "out"
    assert not (out / "tiny.cache.json").exists() and not (out / "tiny.cache").exists()


def test_real_enospc_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True,
                         check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip() or 'no privileges'})")
    try:
        with pytest.raises(OutputError, match="No space left"):
            atomic_write_text(mnt / "t.cache", "x" * 200_000)
        assert list(mnt.iterdir()) == []  # the temp file is gone too
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- 7. predict sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [["0", "0"], ["-3", "8"]])
def test_predict_bad_size(tiny_project: Path, image_folder: Path, size: list[str],
                          capsys: pytest.CaptureFixture[str]) -> None:
    img = str(next(image_folder.rglob("*.png")))
    code, err = _cli(["predict", "--config", str(tiny_project), "--size", *size, img], capsys)
    assert code == 2 and "--size" in err


# -- 9. leftovers ------------------------------------------------------------------------------------


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "t.cache"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".t.cache.{dead.pid}.abc.tmp"
    live = tmp_path / f".t.cache.{os.getpid()}.def.tmp"
    stale.write_text("half")
    live.write_text("being written")
    atomic_write_text(target, "table")
    assert not stale.exists() and live.exists() and target.read_text() == "table"
    assert remove_stale_temps(target) == []


# -- 10. table names round-trip or are refused ----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_any_table_name_round_trips_or_is_refused(name: str) -> None:
    table = CalibrationTable(101601, "EntropyCalibration2", {name: 0.5, "other": 0.25})
    try:
        text = format_table(table)
    except TableError:
        return
    assert parse_table(text) == table


def test_export_qdq_never_overwrites_the_source_model(tiny_project: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--config", str(tiny_project)]) == 0
    model = tiny_project.parent / "tiny.onnx"
    before = model.read_bytes()
    code, err = _cli(["export-qdq", "--config", str(tiny_project), "--output", str(model)], capsys)
    assert code == 2 and "FP32 model itself" in err and model.read_bytes() == before
