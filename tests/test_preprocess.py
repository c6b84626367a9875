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


# --------------------------------------------------------------------------- issue 11: defaults unchanged


def _legacy_preprocess(image: np.ndarray, cfg: PreprocessConfig, size: tuple[int, int]) -> tuple:
    """The preprocessing as it was before issue 11 (commit 098586a), kept verbatim as the reference."""
    from sppquant.preprocess import _FULL_SCALE, INTERPOLATIONS, _to_channels

    th, tw = size
    hwc = _to_channels(image, cfg.color)
    img = hwc.astype(np.float32) * np.float32(1.0 / _FULL_SCALE[image.dtype])
    h, w = img.shape[:2]
    interp = INTERPOLATIONS[cfg.interpolation]
    if cfg.resize == "stretch":
        out = cv2.resize(img, (tw, th), interpolation=interp).reshape(th, tw, -1)
        sx, sy, ox, oy = tw / w, th / h, 0, 0
    else:
        r = min(th / h, tw / w)
        nh, nw = max(1, min(th, round(h * r))), max(1, min(tw, round(w * r)))
        resized = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=interp)
        resized = resized.reshape(nh, nw, -1)
        oy, ox = ((th - nh) // 2, (tw - nw) // 2) if cfg.pad_position == "center" else (0, 0)
        out = np.full((th, tw, img.shape[2]), cfg.pad_value, dtype=np.float32)
        out[oy : oy + nh, ox : ox + nw] = resized
        sx, sy = nw / w, nh / h
    mean = np.asarray(cfg.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(cfg.std, dtype=np.float32)
    x = (out - mean) * inv_std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32), sx, sy, ox, oy


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_default_policies_are_byte_identical_to_before_issue_11(resize: str) -> None:
    """Tables calibrated before the new policies stay valid: same bytes, same geometry, same fingerprint."""
    rng = np.random.default_rng(42)
    cases = [(30, 60, 32, 32), (55, 352, 48, 48), (7, 10, 32, 32), (5, 64, 32, 32), (24, 20, 24, 20), (1, 90, 16, 16)]
    cases += [tuple(int(v) for v in rng.integers(1, 80, 4)) for _ in range(40)]
    for i, (h, w, th, tw) in enumerate(cases):
        color = ("rgb", "bgr", "gray")[i % 3]
        n = 1 if color == "gray" else 3
        cfg = PreprocessConfig(color=color, resize=resize, interpolation=("linear", "area", "cubic", "nearest", "lanczos")[i % 5],
                               pad_value=0.3, pad_position=("center", "top_left")[i % 2],
                               mean=(0.4,) * n, std=(0.3,) * n)
        dtype = np.uint16 if i % 4 == 3 else np.uint8
        img = rng.integers(0, np.iinfo(dtype).max + 1, (h, w, 3) if i % 5 else (h, w), dtype=dtype)
        new = preprocess_image(img, cfg, (th, tw))
        tensor, sx, sy, ox, oy = _legacy_preprocess(img, cfg, (th, tw))
        assert new.tensor.tobytes() == tensor.tobytes(), (h, w, th, tw)
        assert (new.scale_x, new.scale_y, new.offset_x, new.offset_y) == (sx, sy, ox, oy)


def test_fingerprints_of_existing_configs_are_unchanged() -> None:
    """Values computed with the code before issue 11: adding fields must not make existing tables stale."""
    assert PreprocessConfig().fingerprint() == "a40dab37116eecd31f522f7a51f1b414b44318ff3e0208fc5cccd4cbce3cc3bd"
    gray = PreprocessConfig(color="gray", resize="stretch", interpolation="area", pad_value=0.5,
                            pad_position="top_left", mean=(0.5,), std=(0.5,))
    assert gray.fingerprint() == "19babff0fc70c200c38ec13f039d817c058957ad87a80172c3228ab3be2ddf67"
    from pathlib import Path

    from sppquant.config import load_config

    demo = load_config(Path(__file__).resolve().parents[1] / "configs" / "sppnet_digits.yaml")
    assert demo.preprocess_fingerprint() == "1edf7cb557374c5a28ff8bc3a95a726bdceb1d9f039df9a36f312ff91f5e51d4"
    # a new field at its default, written out explicitly, is the same preprocessing
    assert PreprocessConfig(rounding="round", pad_to="fixed", scale_up=True).fingerprint() == PreprocessConfig().fingerprint()
