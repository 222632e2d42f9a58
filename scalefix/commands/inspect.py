"""``scalefix inspect PATH``: the read-only diagnosis (``diagnosis/``)."""

from __future__ import annotations

import argparse
import json

from ..locate import locate


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
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
    parser.add_argument("path", metavar="PATH",
                        help="file, shard directory, index.json, or cached hub id org/name[@rev]")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the verdict is not 'clean'")
    parser.add_argument("--nibble-order", choices=("low-first", "high-first"),
                        default="low-first",
                        help="FP4 packing: which nibble holds the even element (default: low)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..diagnosis import build_report
    from ..diagnosis.render import render

    report = build_report(locate(args.path), nibble_order=args.nibble_order)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 1 if args.check and not report["verdict"]["ok"] else 0
