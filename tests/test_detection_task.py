"""The `detection` task end to end: decoder vs a slow reference, COCO mAP on hand-built cases,
F1 vs FP32, bad input (one line, exit 2, nothing written), TensorRT feeding of two inputs,
predict --json / --draw and a small, fast demo report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from sppquant.cli import main
from sppquant.config import load_config
from sppquant.preprocess import Geometry
from sppquant.tasks.detection import (
    DetectionMetrics,
    DetectionSettings,
    DetectionTarget,
    box_f1,
    coco_evaluate,
    decode_images,
)
from sppquant.tasks.detection_post import Detections, box_iou
from tests.trt_stubs.fixtures import trt, trt_bindings

FIXTURES = (trt, trt_bindings)  # pytest fixtures, used by name

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "sppnet_digits_det.yaml"
EVAL = REPO / "calib_data" / "scenes-eval"
FAST = ["--set", "report.max_images=12", "--set", "calibration.max_images=16", "--set", "report.layer_images=2"]


# --------------------------------------------------------------------------- decoder vs a slow reference


def _slow_detect(props, logits, deltas, canvas, iou_thr, score_thr, cap):
    """Loops over every (region, class): softmax, Fast R-CNN decode, clip, then greedy NMS per class."""
    h, w = canvas
    cands = []
    for r, (p, z, d) in enumerate(zip(props, logits, deltas)):
        e = np.exp(np.asarray(z, np.float64) - max(z))
        probs = e / e.sum()
        pw, ph = p[2] - p[0], p[3] - p[1]
        for k in range(1, len(z)):
            dx, dy, dw, dh = (float(v) for v in d[4 * k:4 * k + 4])
            cx, cy = p[0] + 0.5 * pw + dx * pw, p[1] + 0.5 * ph + dy * ph
            bw, bh = pw * np.exp(min(dw, np.log(1000 / 16))), ph * np.exp(min(dh, np.log(1000 / 16)))
            box = [min(max(cx - bw / 2, 0), w), min(max(cy - bh / 2, 0), h),
                   min(max(cx + bw / 2, 0), w), min(max(cy + bh / 2, 0), h)]
            if probs[k] > score_thr:
                cands.append((float(probs[k]), r * (len(z) - 1) + k - 1, k - 1, box))
    kept = []
    for label in sorted({c[2] for c in cands}):
        pool = sorted((c for c in cands if c[2] == label), key=lambda c: (-c[0], c[1]))
        while pool:
            best = pool.pop(0)
            kept.append(best)
            pool = [c for c in pool if box_iou(np.array([best[3]]), np.array([c[3]]))[0, 0] <= iou_thr]
    kept.sort(key=lambda c: (-c[0], c[1]))
    return kept[:cap]


@pytest.mark.parametrize("seed", range(6))
def test_decode_images_matches_the_slow_reference_per_image(seed: int) -> None:
    """Two images in one batch, regions interleaved by batch index, mapped through each image's letterbox."""
    rng = np.random.default_rng(seed)
    k1, r = 4, 30
    xy = rng.uniform(0, 90, (r, 2))
    props = np.concatenate([xy, xy + rng.uniform(4, 40, (r, 2))], axis=1).astype(np.float32)
    batch = rng.integers(0, 2, r).astype(np.float32)
    rois = np.concatenate([batch[:, None], props], axis=1)
    logits = rng.normal(0, 2, (r, k1 + 1)).astype(np.float32)
    deltas = rng.normal(0, 0.2, (r, 4 * (k1 + 1))).astype(np.float32)
    geo = [Geometry((60, 120), (64, 128), (128, 128), (32, 0)), Geometry((200, 100), (128, 64), (128, 128), (0, 32))]
    settings = DetectionSettings(iou_threshold=0.4, score_threshold=0.1, max_detections=7)
    got = decode_images({"rois": rois, "class_logits": logits, "box_deltas": deltas}, geo, settings)
    for b, g in enumerate(geo):
        rows = batch == b
        want = _slow_detect(props[rows], logits[rows], deltas[rows], g.canvas, 0.4, 0.1, 7)
        assert len(got[b]) == len(want)
        np.testing.assert_allclose(got[b].scores, [c[0] for c in want], rtol=1e-6)
        assert got[b].labels.tolist() == [c[2] for c in want]
        net = np.array([c[3] for c in want]).reshape(-1, 4)
        src = np.stack([(net[:, 0] - g.offset[1]) / g.scale_x, (net[:, 1] - g.offset[0]) / g.scale_y,
                        (net[:, 2] - g.offset[1]) / g.scale_x, (net[:, 3] - g.offset[0]) / g.scale_y], axis=1)
        src = np.clip(src, 0, [g.source[1], g.source[0]] * 2)
        np.testing.assert_allclose(got[b].boxes, src, atol=1e-3)


def test_decoder_refuses_outputs_of_the_wrong_width() -> None:
    from sppquant.errors import ModelError

    rois = np.array([[0, 1, 1, 9, 9]], np.float32)
    geo = [Geometry((16, 16), (16, 16), (16, 16), (0, 0))]
    with pytest.raises(ModelError, match=r"box deltas \(R, 4\(K\+1\)\)"):
        decode_images({"rois": rois, "a": np.zeros((1, 11)), "b": np.zeros((1, 40))}, geo, DetectionSettings())
    with pytest.raises(ModelError, match="two outputs"):
        decode_images({"rois": rois, "a": np.zeros((1, 11))}, geo, DetectionSettings())


def bad_hook(proposals, outputs, canvas):
    """A user decoder that reads an output the model does not have."""
    return outputs["scores"]


def good_hook(proposals, outputs, canvas):
    """A user decoder: every region is a box of label 0 scored by its first output column."""
    s = next(iter(outputs.values()))[:, 0]
    return Detections(proposals, s, np.zeros(len(s), np.int64))


def test_decoder_hook_is_used_and_its_failures_are_model_errors() -> None:
    from sppquant.errors import ModelError

    rois = np.array([[0, 2, 2, 10, 10], [0, 4, 4, 8, 8]], np.float32)
    geo = [Geometry((32, 32), (16, 16), (16, 16), (0, 0))]  # source twice the canvas
    out = {"rois": rois, "x": np.array([[0.9], [0.2]], np.float32)}
    d = decode_images(out, geo, DetectionSettings(decoder=good_hook, decoder_name="t:good_hook"))[0]
    np.testing.assert_allclose(d.boxes, [[4, 4, 20, 20], [8, 8, 16, 16]])
    np.testing.assert_allclose(d.scores, [0.9, 0.2])
    with pytest.raises(ModelError, match="detection.decoder t:bad_hook failed.*KeyError"):
        decode_images(out, geo, DetectionSettings(decoder=bad_hook, decoder_name="t:bad_hook"))


# --------------------------------------------------------------------------- metrics on hand-built cases


def _gt(boxes_by_image: dict[int, list[tuple[list[float], int]]], cats=(0, 1)) -> dict:
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in boxes_by_image]
    anns = [{"id": n + 1, "image_id": i, "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0}
            for n, (i, (b, c)) in enumerate((i, x) for i, xs in boxes_by_image.items() for x in xs)]
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cats]}


def _det(i, box, score, cat):
    return {"image_id": i, "category_id": cat, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": score}


def test_coco_map_on_a_hand_built_case() -> None:
    """Class 0: 2 objects, a TP of IoU 0.78 (score .9) then a FP (.8): precision 1 up to recall .5, then 0.
    COCO's 101-point AP = 51/101 at IoU thresholds .50-.75 (6 of 10), 0 above. Class 1: exact, AP 1."""
    gt = _gt({1: [([0, 0, 100, 100], 0), ([120, 120, 180, 180], 0), ([10, 150, 50, 190], 1)]})
    dets = [_det(1, [0, 0, 100, 78], 0.9, 0), _det(1, [150, 0, 190, 40], 0.8, 0), _det(1, [10, 150, 50, 190], 0.7, 1)]
    res = coco_evaluate(gt, dets)
    ap0_50 = 51 / 101
    assert res["map50"] == pytest.approx((ap0_50 + 1.0) / 2, abs=1e-9)
    assert res["per_class_ap"]["c0"] == pytest.approx(0.6 * ap0_50, abs=1e-9)
    assert res["per_class_ap"]["c1"] == pytest.approx(1.0)
    assert res["map"] == pytest.approx((0.6 * ap0_50 + 1.0) / 2, abs=1e-9)
    curve = res["pr_curve_50"]
    assert len(curve["recall"]) == 101 and curve["precision"][0] == pytest.approx(1.0)
    assert coco_evaluate(gt, [])["map"] in (0.0, -1.0)  # nothing detected: no AP


def test_metrics_merge_exactly_and_score_map_with_category_ids() -> None:
    """Labels are positions among the sorted category ids (here 3 and 7); shards merge to the one-pass result."""
    gt = _gt({1: [([10, 10, 60, 60], 3)], 2: [([20, 20, 90, 90], 7)]}, cats=(7, 3))
    ident = Geometry((200, 200), (200, 200), (200, 200), (0, 0))
    rows = {1: ([10, 10, 60, 60], 0.9), 2: ([20, 20, 90, 90], 0.8)}

    def update(m: DetectionMetrics, i: int) -> None:
        box, s = rows[i]
        out = {"rois": np.array([[0, *box]], np.float32), "x": np.array([[s]], np.float32)}
        m.update(out, out, [DetectionTarget(i, ident)])

    hook = DetectionSettings(ground_truth=gt, decoder=lambda p, o, c: Detections(p, o["x"][:, 0], np.array([0])),
                             decoder_name="t:label0")
    a, b = DetectionMetrics(hook, True), DetectionMetrics(hook, True)
    update(a, 1)
    update(b, 2)
    merged = a.merge(b).result()
    whole = DetectionMetrics(hook, True)
    update(whole, 1)
    update(whole, 2)
    assert merged == whole.result()
    # label 0 = category 3: image 1 is right (AP 1 for c3), image 2's object (c7) is missed
    assert merged["per_class_ap"]["c3"] == pytest.approx(1.0) and merged["per_class_ap"]["c7"] == pytest.approx(0.0)
    assert merged["agreement_f1"] == 1.0


def test_box_f1_hand_case() -> None:
    ref = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
                     np.array([0.9, 0.8, 0.7]), np.array([1, 2, 3]))
    out = Detections(np.array([[0, 0, 10, 11], [20, 20, 30, 30], [60, 60, 70, 70], [41, 41, 50, 50]], np.float32),
                     np.array([0.95, 0.6, 0.9, 0.5]), np.array([1, 5, 3, 3]))
    # match: box 0 (IoU 10/11, same label); box 1 has another label; box 3 IoU 81/100 label 3 -> match
    assert box_f1(ref, out, 0.5) == (2, 3, 4)
    assert box_f1(ref, out, 0.95) == (0, 3, 4)


# --------------------------------------------------------------------------- bad input: one line, exit 2, nothing written


def _project(tmp_path: Path, n: int = 4) -> tuple[Path, dict]:
    """The demo config over a copy of ``n`` evaluation scenes and their annotations."""
    folder = tmp_path / "eval"
    folder.mkdir()
    gt = json.loads((EVAL / "instances.json").read_text())
    gt["images"] = gt["images"][:n]
    ids = {im["id"] for im in gt["images"]}
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in ids]
    for im in gt["images"]:
        shutil.copy(EVAL / im["file_name"], folder / im["file_name"])
    (folder / "instances.json").write_text(json.dumps(gt))
    cfg = DEMO.read_text().replace("../sppquant/demo/", str(REPO / "sppquant" / "demo") + "/")
    cfg = cfg.replace("../calib_data/scenes-eval/instances.json", str(folder / "instances.json"))
    cfg = cfg.replace("../calib_data/scenes-eval", str(folder)).replace("../calib_data/scenes", str(folder))
    cfg = cfg.replace("../out/", str(tmp_path / "out") + "/")
    (tmp_path / "det.yaml").write_text(cfg)
    return tmp_path / "det.yaml", gt


def _run_bad(tmp_path: Path, capsys: pytest.CaptureFixture, gt: dict | None, *extra: str) -> str:
    config = tmp_path / "det.yaml"
    if gt is not None:
        (tmp_path / "eval" / "instances.json").write_text(json.dumps(gt))
    out = tmp_path / "report-out"
    assert main(["report", "--config", str(config), "--output-dir", str(out), "--algorithms", "minmax", "-q",
                 *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert not out.exists() and not (tmp_path / "out").exists()  # nothing written
    return err[0]


def test_bad_coco_json_is_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, gt = _project(tmp_path)
    ann = str(tmp_path / "eval" / "instances.json")
    missing = dict(gt, images=gt["images"] + [dict(gt["images"][0], id=999, file_name="gone.jpg")])
    line = _run_bad(tmp_path, capsys, missing)
    assert ann in line and "missing" in line and "gone.jpg" in line
    unknown = json.loads(json.dumps(gt))
    unknown["annotations"][0]["category_id"] = 42
    line = _run_bad(tmp_path, capsys, unknown)
    assert ann in line and "unknown category id 42" in line
    outside = json.loads(json.dumps(gt))
    outside["annotations"][0]["bbox"][0] = gt["images"][0]["width"] + 5.0
    line = _run_bad(tmp_path, capsys, outside)
    assert ann in line and "outside" in line
    flipped = json.loads(json.dumps(gt))
    flipped["annotations"][1]["bbox"][2] = -3.0  # x2 < x1
    line = _run_bad(tmp_path, capsys, flipped)
    assert ann in line and "x2 < x1" in line
    broken = json.loads(json.dumps(gt))
    broken["annotations"][0]["bbox"] = [1, 2, "w"]
    line = _run_bad(tmp_path, capsys, broken)
    assert ann in line and "bbox" in line


def test_model_outputs_that_do_not_fit_the_decoder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _project(tmp_path)
    line = _run_bad(tmp_path, capsys, None, "--set", "detection.decoder=tests.test_detection_task:bad_hook")
    assert "sppnet_digits_det.onnx" in line and "bad_hook" in line and "KeyError" in line
    line = _run_bad(tmp_path, capsys, None, "--set", f"model.path={REPO / 'sppquant/demo/sppnet_digits.onnx'}")
    assert "sppnet_digits.onnx" in line and "decoder" in line


# --------------------------------------------------------------------------- TensorRT: two inputs, profiles


def test_region_profiles_cover_the_region_count(tmp_path: Path) -> None:
    from sppquant.pipeline import trt_settings as S

    config, _ = _project(tmp_path)
    cfg = load_config(config)
    assert S.region_inputs(cfg) == {"rois": 300}
    prof = S.extra_profiles(cfg)["rois"]
    assert prof.min == (1, 5) and prof.max == (cfg.build.max_batch * 300, 5)
    cal = S.extra_profiles(cfg, calibration=True)["rois"]
    assert cal.min == cal.opt == cal.max == (cfg.calibration.batch_size * 300, 5)


def test_calibrator_feeds_a_pointer_per_input_name(tmp_path: Path, trt: ModuleType) -> None:
    """Over TensorRT's real bindings (native libraries stubbed): image and regions of the same batch."""
    from sppquant.backends.tensorrt.calibrator import make_calibrator
    from sppquant.backends.tensorrt.memory import HostMemory
    from sppquant.data import calibration_set, iter_batches
    from sppquant.pipeline import trt_settings as S
    from sppquant.pipeline.context import open_model
    from sppquant.pipeline.trt_cache import TableCache
    from sppquant.pipeline.trt_feed import BatchFeeder, pad_regions

    config, _ = _project(tmp_path, n=5)
    cfg = load_config(config, ["calibration.batch_size=2", "detection.max_regions=40"])
    shape = S.calibration_shape(cfg)
    feeds = open_model(cfg).extra_feeds
    mem = HostMemory()
    feeder = BatchFeeder(cfg, shape, mem, progress=False, extra_feeds=feeds, regions={"rois": 80})
    base, header = S.calibrator_base("minmax")
    cal = make_calibrator(trt, base, feeder, TableCache(cfg, cfg.calibration.output, "minmax", header, "10.16.1"))
    want = list(iter_batches(calibration_set(cfg.calibration), cfg.preprocess, [shape[2:]], 2, "drop",
                             progress=False, extra_feeds=feeds))
    got = []
    while (ptrs := cal.get_batch(["rois", "image"])) is not None:
        rois, image = np.empty((80, 5), np.float32), np.empty(shape, np.float32)
        mem.download(ptrs[0], rois)
        mem.download(ptrs[1], image)
        got.append((rois, image))
    assert len(got) == len(want) == 2 and mem.allocations == 2  # one buffer per input, reused
    for (rois, image), batch in zip(got, want):
        np.testing.assert_array_equal(image, batch.inputs[0])
        real = batch.extra[0]["rois"]
        assert len(real) <= 80 and np.all(np.bincount(real[:, 0].astype(int)) <= 40)
        np.testing.assert_array_equal(rois, pad_regions(real, 80))
        np.testing.assert_array_equal(rois[:len(real)], real)  # the batch's own regions first, then repeated
    assert cal.get_batch(["image", "masks"]) is None
    with pytest.raises(KeyError, match="masks"):
        cal.raise_pending()
    cal.close()
    assert mem.live == 0


def test_runner_splits_region_rows_with_their_images() -> None:
    from sppquant.backends.tensorrt.runner import chunk_feeds
    from sppquant.errors import UserError

    image = np.arange(5)[:, None, None, None] * np.ones((5, 1, 2, 2))
    rois = np.array([[0, 1, 1, 2, 2], [1, 0, 0, 1, 1], [3, 2, 2, 3, 3], [3, 0, 0, 2, 2], [4, 1, 1, 1, 1]], np.float32)
    part = chunk_feeds({"image": image, "rois": rois}, "image", 2, 4)
    assert part["image"][:, 0, 0, 0].tolist() == [2, 3]
    np.testing.assert_array_equal(part["rois"], [[1, 2, 2, 3, 3], [1, 0, 0, 2, 2]])
    with pytest.raises(UserError, match="sorted by batch index"):
        chunk_feeds({"image": image, "rois": rois[::-1].copy()}, "image", 0, 2)


# --------------------------------------------------------------------------- predict and the demo report


def test_predict_json_and_draw(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import cv2

    config, gt = _project(tmp_path, n=3)
    files = [str(tmp_path / "eval" / im["file_name"]) for im in gt["images"]]
    draw = tmp_path / "drawn"
    assert main(["predict", "--config", str(config), *files, "--json", "--draw", str(draw)]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in preds] == files
    for p, im in zip(preds, gt["images"]):
        for d in p["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= im["width"] and 0 <= y1 <= y2 <= im["height"]  # source pixels
            assert 0 < d["score"] <= 1 and 0 <= d["label"] <= 9
        truth = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        kept = [d for d in p["detections"] if d["score"] >= 0.5]
        assert any(box_iou(np.array([d["box"]]), np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                            a["bbox"][1] + a["bbox"][3]]]))[0, 0] > 0.5
                   and d["label"] == a["category_id"] for d in kept for a in truth)
        drawn = cv2.imread(str(draw / (Path(im["file_name"]).stem + ".png")))
        source = cv2.imread(str(tmp_path / "eval" / im["file_name"]))
        assert drawn.shape == source.shape and np.any(drawn != source)
    assert main(["predict", "--config", str(REPO / "configs" / "sppnet_digits.yaml"), files[0],
                 "--draw", str(tmp_path / "x")]) == 2
    assert "only detection" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_demo_report_small_and_fast(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rep"
    fast = [*FAST, "--set", f"calibration.output={tmp_path / 'cal' / 'det.cache'}"]  # tables where calibrate puts them
    assert main(["report", "--config", str(DEMO), "--output-dir", str(out), "--algorithms", "minmax,percentile",
                 "--json", "-q", "--set", "report.batch_size=4", *fast]) == 0
    capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    p = rep["precisions"]
    assert set(p) == {"fp32", "fp16", "int8", "int8_percentile"}
    assert p["fp32"]["map50"] > 0.8 and 0.3 < p["fp32"]["map"] < p["fp32"]["map50"]
    assert abs(p["fp16"]["map50"] - p["fp32"]["map50"]) < 0.02 and p["fp16"]["agreement_f1"] > 0.95
    int8 = [v for k, v in p.items() if k.startswith("int8")]
    assert len(int8) == 2 and all(0.5 < v["map50"] <= 1 for v in int8)
    assert {v["algorithm"] for v in int8} == {"minmax", "percentile"}
    assert p["fp32"]["agreement_f1"] == 1.0 and len(p["fp32"]["per_class_ap"]) == 10
    assert {"pr_curves.png", "samples.png"} <= set(rep["plots"])
    table = Path(rep["tables"]["minmax"]["path"])
    assert table.parent == tmp_path / "cal" and "rois" not in table.read_text() and "relu4" in table.read_text()
    md = (out / "report.md").read_text()
    assert "mAP@.5" in md and "pr_curves.png" in md and "labels is 'none'" not in md
    assert "labels: COCO annotations" in md and "(10 classes)" in md
    row = next(line for line in md.splitlines() if line.startswith("| zero |"))  # per-class AP table
    assert row.split("|")[2].strip() in ("-", f"{100 * p['fp32']['per_class_ap']['zero']:.1f}")
    # two shards (local executor): the same mAP, F1 and per-class AP as the one-pass run
    out2 = tmp_path / "rep2"
    assert main(["report", "--config", str(DEMO), "--output-dir", str(out2), "--algorithms", "minmax", "-q",
                 "--table", f"minmax={table}", "--set", "executor.workers=2", "--set", "report.batch_size=4", *fast]) == 0
    p2 = json.loads((out2 / "report.json").read_text())["precisions"]
    for key in ("fp32", "int8"):
        for metric in ("map", "map50", "agreement_f1", "per_class_ap", "detections"):
            assert p2[key][metric] == p[key][metric], (key, metric)


def test_tune_scores_detection_by_map50(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """tune reads the COCO ground truth: its metric is mAP@.5 on each half, not agreement."""
    config, _ = _project(tmp_path, n=8)
    plan = tmp_path / "plan.json"
    rc = main(["tune", "--config", str(config), "--max-drop", "0", "--algorithm", "percentile_99_9", "--output", str(plan),
               "-q", "--set", "report.layer_images=2"])
    assert rc in (0, 3), capsys.readouterr().err  # 3: budget not met on the held-out half (4 images)
    got = json.loads(plan.read_text())
    assert got["metric"] == "map50" and got["tune_images"] == got["holdout_images"] == 4
    assert 0 < got["fp32"] <= 1 and 0 < got["holdout_fp32"] <= 1
    # no drop allowed: the chosen set (k = 0 when INT8 already reaches FP32's mAP@.5 on these 4 images, as the
    # retrained detector does) held the budget on the tune half; the curve lists every evaluation in search order
    assert got["curve"]
    assert any(k == len(got["kept_high_precision"]) and v >= got["fp32"] for k, v in got["curve"])


def test_proposal_hook_answers_are_checked() -> None:
    from sppquant.errors import ConfigError
    from sppquant.pipeline.detection import proposal_feeds

    x = np.zeros((2, 3, 8, 8), np.float32)
    geo = [Geometry((8, 8), (8, 8), (8, 8), (0, 0))] * 2
    rois = proposal_feeds(lambda im: [[1, 1, 4, 4], [0, 0, 2, 2], [2, 2, 6, 6]], "rois", max_regions=2)(x, geo)["rois"]
    np.testing.assert_array_equal(rois, [[0, 1, 1, 4, 4], [0, 0, 0, 2, 2], [1, 1, 1, 4, 4], [1, 0, 0, 2, 2]])
    whole = proposal_feeds(lambda im: [], "rois")(x, geo)["rois"]  # none: one whole-canvas region per image
    np.testing.assert_array_equal(whole, [[0, 0, 0, 8, 8], [1, 0, 0, 8, 8]])
    with pytest.raises(ConfigError, match=r"detection.proposals m:f returned \[2, 5\]"):
        proposal_feeds(lambda im: np.zeros((2, 5)), "rois", name="m:f")(x, geo)
    with pytest.raises(ConfigError, match="non-finite"):
        proposal_feeds(lambda im: [[0, 0, np.nan, 1]], "rois", name="m:f")(x, geo)
