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

from sppquant import __version__
from sppquant.backends import BACKEND_CHOICES, PRECISIONS
from sppquant.calibration.algorithms import ALGORITHMS
from sppquant.config import load_config
from sppquant.errors import UserError

log = logging.getLogger("sppquant")


def _cmd_predict(args: argparse.Namespace) -> int:
    from sppquant.pipeline.predict import predict

    cfg = load_config(args.config)
    size = tuple(args.size) if args.size else None
    results = predict(cfg, args.images, top_k=max(1, args.top_k), size=size, progress=not args.json,
                      engine=args.engine)
    if args.json:
        print(json.dumps([r.to_json() for r in results]))
    else:
        for r in results:
            print(f"{r.path}\t{r.text}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from sppquant.pipeline.calibrate import calibrate

    cfg = load_config(args.config)
    result = calibrate(cfg, output=args.output, algorithm=args.algorithm, backend=args.backend)
    print(f"{result.table_path}  ({len(result.table.scales)} tensors, {result.images} images, "
          f"{result.seconds:.1f} s; provenance {result.provenance_path.name})")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from sppquant.pipeline.trt_build import build_engines

    cfg = load_config(args.config)
    for r in build_engines(cfg, args.precision, args.output_dir, args.force, args.int8_dummy_scales):
        extra = " (dummy INT8 scales: timing only)" if r.int8_dummy_scales else ""
        print(f"{r.engine}  ({r.precision}, TensorRT {r.tensorrt_version}, {r.build_seconds:.1f} s){extra}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sppquant.pipeline.report import build_report

    cfg = load_config(args.config)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()] if args.algorithms else None
    result = build_report(cfg, output_dir=args.output_dir, backend=args.backend, algorithms=algorithms,
                          table=args.table)
    for p in result.report.precisions.values():
        shown = [c for c in result.report.columns if c.fmt == "pct" and p.metrics.get(c.key) is not None][:2]
        shown = shown or [c for c in result.report.columns if c.key == "sqnr_db"]
        cells = "  ".join(f"{c.header} {_fmt(p.metrics.get(c.key), c.fmt)}" for c in shown)
        print(f"{p.key:<16} {cells}")
    print(f"{result.markdown_path}  ({result.seconds:.1f} s)")
    return 0


def _fmt(value: float | None, fmt: str) -> str:
    if value is None or value != value:
        return "n/a"
    if fmt == "pct":
        return f"{100 * value:.2f}%"
    return "inf" if value == float("inf") else f"{value:.1f}"


def _cmd_export_qdq(args: argparse.Namespace) -> int:
    from sppquant.pipeline.export import export_qdq

    cfg = load_config(args.config)
    result = export_qdq(cfg, args.output, table_path=args.table, high_precision=args.high_precision, plan=args.plan)
    info = result.info
    print(f"{result.path}  ({len(info.activations)} INT8 activations, {len(info.weights)} INT8 weights, "
          f"{len(info.plugins)} plugin(s) with INT8 I/O, the rest {args.high_precision.upper()}; "
          f"table {result.table_path})")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from sppquant.pipeline.tune import tune

    cfg = load_config(args.config)
    plan = tune(cfg, args.max_drop, args.output, metric=args.metric, algorithm=args.algorithm)
    print(f"{args.output}  ({len(plan.kept_high_precision)} of {plan.quantized_tensors} quantized tensors kept in "
          f"high precision; {plan.metric} held-out INT8 {plan.holdout_int8:.4f} vs FP32 {plan.holdout_fp32:.4f}: "
          f"budget {'met' if plan.met else 'NOT met'})")
    return 0 if plan.met else 3


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("calibrate", help="compute a TensorRT calibration table (+ provenance)")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--output", help="table path (default: calibration.output)")
    p.add_argument("--algorithm", choices=algorithms, help="default: calibration.algorithm; "
                   + "; ".join(f"{a.name}: {a.help}" for a in ALGORITHMS.values()))
    p.add_argument("--backend", choices=backends, help="default: the config's backend")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("build", help="build TensorRT engines (FP32/FP16/INT8) with the sppquant plugins")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--precision", help=f"comma-separated subset of {','.join(precisions)} (default: build.precisions)")
    p.add_argument("--output-dir", help="engine folder (default: build.output_dir)")
    p.add_argument("--force", action="store_true",
                   help="build INT8 despite a stale table: TensorRT recalibrates and overwrites it")
    p.add_argument("--int8-dummy-scales", action="store_true",
                   help="INT8 engine with dummy ranges, for timing only (named *-dummy-scales)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("inspect", help="show a calibration table and its provenance")
    p.add_argument("table", help="calibration table (cache) file")
    p.add_argument("--sort", choices=["name", "amax"], default="name", help="order of the tensor rows")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("predict", help="FP32 inference on images, decoded by the model's task")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=1, help="classes to show per image (classification)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: first in config)")
    p.add_argument("--json", action="store_true", help="one JSON list: path and the task's prediction per image")
    p.add_argument("--engine", help="run this TensorRT engine (TensorRT backend) instead of the ONNX model")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("report", help="FP32 vs FP16 vs INT8 accuracy report (Markdown, JSON, plots)")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--output-dir", help="report folder (default: report.output_dir)")
    p.add_argument("--backend", choices=backends, help="default: the config's backend")
    p.add_argument("--algorithms", help=f"comma list of {','.join(algorithms)}: one INT8 column each "
                                        "(default: report.algorithms)")
    p.add_argument("--table", help="calibration table for the first algorithm, used as given "
                                   "(default: calibration.output if valid, else calibrate)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("tune", help="the largest INT8 set within an accuracy budget: a precision plan")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--max-drop", type=float, required=True, help="allowed metric drop as a fraction (0.005 = 0.5 points)")
    p.add_argument("--metric", help="metric to hold (default: the task's primary one, e.g. top1)")
    p.add_argument("--algorithm", choices=algorithms, default="auto", help="table algorithm (default auto)")
    p.add_argument("--output", default="precision_plan.json", help="plan file (a PNG curve is written beside it)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("export-qdq", help="write the explicit-quantization (Q/DQ) ONNX model for TensorRT 10/11")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--output", required=True, help="Q/DQ ONNX model path")
    p.add_argument("--table", help="calibration table (default: calibration.output, which must be valid); a cache "
                                   "TensorRT wrote is accepted (internal names ignored, 0/inf entries missing)")
    p.add_argument("--plan", help="precision plan from sppquant tune: its tensors get no Q/DQ")
    p.add_argument("--high-precision", choices=["fp16", "fp32"], default="fp16",
                   help="precision of everything not quantized (TensorRT 11 is strongly typed; default fp16)")
    p.set_defaults(func=_cmd_export_qdq)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
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
        if exc.filename is None:  # writing our own output (stdout): e.g. `> /dev/full`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
            print(f"sppquant: error: cannot write to standard output: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if args.verbose:
            raise
        print(f"sppquant: internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
              file=sys.stderr)
        return 1
    except Exception as exc:  # an internal error: a bug, report it
        if args.verbose:
            raise
        print(f"sppquant: internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
              file=sys.stderr)
        return 1
