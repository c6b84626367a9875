"""Command line: parse, load the config, call the Python API, map errors to exit codes.

Exit codes: 0 ok, 2 user error (one line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from sppquant import __version__
from sppquant.backends import BACKEND_CHOICES, PRECISIONS
from sppquant.calibration.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from sppquant.config import Config, load_config
from sppquant.errors import UserError

log = logging.getLogger("sppquant")

# The one table rule of build, export-qdq, report and tune (pipeline.tables.resolve_table).
TABLE_RULE = ("default: the config's valid table (calibration.output or <stem>.<algorithm><suffix>); if none exists "
              "it is calibrated now and written there; a stale one is refused (see --force)")
FORCE_HELP = "recalibrate a stale calibration table and replace it, instead of refusing"


def add_common(p: argparse.ArgumentParser, config: bool = True, json_help: str | None = None,
               config_required: bool = True) -> None:
    """The arguments every subcommand shares: --config/--set (when it reads a config), -q/-v, --json."""
    if config:
        p.add_argument("--config", required=config_required, help="YAML config")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a config key (value parsed as YAML, checked by the config schema); repeatable")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="warnings and errors only, no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging and tracebacks")
    if json_help is not None:
        p.add_argument("--json", action="store_true", help=json_help)


def _config(args: argparse.Namespace, *extra: str) -> Config:
    """The config with ``--set`` overrides (``extra``: overrides a dedicated flag stands for, applied last)."""
    return load_config(args.config, [*args.overrides, *extra])


def _progress(args: argparse.Namespace) -> bool:
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))


def _emit_json(obj: object) -> None:
    print(json.dumps(obj, default=str))


def _cmd_predict(args: argparse.Namespace) -> int:
    from sppquant.pipeline.predict import predict

    cfg = _config(args)
    size = tuple(args.size) if args.size else None
    if args.draw:
        from sppquant.pipeline.context import open_model
        from sppquant.pipeline.predict import check_draw

        check_draw(open_model(cfg).task.name, args.draw)
    results = predict(cfg, args.images, top_k=max(1, args.top_k), size=size, progress=_progress(args),
                      engine=args.engine)
    if args.draw:
        from sppquant.pipeline.predict import draw_predictions

        Path(args.draw).mkdir(parents=True, exist_ok=True)
        draw_predictions(results, args.draw, cfg.detection.agreement_score)
    if args.json:
        print(json.dumps([r.to_json() for r in results]))
    else:
        for r in results:
            print(f"{r.path}\t{r.text}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from sppquant.pipeline.calibrate import calibrate

    extra = [f"calibration.trt_version={args.trt_version}"] if args.trt_version else []
    if (args.model is None) == (args.config is None):
        raise UserError("calibrate: give --config CONFIG or a model (sppquant calibrate MODEL.onnx --images DIR), "
                        "not both" if args.model else "calibrate: give --config CONFIG or MODEL.onnx --images DIR")
    if args.model is not None:
        from sppquant.pipeline.init import config_for_model

        if args.images is None:
            raise UserError("calibrate MODEL.onnx: --images DIR is required without a config")
        cfg = config_for_model(args.model, args.images, [*args.overrides, *extra])
    else:
        if args.images is not None:
            extra.insert(0, f"calibration.images={Path(args.images).resolve()}")
        cfg = _config(args, *extra)
    from sppquant.pipeline.tables import table_for

    output = args.output or (table_for(cfg, args.algorithm) if args.algorithm else None)
    result = calibrate(cfg, output=output, algorithm=args.algorithm, backend=args.backend, progress=_progress(args),
                       executor=args.executor)
    from sppquant.pipeline.retarget import trtexec_warning

    if (warning := trtexec_warning(result.table.algorithm)) is not None:
        log.warning("%s", warning)
    if args.json:
        _emit_json({"table": str(result.table_path), "provenance": str(result.provenance_path),
                    "algorithm": result.provenance.algorithm.get("name"), "trt_header": result.table.algorithm,
                    "trt_version": result.provenance.tensorrt.get("target_version"),
                    "tensors": len(result.table.scales), "images": result.images,
                    "bad_files": len(result.bad_files), "seconds": round(result.seconds, 3)})
        return 0
    print(f"{result.table_path}  ({len(result.table.scales)} tensors, {result.images} images, "
          f"{result.seconds:.1f} s; provenance {result.provenance_path.name})")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from sppquant.pipeline.trt_build import build_engines

    cfg = _config(args)
    results = build_engines(cfg, args.precision, args.output_dir, args.force, args.int8_dummy_scales, plan=args.plan)
    if args.json:
        _emit_json({"engines": [{"engine": str(r.engine), "precision": r.precision,
                                 "tensorrt_version": r.tensorrt_version, "build_seconds": round(r.build_seconds, 3),
                                 "int8_dummy_scales": r.int8_dummy_scales} for r in results]})
        return 0
    for r in results:
        extra = " (dummy INT8 scales: timing only)" if r.int8_dummy_scales else ""
        print(f"{r.engine}  ({r.precision}, TensorRT {r.tensorrt_version}, {r.build_seconds:.1f} s){extra}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sppquant.pipeline.report import build_report

    cfg = _config(args)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()] if args.algorithms else None
    tables = _report_tables(args.table, algorithms or list(cfg.report.algorithms))
    result = build_report(cfg, output_dir=args.output_dir, backend=args.backend, algorithms=algorithms,
                          table=tables, progress=_progress(args), executor=args.executor, force=args.force,
                          plan=args.plan)
    if args.json:
        _emit_json({"markdown": str(result.markdown_path), "json": str(result.json_path),
                    "plots": [str(p) for p in result.plots], "seconds": round(result.seconds, 3),
                    "precisions": {p.key: p.metrics for p in result.report.precisions.values()}})
        return 0
    for p in result.report.precisions.values():
        shown = [c for c in result.report.columns if c.fmt == "pct" and p.metrics.get(c.key) is not None][:2]
        shown = shown or [c for c in result.report.columns if c.key == "sqnr_db"]
        cells = "  ".join(f"{c.header} {_fmt(p.metrics.get(c.key), c.fmt)}" for c in shown)
        print(f"{p.key:<16} {cells}")
    print(f"{result.markdown_path}  ({result.seconds:.1f} s)")
    return 0


def _report_tables(items: Sequence[str], algorithms: Sequence[str]) -> str | dict[str, str] | None:
    """``--table PATH`` (the first algorithm's) or ``--table ALGO=PATH`` (repeatable), checked before any work."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return items[0]
    tables: dict[str, str] = {}
    for item in items:
        algo, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--table {item!r}: expected ALGO=PATH when several tables are given")
        if algo not in algorithms:
            raise UserError(f"--table {item!r}: {algo!r} is not among the report's algorithms "
                            f"({', '.join(algorithms)}; add it with --algorithms)")
        tables[algo] = path
    return tables


def _fmt(value: float | None, fmt: str) -> str:
    if value is None or value != value:
        return "n/a"
    if fmt == "pct":
        return f"{100 * value:.2f}%"
    return "inf" if value == float("inf") else f"{value:.1f}"


def _cmd_export_qdq(args: argparse.Namespace) -> int:
    from sppquant.pipeline.export import export_qdq

    cfg = _config(args)
    result = export_qdq(cfg, args.output, table_path=args.table, high_precision=args.high_precision,
                        algorithm=args.algorithm, plan=args.plan, force=args.force, progress=_progress(args))
    info = result.info
    if args.json:
        _emit_json({"output": str(result.path), "table": str(result.table_path),
                    "int8_activations": len(info.activations), "int8_weights": len(info.weights),
                    "plugins": len(info.plugins), "high_precision": args.high_precision,
                    "warnings": list(result.warnings)})
        return 0
    print(f"{result.path}  ({len(info.activations)} INT8 activations, {len(info.weights)} INT8 weights, "
          f"{len(info.plugins)} plugin(s) with INT8 I/O, the rest {args.high_precision.upper()}; "
          f"table {result.table_path})")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from sppquant.pipeline.tune import tune

    plan = tune(_config(args), args.max_drop, args.output, metric=args.metric, algorithm=args.algorithm,
                force=args.force, progress=_progress(args))
    if args.json:
        _emit_json(asdict(plan))
    else:
        print(f"{args.output}  ({len(plan.kept_high_precision)} of {plan.quantized_tensors} quantized tensors kept "
              f"in high precision; {plan.metric} held-out INT8 {plan.holdout_int8:.4f} vs FP32 "
              f"{plan.holdout_fp32:.4f}: budget {'met' if plan.met else 'NOT met'})")
    return 0 if plan.met else 3


def _cmd_init(args: argparse.Namespace) -> int:
    from sppquant.pipeline.init import init_config

    result = init_config(args.model, args.output, images=args.images)
    if args.json:
        _emit_json({"config": str(result.path), "input_name": result.facts.input_name,
                    "channels": result.facts.channels, "size": result.facts.size, "opset": result.facts.opset,
                    "custom_ops": list(result.facts.custom_ops), "check": list(result.undetected)})
        return 0
    log.info("detected input %r, opset %d, custom ops: %s", result.facts.input_name, result.facts.opset,
             ", ".join(result.facts.custom_ops) or "none")
    print(f"{result.path}  (CHECK before calibrating: {', '.join(result.undetected)})")
    return 0


def _cmd_retarget(args: argparse.Namespace) -> int:
    from sppquant.pipeline.retarget import retarget

    result = retarget(args.table, trt_version=args.trt_version, header=args.header)
    if args.json:
        _emit_json({"table": str(result.path), "old_header": result.old_header, "new_header": result.new_header,
                    "provenance_updated": result.provenance_updated})
    else:
        print(f"{result.path}  ({result.old_header} -> {result.new_header}"
              f"{'' if result.provenance_updated else '; no provenance record'})")
    return 0


def _cmd_build_plugin(args: argparse.Namespace) -> int:
    from sppquant.ops import plugin_library

    archs = plugin_library.parse_arch(args.arch)  # a bad --arch fails before any tool is looked up
    lib = plugin_library.build_plugin(args.build_dir, tensorrt_include=args.tensorrt_include, cuda_archs=archs)
    if args.json:
        _emit_json({"library": str(lib), "sources": str(plugin_library.CUDA_SOURCE_DIR), "arch": archs})
    else:
        print(f"{lib}  (found by the loader; or pass it as {plugin_library.ENV_LIBRARY} / build.plugin_library)")
    return 0


def _cmd_export_data(args: argparse.Namespace) -> int:
    from sppquant.pipeline.interop import export_data

    result = export_data(_config(args), args.output, progress=_progress(args))
    if args.json:
        _emit_json({"output": str(result.path), "arrays": result.arrays, "images": result.images,
                    "bytes": result.nbytes, "bad_files": len(result.bad_files)})
    else:
        shapes = ", ".join(f"{k} {v}" for k, v in result.arrays.items())
        print(f"{result.path}  ({result.images} images; {shapes}; {result.nbytes / 2**20:.1f} MiB)")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from sppquant.pipeline.interop import export_onnx

    result = export_onnx(_config(args), args.output)
    if args.json:
        _emit_json({"output": str(result.path), "rewritten": result.rewritten})
    else:
        done = ", ".join(f"{n} x{c}" for n, c in result.rewritten.items()) or "no custom op"
        print(f"{result.path}  (standard ONNX ops only; rewritten: {done})")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from sppquant.pipeline.inspect import describe_table, format_description

    info = describe_table(args.table, sort=args.sort)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    algorithms, backends, precisions = ALGORITHMS.names(), BACKEND_CHOICES, PRECISIONS.names()
    parser = argparse.ArgumentParser(
        prog="sppquant", description="INT8 calibration tables, TensorRT engines, Q/DQ exports and precision "
                                     "reports for CNNs with spatial pyramid pooling.")
    parser.add_argument("--version", action="version", version=f"sppquant {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_calibration_commands, _add_engine_and_table_commands, _add_model_commands):
        add(sub, algorithms, backends, precisions)
    return parser


def _add_calibration_commands(sub: argparse._SubParsersAction, algorithms: tuple[str, ...], backends: tuple[str, ...],
        precisions: tuple[str, ...]) -> None:
    """init, calibrate."""

    p = sub.add_parser("init", help="write a commented starter config for an ONNX model")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--images", metavar="DIR", help="calibration image folder (calibration.images)")
    p.add_argument("-o", "--output", default="sppquant.yaml", help="config path to write (default: sppquant.yaml; "
                                                                     "never overwritten)")
    add_common(p, config=False, json_help="one JSON object: the config path and the detected facts")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("calibrate", help="compute a TensorRT calibration table (+ provenance)")
    p.add_argument("model", nargs="?", metavar="MODEL.onnx",
                   help="calibrate this model without a config (with --images; the config `init` would write)")
    add_common(p, json_help="one JSON object: table, provenance, counts, seconds", config_required=False)
    p.add_argument("--images", metavar="DIR", help="calibration images (overrides calibration.images)")
    p.add_argument("--output", help="table path (default: calibration.output; with another --algorithm than the "
                                   "config's: <stem>.<algorithm><suffix> next to it)")
    p.add_argument("--algorithm", choices=algorithms, help=f"default: calibration.algorithm ({DEFAULT_ALGORITHM} "
                   "when the config sets none); "
                   + "; ".join(f"{a.name}: {a.help}" for a in ALGORITHMS.values()).replace("%", "%%"))
    p.add_argument("--backend", choices=backends, help="default: the config's backend")
    p.add_argument("--trt-version", metavar="X.Y.Z",
                   help="TensorRT version written in the table header (= --set calibration.trt_version=X.Y.Z); "
                        "TensorRT loads a table only when this equals its own version")
    p.add_argument("--executor", choices=["local", "ray"], help="where shards run (default: executor.kind; "
                   "ray needs pip install 'sppquant[ray]')")
    p.set_defaults(func=_cmd_calibrate)



def _add_engine_and_table_commands(sub: argparse._SubParsersAction, algorithms: tuple[str, ...], backends: tuple[str, ...],
        precisions: tuple[str, ...]) -> None:
    """build, build-plugin, inspect, retarget."""
    p = sub.add_parser("build", help="build TensorRT engines (FP32/FP16/INT8) with the sppquant plugins")
    add_common(p, json_help="one JSON object: the engines built")
    p.add_argument("--precision", help=f"comma-separated subset of {','.join(precisions)} (default: build.precisions)")
    p.add_argument("--output-dir", help="engine folder (default: build.output_dir)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--int8-dummy-scales", action="store_true",
                   help="INT8 engine with dummy ranges, for timing only (named *-dummy-scales)")
    p.add_argument("--plan", help="precision plan from sppquant tune: INT8 uses its table without its tensors, and "
                                  "the layers around them get FP16 precision constraints (PREFER_PRECISION_CONSTRAINTS)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("build-plugin", help="build the TensorRT plugin library (CUDA, needs nvcc, CMake, TensorRT "
                                            "headers) where the loader finds it")
    p.add_argument("--tensorrt-include", metavar="DIR", help="folder with NvInferRuntime.h (default: "
                   "$SPPQUANT_TRT_INCLUDE, $TENSORRT_ROOT/include, system folders)")
    p.add_argument("--arch", default="native", help="native (this GPU, default), sm_XX or XX")
    p.add_argument("--build-dir", help="default: cuda/build in a checkout, else $XDG_CACHE_HOME/sppquant/plugins/VERSION")
    add_common(p, config=False, json_help="one JSON object: the library path")
    p.set_defaults(func=_cmd_build_plugin)

    p = sub.add_parser("inspect", help="show a calibration table and its provenance")
    p.add_argument("table", help="calibration table (cache) file")
    p.add_argument("--sort", choices=["name", "amax"], default="name", help="order of the tensor rows")
    add_common(p, config=False, json_help="machine-readable output")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("retarget", help="rewrite a table's header for another TensorRT version or calibrator")
    p.add_argument("table", help="calibration table (cache) file, rewritten in place")
    p.add_argument("--trt-version", metavar="X.Y.Z", help="the TensorRT version that will load the table")
    p.add_argument("--header", choices=["entropy2", "minmax"],
                   help="header algorithm (entropy2 for trtexec --calib); the real algorithm stays in the provenance")
    add_common(p, config=False, json_help="one JSON object: old and new header")
    p.set_defaults(func=_cmd_retarget)



def _add_model_commands(sub: argparse._SubParsersAction, algorithms: tuple[str, ...], backends: tuple[str, ...],
        precisions: tuple[str, ...]) -> None:
    """predict, report, tune, export-qdq, export-data, export-onnx."""
    p = sub.add_parser("predict", help="FP32 inference on images, decoded by the model's task")
    add_common(p, json_help="one JSON list: path and the task's prediction per image")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=1, help="classes to show per image (classification)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: first in config)")
    p.add_argument("--engine", help="run this TensorRT engine (TensorRT backend) instead of the ONNX model")
    p.add_argument("--draw", metavar="DIR", help="detection: write each image with its boxes (score >= "
                   "detection.agreement_score) as DIR/<name>.png")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("report", help="FP32 vs FP16 vs INT8 accuracy report (Markdown, JSON, plots)")
    add_common(p, json_help="one JSON object: output paths and the metrics per precision")
    p.add_argument("--output-dir", help="report folder (default: report.output_dir)")
    p.add_argument("--backend", choices=backends, help="default: the config's backend")
    p.add_argument("--algorithms", help=f"comma list of {','.join(algorithms)}: one INT8 column each "
                                        "(default: report.algorithms)")
    p.add_argument("--table", action="append", default=[], metavar="[ALGO=]PATH",
                   help=f"a table used as given: ALGO=PATH per algorithm (repeatable), or PATH for the first; {TABLE_RULE}")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--executor", choices=["local", "ray"], help="where shards run (default: executor.kind; "
                   "ray needs pip install 'sppquant[ray]')")
    p.add_argument("--plan", help="precision plan from sppquant tune: adds a MIXED column (its table, no Q/DQ on its "
                                  "kept tensors), metrics and agreement like the other columns")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("tune", help="the largest INT8 set within an accuracy budget: a precision plan")
    add_common(p, json_help="the precision plan as one JSON object")
    p.add_argument("--max-drop", type=float, required=True, help="allowed metric drop as a fraction (0.005 = 0.5 points)")
    p.add_argument("--metric", help="metric to hold (default: the task's primary one, e.g. top1)")
    p.add_argument("--algorithm", choices=algorithms, default="auto", help="table algorithm (default auto)")
    p.add_argument("--output", default="precision_plan.json", help="plan file (a PNG curve is written beside it)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("export-qdq", help="write the explicit-quantization (Q/DQ) ONNX model for TensorRT 10/11")
    add_common(p, json_help="one JSON object: output, table, counts, warnings")
    p.add_argument("--output", required=True, help="Q/DQ ONNX model path")
    p.add_argument("--algorithm", choices=algorithms, help="whose table to use (default: calibration.algorithm)")
    p.add_argument("--table", help="calibration table used as given; a cache TensorRT wrote is accepted (internal "
                                   f"names ignored, 0/inf entries missing); {TABLE_RULE}")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--high-precision", choices=["fp16", "fp32"], default="fp16",
                   help="precision of everything not quantized (TensorRT 11 is strongly typed; default fp16)")
    p.add_argument("--plan", help="precision plan from sppquant tune: its tensors get no Q/DQ")
    p.set_defaults(func=_cmd_export_qdq)

    p = sub.add_parser("export-data", help="write the preprocessed calibration batches (.npz, one array per model "
                                           "input) for ModelOpt / Polygraphy / ONNX Runtime")
    add_common(p, json_help="one JSON object: output, array shapes, images, bytes")
    p.add_argument("--output", required=True, help=".npz path (streamed: memory stays at one batch; cap the size "
                                                   "with --set calibration.max_images=N)")
    p.set_defaults(func=_cmd_export_data)

    p = sub.add_parser("export-onnx", help="write the model with custom ops rewritten to standard ONNX ops "
                                           "(for tools that cannot load the TensorRT plugin)")
    add_common(p, json_help="one JSON object: output and the custom ops rewritten")
    p.add_argument("--output", required=True, help=".onnx path")
    p.set_defaults(func=_cmd_export_onnx)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-q/--quiet and -v/--verbose exclude each other")
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a full or closed stdout fails here, inside the error mapping, not at exit
        return code
    except UserError as exc:
        print(f"sppquant: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sppquant: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sppquant predict ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.filename is not None:
            return _internal(exc, args.verbose)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # writing our own stdout: nothing to flush
        print(f"sppquant: error: cannot write to standard output: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal error: a bug, report it
        return _internal(exc, args.verbose)


def _internal(exc: Exception, verbose: bool) -> int:
    if verbose:
        raise exc
    print(f"sppquant: internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
          file=sys.stderr)
    return 1
