"""TensorRT calibration tables (calibration caches): the text format, read and written.

Format (DESIGN.md §2): line 1 ``TRT-<V>-<Algo>``; then one ``name: hex`` line per
tensor, hex being the big-endian IEEE-754 float32 bits of ``scale = amax / 127``,
lowercase, no ``0x``, not zero-padded (``0`` for zero). Names may contain ``:``, so a
line is split on its LAST ``": "``.

Reading is lenient about what real caches contain (zero-padded or upper-case hex,
CRLF, blank lines) and strict about everything else: a ``TableError`` names the source
and line. With ``drop_zero_inf=True`` (tables TensorRT 7.2-10.13 wrote, which hold ``0``
and ``7f800000`` (inf) entries for some tensors) those entries are dropped as missing,
with one warning per table; NaN, negative and malformed entries are still errors.
Writing refuses scales TensorRT cannot use (NaN, inf, <= 0). Scales are held as float32
values, so text round trips are exact.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sppquant.atomic import atomic_open
from sppquant.errors import TableError

log = logging.getLogger(__name__)

TRT_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")

_HEADER = re.compile(r"TRT-(\d+)-([A-Za-z0-9]+)")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}|0+[0-9a-fA-F]{1,8}")


def _f32(x: float) -> float:
    """``x`` rounded to float32; left alone if it overflows, so writing can say so."""
    with np.errstate(over="ignore"):
        y = float(np.float32(x))
    return y if math.isfinite(y) or not math.isfinite(x) else float(x)


def scale_from_amax(amax: float) -> float:
    """``amax / 127`` computed in float32, as TensorRT does."""
    return float(np.float32(amax) / np.float32(127.0))


def trt_version_code(version: str) -> int:
    """The number in the header: ``10.16.1`` -> 101601 (TensorRT >= 10), ``8.6.1`` -> 8601.

    Extra parts (``10.16.1.11``, ``8.6.1.post1``) are ignored; a missing patch is 0.
    """
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:[.+-].*|post\d+)?", version.strip())
    if not m:
        raise TableError(f"TensorRT version {version!r} is not 'major.minor.patch'")
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    if major >= 10:
        if minor > 99 or patch > 99:
            raise TableError(f"TensorRT version {version!r} does not fit the cache header")
        return major * 10000 + minor * 100 + patch
    if minor > 9 or patch > 99:
        raise TableError(f"TensorRT version {version!r} does not fit the cache header")
    return major * 1000 + minor * 100 + patch


@dataclass(frozen=True)
class CalibrationTable:
    """A calibration table: header version code, TensorRT algorithm, per-tensor scales.

    Scales are rounded to float32 on construction (the table stores nothing finer), so
    ``parse_table(format_table(t)) == t``.
    """

    version: int
    algorithm: str
    scales: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.algorithm not in TRT_ALGORITHMS:
            raise TableError(
                f"calibration algorithm {self.algorithm!r} is not one TensorRT knows: {', '.join(TRT_ALGORITHMS)}"
            )
        if not isinstance(self.version, int) or self.version <= 0:
            raise TableError(f"calibration table version must be a positive int, got {self.version!r}")
        object.__setattr__(self, "scales", {str(k): _f32(v) for k, v in self.scales.items()})

    @classmethod
    def from_amax(cls, version: int, algorithm: str, amax: Mapping[str, float]) -> CalibrationTable:
        """Build from thresholds: ``scale = amax / 127`` in float32."""
        return cls(version, algorithm, {name: scale_from_amax(a) for name, a in amax.items()})

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}"

    def amax(self, name: str) -> float:
        """The threshold the scale stands for, ``scale * 127`` in float32 like TensorRT.

        Float32 undoes ``scale_from_amax`` for real values (``3b66eddc`` -> 916.5/2048).
        """
        return float(np.float32(self.scales[name]) * np.float32(127.0))


def _line_safe(name: str) -> bool:
    """A name the reader gets back unchanged: one line for `str.splitlines`, which breaks on \\n \\r \\v
    \\f \\x1c-\\x1e \\x85 \\u2028 \\u2029 (not only \\n/\\r), so any of them would split the entry."""
    return bool(name) and len(f"x{name}x".splitlines()) == 1


def _scale_hex(name: str, scale: float) -> str:
    if not isinstance(name, str) or not _line_safe(name):
        raise TableError(f"calibration table: tensor name {name!r} cannot be written (empty, or a line break the "
                         "reader splits on: the table would not read back the same name)")
    if math.isnan(scale):
        raise TableError(f"calibration table: tensor {name!r} has a NaN scale")
    if math.isinf(scale):
        raise TableError(f"calibration table: tensor {name!r} has an infinite scale")
    if scale <= 0.0:
        why = "zero (amax 0: constant-zero tensor?)" if scale == 0.0 else "negative"
        raise TableError(f"calibration table: tensor {name!r} has a {why} scale {scale!r}")
    with np.errstate(over="ignore"):
        bits = int(np.float32(scale).view(np.uint32))
    if bits >= 0x7F800000:  # a finite float64 that overflows float32
        raise TableError(f"calibration table: tensor {name!r} scale {scale!r} overflows float32")
    return format(bits, "x")


def _lines(table: CalibrationTable) -> list[str]:
    """All lines with newlines; validates every entry before anything is written."""
    return [table.header + "\n"] + [f"{n}: {_scale_hex(n, s)}\n" for n, s in table.scales.items()]


def format_table(table: CalibrationTable) -> str:
    return "".join(_lines(table))


def parse_table(text: str, source: str = "<calibration table>", drop_zero_inf: bool = False) -> CalibrationTable:
    """Parse cache text; errors are ``TableError("source:line: ...")``.

    ``drop_zero_inf``: treat ``0`` and ``7f800000`` entries as missing (one warning) instead
    of keeping a zero scale and refusing inf; the default keeps the strict behaviour.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise TableError(f"{source}: empty calibration table")
    header = lines[0].strip().lstrip("\ufeff")
    m = _HEADER.fullmatch(header)
    if not m:
        raise TableError(f"{source}:1: expected a header 'TRT-<version>-<algorithm>', got {header[:80]!r}")
    if m[2] not in TRT_ALGORITHMS:
        raise TableError(f"{source}:1: unknown calibration algorithm {m[2]!r} in header {header!r}")
    scales: dict[str, float] = {}
    dropped: list[str] = []
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip()
        if not line:
            continue
        name, sep, hexpart = line.rpartition(": ")
        if not sep or not name or not _HEX.fullmatch(hexpart):
            raise TableError(f"{source}:{lineno}: expected 'name: hexscale', got {line[:80]!r}")
        bits = int(hexpart, 16)
        scale = float(np.uint32(bits).view(np.float32))
        if drop_zero_inf and bits in (0, 0x7F800000):  # TensorRT wrote no usable range for this tensor: zero or +inf
            if name in scales or name in dropped:
                raise TableError(f"{source}:{lineno}: tensor {name!r} appears twice")
            dropped.append(name)
            continue
        if not math.isfinite(scale) or scale < 0.0 or (scale == 0.0 and bits):
            raise TableError(f"{source}:{lineno}: tensor {name!r} has an unusable scale 0x{hexpart} ({scale!r})")
        if name in scales or name in dropped:
            raise TableError(f"{source}:{lineno}: tensor {name!r} appears twice")
        scales[name] = scale
    if dropped:
        log.warning("%s: %d tensor(s) with a zero or infinite scale treated as missing: %s", source, len(dropped),
                    ", ".join(dropped[:5]) + (f" (+{len(dropped) - 5} more)" if len(dropped) > 5 else ""))
    return CalibrationTable(int(m[1]), m[2], scales)


def table_bytes(table: CalibrationTable) -> bytes:
    """The cache as bytes, for ``IInt8Calibrator.read_calibration_cache``."""
    return format_table(table).encode("utf-8")


def from_bytes(data: bytes, source: str = "<calibration cache>", drop_zero_inf: bool = False) -> CalibrationTable:
    """Parse what ``IInt8Calibrator.write_calibration_cache`` hands over."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TableError(f"{source}: calibration table is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_table(text, source, drop_zero_inf)


def read_table(path: str | os.PathLike[str], drop_zero_inf: bool = False) -> CalibrationTable:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise TableError(f"{p}: calibration table not found") from None
    except OSError as exc:
        raise TableError(f"{p}: calibration table cannot be read: {exc.strerror}") from exc
    return from_bytes(data, str(p), drop_zero_inf)


def write_table(path: str | os.PathLike[str], table: CalibrationTable) -> None:
    """Write atomically: an interrupted write leaves any previous table untouched."""
    lines = _lines(table)  # refuse bad scales before touching the file
    with atomic_open(path, "w") as fh:
        for line in lines:
            fh.write(line)
