from __future__ import annotations

import cv2
import numpy as np
import pytest

from sppquant.data import ImageSet, iter_batches
from sppquant.errors import DataError
from sppquant.preprocess import PreprocessConfig, decode_image, load_image, preprocess_image


def encode(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_hand_computed_letterbox() -> None:
    # A 2x4 BGR image, letterboxed to 4x4: scale 1 (no resize), one padded row above and below.
    img = np.zeros((2, 4, 3), np.uint8)
    img[..., 0] = 51  # blue = 0.2
    img[..., 2] = 255  # red = 1.0
    cfg = PreprocessConfig(color="rgb", pad_value=0.5, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    out = preprocess_image(img, cfg, (4, 4))
    t = out.tensor
    assert t.shape == (3, 4, 4) and t.dtype == np.float32 and t.flags["C_CONTIGUOUS"]
    # row 0 and 3 are padding: (0.5 - 0.5) / std = 0
    assert np.all(t[:, 0, :] == 0) and np.all(t[:, 3, :] == 0)
    np.testing.assert_allclose(t[0, 1:3], (1.0 - 0.5) / 0.5)  # R
    np.testing.assert_allclose(t[1, 1:3], (0.0 - 0.5) / 0.25)  # G
    np.testing.assert_allclose(t[2, 1:3], (0.2 - 0.5) / 0.5, rtol=1e-6)  # B
    assert (out.offset_x, out.offset_y, out.scale_x, out.scale_y) == (0, 1, 1.0, 1.0)
    assert out.to_source(2, 1) == (2.0, 0.0)


def test_letterbox_geometry_and_mapping_back() -> None:
    img = np.full((30, 60, 3), 200, np.uint8)
    out = preprocess_image(img, PreprocessConfig(pad_position="center"), (32, 32))
    assert out.scale_x == pytest.approx(32 / 60) and out.scale_y == pytest.approx(16 / 30)
    assert (out.offset_x, out.offset_y) == (0, 8)
    assert out.to_source(32, 24) == pytest.approx((60.0, 30.0))
    top_left = preprocess_image(img, PreprocessConfig(pad_position="top_left"), (32, 32))
    assert top_left.offset_y == 0 and np.all(top_left.tensor[:, 16:, :] == 0)


def test_stretch_fills_target() -> None:
    img = np.full((10, 30, 3), 255, np.uint8)
    out = preprocess_image(img, PreprocessConfig(resize="stretch"), (20, 20))
    assert np.all(out.tensor == 1.0) and (out.offset_x, out.offset_y) == (0, 0)


def test_channel_orders_gray_bgra_and_16bit_agree() -> None:
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    rgb = preprocess_image(bgr, PreprocessConfig(color="rgb"), (9, 7)).tensor
    as_bgr = preprocess_image(bgr, PreprocessConfig(color="bgr"), (9, 7)).tensor
    np.testing.assert_array_equal(rgb, as_bgr[::-1])
    bgra = np.dstack([bgr, np.full((9, 7), 17, np.uint8)])
    np.testing.assert_array_equal(preprocess_image(decode_image(encode(bgra), "x"), PreprocessConfig(), (9, 7)).tensor, rgb)
    wide = bgr.astype(np.uint16) * 257  # exact 8 -> 16 bit
    np.testing.assert_allclose(preprocess_image(decode_image(encode(wide), "x"), PreprocessConfig(), (9, 7)).tensor, rgb,
                               atol=1e-6)
    gray = rng.integers(0, 256, (5, 5), dtype=np.uint8)
    g3 = preprocess_image(decode_image(encode(gray), "x"), PreprocessConfig(), (5, 5)).tensor
    assert np.all(g3[0] == g3[1]) and np.all(g3[1] == g3[2])
    g1 = preprocess_image(gray, PreprocessConfig(color="gray", mean=(0.0,), std=(1.0,)), (5, 5)).tensor
    assert g1.shape == (1, 5, 5)
    np.testing.assert_allclose(g1[0], gray / 255.0, rtol=1e-6)


@pytest.mark.parametrize("payload, match", [(b"", "empty file"), (b"\x89PNG\r\n\x1a\ngarbage", "not a decodable"),
                                            (b"hello world", "not a decodable")])
def test_bad_bytes_are_data_errors(payload: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match):
        decode_image(payload, "bad.png")


def test_truncated_png(tmp_path) -> None:
    data = encode(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        load_image(path)


def test_pipeline_batches_are_byte_identical_to_direct_preprocessing(image_folder) -> None:
    """The batching pipeline (calibration, reports) and a direct call (inference) give the same bytes."""
    cfg = PreprocessConfig(mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    paths = tuple(sorted(image_folder.rglob("*.png")))
    sizes = [(16, 16), (24, 20)]
    batches = list(iter_batches(ImageSet(paths), cfg, sizes, batch_size=3, workers=2, progress=False))
    for k, size in enumerate(sizes):
        got = np.concatenate([b.inputs[k] for b in batches])
        want = np.stack([preprocess_image(load_image(p), cfg, size).tensor for p in paths])
        assert got.tobytes() == want.tobytes()


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = PreprocessConfig(mean=(0.5, 0.5, 0.5))
    assert a.fingerprint() == PreprocessConfig(mean=(0.5, 0.5, 0.5)).fingerprint()
    assert a.fingerprint() != PreprocessConfig(mean=(0.5, 0.5, 0.4)).fingerprint()
    assert a.fingerprint() != PreprocessConfig(mean=(0.5, 0.5, 0.5), interpolation="area").fingerprint()
