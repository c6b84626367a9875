"""Table targeting: which TensorRT / trtexec / Polygraphy will load a table, and ``sppquant retarget``.

TensorRT loads a calibration cache only when the header's version equals its own and the
header's algorithm equals its calibrator's; otherwise it silently recalibrates (trtexec
then fails "bound to nullptr", Polygraphy calibrates on whatever data it has). A table is
only amax values, so rewriting the header is safe; the real algorithm stays in the provenance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sppquant.calibration.provenance import provenance_path, read_provenance, table_sha256, write_provenance
from sppquant.calibration.table import CalibrationTable, format_table, read_table, trt_version_code, write_table
from sppquant.errors import TableError, UserError

log = logging.getLogger(__name__)

HEADERS = {"entropy2": "EntropyCalibration2", "minmax": "MinMaxCalibration"}
TRTEXEC_HEADER = "EntropyCalibration2"  # trtexec --calib builds with an IInt8EntropyCalibrator2 only
POLYGRAPHY_BASE = {"EntropyCalibration2": "IInt8EntropyCalibrator2", "MinMaxCalibration": "IInt8MinMaxCalibrator",
                   "EntropyCalibration": "IInt8EntropyCalibrator", "LegacyCalibration": "IInt8LegacyCalibrator"}


def version_text(code: int) -> str:
    """Header number -> TensorRT version: 101601 -> 10.16.1, 8601 -> 8.6.1 (inverse of trt_version_code)."""
    if code >= 100000:
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


def acceptance(table: CalibrationTable, path: str | Path) -> dict[str, Any]:
    """Which TensorRT version and which trtexec / Polygraphy invocations load ``table`` as it is."""
    version = version_text(table.version)
    base = POLYGRAPHY_BASE.get(table.algorithm, "IInt8EntropyCalibrator2")
    trtexec_ok = table.algorithm == TRTEXEC_HEADER
    return {
        "tensorrt_version": version,
        "note": f"only TensorRT {version} loads this table (the header version must equal the running TensorRT's); "
                f"other versions recalibrate: `sppquant retarget {path} --trt-version X.Y.Z`",
        "trtexec": (f"trtexec --onnx=MODEL --int8 --calib={path}" if trtexec_ok else None),
        "trtexec_problem": None if trtexec_ok else
        f"trtexec --calib uses an EntropyCalibration2 calibrator and skips a {table.algorithm} table: "
        f"`sppquant retarget {path} --trt-version {version} --header entropy2`",
        "polygraphy": f"polygraphy convert MODEL --int8 --calibration-cache {path} --calib-base-cls {base} -o ENGINE",
    }


def trtexec_warning(header_algorithm: str) -> str | None:
    """The warning ``calibrate`` logs for a header trtexec cannot load, or None."""
    if header_algorithm == TRTEXEC_HEADER:
        return None
    return (f"a {header_algorithm} table is not loaded by trtexec --calib (EntropyCalibration2 only); use Polygraphy "
            f"--calib-base-cls {POLYGRAPHY_BASE.get(header_algorithm, '?')}, the TensorRT backend, or "
            "`sppquant retarget TABLE --header entropy2`")


@dataclass(frozen=True)
class RetargetResult:
    path: Path
    old_header: str
    new_header: str
    provenance_updated: bool


def retarget(path: str | Path, trt_version: str | None = None, header: str | None = None) -> RetargetResult:
    """Rewrite the table header (version and/or algorithm) atomically and record it in the provenance.

    The provenance keeps the real algorithm and gets the new header and table hash, so the
    table stays valid for the config it was computed for.
    """
    path = Path(path)
    if trt_version is None and header is None:
        raise UserError("retarget: give --trt-version and/or --header")
    if header is not None and header not in HEADERS:
        raise UserError(f"--header {header!r}: expected one of {', '.join(HEADERS)}")
    try:
        code = trt_version_code(trt_version) if trt_version is not None else None
    except TableError as exc:
        raise UserError(f"--trt-version: {exc}") from None
    table = read_table(path)
    try:
        record = read_provenance(path)
    except TableError as exc:
        if provenance_path(path).exists():
            raise  # a broken record is an error, not "no record"
        log.warning("%s; only the table header is rewritten", exc)
        record = None
    new = CalibrationTable(code if code is not None else table.version,
                           HEADERS[header] if header else table.algorithm, dict(table.scales))
    write_table(path, new)
    if record is not None:
        history = list(record.tensorrt.get("retargeted", []))
        history.append({"from": table.header, "to": new.header,
                        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        tensorrt = {**record.tensorrt, "target_version": version_text(new.version), "header": new.header,
                    "retargeted": history}
        algorithm = {**record.algorithm, "trt_header": new.algorithm}
        write_provenance(path, replace(record, tensorrt=tensorrt, algorithm=algorithm,
                                       table_sha256=table_sha256(format_table(new))))
    return RetargetResult(path, table.header, new.header, record is not None)
