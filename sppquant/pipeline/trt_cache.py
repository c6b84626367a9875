"""The calibrator's cache policy: serve only valid tables, write tables with provenance.

`TableCache.read` hands TensorRT a table only when `check_table` says it still
applies to the config (model bytes, preprocessing, images, algorithm, sizes); a stale
or missing table returns None, with the reason logged, and TensorRT calibrates from
images instead. A served table gets the running TensorRT version in its header
(TensorRT skips a cache whose header differs) and any extra entries the builder
derived for tensors the table lacks. `write` stores what TensorRT calibrated
atomically, provenance first: a crash in between leaves a hash mismatch, i.e. a table
`check_table` calls stale, never a silently wrong one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from sppquant.atomic import atomic_write_bytes
from sppquant.calibration.provenance import ProvenanceRecord, TableStatus, write_provenance
from sppquant.calibration.table import CalibrationTable, from_bytes, read_table, table_bytes, trt_version_code
from sppquant.config import Config
from sppquant.data import BadFiles, ImageSet
from sppquant.pipeline.tables import check_table, images_record, provenance_record

log = logging.getLogger(__name__)


class TableCache:
    """Read/write policy for one table path; counters let tests prove what happened."""

    def __init__(
        self,
        cfg: Config,
        path: Path,
        algorithm: str,
        header_algo: str,
        trt_version: str,
        reuse: bool = True,
    ) -> None:
        self.cfg, self.path, self.algorithm = cfg, Path(path), algorithm
        self.header_algo, self.trt_version, self.reuse = header_algo, trt_version, reuse
        self.extra_scales: dict[str, float] = {}  # builder-derived entries for tensors the table lacks
        self.exclude: frozenset[str] = frozenset()  # a precision plan's tensors: served without a range
        self.served: CalibrationTable | None = None
        self.reads = self.writes = 0
        self._status: TableStatus | None = None
        # Filled by the calibrator before a write, for the provenance record.
        self.images: ImageSet | None = None
        self.images_used = 0
        self.bad = BadFiles()
        self.calibration_shape: tuple[int, ...] | None = None

    def status(self) -> TableStatus:
        """`check_table` once per build (it hashes the model and every image)."""
        if self._status is None:
            self._status = check_table(self.path, self.cfg, self.algorithm)
        return self._status

    def invalidate(self) -> None:
        """Forget the cached status (after TensorRT wrote a new table)."""
        self._status = None

    def usable_table(self) -> CalibrationTable | None:
        """The table with the running version in its header, or None (reason logged)."""
        if not self.reuse:
            log.info("calibrating with TensorRT from images (table reuse disabled for this run)")
            return None
        if not self.path.exists():
            log.info("no calibration table at %s: TensorRT calibrates from the calibration images", self.path)
            return None
        status = self.status()
        if not status.valid:
            log.warning("not reusing calibration table %s: %s", self.path, status.explain())
            return None
        table = read_table(self.path)
        if table.algorithm != self.header_algo:
            log.warning("not reusing calibration table %s: its header algorithm %s is not %s, which the %s "
                        "calibrator reads", self.path, table.algorithm, self.header_algo, self.algorithm)
            return None
        return replace(table, version=trt_version_code(self.trt_version))

    def read(self) -> bytes | None:
        """What ``read_calibration_cache`` returns: table bytes, or None to calibrate."""
        self.reads += 1
        table = self.usable_table()
        if table is None:
            return None
        if self.extra_scales:
            table = replace(table, scales={**table.scales, **{k: v for k, v in self.extra_scales.items()
                                                              if k not in table.scales}})
        if self.exclude:  # no range -> TensorRT runs every layer reading or producing them above INT8
            table = replace(table, scales={k: v for k, v in table.scales.items() if k not in self.exclude})
        self.served = table
        log.info("reusing calibration table %s (%s, %d tensors, header %s)", self.path, self.algorithm,
                 len(table.scales), table.header)
        return table_bytes(table)

    def write(self, data: bytes) -> Path | None:
        """What ``write_calibration_cache`` does: validate, then provenance + table, atomically."""
        if self.served is not None:
            log.debug("TensorRT echoed the reused table; %s is left untouched", self.path)
            return None
        raw = bytes(data)
        table = from_bytes(raw, "TensorRT calibration cache")
        record = self.provenance(table, raw)
        write_provenance(self.path, record)
        atomic_write_bytes(self.path, raw)
        self.writes += 1
        log.info("wrote calibration table %s (%d tensors, header %s) and its provenance", self.path,
                 len(table.scales), table.header)
        return self.path

    def provenance(self, table: CalibrationTable, raw: bytes) -> ProvenanceRecord:
        """The record `check_table` validates, for a table TensorRT computed (the one builder)."""
        images = images_record(self.cfg, self.images, self.images_used, self.bad)
        tensors = {name: {"amax": table.amax(name), "scale": table.scales[name]} for name in table.scales}
        # The config's sizes (what check_table compares); TensorRT itself saw only calibration_shape.
        record = provenance_record(self.cfg, table, images, self.algorithm, "tensorrt", self.trt_version, tensors,
                                   last_batch="drop", calibration_shape=list(self.calibration_shape)
                                   if self.calibration_shape else None)
        record.table_sha256 = hashlib.sha256(raw).hexdigest()
        return record
