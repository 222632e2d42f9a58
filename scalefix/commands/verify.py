"""``scalefix verify SRC DST``: an independent comparison of a converted checkpoint with its
quantized source (``verify/``)."""

from __future__ import annotations

import argparse
import json

from ..locate import locate


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify", help="compare a converted checkpoint with its quantized source",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dequantize each source tensor (streaming) and compare it with the same "
                    "tensor in DST: bit-exact, max abs error, SQNR in dB. Flags the trap "
                    "signature (raw FP8 values, errors of orders of magnitude), missing and "
                    "extra tensors. DST may come from any tool (scalefix rewrite, mlx_lm.convert, "
                    "a community BF16 upload).",
        epilog="Exit 0 when every tensor passes, 1 when any fails, 2 on bad input.")
    parser.add_argument("src", metavar="SRC", help="the quantized source (path or cached hub id)")
    parser.add_argument("dst", metavar="DST",
                        help="the converted checkpoint (path or cached hub id)")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw error per tensor by layer (needs matplotlib)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..verify.compare import render_verify, verify

    report = verify(locate(args.src), locate(args.dst))
    if args.plot:
        from ..verify.plot import plot
        plot(report, args.plot)
    print(json.dumps(report, indent=2) if args.json else render_verify(report))
    return 0 if report["ok"] else 1
