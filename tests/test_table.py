"""Calibration table text format: versions, formatting, lenient reading, strict errors, atomic writes."""

from __future__ import annotations

import contextlib
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sppquant.calibration.table as table_mod
from sppquant.calibration import (
    CalibrationTable,
    format_table,
    from_bytes,
    parse_table,
    read_table,
    scale_from_amax,
    table_bytes,
    trt_version_code,
    write_table,
)
from sppquant.errors import TableError

HEADER = "TRT-101601-EntropyCalibration2"


@pytest.mark.parametrize(
    "version, code",
    [
        ("10.16.1", 101601),
        ("10.0.0", 100000),
        ("10.3.0.26", 100300),
        ("8.6.1", 8601),
        ("8.6.1.post1", 8601),
        ("8.5", 8500),
        ("10.12.0+cuda12", 101200),
    ],
)
def test_trt_version_code(version, code):
    assert trt_version_code(version) == code


@pytest.mark.parametrize("bad", ["", "ten", "10", "10.100.0", "8.10.1"])
def test_trt_version_code_rejects(bad):
    with pytest.raises(TableError):
        trt_version_code(bad)


def test_real_value_hand_checked():
    # 3b66eddc: sign 0, exponent 0x76 = 118 -> 2**-9, mantissa 0x66eddc -> 1.80413...
    scale = (1 + 0x66EDDC / 2**23) * 2.0**-9
    assert math.isclose(scale, 0.0035237, rel_tol=1e-5)
    t = parse_table(f"{HEADER}\ninput: 3b66eddc\n", "model.cache")
    assert t.scales["input"] == scale
    assert t.amax("input") == 916.5 / 2048  # (i + 0.5) * max|x| / 2048 for an input in [0, 1]
    built = CalibrationTable.from_amax(101601, "EntropyCalibration2", {"input": 916.5 / 2048})
    assert format_table(built) == f"{HEADER}\ninput: 3b66eddc\n"
    assert scale_from_amax(916.5 / 2048) == scale


def test_format_is_lowercase_unpadded_big_endian():
    t = CalibrationTable(101601, "MinMaxCalibration", {"a": 1.0, "b:0": 2.0**-137, "c": 0.5})
    text = format_table(t)
    assert text == "TRT-101601-MinMaxCalibration\na: 3f800000\nb:0: 1000\nc: 3f000000\n"
    assert struct.unpack(">f", bytes.fromhex("3f800000"))[0] == 1.0


def test_reading_accepts_real_world_variants():
    text = (
        f"{HEADER}\r\n"
        "input: 3B66EDDC\r\n"
        "conv1:0: 3c010a14\r\n"  # name with ':' -> split on the last ': '
        "odd: name: 0003c010a14\r\n"  # zero-padded
        "zero: 0\r\n"  # TensorRT writes 0 for a zero scale
        "\r\n\r\n"
    )
    t = parse_table(text, "model.cache")
    assert t.version == 101601 and t.algorithm == "EntropyCalibration2"
    assert list(t.scales) == ["input", "conv1:0", "odd: name", "zero"]
    assert t.scales["conv1:0"] == t.scales["odd: name"] == struct.unpack(">f", bytes.fromhex("3c010a14"))[0]
    assert t.scales["zero"] == 0.0
    assert parse_table("TRT-8601-LegacyCalibration\n").scales == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "model.cache: empty"),
        ("\n\n", "model.cache: empty"),
        ("TRT-101601-Percentile\na: 3f800000\n", "model.cache:1: unknown calibration algorithm 'Percentile'"),
        ("input: 3f800000\n", "model.cache:1: expected a header"),
        ("TRT-x-EntropyCalibration2\n", "model.cache:1: expected a header"),
        (f"{HEADER}\na: 3f800000\nfoo\n", "model.cache:3: expected 'name: hexscale', got 'foo'"),
        (f"{HEADER}\na: 3f80000g\n", "model.cache:2: expected 'name: hexscale'"),
        (f"{HEADER}\na: 13f800000\n", "model.cache:2: expected 'name: hexscale'"),
        (f"{HEADER}\n: 3f800000\n", "model.cache:2: expected 'name: hexscale'"),
        (f"{HEADER}\na:3f800000\n", "model.cache:2: expected 'name: hexscale'"),
        (f"{HEADER}\na: 7fc00000\n", "model.cache:2: tensor 'a' has an unusable scale"),
        (f"{HEADER}\na: 7f800000\n", "model.cache:2: tensor 'a' has an unusable scale"),
        (f"{HEADER}\na: bf800000\n", "model.cache:2: tensor 'a' has an unusable scale"),
        (f"{HEADER}\na: 80000000\n", "model.cache:2: tensor 'a' has an unusable scale"),
        (f"{HEADER}\na: 3f800000\na: 3f800000\n", "model.cache:3: tensor 'a' appears twice"),
    ],
)
def test_reading_rejects_garbage_naming_source_and_line(text, message):
    with pytest.raises(TableError) as err:
        parse_table(text, "model.cache")
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(
    "scale, why",
    [(float("nan"), "NaN"), (float("inf"), "infinite"), (-1.0, "negative"), (0.0, "zero"), (1e39, "overflows")],
)
def test_writing_refuses_unusable_scales(scale, why, tmp_path):
    t = CalibrationTable(101601, "EntropyCalibration2", {"ok": 0.1, "conv3": scale})
    with pytest.raises(TableError, match=f"'conv3' .*{why}"):
        format_table(t)
    with pytest.raises(TableError):
        write_table(tmp_path / "x.cache", t)
    assert not (tmp_path / "x.cache").exists()


def test_bad_names_and_algorithms_refused():
    with pytest.raises(TableError):
        format_table(CalibrationTable(101601, "EntropyCalibration2", {"a\nb": 1.0}))
    with pytest.raises(TableError, match="not one TensorRT knows"):
        CalibrationTable(101601, "percentile", {})


positive_f32 = st.floats(min_value=2.0**-149, max_value=2.0**127, width=32)
names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, positive_f32, max_size=8), st.sampled_from(["EntropyCalibration2", "MinMaxCalibration"]))
def test_round_trip_is_exact(scales, algo):
    # Names with ':', ': ', spaces, unicode all split right on the last ': '.
    t = CalibrationTable(100300, algo, scales)
    back = parse_table(format_table(t), "rt")
    assert back == t
    for name, s in scales.items():
        assert np.float32(back.scales[name]).view(np.uint32) == np.float32(s).view(np.uint32)
    assert from_bytes(table_bytes(t)) == t


def test_scales_are_float32_values():
    t = CalibrationTable(101601, "EntropyCalibration2", {"a": 0.1})
    assert t.scales["a"] == float(np.float32(0.1))
    assert parse_table(format_table(t)) == t


def test_read_write_files(tmp_path):
    path = tmp_path / "sub" / "model.cache"
    t = CalibrationTable.from_amax(101601, "EntropyCalibration2", {"input": 1.0, "spp:out": 12.5})
    write_table(path, t)
    assert path.read_bytes() == table_bytes(t)
    assert read_table(path) == t
    with pytest.raises(TableError, match="not found"):
        read_table(tmp_path / "missing.cache")
    (tmp_path / "bin.cache").write_bytes(b"TRT-101601-EntropyCalibration2\n\xff\xfe: 0\n")
    with pytest.raises(TableError, match="bin.cache: calibration table is not UTF-8"):
        read_table(tmp_path / "bin.cache")
    with pytest.raises(TableError, match=r"garbage.cache:2: expected 'name: hexscale'"):
        (tmp_path / "garbage.cache").write_text("TRT-101601-EntropyCalibration2\nnonsense\n")
        read_table(tmp_path / "garbage.cache")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_interrupted_write_leaves_previous_table(tmp_path, monkeypatch, exc):
    path = tmp_path / "model.cache"
    old = CalibrationTable.from_amax(101601, "EntropyCalibration2", {"a": 1.0})
    write_table(path, old)
    before = path.read_bytes()
    real_open = table_mod.atomic_open

    class Failing:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, s):
            self.n += 1
            if self.n == 3:
                raise exc("interrupted mid-write")
            return self.fh.write(s)

    @contextlib.contextmanager
    def failing_open(p, mode="w"):
        with real_open(p, mode) as fh:
            yield Failing(fh)

    monkeypatch.setattr(table_mod, "atomic_open", failing_open)
    new = CalibrationTable.from_amax(101601, "EntropyCalibration2", {f"t{i}": i + 1.0 for i in range(5)})
    with pytest.raises(exc):
        write_table(path, new)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cache"]  # no temp file left
