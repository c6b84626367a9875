"""Command line: parse, load the config, call the Python API, map errors to exit codes.

Exit codes: 0 ok, 2 user error (one line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from sppquant import __version__
from sppquant.config import load_config
from sppquant.errors import UserError

log = logging.getLogger("sppquant")


def _cmd_predict(args: argparse.Namespace) -> int:
    from sppquant.predict import predict

    cfg = load_config(args.config)
    size = tuple(args.size) if args.size else None
    results = predict(cfg, args.images, top_k=max(1, args.top_k), size=size, progress=not args.json)
    if args.json:
        print(json.dumps([{"path": r.path, "label": r.label, "scores": r.scores,
                           "top_k": [[k, p] for k, p in r.top_k]} for r in results]))
    else:
        for r in results:
            tops = "  ".join(f"{k}:{p:.3f}" for k, p in r.top_k)
            print(f"{r.path}\t{r.label}\t{tops}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from sppquant.calibration.calibrate import calibrate

    cfg = load_config(args.config)
    result = calibrate(cfg, output=args.output, algorithm=args.algorithm, backend=args.backend)
    print(f"{result.table_path}  ({len(result.table.scales)} tensors, {result.images} images, "
          f"{result.seconds:.1f} s; provenance {result.provenance_path.name})")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from sppquant.calibration.inspect import describe_table, format_description

    info = describe_table(args.table, sort=args.sort)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sppquant", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sppquant {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("calibrate", help="compute a TensorRT calibration table (+ provenance)")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--output", help="table path (default: calibration.output)")
    p.add_argument("--algorithm", choices=["entropy2", "minmax", "percentile"], help="default: calibration.algorithm")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], help="default: the config's backend")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("inspect", help="show a calibration table and its provenance")
    p.add_argument("table", help="calibration table (cache) file")
    p.add_argument("--sort", choices=["name", "amax"], default="name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("predict", help="FP32 inference on images (ONNX Runtime)")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=1, help="classes to show per image")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: first in config)")
    p.add_argument("--json", action="store_true", help="one JSON list: path, label, scores per image")
    p.set_defaults(func=_cmd_predict)
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"sppquant: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sppquant: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: a bug, report it
        if args.verbose:
            raise
        print(f"sppquant: internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
              file=sys.stderr)
        return 1
