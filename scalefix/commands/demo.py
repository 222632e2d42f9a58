"""``scalefix demo``: the whole story on a generated checkpoint (``demo``)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="the trap, the diagnosis and the fixes on a generated checkpoint",
        description="Builds a small DeepSeek-V3-style FP8 checkpoint in a temporary directory "
                    "(no download), shows what a scale-unaware loader returns, a conversion "
                    "that went wrong, what `scalefix inspect` says about each, the runtime fix "
                    "(when MLX is installed), `scalefix rewrite` and `scalefix verify`.")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(keep=args.keep)
