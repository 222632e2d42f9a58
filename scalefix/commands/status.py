"""``scalefix status``: the runtime patches' table (``hooks/registry``)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "status", help="what the runtime fixes (import scalefix.auto) do in this environment",
        description="Each runtime patch: armed (waiting for its target import), applied, "
                    "skipped (with the reason: version outside the affected range, bug not "
                    "present, fixed upstream), failed (with the error) or disabled. This process "
                    "imports none of the targets, so the patches show as armed; "
                    "`python -c 'import scalefix.auto, mlx.core, scalefix; print(scalefix.status())'`"
                    " shows them in a real program.")
    parser.add_argument("--json", action="store_true", help="machine-readable table")
    parser.add_argument("--no-arm", dest="arm", action="store_false",
                        help="report without arming (shows what `import scalefix.auto` did)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..hooks.registry import arm_all, status_table

    if args.arm:
        arm_all()
    table = status_table()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for row in table:
        version = f"{row['distribution']} {row['version'] or 'not installed'}"
        reason = f": {row['reason']}" if row["reason"] else ""
        print(f"{row['name']:<18} {row['state']:<9} {row['target']} ({version}, affected "
              f"{row['affected']}){reason}")
        files = row.get("files")
        if files and (files["fixed"] or files["passed_through"] or files["unfixed"]):
            print(f"{'':<18} files: {files['fixed']} fixed, {files['passed_through']} passed "
                  f"through, {files['unfixed']} left unfixed")
            for path, why in files["unfixed_reasons"].items():
                print(f"{'':<18}   unfixed {path}: {why}")
    return 0
