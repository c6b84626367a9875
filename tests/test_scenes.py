"""Digit scenes: split by source scan, deterministic rendering, exact boxes, COCO ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the demo extra (scikit-learn) is needed for the scenes")
pytest.importorskip("skimage", reason="scikit-image (bundled textures) is needed for the scenes")

from sppquant.demo import scenes as S  # noqa: E402
from tests.conftest import REPO  # noqa: E402


@pytest.fixture(scope="module")
def split() -> S.SceneSplit:
    return S.load_scene_split()


def test_split_is_by_source_scan_and_stratified(split: S.SceneSplit) -> None:
    sets = [set(split.train), set(split.calib), set(split.eval)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(map(len, sets)) == len(split.labels) == 1797
    for part in (split.calib, split.eval):
        assert set(split.labels[part]) == set(range(10))


def test_scenes_are_deterministic_and_order_free(split: S.SceneSplit) -> None:
    later = S.make_scene(split, S.STREAM_EVAL, 3)
    first = [S.make_scene(split, S.STREAM_EVAL, i) for i in range(4)]
    assert np.array_equal(first[3].image, later.image) and np.array_equal(first[3].boxes, later.boxes)
    assert not np.array_equal(first[0].image.shape, first[1].image.shape) or not np.array_equal(first[0].image,
                                                                                                first[1].image)
    other_epoch = S.make_scene(split, S.STREAM_EVAL, 3, epoch=1)
    assert other_epoch.image.shape != later.image.shape or not np.array_equal(other_epoch.image, later.image)


def test_boxes_are_exact_ink_boxes_from_the_right_pool(split: S.SceneSplit) -> None:
    for stream in (S.STREAM_TRAIN, S.STREAM_CALIB, S.STREAM_EVAL):
        for i in range(6):
            scene = S.make_scene(split, stream, i)
            h, w = scene.image.shape[:2]
            assert S.MIN_SIDE <= h and w <= S.MAX_SIDE
            assert 1 <= len(scene.labels) <= S.MAX_DIGITS and len(scene.boxes) == len(scene.labels)
            assert np.all(scene.boxes[:, :2] >= 0) and np.all(scene.boxes[:, 2] <= w) and np.all(scene.boxes[:, 3] <= h)
            assert np.all(scene.boxes[:, 2:] > scene.boxes[:, :2])
            assert set(scene.digit_ids) <= set(split.pool(stream))
            assert np.array_equal(split.labels[scene.digit_ids], scene.labels)


def test_single_digit_box_is_tight_on_ink() -> None:
    """On a flat canvas the box is exactly where the glyph's alpha reaches the ink threshold."""
    rng = np.random.default_rng(0)
    img = np.full((60, 80, 3), 128.0, np.float32)
    glyph = np.zeros((8, 8), np.float32)
    glyph[2:6, 3:5] = 16.0
    box = S._draw_digit(rng, img, glyph, [])
    assert box is not None
    changed = np.abs(img - 128.0).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert xs.min() <= box[0] and box[2] <= xs.max() + 1 and ys.min() <= box[1] and box[3] <= ys.max() + 1
    x1, y1, x2, y2 = box.astype(int)
    assert changed[y1:y2, x1:x2].mean() > 0.8  # the box holds ink, not the blurred fringe


def test_coco_instances_format(split: S.SceneSplit) -> None:
    scenes = [S.make_scene(split, S.STREAM_EVAL, i) for i in range(3)]
    coco = S.coco_instances(scenes, [f"s{i}.jpg" for i in range(3)])
    assert [c["id"] for c in coco["categories"]] == list(range(10))
    assert len(coco["annotations"]) == sum(len(s.labels) for s in scenes)
    ann = coco["annotations"][0]
    x1, y1, x2, y2 = scenes[0].boxes[0]
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["image_id"] == 1
    json.dumps(coco)


def test_shipped_eval_set_matches_the_generator(split: S.SceneSplit) -> None:
    path = REPO / "calib_data" / "scenes-eval" / "instances.json"
    if not path.exists():
        pytest.skip("calib_data/scenes-eval not present")
    coco = json.loads(path.read_text())
    for image in coco["images"][:3]:
        scene = S.make_scene(split, S.STREAM_EVAL, image["id"] - 1)
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert (image["height"], image["width"]) == scene.image.shape[:2]
        assert np.allclose(boxes, [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in scene.boxes])


def test_fresh_training_epochs_are_new_scenes_and_deterministic() -> None:
    """--fresh: epoch e renders scenes (seed, train, i, e); the pool's order does not change the stream."""
    pytest.importorskip("cv2")
    from multiprocessing import get_context

    from sppquant.demo.train_detector import _make_train_image, fresh_epochs

    with get_context("fork").Pool(2) as pool:
        a = list(fresh_epochs(pool, 3, 2, jpeg=False))
        b = list(fresh_epochs(pool, 3, 2, jpeg=False))
    assert [len(e) for e in a] == [3, 3]
    for ea, eb in zip(a, b):
        for x, y in zip(ea, eb):
            np.testing.assert_array_equal(x.tensor, y.tensor)
            np.testing.assert_array_equal(x.proposals, y.proposals)
    assert not np.array_equal(a[0][0].tensor, a[1][0].tensor)  # epoch 1 is not epoch 0 again
    np.testing.assert_array_equal(a[1][2].gt_boxes, _make_train_image((2, S.SEED, False, 1)).gt_boxes)
