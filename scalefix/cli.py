"""Command line: ``scalefix`` / ``python -m scalefix``.

Exit codes: 0 success, 1 a problem was found (``inspect --check``), 2 bad input or usage.
Errors are one line naming the file and tensor; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import ScalefixError

DESCRIPTION = """\
Find and fix quantized checkpoints (FP8 / FP4 weights with separate scale tensors) that
loaders such as mx.load and safetensors hand back without their scales: the model loads
"fine" and produces garbage.

  scalefix inspect PATH      what is quantized, where the scales are, what is broken
  scalefix demo              the whole story on a small generated checkpoint
"""

EPILOG = """\
PATH is a .safetensors file, a directory of shards, or a model.safetensors.index.json.
Exit codes: 0 ok, 1 a problem was found (with --check), 2 bad input or usage.
"""


def _inspect(args: argparse.Namespace) -> int:
    from .diagnosis import build_report
    from .diagnosis.render import render

    report = build_report(args.path, nibble_order=args.nibble_order)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 1 if args.check and not report["verdict"]["ok"] else 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalefix", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"scalefix {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect", help="read-only diagnosis of a checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read-only diagnosis: which tensors are quantized (scheme, scale naming, "
                    "block, scale dtype), scales stored in another shard, orphan scales, FP8 "
                    "weights without scale, the config's quantization summary, and float "
                    "weights that hold raw FP8 values (a checkpoint converted without its "
                    "scales). Reads headers and scales; weights only by sampling.",
        epilog="examples:\n"
               "  scalefix inspect ~/models/DeepSeek-V3\n"
               "  scalefix inspect flux-fp8.safetensors --json | jq .groups\n"
               "  scalefix inspect ./converted --check && mlx_lm.convert ...   # gate a pipeline\n"
               "\n--check exits 1 unless the checkpoint is safe for a scale-unaware loader "
               "(verdict 'clean').")
    inspect.add_argument("path", metavar="PATH", help="file, shard directory, or index.json")
    inspect.add_argument("--json", action="store_true", help="machine-readable report")
    inspect.add_argument("--check", action="store_true",
                         help="exit 1 when the verdict is not 'clean'")
    inspect.add_argument("--nibble-order", choices=("low-first", "high-first"),
                         default="low-first",
                         help="FP4 packing: which nibble holds the even element (default: low)")
    inspect.set_defaults(run=_inspect)

    demo = commands.add_parser(
        "demo", help="show the trap and the diagnosis on a generated checkpoint",
        description="Builds a small DeepSeek-V3-style FP8 checkpoint in a temporary directory "
                    "(no download), shows what a scale-unaware loader returns, a conversion "
                    "that went wrong, and what `scalefix inspect` says about each.")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except ScalefixError as exc:
        if args.debug:
            raise
        print(f"scalefix: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scalefix: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
