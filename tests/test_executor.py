"""Executors: shards merged on the driver equal one process (tables, provenance, report metrics); Ray failure paths.

The Ray tests share one module-scoped local cluster (2 CPUs) and skip with the reason where
Ray is not installed (CI installs it through the dev extra).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_report_support import synthetic_model, write_images

from sppquant.cli import main
from sppquant.config import load_config
from sppquant.errors import BackendUnavailable, DataError
from sppquant.pipeline.calibrate import calibrate
from sppquant.pipeline.executor import LocalExecutor, ShardFailed, make_executor, split
from sppquant.pipeline.report import build_report
from sppquant.tasks.metrics import ExactSum

VOLATILE = ("created", "executor")


def project(root: Path, calib: int = 21, bad: bool = False, last_batch: str = "keep", **executor: Any) -> Path:
    """A synthetic classifier, ``calib`` calibration images (batch 4), 18 labelled evaluation images."""
    import onnx  # noqa: PLC0415

    root.mkdir(parents=True, exist_ok=True)
    onnx.save(synthetic_model(), root / "m.onnx")
    write_images(root / "calib", calib, folders=False, seed=3)
    write_images(root / "eval", 18, folders=True, seed=4)
    if bad:
        (root / "calib" / "img003b.png").write_bytes(b"not a png")
    cfg = {"model": {"path": "m.onnx"}, "input": {"sizes": [[20, 20], [28, 28]]},
           "calibration": {"images": "calib", "output": "out/t.cache", "batch_size": 4, "last_batch": last_batch},
           "report": {"images": "eval", "output_dir": "out/report", "batch_size": 4, "layer_images": 8,
                      "algorithms": ["entropy2"]},
           "executor": executor}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return root / "c.yaml"


def provenance(table: Path) -> dict:
    data = json.loads(table.with_name(table.name + ".json").read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE}


def calibrate_pair(tmp_path: Path, executor: str, **kw: Any) -> tuple[Any, Any]:
    one = calibrate(load_config(project(tmp_path / "one", **kw)), progress=False)
    many = calibrate(load_config(project(tmp_path / "many", workers=2, **kw)), executor=executor, progress=False)
    return one, many


def assert_same_calibration(one: Any, many: Any) -> None:
    assert one.table_path.read_bytes() == many.table_path.read_bytes()
    a, b = provenance(one.table_path), provenance(many.table_path)
    a["model"].pop("path"), b["model"].pop("path")
    a["images"].pop("root"), b["images"].pop("root")
    for item in a["images"]["bad_files"] + b["images"]["bad_files"]:
        item["path"] = Path(item["path"]).name
        item["reason"] = item["reason"].split(item["path"], 1)[-1]  # the folders differ, not the reason
    assert a["images"] == b["images"]
    assert a == b


def report_metrics(rep: dict) -> dict:
    """Everything the report measured except latency (per-worker wall time) and paths."""
    out = {}
    for key, p in rep["precisions"].items():
        out[key] = {k: v for k, v in p.items() if k not in ("latency_ms_per_image", "per_size", "model")}
        out[key]["per_size"] = {s: {k: v for k, v in m.items() if k != "latency_ms_per_image"}
                                for s, m in p["per_size"].items()}
    return {"precisions": out, "layers": rep["layers"], "evaluated": rep["dataset"]["evaluated"]}


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plots are rendered from the same merged data and take most of a small report's time: skip them here."""
    monkeypatch.setattr("sppquant.report.render.render_plots", lambda *args, **kwargs: [])


# --------------------------------------------------------------------------- no Ray needed


def test_split_is_contiguous_aligned_and_complete() -> None:
    for n, k, align in [(21, 2, 4), (300, 3, 16), (5, 8, 4), (1, 2, 1), (64, 2, 16)]:
        shards = split(n, k, align)
        assert shards[0].start == 0 and shards[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
        assert all(s.start % align == 0 for s in shards) and all(s.stop > s.start for s in shards)
    assert [(s.start, s.stop) for s in split(21, 2, 4)] == [(0, 12), (12, 21)]
    assert split(21, 2, 4)[1].label == "shard 2/2 (images 12..20)"


def test_exact_sum_is_independent_of_grouping() -> None:
    values = [1e16, 1.0, -1e16, 3.3, 1e-9, 7.1] * 5
    whole, left, right = ExactSum(), ExactSum(), ExactSum()
    for v in values:
        whole.add(v)
    for v in values[:7]:
        left.add(v)
    for v in values[7:]:
        right.add(v)
    assert whole.value == right.merge(left).value == left.merge(right).value


@pytest.mark.parametrize("kw", [{}, {"bad": True}, {"last_batch": "drop"}])
def test_local_shards_equal_one_process(tmp_path: Path, kw: dict) -> None:
    one, many = calibrate_pair(tmp_path, "local", **kw)
    assert_same_calibration(one, many)
    assert json.loads(many.provenance_path.read_text())["executor"] == {"kind": "local", "workers": 2}


def test_local_report_shards_equal_one_process(tmp_path: Path, no_plots: None) -> None:
    one = build_report(load_config(project(tmp_path / "one")), progress=False)
    many = build_report(load_config(project(tmp_path / "many", workers=2)), progress=False)
    assert report_metrics(one.report.to_json()) == report_metrics(many.report.to_json())


def test_ray_missing_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = project(tmp_path)
    with pytest.raises(BackendUnavailable, match="Ray is not installed"):
        make_executor(load_config(cfg), "ray")
    assert main(["calibrate", "--config", str(cfg), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'sppquant[ray]'" in err
    assert not (tmp_path / "out" / "t.cache").exists()


def test_local_executor_runs_in_order() -> None:
    assert LocalExecutor(3).map(abs, [-1, 2, -3], ["a", "b", "c"], "x") == [1, 2, 3]


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    yield ray
    ray.shutdown()


def fail_first_time(marker: str) -> str:
    """Raises on its first call for ``marker`` (state in a file: attempts run in other processes)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("transient failure")
    return "ok"


def die_first_time(marker: str) -> str:
    """Kills its worker process on the first call for ``marker`` (a crash, not an exception)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os._exit(1)
    return "ok"


def always_fail(arg: int) -> int:
    if arg == 1:
        raise RuntimeError("this shard always fails")
    return arg


def test_ray_calibration_identical_to_local(ray_cluster: Any, tmp_path: Path) -> None:
    one, many = calibrate_pair(tmp_path, "ray", bad=True)
    assert_same_calibration(one, many)
    assert json.loads(many.provenance_path.read_text())["executor"]["kind"] == "ray"


def test_ray_report_identical_to_local(ray_cluster: Any, tmp_path: Path, no_plots: None) -> None:
    one = build_report(load_config(project(tmp_path / "one")), progress=False)
    many = build_report(load_config(project(tmp_path / "many", workers=2)), progress=False, executor="ray")
    assert report_metrics(one.report.to_json()) == report_metrics(many.report.to_json())
    assert any("2 shards on the ray executor" in n for n in many.report.notes)


def test_ray_retries_a_shard_that_fails_once(ray_cluster: Any, tmp_path: Path) -> None:
    cfg = load_config(project(tmp_path, workers=2))
    ex = make_executor(cfg, "ray")
    markers = [str(tmp_path / "m0"), str(tmp_path / "m1")]
    assert ex.map(fail_first_time, markers, ["shard 1/2", "shard 2/2"], "t", progress=False) == ["ok", "ok"]


def test_ray_retries_a_shard_whose_worker_died(ray_cluster: Any, tmp_path: Path) -> None:
    ex = make_executor(load_config(project(tmp_path, workers=2)), "ray")
    assert ex.map(die_first_time, [str(tmp_path / "d0")], ["shard 1/1"], "t", progress=False) == ["ok"]


def test_ray_shard_that_keeps_failing_fails_cleanly(ray_cluster: Any, tmp_path: Path) -> None:
    cfg = load_config(project(tmp_path, workers=2, max_retries=1))
    ex = make_executor(cfg, "ray")
    with pytest.raises(ShardFailed, match=r"^shard 2/2 \(images 8\.\.20\) failed after 2 attempt\(s\): "
                                          r"RuntimeError: this shard always fails$"):
        ex.map(always_fail, [0, 1], ["shard 1/2 (images 0..7)", "shard 2/2 (images 8..20)"], "t", progress=False)


def test_ray_user_error_in_a_shard_is_not_retried_and_writes_nothing(ray_cluster: Any, tmp_path: Path) -> None:
    cfg = project(tmp_path, bad=True, workers=2)
    data = yaml.safe_load(cfg.read_text())
    data["calibration"]["bad_files"] = "error"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(DataError, match="img003b.png"):
        calibrate(load_config(cfg), executor="ray", progress=False)
    assert not (tmp_path / "out" / "t.cache").exists()
    assert not (tmp_path / "out" / "t.cache.json").exists()
