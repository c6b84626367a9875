"""Exports for other tools: the preprocessed calibration data (``export-data``) and the standard-op model (``export-onnx``).

ModelOpt, Polygraphy and ONNX Runtime users calibrate with their own tools; giving them
exactly our preprocessed batches (and a model without custom ops) makes their numbers
comparable with ours instead of differing by preprocessing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from sppquant.atomic import atomic_open, atomic_write_bytes, check_writable
from sppquant.config import Config
from sppquant.data import BadFiles, calibration_set, iter_batches
from sppquant.errors import UserError
from sppquant.ops import custom_nodes, rewrite_for_onnxruntime
from sppquant.pipeline.context import open_model

log = logging.getLogger(__name__)


@dataclass
class _Spool:
    """One array being streamed to disk: rows appended batch by batch, shape known at the end."""

    file: IO[bytes]
    tail: tuple[int, ...]
    dtype: np.dtype
    rows: int = 0


@dataclass(frozen=True)
class DataExport:
    path: Path
    arrays: dict[str, list[int]]  # npz key -> shape
    images: int
    nbytes: int
    bad_files: list[tuple[str, str]] = field(default_factory=list)


def _check_output(output: str | Path, suffix: str) -> Path:
    path = Path(output)
    if path.suffix != suffix:
        raise UserError(f"--output {path}: expected a {suffix} file name")
    return check_writable(path, "--output")


def export_data(cfg: Config, output: str | Path, progress: bool = True) -> DataExport:
    """Write every calibration batch, preprocessed, to ``output`` (.npz: one array per model input).

    Memory stays at one batch: arrays are spooled to temporary files and copied into the
    zip at the end (the row count is known only then). Keys are the input names; with
    several tensor shapes (``input.sizes``, dynamic padding) each shape gets ``name@HxW``.
    """
    path = _check_output(output, ".npz")
    ctx = open_model(cfg)  # checks model.input_name before any image is read
    cal, bad = cfg.calibration, BadFiles()
    images = calibration_set(cal)
    spools: dict[tuple[str, tuple[int, ...]], _Spool] = {}
    used = 0
    with tempfile.TemporaryDirectory(prefix="sppquant-export-") as tmp:
        for batch in iter_batches(images, cfg.preprocess, cfg.input.sizes, cal.batch_size, cal.last_batch,
                                  cal.bad_files, cal.workers, bad=bad, progress=progress, desc="export-data",
                                  extra_feeds=ctx.extra_feeds):
            used += batch.size
            for k in range(len(cfg.input.sizes)):
                for name, arr in batch.feeds(k, cfg.model.input_name).items():
                    arr = np.ascontiguousarray(arr)
                    key = (name, arr.shape[1:])
                    if key not in spools:
                        spools[key] = _Spool(open(Path(tmp) / f"{len(spools)}.raw", "wb"), arr.shape[1:], arr.dtype)
                    spools[key].file.write(arr.tobytes())
                    spools[key].rows += arr.shape[0]
        if not spools:
            raise UserError(f"{images.root or cal.list_file}: no usable calibration image")
        arrays = _write_npz(path, spools)
    nbytes = sum(s.rows * int(np.prod(s.tail)) * s.dtype.itemsize for s in spools.values())
    return DataExport(path, arrays, used, nbytes, list(bad.items))


def _write_npz(path: Path, spools: dict[tuple[str, tuple[int, ...]], _Spool]) -> dict[str, list[int]]:
    """The spooled arrays as one .npz (zip64, stored), written atomically; returns key -> shape."""
    shapes_per_name: dict[str, int] = {}
    for name, _ in spools:
        shapes_per_name[name] = shapes_per_name.get(name, 0) + 1
    arrays: dict[str, list[int]] = {}
    with atomic_open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for (name, tail), spool in spools.items():
            spool.file.close()
            key = name if shapes_per_name[name] == 1 else f"{name}@{'x'.join(map(str, tail[-2:]))}"
            shape = (spool.rows, *tail)
            with zf.open(f"{key}.npy", "w", force_zip64=True) as dst, open(spool.file.name, "rb") as src:
                header = {"descr": np.lib.format.dtype_to_descr(spool.dtype), "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_2_0(dst, header)
                shutil.copyfileobj(src, dst, 16 << 20)
            arrays[key] = list(shape)
    return arrays


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    rewritten: dict[str, int]  # custom op type -> nodes replaced


def export_onnx(cfg: Config, output: str | Path) -> OnnxExport:
    """The model with every custom op rewritten to standard ONNX ops (what our ONNX Runtime runs), for tools
    that cannot load the TensorRT plugin. Numerically the same graph our FP32 reference uses."""
    path = _check_output(output, ".onnx")
    ctx = open_model(cfg)
    counts: dict[str, int] = {}
    for node, _spec in custom_nodes(ctx.model):
        counts[f"{node.domain}::{node.op_type}"] = counts.get(f"{node.domain}::{node.op_type}", 0) + 1
    if not counts:
        log.warning("%s has no sppquant custom op: the export is a copy of the model", cfg.model.path)
    model = rewrite_for_onnxruntime(ctx.model)
    atomic_write_bytes(path, model.SerializeToString())
    return OnnxExport(path, counts)
