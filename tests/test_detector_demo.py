"""The SPP-net detector demo: exact RoI pooling in PyTorch, the hand-built export, the shipped model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.conftest import REPO
from tests.test_roi_spp_onnx import _random_case, _slow_reference

torch = pytest.importorskip("torch", reason="the demo extra (torch) is needed")

from sppquant.demo import detector as D  # noqa: E402
from sppquant.ops.roi_spp.onnx import ROI_SPP_DOMAIN, ROI_SPP_OP_TYPE, roi_spp_node_attributes  # noqa: E402

SHIPPED = REPO / "sppquant" / "demo" / "sppnet_digits_det.onnx"


def test_torch_roi_spp_equals_the_op_rule() -> None:
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(150):
        x, rois = _random_case(rng, 0.25)
        x = np.nan_to_num(x, nan=0.0, neginf=-7.0, posinf=7.0)  # training maps are finite
        rois = rois[(rois[:, 0] >= 0) & (rois[:, 0] < len(x)) & np.isfinite(rois).all(axis=1)]  # and regions valid
        got = D.roi_spp(torch.from_numpy(x), rois, (1, 2, 3, 4), 0.25).numpy()
        np.testing.assert_array_equal(got, _slow_reference(x, rois, (1, 2, 3, 4), 0.25))
        checked += len(rois)
    assert checked > 300


def test_torch_roi_spp_gradient_goes_to_each_bins_maximum() -> None:
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.permutation(2 * 3 * 9 * 11).reshape(2, 3, 9, 11).astype(np.float32), requires_grad=True)
    rois = np.array([[1, 0, 0, 43, 35], [0, 8, 4, 30, 20], [1, -8, -8, 12, 60]], np.float32)
    out = D.roi_spp(x, rois, (1, 2), 0.25)
    weights = torch.from_numpy(rng.uniform(size=tuple(out.shape)).astype(np.float32))
    (out * weights).sum().backward()
    expected = np.zeros(x.shape, np.float32)
    flat = x.detach().numpy().reshape(-1)
    for r, row in enumerate(out.detach().numpy()):
        for k, value in enumerate(row):
            if value != 0:  # distinct values: the position of each pooled maximum is unique
                expected.reshape(-1)[np.flatnonzero(flat == value)[0]] += weights[r, k].item()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


def _random_detector(seed: int) -> D.SppNetDetector:
    torch.manual_seed(seed)
    model = D.SppNetDetector()
    for m in model.modules():  # non-trivial BatchNorm statistics so folding is exercised
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_export_matches_pytorch_in_onnxruntime(tmp_path) -> None:
    from sppquant.demo.eval_detector import ort_session
    from sppquant.demo.export_detector import to_onnx

    model = _random_detector(0)
    proto = to_onnx(model)
    path = tmp_path / "detector.onnx"
    path.write_bytes(proto.SerializeToString())
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 3, 64, 80)).astype(np.float32)
    rois = np.array([[0, 3, 4, 40, 50], [1, 10, 0, 79, 63], [1, 30, 30, 33, 33], [0, -5, 50, 20, 90]], np.float32)
    logits, deltas = ort_session(path).run(["class_logits", "box_deltas"], {"image": image, "rois": rois})
    with torch.no_grad():
        t_logits, t_deltas = model(torch.from_numpy(image), rois)
    np.testing.assert_allclose(logits, t_logits.numpy(), rtol=1e-4, atol=1e-4)
    std = np.tile(np.asarray(D.DELTA_STD, np.float32), D.NUM_CLASSES)
    np.testing.assert_allclose(deltas, t_deltas.numpy() * std, rtol=1e-4, atol=1e-4)  # raw deltas in ONNX


def test_shipped_model_interface() -> None:
    if not SHIPPED.exists():
        pytest.skip("shipped detector not built")
    model = onnx.load(str(SHIPPED))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image", "rois"]
    assert [o.name for o in model.graph.output] == ["class_logits", "box_deltas"]
    dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert dims == [["R", 11], ["R", 44]]
    (node,) = [n for n in model.graph.node if n.domain == ROI_SPP_DOMAIN]
    assert node.op_type == ROI_SPP_OP_TYPE and list(node.input) == ["relu4", "rois"]
    assert roi_spp_node_attributes(node) == {"levels": D.LEVELS, "spatial_scale": D.SPATIAL_SCALE, "pooling": "max"}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"sppquant"
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert SHIPPED.stat().st_size < 3_000_000


def test_shipped_model_finds_the_digits_of_a_few_eval_scenes() -> None:
    """A regression check of the shipped weights through the whole deployed path (10 scenes, no training)."""
    eval_dir = REPO / "calib_data" / "scenes-eval"
    if not SHIPPED.exists() or not (eval_dir / "instances.json").exists():
        pytest.skip("shipped detector or eval scenes missing")
    from sppquant.demo.eval_detector import detect_image, ort_session
    from sppquant.preprocess import load_image
    from sppquant.tasks.detection_post import box_iou

    coco = json.loads((eval_dir / "instances.json").read_text())
    session = ort_session(SHIPPED)
    found = total = 0
    for image in coco["images"][:10]:
        dets, _, _ = detect_image(session, load_image(eval_dir / image["file_name"]))
        confident = [d for d in dets if d["score"] >= 0.5]
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            total += 1
            gt = np.array([[ann["bbox"][0], ann["bbox"][1], ann["bbox"][0] + ann["bbox"][2],
                            ann["bbox"][1] + ann["bbox"][3]]])
            found += any(d["category_id"] == ann["category_id"] and box_iou(
                gt, np.array([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2],
                               d["bbox"][1] + d["bbox"][3]]]))[0, 0] >= 0.5 for d in confident)
    assert total >= 20 and found / total >= 0.8


def test_export_of_a_wider_detector_matches_pytorch(tmp_path) -> None:
    """``channels`` / ``hidden`` reach the export (it reads the widths from the layers)."""
    from sppquant.demo.eval_detector import ort_session
    from sppquant.demo.export_detector import to_onnx

    torch.manual_seed(1)
    model = D.SppNetDetector((3, 8, 12, 20, 24), 40).eval()
    path = tmp_path / "wide.onnx"
    path.write_bytes(to_onnx(model).SerializeToString())
    image = np.random.default_rng(1).standard_normal((1, 3, 48, 40)).astype(np.float32)
    rois = np.array([[0, 2, 3, 30, 40], [0, 10, 10, 14, 30]], np.float32)
    logits, _ = ort_session(path).run(["class_logits", "box_deltas"], {"image": image, "rois": rois})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(torch.from_numpy(image), rois)[0].numpy(), rtol=1e-4, atol=1e-4)
    assert model.fc1.in_features == 24 * 21 and model.fc2.out_features == 40


def _greedy_full_matrix(boxes: np.ndarray, iou: float) -> np.ndarray:
    """The obvious greedy dedupe: the whole pairwise IoU matrix first (the proposals' former code)."""
    from sppquant.demo.proposals import _pairwise_iou

    ious, keep, gone = _pairwise_iou(boxes, boxes), [], np.zeros(len(boxes), bool)
    for i in range(len(boxes)):
        if not gone[i]:
            keep.append(i)
            gone |= ious[i] > iou
    return boxes[keep]


@pytest.mark.parametrize("seed", range(4))
def test_lazy_dedupe_equals_the_full_matrix_greedy(seed: int) -> None:
    from sppquant.demo.proposals import _dedupe

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (600, 2)).astype(np.float32)
    wh = rng.uniform(0, 30, (600, 2)).astype(np.float32)  # includes empty and near-duplicate boxes
    boxes = np.concatenate([xy, xy + wh], axis=1)
    boxes = np.concatenate([boxes, boxes[:200] + rng.uniform(-1, 1, (200, 4)).astype(np.float32)])
    full = _greedy_full_matrix(boxes, 0.5)
    np.testing.assert_array_equal(_dedupe(boxes, 0.5), full)
    np.testing.assert_array_equal(_dedupe(boxes, 0.5, limit=37), full[:37])


@pytest.mark.parametrize("argv, words", [(["--channels", "3,8,x,8,8"], "--channels 3,8,x,8,8"),
                                         (["--channels", "4,8,8,8,8"], "starting with 3"),
                                         (["--hidden", "0"], "--hidden 0"),
                                         (["--device", "tpu"], "--device tpu")])
def test_train_detector_refuses_bad_options(argv, words, tmp_path, caplog) -> None:
    from sppquant.demo.train_detector import main

    out = tmp_path / "m.onnx"
    assert main([*argv, "--output", str(out), "--scenes", "8", "--epochs", "1"]) == 2
    assert words in caplog.text and not out.exists()
