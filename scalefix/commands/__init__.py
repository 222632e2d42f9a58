"""One module per ``scalefix`` subcommand, each with ``add_parser(subparsers)`` (its argparse
parser, help texts and examples) and ``run(args)`` (its handler, importing what it needs only
when called, so ``scalefix --help`` stays cheap). ``cli.main`` registers them in the order of
``COMMANDS``; a new subcommand is a new module here plus its name in that tuple.
"""

from . import demo, inspect, patch_install, rewrite, run, status, verify

COMMANDS = (inspect, rewrite, verify, status, patch_install, run, demo)
