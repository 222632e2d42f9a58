"""``scalefix run -- COMMAND``: COMMAND with the runtime fixes armed (``run_command``)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run", help="run a command with the runtime fixes armed in it and its Python children",
        usage="scalefix run -- COMMAND [ARGS...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs COMMAND with scalefix's runtime fixes (`import scalefix.auto`) armed "
                    "in it and in every Python process it starts: a sitecustomize folder goes "
                    "first on PYTHONPATH (an existing sitecustomize still runs), then scalefix "
                    "becomes COMMAND, so signals, stdin/stdout and the exit status are "
                    "COMMAND's own.",
        epilog="examples:\n"
               "  scalefix run -- jang convert ./Llama-FP8 -o ./Llama-JANG -p 4\n"
               "  scalefix run -- mlx_lm.convert --hf-path ./Qwen3-8B-FP8 -q\n"
               "  scalefix run -- mlx_lm.server --model ./Qwen3-8B-FP8\n"
               "Exit status: COMMAND's; 127 not found, 126 not executable, 2 no COMMAND.")
    parser.add_argument("run_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..run_command import CannotRun, run as run_command

    try:
        return run_command(args.run_command)
    except CannotRun as exc:
        print(f"scalefix: error: {exc}", file=sys.stderr)
        return exc.exit_code
