"""Report: metrics against hand-computed values, FP16 conversion, report.json structure, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from test_report_support import NUM_CLASSES, synthetic_model, write_images

from sppquant.backends.base import Runner
from sppquant.backends.onnxruntime import OrtRunner
from sppquant.calibration.table import CalibrationTable, write_table
from sppquant.cli import main
from sppquant.config import load_config
from sppquant.ops.spp.onnx import is_spp_node
from sppquant.pipeline.export import export_qdq
from sppquant.pipeline.report import build_report
from sppquant.quantize.fp16 import convert_to_fp16, ort_fp16_fallbacks, ort_fp16_model
from sppquant.tasks import metrics as M

# --------------------------------------------------------------------------- metrics


def test_sqnr_hand_computed() -> None:
    # signal 3^2 + 4^2 = 25, noise 1^2 = 1 -> 10 log10(25)
    assert M.sqnr_db([3.0, 4.0], [3.0, 5.0]) == pytest.approx(10 * math.log10(25))
    assert M.sqnr_db([[1.0, 2.0]], [[1.0, 2.0]]) == math.inf
    assert M.sqnr_db([0.0], [1.0]) == -math.inf
    acc = M.SqnrAccumulator()
    acc.add(np.array([3.0]), np.array([3.0]))
    acc.add(np.array([4.0]), np.array([5.0]))
    assert acc.db == pytest.approx(10 * math.log10(25))


def test_cosine_topk_agreement_hand_computed() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    x = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    assert M.cosine_similarity(ref, x) == pytest.approx((0.0 + 1.0 + 1.0) / 3)
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    labels = np.array([2, 0, 1])
    assert M.top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert M.top_k_accuracy(logits, labels, 2) == pytest.approx(2 / 3)  # tie 0.2/0.2 -> lower index 0 first
    assert M.top_k_accuracy(logits, labels, 3) == 1.0
    other = np.array([[0.6, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    assert M.agreement(logits, other) == pytest.approx(2 / 3)
    err = M.abs_errors(np.zeros(100), np.arange(100.0))
    assert err["max_abs_err"] == 99 and err["mean_abs_err"] == 49.5 and err["p99_abs_err"] == pytest.approx(98.01)
    m = M.output_metrics(logits, other, labels, 3)
    assert "top5" not in m and m["images"] == 3 and m["top1"] == pytest.approx(1 / 3)
    assert M.jsonable({"a": math.inf, "b": [np.float32(1.5), math.nan]}) == {"a": None, "b": [1.5, None]}


# --------------------------------------------------------------------------- FP16


def test_fp16_model_runs_and_is_close_to_fp32() -> None:
    model = synthetic_model()
    x = np.random.default_rng(0).standard_normal((4, 3, 22, 30)).astype(np.float32)
    fp16, kept, moved = ort_fp16_model(model)
    onnx.checker.check_model(fp16, full_check=True)
    assert set(ort_fp16_fallbacks(fp16)) == set(moved)  # nothing else moved to FP32 behind our back
    assert {i.data_type for i in fp16.graph.initializer if i.data_type in (1, 10)} == {10}  # weights are FP16
    y16 = OrtRunner(fp16).run({"image": x})["logits"]
    y32 = OrtRunner(model).run({"image": x})["logits"]
    assert y16.dtype == np.float32  # FP32 interface
    assert M.sqnr_db(y32, y16) > 50 and 0 < np.abs(y16 - y32).max() < 1e-2 * np.abs(y32).max()
    # The TensorRT-facing form keeps the SPP plugin node (FP16 I/O) and passes the checker.
    plain = convert_to_fp16(model)
    onnx.checker.check_model(plain, full_check=True)
    assert any(is_spp_node(n) for n in plain.graph.node)
    assert plain.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


# --------------------------------------------------------------------------- report


def make_project(root: Path, folders: bool = True, bad_image: bool = False, algorithm: str | None = None,
                 **report: object) -> Path:
    """A synthetic project; ``algorithm`` sets calibration.algorithm (None: the default rule)."""
    onnx.save(synthetic_model(), root / "m.onnx")
    write_images(root / "calib", 16, folders=False, seed=3)
    write_images(root / "eval", 18, folders=folders, seed=4)
    if bad_image:
        (root / "eval" / ("1" if folders else "") / "broken.png").write_bytes(b"not a png")
    cfg = {"model": {"path": "m.onnx"}, "input": {"sizes": [[20, 20], [28, 28]]},
           "calibration": {"images": "calib", "output": "out/t.cache", "batch_size": 8,
                           **({"algorithm": algorithm} if algorithm else {})},
           "report": {"images": "eval", "output_dir": "out/report", "batch_size": 8, **report}}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return root / "c.yaml"


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("report")
    cfg_path = make_project(root, bad_image=True, algorithm="entropy2")
    assert main(["calibrate", "--config", str(cfg_path), "--backend", "onnxruntime"]) == 0  # a valid config table
    assert main(["report", "--config", str(cfg_path), "--algorithms", "entropy2,minmax"]) == 0
    out = root / "out" / "report"
    return out, json.loads((out / "report.json").read_text())


def test_report_json_structure(report_run: tuple[Path, dict]) -> None:
    out, rep = report_run
    assert rep["format"] == "sppquant.report/1"
    assert set(rep["precisions"]) == {"fp32", "fp16", "int8", "int8_minmax"}
    assert rep["precisions"]["int8"]["algorithm"] == "entropy2"
    for key, entry in rep["precisions"].items():
        for field in ("top1", "top5", "agreement", "cosine", "sqnr_db", "max_abs_err", "mean_abs_err", "p99_abs_err",
                      "images", "latency_ms_per_image"):
            assert field in entry, (key, field)
        assert set(entry["per_size"]) == {"20x20", "28x28"}
        assert entry["per_size"]["20x20"]["images"] == 18
        assert entry["images"] == 18 and entry["evaluations"] == 36
    fp32 = rep["precisions"]["fp32"]
    assert fp32["agreement"] == 1.0 and fp32["sqnr_db"] is None and fp32["cosine"] == pytest.approx(1.0)
    assert rep["dataset"]["evaluated"] == 18 and len(rep["dataset"]["bad_files"]) == 1
    assert rep["dataset"]["classes"] == NUM_CLASSES
    assert rep["tables"]["entropy2"]["source"] == "config"
    assert rep["tables"]["minmax"]["source"] == "calibrated"  # config table is entropy2
    assert rep["device"]["kind"] == "cpu" and rep["device"]["name"]
    names = [r["name"] for r in rep["layers"]]
    assert sorted(names) == sorted(["image", "conv1", "relu1", "pool1", "conv2", "relu2", "spp", "logits"])
    for r in rep["layers"]:
        assert {"name", "local_sqnr_db", "accumulated_sqnr_db", "output_sqnr_db", "quantized", "rank"} <= set(r)
    quantized = [r for r in rep["layers"] if r["quantized"]]
    assert [r["rank"] for r in quantized] == list(range(1, len(quantized) + 1))
    outs = [r["output_sqnr_db"] for r in quantized]
    assert outs == sorted(outs, key=lambda v: math.inf if v is None else v)
    unquantized = [r for r in rep["layers"] if not r["quantized"]]  # the image (input_layer: float), logits, ...
    assert "image" in [r["name"] for r in unquantized]
    assert all(r["output_sqnr_db"] is None for r in unquantized)  # not measured (n/a): one run per tensor saved
    assert set(rep["plots"]) == {"accuracy.png", "layer_sqnr.png", "histograms.png"}
    for png in rep["plots"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "](accuracy.png)" in md and "](layer_sqnr.png)" in md and "INT8 (minmax)" in md and "CPU" in md
    assert "1 unreadable skipped" in md


def test_report_int8_is_the_exported_qdq_model(report_run: tuple[Path, dict]) -> None:
    out, rep = report_run
    cfg = load_config(out.parents[1] / "c.yaml")
    exported = export_qdq(cfg, out.parent / "exported.onnx")
    assert exported.path.read_bytes() == (out / rep["int8"]["entropy2"]["model"]).read_bytes()


def test_report_without_labels_is_agreement_only(tmp_path: Path) -> None:
    cfg_path = make_project(tmp_path, folders=False)
    result = build_report(load_config(cfg_path), algorithms=["minmax"], layer_images=8, progress=False)
    rep = result.report.to_json()
    assert not rep["dataset"]["labelled"]
    assert "top1" not in rep["precisions"]["int8"] and "agreement" in rep["precisions"]["int8"]
    assert any("no class subfolders" in n for n in rep["notes"])
    assert "agreement-only" in result.markdown_path.read_text()
    assert rep["layers_images"] == 8


def test_report_refuses_mismatched_table_and_unavailable_backend(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = make_project(tmp_path)
    bad = tmp_path / "bad.cache"
    write_table(bad, CalibrationTable(101601, "EntropyCalibration2", {"image": 0.01, "conv1": 0.1, "ghost": 0.2}))
    assert main(["report", "--config", str(cfg_path), "--table", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match" in err and "ghost" in err and "relu1" in err and "\n" not in err
    assert not (tmp_path / "out" / "report" / "report.json").exists()
    assert main(["report", "--config", str(cfg_path), "--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tensorrt" in err and "\n" not in err
    assert main(["report", "--config", str(cfg_path), "--algorithms", "entropy2,kl"]) == 2
    assert "kl" in capsys.readouterr().err


class FakeEngineRunner(Runner):
    """Stands in for sppquant.backends.tensorrt's TrtRunner: runs the FP32 ONNX model in ONNX Runtime."""

    model_path: Path

    def __init__(self, engine_path: Path, plugin_library: Path | None = None) -> None:
        assert Path(engine_path).is_file()
        self.runner = OrtRunner(onnx.load(str(self.model_path)))

    def run(self, feeds: dict, outputs: list | None = None) -> dict:
        return self.runner.run(feeds, outputs)


def test_report_tensorrt_path_uses_the_engine_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TensorRT branch with a stand-in runner: engines are looked up where sppquant build writes them."""
    import sppquant.pipeline.report_variants as E
    from sppquant.errors import UserError
    from sppquant.pipeline.trt_settings import plan_builds

    cfg = load_config(make_project(tmp_path, algorithm="entropy2"))
    FakeEngineRunner.model_path = cfg.model.path
    monkeypatch.setattr(E, "resolve_backend", lambda requested: "tensorrt")
    monkeypatch.setattr(E, "_tensorrt_runner_class", lambda: FakeEngineRunner)
    with pytest.raises(UserError, match="engine.*not found.*sppquant build"):
        build_report(cfg, backend="tensorrt", algorithms=["entropy2"], layer_images=4, progress=False)
    for plan in plan_builds(cfg, ("fp32", "fp16", "int8"), cfg.build.output_dir, False):
        plan.engine_path.parent.mkdir(parents=True, exist_ok=True)
        plan.engine_path.write_bytes(b"engine")
    with pytest.raises(UserError, match="--algorithms can only be entropy2"):
        build_report(cfg, backend="tensorrt", algorithms=["entropy2", "minmax"], layer_images=4, progress=False)
    rep = build_report(cfg, backend="tensorrt", algorithms=["entropy2"], layer_images=4, progress=False).report.to_json()
    assert rep["backend"]["name"] == "tensorrt" and rep["device"]["kind"] == "gpu"
    assert rep["precisions"]["int8"]["engine"].endswith("m_int8.engine")
    assert rep["precisions"]["int8"]["agreement"] == 1.0  # the stand-in runs FP32 for every "engine"
