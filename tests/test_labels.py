"""Class folders and label files -> output indices (issue 11, part 3)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from sppquant.config import config_from_dict
from sppquant.data import ImageSet, labelled_set
from sppquant.errors import ConfigError, DataError
from sppquant.labels import check_labels, folder_classes, model_output_width
from tests.conftest import write_tiny_spp_model

REPO = Path(__file__).resolve().parents[1]


def make_folders(root: Path, names: list[str], per_class: int = 2) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"img{i}.png"), np.full((4, 4, 3), i * 40, np.uint8))
    return root


def labels_by_folder(s: ImageSet) -> dict[str, int]:
    out: dict[str, int] = {}
    for p, lab in zip(s.paths, s.labels):
        assert out.setdefault(p.parent.name, lab) == lab
    return out


def test_demo_eval_set_keeps_its_indices() -> None:
    """digits-eval/7 is class 7, as before issue 11; and the demo model has exactly 10 outputs."""
    root = REPO / "calib_data" / "digits-eval"
    s = labelled_set(root)
    assert s.class_names == tuple(str(d) for d in range(10))
    assert all(lab == int(p.parent.name) for p, lab in zip(s.paths, s.labels)) and len(set(s.labels)) == 10
    width = model_output_width(REPO / "sppquant" / "demo" / "sppnet_digits.onnx")
    assert width == 10
    check_labels(s, width, str(root))


def test_folders_0_and_180_are_classes_0_and_1(tmp_path: Path) -> None:
    s = labelled_set(make_folders(tmp_path / "ev", ["0", "180"]))
    assert s.class_names == ("0", "180") and labels_by_folder(s) == {"0": 0, "180": 1}
    check_labels(s, 2, "ev")
    with pytest.raises(DataError, match=r"^ev: 2 classes \(0\.\.180\) but the model has 4 outputs: set report\.classes"):
        check_labels(s, 4, "ev")


def test_numeric_names_sort_by_value_and_warn_when_text_order_differs(tmp_path: Path, caplog) -> None:
    names = [str(i) for i in range(11)]
    with caplog.at_level(logging.WARNING, logger="sppquant.labels"):
        s = labelled_set(make_folders(tmp_path / "ev", names, per_class=1))
    assert labels_by_folder(s) == {n: int(n) for n in names}
    assert "sort them as text (0, 1, 10, 2)" in caplog.text
    # the text order (torchvision ImageFolder), configured explicitly: "10" is output 2
    text_order = sorted(names)
    s2 = labelled_set(tmp_path / "ev", classes=text_order)
    assert labels_by_folder(s2)["10"] == 2 and labels_by_folder(s2)["2"] == 3 and s2.class_names == tuple(text_order)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sppquant.labels"):
        assert folder_classes(["0", "1", "2"]) == ("0", "1", "2")
    assert caplog.text == ""


@pytest.mark.parametrize("names, order", [
    (["dog", "cat", "bird"], ("bird", "cat", "dog")),
    (["1", "b", "10", "2"], ("1", "10", "2", "b")),  # not all numbers: text order
    (["007", "7", "10"], ("007", "7", "10")),  # equal values: ties broken by the text
    (["٣", "1"], ("1", "٣")),  # a non-ASCII digit is not a decimal integer name
])
def test_default_order(names: list[str], order: tuple[str, ...]) -> None:
    assert folder_classes(names) == order


def test_configured_classes(tmp_path: Path) -> None:
    root = make_folders(tmp_path / "ev", ["upright", "flipped"])
    s = labelled_set(root, classes=["upright", "flipped", "unused"])
    assert labels_by_folder(s) == {"upright": 0, "flipped": 1} and s.class_names == ("upright", "flipped", "unused")
    check_labels(s, 3, "ev")
    with pytest.raises(DataError, match=r"class 'flipped' is not in report\.classes \('upright', 'other'\)"):
        labelled_set(root, classes=["upright", "other"])


def test_a_missing_class_folder_is_refused_not_shifted(tmp_path: Path) -> None:
    """Folders 0,1,2,4 of a 5-class model: sorted positions would make folder 4 output 3."""
    s = labelled_set(make_folders(tmp_path / "ev", ["0", "1", "2", "4"]))
    with pytest.raises(DataError, match=r"4 classes \(0\.\.4\) but the model has 5 outputs"):
        check_labels(s, 5, "ev")
    fixed = labelled_set(tmp_path / "ev", classes=["0", "1", "2", "3", "4"])
    assert labels_by_folder(fixed)["4"] == 4
    check_labels(fixed, 5, "ev")


def test_csv_labels_indices_or_class_names(tmp_path: Path) -> None:
    root = make_folders(tmp_path / "ev", ["a"], per_class=3)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na/img0.png,180\na/img1.png,0\na/img2.png, 180\n")
    by_index = labelled_set(root, labels=str(csv))
    assert by_index.labels == (180, 0, 180) and by_index.class_names is None
    with pytest.raises(DataError, match=r"labels span 0\.\.180 but the model has 2 outputs \(labels must be 0\.\.1\)"):
        check_labels(by_index, 2, "labels.csv")
    by_name = labelled_set(root, labels=str(csv), classes=["0", "180"])
    assert by_name.labels == (1, 0, 1) and by_name.class_names == ("0", "180")
    check_labels(by_name, 2, "labels.csv")
    csv.write_text("a/img0.png,0\na/img1.png,90\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: class '90' is not in report\.classes"):
        labelled_set(root, labels=str(csv), classes=["0", "180"])
    csv.write_text("a/img0.png,-1\n")
    with pytest.raises(DataError, match=r"labels span -1\.\.-1"):
        check_labels(labelled_set(root, labels=str(csv)), 2, "labels.csv")


def test_check_labels_without_labels_or_width(tmp_path: Path) -> None:
    root = make_folders(tmp_path / "ev", ["a", "b"])
    check_labels(labelled_set(root, labels="none"), 7, "ev")
    check_labels(labelled_set(root), None, "ev")


def test_model_output_width(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    assert model_output_width(write_tiny_spp_model(tmp_path / "tiny.onnx")) == 5
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])
    dyn = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", "C"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["x"], ["z"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 1, 1])], [out, dyn])
    model = helper.make_model(graph)
    assert model_output_width(model) == 4 and model_output_width(model, "z") is None
    with pytest.raises(DataError, match="no output named 'w'"):
        model_output_width(model, "w")
    assert isinstance(model, onnx.ModelProto)


def test_report_classes_config() -> None:
    base = {"model": {"path": "m.onnx"}, "input": {"sizes": [[48, 192]]}}
    cfg = config_from_dict({**base, "report": {"classes": ["0", "180"]}}, source="c.yaml")
    assert cfg.report.classes == ("0", "180")
    assert config_from_dict(base).report.classes is None
    for bad, match in [(["0", "0"], "distinct"), ([], "non-empty"), (["a", ""], "non-empty"),
                       ([0, 180], r"\[0\]: expected a string")]:
        with pytest.raises(ConfigError, match=rf"^c\.yaml: report\.classes.*{match}"):
            config_from_dict({**base, "report": {"classes": bad}}, source="c.yaml")
