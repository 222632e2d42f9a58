"""``scalefix patch-install TARGET``: permanent source fixes of an installed app's jang_tools
or mlx_lm (``install/``; what each target patches is ``install/targets.py``)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "patch-install", help="fix an installed app's jang_tools or mlx_lm on disk (vMLX.app)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fixes, on disk, the jang_tools an app bundles (default) or its own mlx_lm "
                    "(--mlx-lm), so that the app needs no scalefix at run time. jang: every "
                    "jang_tools/ below TARGET gets, at the start of load_jangtq.py's "
                    "_patch_quant_config_inplace, a guard that leaves a config with per-module "
                    "quantization overrides untouched (the bug that makes vMLX load zero "
                    "experts), and, appended to fp8.py and convert.py, the FP8 reader's fix "
                    "(each FP8 weight's scale found under any name and in any shard, scales not "
                    "converted as weights, NaN codes decoded as NaN: the code of "
                    "patches/jang-2.5.50-fp8-*.diff), so `jang convert` of an FP8 checkpoint "
                    "is right. Each file is located and checked by parsing its source; one of "
                    "an unknown shape is reported and left alone. --mlx-lm applies the shipped "
                    "upstream diffs (patches/mlx_lm-0.32.2-*.diff) to the app's mlx_lm instead. "
                    "The original is kept next to each file; --revert restores it byte for "
                    "byte.",
        epilog="examples:\n"
               "  scalefix patch-install /Applications/vMLX.app --dry-run   # show the diff\n"
               "  scalefix patch-install /Applications/vMLX.app\n"
               "  scalefix patch-install /Applications/vMLX.app --revert\n"
               "  scalefix patch-install ~/venvs/app/bin/python --hook      # + import scalefix.auto"
               " at start-up\n"
               "  scalefix patch-install /Applications/vMLX.app --mlx-lm --dry-run\n"
               "Exit 2 on refusal: TARGET missing, read-only install, a jang_tools file of an "
               "unrecognised shape, an mlx_lm file that is not 0.32.2's, a file changed since "
               "it was patched (--revert).")
    parser.add_argument("target", metavar="TARGET",
                        help="app bundle, site-packages directory, or Python executable")
    parser.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    parser.add_argument("--revert", action="store_true", help="restore the originals")
    parser.add_argument("--hook", action="store_true",
                        help="also add scalefix.pth to that interpreter (scalefix must be "
                             "installed there)")
    parser.add_argument("--mlx-lm", action="store_true",
                        help="patch the app's own mlx_lm (0.32.2 exactly; give it with --revert "
                             "too) instead of jang_tools: "
                             "FP8 checkpoints of every model type, with weight_scale or "
                             "weight_scale_inv and an fp8 or compressed-tensors config, then "
                             "load as BF16 (the same bits as `scalefix rewrite`), and convert "
                             "keeps no stale FP8 quantization_config; no scalefix needed at "
                             "run time")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..install.patch_install import patch_install

    outcomes, notes = patch_install(args.target, dry_run=args.dry_run, revert=args.revert,
                                    hook=args.hook, package="mlx-lm" if args.mlx_lm else "jang")
    for outcome in outcomes:
        print(f"{outcome.path}: {outcome.state}" + (f" ({outcome.detail})" if outcome.detail
                                                    else ""))
        if args.dry_run and outcome.diff:
            print(outcome.diff, end="")
    for note in notes:
        print(note)
    return 0
