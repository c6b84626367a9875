"""The typed provenance record: round trip, validation of hand-edited files, staleness by facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sppquant.calibration.provenance import CalibrationInputs, ProvenanceRecord, provenance_path, read_provenance
from sppquant.cli import main
from sppquant.config import load_config
from sppquant.errors import TableError
from sppquant.pipeline.calibrate import calibrate


@pytest.fixture
def calibrated(tiny_project: Path) -> Path:
    return calibrate(load_config(tiny_project), progress=False).table_path


def test_round_trip_keeps_every_key(calibrated: Path) -> None:
    data = json.loads(provenance_path(calibrated).read_text())
    record = ProvenanceRecord.from_json(data, "p.json")
    assert record.to_json() == data
    assert list(record.to_json())[:3] == ["format", "sppquant_version", "created"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("algorithm"), "lacks the key 'algorithm'"),
    (lambda d: d.__setitem__("tensors", []), "'tensors' must be a dict"),
    (lambda d: d["algorithm"].pop("params"), "'algorithm' lacks params"),
    (lambda d: d.__setitem__("images", 3), "'images' must be a dict"),
    (lambda d: d.__setitem__("format", "other/1"), "not an sppquant provenance record"),
])
def test_hand_edited_records_are_one_line_errors(calibrated: Path, tiny_project: Path, edit, message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = provenance_path(calibrated)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(TableError, match=message):
        read_provenance(calibrated)
    assert main(["export-qdq", "--config", str(tiny_project), "--output", str(calibrated.parent / "q.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    assert main(["inspect", str(calibrated)]) == 0  # inspect still shows the table, and says what is wrong
    out = capsys.readouterr().out
    assert "WARNING" in out and message.split("'")[0].strip() in out


def test_inspect_flags_an_edited_table(calibrated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = calibrated.read_text().splitlines()
    name, _ = text[1].rsplit(": ", 1)
    text[1] = f"{name}: 3c000000"
    calibrated.write_text("\n".join(text) + "\n")
    assert main(["inspect", str(calibrated)]) == 0
    assert "changed after calibration" in capsys.readouterr().out


def test_mismatches_compare_facts_only() -> None:
    rec = ProvenanceRecord.from_json({
        "format": "sppquant.provenance/1", "backend": "onnxruntime", "model": {"sha256": "m"},
        "preprocess": {"fingerprint": "p"}, "images": {"manifest_sha256": "i", "used": 1},
        "algorithm": {"name": "minmax", "params": {}}, "batch_size": 1, "last_batch": "keep",
        "input_sizes": [[8, 8]], "tensorrt": {}, "tying": {"enabled": True, "tied": {}}, "tensors": {},
        "table_sha256": "t"}, "x.json")
    same = CalibrationInputs("m.onnx", "m", "p", "i", "minmax", {}, [[8, 8]], True)
    assert rec.mismatches(same, "t") == []
    other = CalibrationInputs("m.onnx", "M", "P", None, "entropy2", {}, [[9, 9]], False, "folder gone")
    reasons = rec.mismatches(other, "T")
    assert len(reasons) == 7 and any("folder gone" in r for r in reasons)
