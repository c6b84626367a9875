"""Resize policies and rounding rules (issue 11, part 2).

Every expected size, offset and pixel below was worked out by hand (the arithmetic is
in the comments); the reference-pipeline tests re-derive sizes with independent,
straightforward transcriptions of the arithmetic PaddleOCR and YOLOv5 use.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from sppquant.config import config_from_dict, load_config
from sppquant.errors import ConfigError
from sppquant.preprocess import (
    PreprocessConfig,
    group_by_shape,
    output_size,
    output_size_range,
    plan,
    preprocess_image,
)

REPO = Path(__file__).resolve().parents[1]
WHITE = 255


def const(h: int, w: int, value: int = WHITE) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


# Paddle-style normalisation: x/255 -> (x - 0.5) / 0.5, padding 0 after normalisation = 0.5 before.
PADDLE = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pad_value=0.5)


# --------------------------------------------------------------------------- fixed_height


@pytest.mark.parametrize("rounding, source, width", [
    # 48 * (101 / 40) = 121.2 -> round 121, ceil 122, floor 121
    ("round", (40, 101), 121), ("ceil", (40, 101), 122), ("floor", (40, 101), 121),
    # 48 * (101 / 30) = 161.6 -> round 162, ceil 162, floor 161
    ("round", (30, 101), 162), ("ceil", (30, 101), 162), ("floor", (30, 101), 161),
    # 48 * (35 / 32) = 52.5 exactly -> round half to even 52, ceil 53, floor 52
    ("round", (32, 35), 52), ("ceil", (32, 35), 53), ("floor", (32, 35), 52),
    # 48 * (33 / 32) = 49.5 exactly -> round half to even 50
    ("round", (32, 33), 50),
    # 48 * (100 / 10) = 480 > 192 -> clamped to the maximum width 192 (the text is squeezed)
    ("round", (10, 100), 192), ("ceil", (10, 100), 192), ("floor", (10, 100), 192),
    # 48 * (1 / 200) = 0.24 -> round 0 and floor 0 become 1 (never empty), ceil 1
    ("round", (200, 1), 1), ("ceil", (200, 1), 1), ("floor", (200, 1), 1),
])
def test_fixed_height_width_rule(rounding: str, source: tuple[int, int], width: int) -> None:
    cfg = PreprocessConfig(resize="fixed_height", rounding=rounding, pad_position="top_left")
    geo = plan(cfg, source, (48, 192))
    assert geo.content == (48, width) and geo.canvas == (48, 192) and geo.offset == (0, 0)
    assert geo.scale_y == 48 / source[0] and geo.scale_x == width / source[1]


@pytest.mark.parametrize("rounding, width", [("round", 121), ("ceil", 122)])
def test_fixed_height_pixels_paddle_classifier(rounding: str, width: int) -> None:
    """PaddleOCR's text-direction classifier: 48 x 192, width ceil(48 * w / h), padded right with 0."""
    img = const(40, 101)
    cfg = PreprocessConfig(resize="fixed_height", rounding=rounding, pad_position="top_left", **PADDLE)
    out = preprocess_image(img, cfg, (48, 192))
    t = out.tensor
    assert t.shape == (3, 48, 192)
    # white content: (1.0 - 0.5) / 0.5 = 1.0 in columns 0 .. width-1; padding (0.5 - 0.5) / 0.5 = 0 after
    assert np.all(t[:, :, :width] == 1.0) and np.all(t[:, :, width:] == 0.0)
    assert t[0, 0, 120] == 1.0 and t[0, 47, 121] == (1.0 if rounding == "ceil" else 0.0)
    assert out.content_size == (48, width) and (out.offset_x, out.offset_y) == (0, 0)
    # the content's right/bottom edge maps to the source's right/bottom edge
    assert out.to_source(width, 48) == pytest.approx((101.0, 40.0))
    assert out.to_source(0, 0) == (0.0, 0.0)


def test_fixed_height_pixel_values_nearest() -> None:
    """2x4 source, columns 0, 51, 102, 153 (0, .2, .4, .6); height 4 -> width 4 * (4 / 2) = 8.

    Nearest upscaling by exactly 2 repeats every column twice; columns 8, 9 are padding.
    """
    img = np.zeros((2, 4, 3), np.uint8)
    img[:, :, :] = np.array([0, 51, 102, 153], np.uint8)[None, :, None]
    cfg = PreprocessConfig(resize="fixed_height", rounding="ceil", interpolation="nearest",
                           pad_position="top_left", pad_value=1.0)
    t = preprocess_image(img, cfg, (4, 10)).tensor
    want_row = np.array([0, 0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 1.0, 1.0], np.float32)
    for c in range(3):
        for y in range(4):
            np.testing.assert_allclose(t[c, y], want_row, rtol=1e-6)


def test_fixed_height_dynamic_width_and_multiple() -> None:
    # 48 * (101 / 40) = 121.2 -> ceil 122; pad_to none: the tensor is 48 x 122
    none = PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="none")
    assert output_size(none, (40, 101), (48, 320)) == (48, 122)
    assert preprocess_image(const(40, 101), none, (48, 320)).tensor.shape == (3, 48, 122)
    # pad_to multiple 32: width 122 -> 128 (padded on the right with top_left); the height stays 48
    mult = PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="multiple", multiple=32,
                            pad_position="top_left")
    geo = plan(mult, (40, 101), (48, 320))
    assert geo.canvas == (48, 128) and geo.content == (48, 122) and geo.offset == (0, 0)
    t = preprocess_image(const(40, 101), mult, (48, 320)).tensor
    assert t.shape == (3, 48, 128) and np.all(t[:, :, :122] == 1.0) and np.all(t[:, :, 122:] == 0.0)
    # centred: (128 - 122) // 2 = 3 columns of padding on the left, 3 on the right
    centred = plan(PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="multiple", multiple=32),
                   (40, 101), (48, 320))
    assert centred.offset == (0, 3)


# --------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("rounding, source, content, offset", [
    # 7x10 into 32x32: r = min(32/7, 32/10) = 3.2; 7 * 3.2 = 22.4; 10 * 3.2 = 32
    ("round", (7, 10), (22, 32), (5, 0)), ("ceil", (7, 10), (23, 32), (4, 0)), ("floor", (7, 10), (22, 32), (5, 0)),
    # 5x64: r = 0.5; 5 * 0.5 = 2.5 -> round half to even 2, ceil 3, floor 2; offsets (32 - n) // 2
    ("round", (5, 64), (2, 32), (15, 0)), ("ceil", (5, 64), (3, 32), (14, 0)), ("floor", (5, 64), (2, 32), (15, 0)),
    # 3x64: 1.5 -> round 2 (even), ceil 2, floor 1
    ("round", (3, 64), (2, 32), (15, 0)), ("ceil", (3, 64), (2, 32), (15, 0)), ("floor", (3, 64), (1, 32), (15, 0)),
])
def test_letterbox_rounding(rounding: str, source: tuple[int, int], content: tuple[int, int],
                            offset: tuple[int, int]) -> None:
    cfg = PreprocessConfig(rounding=rounding)
    geo = plan(cfg, source, (32, 32))
    assert (geo.content, geo.canvas, geo.offset) == (content, (32, 32), offset)
    out = preprocess_image(const(*source), PreprocessConfig(rounding=rounding, pad_value=0.25), (32, 32))
    oy, ch = offset[0], content[0]
    # rows oy .. oy+ch-1 are white (1.0), every other row is padding (0.25)
    assert np.all(out.tensor[:, oy:oy + ch] == 1.0)
    assert np.all(out.tensor[:, :oy] == 0.25) and np.all(out.tensor[:, oy + ch:] == 0.25)
    assert (out.offset_x, out.offset_y) == (0, oy) and out.scale_y == ch / source[0]


def test_letterbox_pad_to_multiple_yolo_auto() -> None:
    # 300x401 into 640x640: r = 640/401; 300 * r = 478.80 -> round 479, floor 478; width 640
    # canvas: ceil(479 / 32) * 32 = 480; centred offset (480 - 479) // 2 = 0, floor: (480 - 478) // 2 = 1
    rnd = PreprocessConfig(pad_to="multiple", multiple=32, pad_value=0.0)
    flr = PreprocessConfig(pad_to="multiple", multiple=32, pad_value=0.0, rounding="floor")
    g_r, g_f = plan(rnd, (300, 401), (640, 640)), plan(flr, (300, 401), (640, 640))
    assert (g_r.content, g_r.canvas, g_r.offset) == ((479, 640), (480, 640), (0, 0))
    assert (g_f.content, g_f.canvas, g_f.offset) == ((478, 640), (480, 640), (1, 0))
    t_r = preprocess_image(const(300, 401), rnd, (640, 640)).tensor
    t_f = preprocess_image(const(300, 401), flr, (640, 640)).tensor
    assert t_r.shape == t_f.shape == (3, 480, 640)
    assert np.all(t_r[:, 0] == 1.0) and np.all(t_r[:, 479] == 0.0)
    assert np.all(t_f[:, 0] == 0.0) and np.all(t_f[:, 1:479] == 1.0) and np.all(t_f[:, 479] == 0.0)


def test_scale_up_false_keeps_small_images() -> None:
    # 20x10 into 64x64 without enlarging: r = min(64/20, 64/10, 1) = 1 -> content 20x10, centred (22, 27)
    cfg = PreprocessConfig(scale_up=False)
    geo = plan(cfg, (20, 10), (64, 64))
    assert (geo.content, geo.offset, geo.scale_x) == ((20, 10), (22, 27), 1.0)
    assert plan(PreprocessConfig(), (20, 10), (64, 64)).content == (64, 32)


# --------------------------------------------------------------------------- long_side


@pytest.mark.parametrize("rounding, source, canvas", [
    # PaddleOCR DBNet, limit_type max, 960: r = min(960/1000, 1) = 0.96; 1000 * r = 960; 583 * r = 559.68
    # floor 559 -> round(559 / 32 = 17.47) = 17 -> 544;  ceil/round 560 -> round(17.5) = 18 (even) -> 576
    ("floor", (1000, 583), (960, 544)), ("ceil", (1000, 583), (960, 576)), ("round", (1000, 583), (960, 576)),
    # small image, never enlarged: 100x50 stays; round(100/32 = 3.125) = 3 -> 96, round(50/32 = 1.5625) = 2 -> 64
    ("floor", (100, 50), (96, 64)),
    # tiny: 10x5 -> round(10/32) = 0 -> at least one multiple: 32x32
    ("floor", (10, 5), (32, 32)),
])
def test_long_side_paddle_dbnet(rounding: str, source: tuple[int, int], canvas: tuple[int, int]) -> None:
    cfg = PreprocessConfig(resize="long_side", scale_up=False, rounding=rounding, snap="round", multiple=32,
                           pad_to="none")
    geo = plan(cfg, source, (960, 960))
    assert geo.canvas == geo.content == canvas and geo.offset == (0, 0)
    out = preprocess_image(const(*source), cfg, (960, 960))
    assert out.tensor.shape == (3, *canvas) and np.all(out.tensor == 1.0)
    # the aspect changes slightly: each axis has its own exact scale
    assert (out.scale_y, out.scale_x) == (canvas[0] / source[0], canvas[1] / source[1])
    assert out.to_source(canvas[1], canvas[0]) == pytest.approx((source[1], source[0]))


@pytest.mark.parametrize("source, content", [
    # target [736, 1280]: short side 736 unless the long side would pass 1280 (detectron2's rule)
    # 480x640: r = min(736/480, 1280/640) = 1.5333; 640 * r = 981.33 -> round 981
    ((480, 640), (736, 981)), ((640, 480), (981, 736)),
    # 100x1000: r = min(736/100, 1280/1000) = 1.28 -> 128 x 1280
    ((100, 1000), (128, 1280)), ((1000, 100), (1280, 128)),
    # square 50x50: r = min(736/50, 1280/50) = 14.72 -> 736 x 736
    ((50, 50), (736, 736)),
])
def test_long_side_is_orientation_free(source: tuple[int, int], content: tuple[int, int]) -> None:
    cfg = PreprocessConfig(resize="long_side", pad_to="none")
    assert plan(cfg, source, (736, 1280)).content == content
    assert plan(cfg, source, (1280, 736)).content == content  # the target's order does not matter


def test_long_side_square_target_equals_letterbox_content() -> None:
    """For [N, N] the long side becomes N: the same content as letterbox, without the fixed canvas."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        src = (int(rng.integers(1, 3000)), int(rng.integers(1, 3000)))
        for rounding in ("round", "ceil", "floor"):
            a = plan(PreprocessConfig(resize="long_side", rounding=rounding, pad_to="none"), src, (640, 640))
            b = plan(PreprocessConfig(rounding=rounding), src, (640, 640))
            assert a.content == b.content and max(a.content) in ((639, 640) if rounding == "floor" else (640,))


def test_floor_follows_float64_on_the_limiting_side_too() -> None:
    """2552 * (640 / 2552) = 639.99999999999989 in float64 -> floor 639, exactly what PaddleOCR's int(h * ratio)
    gives; 753 * (640 / 2552) = 188.84 -> 188. With round or ceil the long side is 640."""
    assert 2552 * (640 / 2552) < 640
    floor = PreprocessConfig(resize="long_side", rounding="floor", pad_to="none")
    assert plan(floor, (753, 2552), (640, 640)).content == (188, 639)
    assert plan(PreprocessConfig(resize="long_side", pad_to="none"), (753, 2552), (640, 640)).content == (189, 640)
    ceil = plan(PreprocessConfig(resize="long_side", rounding="ceil", pad_to="none"), (753, 2552), (640, 640))
    assert ceil.content == (189, 640)  # ceil(639.99999999999989) = 640, never above the limit


# --------------------------------------------------------------------------- reference pipelines


def paddle_rec_width(h: int, w: int, img_h: int, img_w: int) -> int:
    """PaddleOCR rec/cls resize_norm_img: ceil of img_h * (w / h), capped at img_w."""
    ratio = w / float(h)
    return img_w if math.ceil(img_h * ratio) > img_w else int(math.ceil(img_h * ratio))


def paddle_det_size(h: int, w: int, limit: int, limit_type: str) -> tuple[int, int]:
    """PaddleOCR DetResizeForTest type 0: scale by the long side, truncate, round to 32 (at least 32)."""
    if limit_type == "max":
        ratio = (float(limit) / h if h > w else float(limit) / w) if max(h, w) > limit else 1.0
    else:  # resize_long
        ratio = float(limit) / max(h, w)
    rh, rw = int(h * ratio), int(w * ratio)
    return max(int(round(rh / 32) * 32), 32), max(int(round(rw / 32) * 32), 32)


def yolo_letterbox(h: int, w: int, new: int, stride: int, auto: bool, scaleup: bool) -> tuple[tuple, tuple, tuple]:
    """YOLOv5 letterbox: r = min(new/h, new/w) (<= 1 without scaleup), round, pad (new - n) % stride if auto."""
    r = min(new / h, new / w)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = new - nw, new - nh
    if auto:
        dw, dh = dw % stride, dh % stride
    top, left = int(round(dh / 2 - 0.1)), int(round(dw / 2 - 0.1))
    return (nh, nw), (nh + dh, nw + dw), (top, left)


def test_matches_paddleocr_rec_on_many_sizes() -> None:
    cfg = PreprocessConfig(resize="fixed_height", rounding="ceil", pad_position="top_left")
    for h in range(1, 120):
        for w in range(1, 700, 3):
            assert plan(cfg, (h, w), (48, 320)).content == (48, paddle_rec_width(h, w, 48, 320)), (h, w)


@pytest.mark.parametrize("limit_type, scale_up", [("max", False), ("resize_long", True)])
@pytest.mark.parametrize("limit", [960, 1008])  # 1008: floor(1073 * (1008 / 1073)) = 1007 -> 992, not 1024
def test_matches_paddleocr_det_on_many_sizes(limit_type: str, scale_up: bool, limit: int) -> None:
    cfg = PreprocessConfig(resize="long_side", scale_up=scale_up, rounding="floor", snap="round", multiple=32,
                           pad_to="none")
    rng = np.random.default_rng(11)
    sources = [(int(rng.integers(1, 4000)), int(rng.integers(1, 4000))) for _ in range(3000)] + [(1073, 357)]
    for h, w in sources:
        assert output_size(cfg, (h, w), (limit, limit)) == paddle_det_size(h, w, limit, limit_type), (h, w)
    # 1073 * (1008 / 1073) = 1007.99999999999989 -> 1007 -> round(31.47) = 31 -> 992 (an exact 1008 would give
    # round(31.5) = 32 -> 1024); 357 * (1008 / 1073) = 335.37 -> 335 -> round(10.47) = 10 -> 320
    if limit == 1008 and scale_up is False:
        assert output_size(cfg, (1073, 357), (1008, 1008)) == (992, 320)


@pytest.mark.parametrize("auto, scaleup", [(True, True), (False, True), (True, False)])
def test_matches_yolov5_letterbox_on_many_sizes(auto: bool, scaleup: bool) -> None:
    cfg = PreprocessConfig(scale_up=scaleup, **({"pad_to": "multiple", "multiple": 32} if auto else {}))
    rng = np.random.default_rng(5)
    for _ in range(3000):
        h, w = int(rng.integers(1, 2500)), int(rng.integers(1, 2500))
        content, canvas, offset = yolo_letterbox(h, w, 640, 32, auto, scaleup)
        if 0 in content:
            continue  # e.g. 1739x1: YOLOv5 computes width 0 and cv2.resize fails; ours is 1 (tested above)
        geo = plan(cfg, (h, w), (640, 640))
        assert (geo.content, geo.canvas, geo.offset) == (content, canvas, offset), (h, w)


def test_paddle_classifier_tensor_bytes() -> None:
    """Pixel-level: PaddleOCR's classifier preprocessing (nearest, so resizing before or after /255 agree)."""
    rng = np.random.default_rng(8)
    cfg = PreprocessConfig(color="bgr", resize="fixed_height", rounding="ceil", interpolation="nearest",
                           pad_position="top_left", **PADDLE)
    for h, w in [(40, 101), (31, 77), (12, 500), (60, 20)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rw = paddle_rec_width(h, w, 48, 192)
        ref = cv2.resize(img, (rw, 48), interpolation=cv2.INTER_NEAREST).astype("float32")
        ref = ref.transpose((2, 0, 1)) / 255
        ref -= 0.5
        ref /= 0.5
        want = np.zeros((3, 48, 192), np.float32)
        want[:, :, :rw] = ref
        np.testing.assert_allclose(preprocess_image(img, cfg, (48, 192)).tensor, want, atol=1e-6)


# --------------------------------------------------------------------------- shapes for batching and TensorRT


def test_tensor_shape_always_equals_output_size_and_maps_back() -> None:
    configs = [
        PreprocessConfig(), PreprocessConfig(resize="stretch"), PreprocessConfig(rounding="ceil", pad_to="none"),
        PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="multiple", multiple=16),
        PreprocessConfig(resize="long_side", pad_to="multiple", multiple=32, pad_position="top_left"),
        PreprocessConfig(resize="long_side", rounding="floor", snap="ceil", multiple=8, pad_to="none"),
    ]
    rng = np.random.default_rng(2)
    for cfg in configs:
        for _ in range(12):
            h, w = int(rng.integers(1, 90)), int(rng.integers(1, 90))
            out = preprocess_image(const(h, w), cfg, (40, 64))
            assert out.tensor.shape[1:] == output_size(cfg, (h, w), (40, 64))
            ch, cw = out.content_size
            assert out.to_source(out.offset_x + cw, out.offset_y + ch) == pytest.approx((w, h))
            assert np.all(out.tensor[:, out.offset_y:out.offset_y + ch, out.offset_x:out.offset_x + cw] == 1.0)


RANGE_CASES = [
    (PreprocessConfig(), [(8, 12)], ((8, 12), (8, 12))),
    (PreprocessConfig(resize="stretch"), [(8, 12), (16, 4)], ((8, 4), (16, 12))),
    (PreprocessConfig(pad_to="none"), [(8, 12)], ((1, 1), (8, 12))),
    (PreprocessConfig(rounding="ceil", pad_to="multiple", multiple=4), [(9, 12)], ((4, 4), (12, 12))),
    (PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="none"), [(6, 20)], ((6, 1), (6, 20))),
    (PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="multiple", multiple=8), [(6, 20)],
     ((6, 8), (6, 24))),
    # widths 1..20 snapped: round(1/8) = 0 -> at least 8; round(20/8 = 2.5) = 2 (half to even) -> 16
    (PreprocessConfig(resize="fixed_height", snap="round", multiple=8, pad_to="none"), [(6, 20)], ((6, 8), (6, 16))),
    (PreprocessConfig(resize="long_side", pad_to="none"), [(6, 10)], ((1, 1), (10, 10))),
    (PreprocessConfig(resize="long_side", scale_up=False, rounding="floor", snap="round", multiple=4, pad_to="none"),
     [(10, 10)], ((4, 4), (8, 8))),  # round(10/4 = 2.5) = 2 -> 8
]


@pytest.mark.parametrize("cfg, targets, expected", RANGE_CASES)
def test_output_size_range_hand_values_and_brute_force(cfg: PreprocessConfig, targets: list, expected: tuple) -> None:
    """Hand values first; then every source up to 60x60 plus extreme aspect ratios must land inside the
    bounds, and each bound must be reached by some source."""
    assert output_size_range(cfg, targets) == expected
    (hmin, wmin), (hmax, wmax) = expected
    sources = [(h, w) for h in range(1, 61) for w in range(1, 61)] + [(1, 5000), (5000, 1), (3, 4000), (4000, 3)]
    seen = [output_size(cfg, s, t) for t in targets for s in sources]
    assert all(hmin <= h <= hmax and wmin <= w <= wmax for h, w in seen)
    assert min(h for h, _ in seen) == hmin and max(h for h, _ in seen) == hmax
    assert min(w for _, w in seen) == wmin and max(w for _, w in seen) == wmax


def test_group_by_shape() -> None:
    sizes = [(48, 128), (48, 96), (48, 128), (32, 32), (48, 96), (48, 128)]
    assert group_by_shape(sizes) == [[0, 2, 5], [1, 4], [3]]
    assert group_by_shape([]) == []
    cfg = PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="multiple", multiple=32)
    # 48*101/40 = 121.2 -> 122 -> 128; 48*50/40 = 60 -> 64; 48*90/40 = 108 -> 128
    sizes = [output_size(cfg, s, (48, 320)) for s in [(40, 101), (40, 50), (40, 90)]]
    assert sizes == [(48, 128), (48, 64), (48, 128)] and group_by_shape(sizes) == [[0, 2], [1]]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kwargs, key", [
    (dict(resize="stretch", rounding="ceil"), "rounding"),
    (dict(resize="stretch", pad_to="none"), "pad_to"),
    (dict(resize="stretch", scale_up=False), "scale_up"),
    (dict(resize="fixed_height", scale_up=False), "scale_up"),
    (dict(resize="long_side"), "pad_to"),
    (dict(pad_to="multiple"), "multiple"),
    (dict(multiple=32), "multiple"),
    (dict(pad_to="multiple", multiple=0), "multiple"),
    (dict(snap="round", multiple=32), "snap"),
    (dict(snap="round", pad_to="none"), "multiple"),
    (dict(rounding="nearest"), "rounding"),
])
def test_invalid_or_ineffective_combinations_are_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^preprocess\.{key}: "):
        PreprocessConfig(**kwargs)


def test_new_keys_load_from_yaml_and_enter_the_fingerprint() -> None:
    base = {"model": {"path": "m.onnx"}, "input": {"sizes": [[48, 320]]}}
    cfg = config_from_dict({**base, "preprocess": {"resize": "fixed_height", "rounding": "ceil", "pad_to": "multiple",
                                                   "multiple": 32, "pad_position": "top_left"}})
    assert cfg.preprocess.rounding == "ceil" and cfg.preprocess.multiple == 32
    with pytest.raises(ConfigError, match=r"preprocess\.rounding: expected one of round, ceil, floor"):
        config_from_dict({**base, "preprocess": {"rounding": "up"}})
    fps = {PreprocessConfig(**kw).fingerprint() for kw in [
        {}, {"rounding": "ceil"}, {"rounding": "floor"}, {"scale_up": False}, {"pad_to": "none"},
        {"pad_to": "multiple", "multiple": 32}, {"pad_to": "multiple", "multiple": 16},
        {"snap": "round", "multiple": 32, "pad_to": "none"}, {"snap": "floor", "multiple": 32, "pad_to": "none"},
        {"resize": "fixed_height"}, {"resize": "long_side", "pad_to": "none"}]}
    assert len(fps) == 11


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    cfg = load_config(path)
    lo, hi = output_size_range(cfg.preprocess, cfg.input.sizes)
    assert lo[0] <= hi[0] and lo[1] <= hi[1]
    if cfg.input.dynamic is not None:  # the example's TensorRT profile holds every shape it can produce
        assert all(a >= b for a, b in zip(cfg.input.dynamic.max, hi))
        assert all(a <= b for a, b in zip(cfg.input.dynamic.min, lo))


def test_mixed_sizes_in_one_batch_are_a_one_line_error() -> None:
    from sppquant.preprocess import stack_batch

    cfg = PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="none")
    tensors = [preprocess_image(const(40, w), cfg, (48, 320)).tensor for w in (101, 50)]
    with pytest.raises(ConfigError, match=r"different tensor sizes \(\(48, 122\) and \(48, 60\)\).*group_by_shape"):
        stack_batch(tensors)
    assert stack_batch(tensors[:1]).shape == (1, 3, 48, 122)


DOC_EXAMPLES = [  # the "Worked examples" table of docs/preprocessing.md, row by row
    (dict(resize="fixed_height", pad_position="top_left"), (40, 101), (48, 192), (48, 121), (48, 192), (0, 0)),
    (dict(resize="fixed_height", rounding="ceil", pad_position="top_left"), (40, 101), (48, 192), (48, 122),
     (48, 192), (0, 0)),
    (dict(resize="fixed_height", rounding="floor", pad_position="top_left"), (30, 101), (48, 192), (48, 161),
     (48, 192), (0, 0)),
    (dict(resize="fixed_height"), (32, 35), (48, 192), (48, 52), (48, 192), (0, 70)),
    (dict(resize="fixed_height", rounding="ceil", pad_to="multiple", multiple=32, pad_position="top_left"),
     (40, 101), (48, 320), (48, 122), (48, 128), (0, 0)),
    (dict(rounding="ceil"), (7, 10), (32, 32), (23, 32), (32, 32), (4, 0)),
    (dict(), (5, 64), (32, 32), (2, 32), (32, 32), (15, 0)),
    (dict(rounding="floor", pad_to="multiple", multiple=32), (300, 401), (640, 640), (478, 640), (480, 640), (1, 0)),
    (dict(resize="long_side", scale_up=False, rounding="floor", snap="round", multiple=32, pad_to="none"),
     (1000, 583), (960, 960), (960, 544), (960, 544), (0, 0)),
    (dict(resize="long_side", scale_up=False, rounding="ceil", snap="round", multiple=32, pad_to="none"),
     (1000, 583), (960, 960), (960, 576), (960, 576), (0, 0)),
    (dict(resize="long_side", pad_to="none"), (480, 640), (736, 1280), (736, 981), (736, 981), (0, 0)),
]


@pytest.mark.parametrize("kwargs, source, target, content, canvas, offset", DOC_EXAMPLES)
def test_documented_worked_examples(kwargs: dict, source: tuple, target: tuple, content: tuple, canvas: tuple,
                                    offset: tuple) -> None:
    geo = plan(PreprocessConfig(**kwargs), source, target)
    assert (geo.content, geo.canvas, geo.offset) == (content, canvas, offset)
