"""Command line: ``scalefix`` / ``python -m scalefix``.

Exit codes: 0 success, 1 a problem was found (``verify``, ``inspect --check``), 2 bad input or
usage.
Errors are one line naming the file and tensor; ``--debug`` shows the traceback.
Each subcommand's parser and handler is a module of ``scalefix/commands/``; this module
registers them and turns what they raise into exit codes.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import COMMANDS
from .errors import ScalefixError
from .interrupts import Interrupted, stop_on_signals

DESCRIPTION = """\
Find and fix quantized checkpoints (FP8 / FP4 weights with separate scale tensors) that
loaders such as mx.load and safetensors hand back without their scales: the model loads
"fine" and produces garbage.

  scalefix inspect PATH      what is quantized, where the scales are, what is broken
  scalefix rewrite SRC       write a fixed copy (BF16), streaming, atomic
  scalefix verify SRC DST    prove a converted checkpoint matches its quantized source
  scalefix status            what `import scalefix.auto` fixes in this environment
  scalefix run -- COMMAND    run a command (jang convert, mlx_lm.convert, ...) with the fixes
  scalefix patch-install APP permanent fix of an installed app's jang_tools or mlx_lm (vMLX)
  scalefix demo              the whole story on a small generated checkpoint
"""

EPILOG = """\
PATH is a .safetensors file, a directory of shards, a model.safetensors.index.json, or a
Hugging Face hub id (org/name or org/name@revision) already in the local cache (HF_HUB_CACHE /
HF_HOME honoured; nothing is downloaded; an existing local path wins over an id).
Exit codes: 0 ok, 1 a problem was found (verify failed, inspect --check), 2 bad input or usage.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalefix", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"scalefix {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        with stop_on_signals():
            return args.run(args)
    except Interrupted as exc:  # SIGINT / SIGTERM: what was left is in the message
        print(f"scalefix: {exc}", file=sys.stderr)
        return exc.exit_code
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
    except Exception as exc:  # a bug in scalefix: still one line unless --debug
        if args.debug:
            raise
        print(f"scalefix: internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback, and please report it)", file=sys.stderr)
        return 2
