"""Command line: ``scalefix`` / ``python -m scalefix``.

Exit codes: 0 success, 1 a problem was found (``verify``, ``inspect --check``), 2 bad input or
usage.
Errors are one line naming the file and tensor; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ScalefixError
from .interrupts import Interrupted, stop_on_signals
from .locate import locate

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


def _inspect(args: argparse.Namespace) -> int:
    from .diagnosis import build_report
    from .diagnosis.render import render

    report = build_report(locate(args.path), nibble_order=args.nibble_order)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 1 if args.check and not report["verdict"]["ok"] else 0


def parse_size(text: str) -> int:
    """'5GB', '500MB', '1.5GiB', '123' (bytes) -> bytes."""
    units = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
             "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}
    raw = text.strip().upper()
    number = raw.rstrip("KMGTIB")
    unit = raw[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1
    if unit not in units or value <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MB)")
    return int(value * units[unit])


def _rewrite(args: argparse.Namespace) -> int:
    from .rewrite.run import Options, render_summary, rewrite, summary_json

    target = None
    if args.to in ("mlx", "mlx-affine"):
        if args.rename_scales:
            raise ScalefixError(f"--to {args.to} and --rename-scales exclude each other")
        import importlib.util
        if importlib.util.find_spec("mlx") is None:
            raise ScalefixError(f"--to {args.to} needs MLX: pip install 'scalefix[mlx]'")
        from .mlx.bundle_plan import MlxSpec
        if args.to == "mlx":
            if args.bits is not None or args.include_fp8:
                raise ScalefixError("--to mlx takes --requantize BITS (for modules without a "
                                    "lossless native form), not --bits / --include-fp8")
            target = MlxSpec(args.requantize or 4, args.group_size or 32, native=True,
                             requantize=args.requantize is not None,
                             bf16_biases=args.bf16_biases)
        else:
            if args.requantize is not None or args.bf16_biases:
                raise ScalefixError("--requantize and --bf16-biases go with --to mlx")
            target = MlxSpec(args.bits or 4, args.group_size or 32, args.include_fp8)
    elif (args.include_fp8 or args.bits is not None or args.group_size is not None
          or args.requantize is not None or args.bf16_biases):
        raise ScalefixError("--bits, --group-size, --include-fp8 go with --to mlx-affine; "
                            "--requantize, --bf16-biases with --to mlx")
    options = Options(out=args.out, out_dtype=args.dtype, max_shard_bytes=args.max_shard_size,
                      workers=args.workers, resume=args.resume, dry_run=args.dry_run,
                      quiet=args.quiet or args.json, rename_scales=args.rename_scales,
                      target=target, space_check=args.space_check)
    summary = rewrite(locate(args.src), options)
    print(summary_json(summary) if args.json else render_summary(summary))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .verify.compare import render_verify, verify

    report = verify(locate(args.src), locate(args.dst))
    if args.plot:
        from .verify.plot import plot
        plot(report, args.plot)
    print(json.dumps(report, indent=2) if args.json else render_verify(report))
    return 0 if report["ok"] else 1


def _status(args: argparse.Namespace) -> int:
    from .hooks.registry import arm_all, status_table

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


def _patch_install(args: argparse.Namespace) -> int:
    from .install.patch_install import patch_install

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


def _run(args: argparse.Namespace) -> int:
    from .run_command import CannotRun, run

    try:
        return run(args.run_command)
    except CannotRun as exc:
        print(f"scalefix: error: {exc}", file=sys.stderr)
        return exc.exit_code


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
    inspect.add_argument("path", metavar="PATH",
                         help="file, shard directory, index.json, or cached hub id org/name[@rev]")
    inspect.add_argument("--json", action="store_true", help="machine-readable report")
    inspect.add_argument("--check", action="store_true",
                         help="exit 1 when the verdict is not 'clean'")
    inspect.add_argument("--nibble-order", choices=("low-first", "high-first"),
                         default="low-first",
                         help="FP4 packing: which nibble holds the even element (default: low)")
    inspect.set_defaults(run=_inspect)

    rewrite = commands.add_parser(
        "rewrite", help="write a dequantized (BF16) copy of a checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dequantize every quantized weight scalefix recognises (see `inspect`) "
                    "into --dtype (BF16: float32 product rounded to nearest even, once), drop "
                    "the scales, activation scales, orphan scales and quantization markers, copy "
                    "every other tensor byte for byte (dtype kept), remove the stale "
                    "quantization_config, copy tokenizer and other files, rebuild the index. "
                    "Streams shard by shard in bounded memory; writes into a hidden sibling "
                    "directory and renames it into place at the end, so an interrupted run "
                    "never leaves a complete-looking DST. The source is only read. "
                    "With --to mlx-affine it writes an MLX bundle for mlx-lm instead (see --to).",
        epilog="examples:\n"
               "  scalefix rewrite ~/models/DeepSeek-V3            # -> ~/models/DeepSeek-V3-bf16/\n"
               "  scalefix rewrite flux2-fp8.safetensors           # -> flux2-fp8-bf16.safetensors\n"
               "  scalefix rewrite deepseek-ai/DeepSeek-V3         # from the HF cache -> ./DeepSeek-V3-bf16/\n"
               "  scalefix rewrite SRC --out DST --resume          # after an interrupted run\n"
               "  scalefix rewrite SRC --dry-run                   # what would happen\n"
               "  scalefix rewrite SRC --rename-scales weight_scale_inv   # FP8 kept, for vLLM < 0.29\n"
               "  scalefix rewrite DeepSeek-V4-Flash --to mlx-affine --bits 4 --group-size 32\n"
               "                                                   # FP4 experts -> MLX 4-bit affine\n"
               "  scalefix rewrite RedHatAI/Qwen3-8B-quantized.w4a16 --to mlx\n"
               "                                                   # INT4 -> MLX affine, codes kept\n"
               "then: scalefix verify SRC DST")
    rewrite.add_argument("src", metavar="SRC",
                         help="file, shard directory, index.json, or cached hub id org/name[@rev]")
    rewrite.add_argument("--out", type=Path, help="destination (default beside SRC: SRC-bf16, SRC-weight_scale_inv, "
                              "SRC-mlx-4bit-g32, ... after what is written; for a hub id or a "
                              "snapshot in the HF cache: ./NAME-bf16 ... in the working directory, "
                              "never inside the cache)")
    rewrite.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16",
                         help="dtype of dequantized weights (default bf16)")
    rewrite.add_argument("--max-shard-size", type=parse_size, default=5 * 10 ** 9,
                         metavar="SIZE", help="output shard size limit (default 5GB; "
                                              "ignored for a single-file SRC)")
    rewrite.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                         help="threads reading and decoding in parallel (default: min(2, cores))")
    rewrite.add_argument("--rename-scales", choices=("weight_scale_inv", "weight_scale"),
                         help="keep FP8; only rename the scale tensors (data copied, not decoded)"
                              " and adapt quantization_config: weight_scale_inv is what vLLM < "
                              "0.29's FP8 Marlin path and quant_method fp8 expect")
    rewrite.add_argument("--to", choices=("dequant", "mlx", "mlx-affine"), default="dequant",
                         help="dequant (default): every quantized weight to --dtype. "
                              "mlx: an MLX bundle mlx-lm loads natively, each module in its "
                              "lossless native MLX form (compressed-tensors / GPTQ / AWQ ints "
                              "-> affine with the same codes, MXFP4 -> mxfp4 with the bytes "
                              "copied, FP8 with E8M0 block scales -> mxfp8); a module without "
                              "one (FP8 with float scales, act-order GPTQ, NVFP4, widths MLX "
                              "groups cannot split) becomes exact BF16, or is re-quantized "
                              "with --requantize BITS; the summary counts each kind. "
                              "mlx-affine: an MLX bundle for mlx-lm; FP4 weights (DeepSeek-V4 "
                              "experts, gpt-oss MXFP4) are decoded exactly and re-quantized with "
                              "MLX's own mx.quantize (never by copying codes, never with "
                              "(max-min)/15); FP8 weights become BF16 unless --include-fp8; "
                              "tensor names follow mlx-lm's sanitize for the model type; memory "
                              "is about two decoded layers. Needs the MLX extra")
    rewrite.add_argument("--bits", type=int, default=None,
                         help="mlx-affine bits: 2, 3, 4, 5, 6 or 8 (default 4)")
    rewrite.add_argument("--group-size", type=int, default=None,
                         help="mlx-affine group size: 32, 64 or 128 (default 32: FP4 sources "
                              "carry one scale per 32 values, a larger group loses precision)")
    rewrite.add_argument("--include-fp8", action="store_true",
                         help="mlx-affine: re-quantize FP8 weights too (default: BF16)")
    rewrite.add_argument("--requantize", type=int, default=None, metavar="BITS",
                         help="mlx: re-quantize modules that have no lossless native form with "
                              "mx.quantize at BITS (affine, --group-size; SQNR reported) "
                              "instead of writing them as exact BF16")
    rewrite.add_argument("--bf16-biases", action="store_true",
                         help="mlx: store the scales and biases of zero-point integer modules "
                              "(GPTQ, AWQ, asymmetric compressed-tensors) in BF16 instead of "
                              "float32: MLX then computes those layers in BF16 (faster, half "
                              "the scale memory) at the cost of exactness; the SQNR is reported")
    rewrite.add_argument("--resume", action="store_true",
                         help="reuse the finished shards of an interrupted run (checked first)")
    rewrite.add_argument("--dry-run", action="store_true", help="plan only; write nothing")
    rewrite.add_argument("--no-space-check", dest="space_check", action="store_false",
                         help="write even when DST's filesystem reports too little free space "
                              "for the output (computed from the plan, --resume counting only "
                              "what is left): for filesystems that compress or deduplicate. "
                              "Running out anyway stops with exit 2, the finished shards kept "
                              "for --resume")
    rewrite.add_argument("--quiet", action="store_true", help="no progress bar")
    rewrite.add_argument("--json", action="store_true", help="print the summary as JSON")
    rewrite.set_defaults(run=_rewrite)

    verify = commands.add_parser(
        "verify", help="compare a converted checkpoint with its quantized source",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dequantize each source tensor (streaming) and compare it with the same "
                    "tensor in DST: bit-exact, max abs error, SQNR in dB. Flags the trap "
                    "signature (raw FP8 values, errors of orders of magnitude), missing and "
                    "extra tensors. DST may come from any tool (scalefix rewrite, mlx_lm.convert, "
                    "a community BF16 upload).",
        epilog="Exit 0 when every tensor passes, 1 when any fails, 2 on bad input.")
    verify.add_argument("src", metavar="SRC", help="the quantized source (path or cached hub id)")
    verify.add_argument("dst", metavar="DST", help="the converted checkpoint (path or cached hub id)")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument("--plot", metavar="FILE.png",
                        help="draw error per tensor by layer (needs matplotlib)")
    verify.set_defaults(run=_verify)

    status = commands.add_parser(
        "status", help="what the runtime fixes (import scalefix.auto) do in this environment",
        description="Each runtime patch: armed (waiting for its target import), applied, "
                    "skipped (with the reason: version outside the affected range, bug not "
                    "present, fixed upstream), failed (with the error) or disabled. This process "
                    "imports none of the targets, so the patches show as armed; "
                    "`python -c 'import scalefix.auto, mlx.core, scalefix; print(scalefix.status())'`"
                    " shows them in a real program.")
    status.add_argument("--json", action="store_true", help="machine-readable table")
    status.add_argument("--no-arm", dest="arm", action="store_false",
                        help="report without arming (shows what `import scalefix.auto` did)")
    status.set_defaults(run=_status)

    install = commands.add_parser(
        "patch-install", help="fix an installed app's jang_tools or mlx_lm on disk (vMLX.app)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Finds every jang_tools/load_jangtq.py below TARGET and inserts, at the "
                    "start of _patch_quant_config_inplace, a guard that leaves a config with "
                    "per-module quantization overrides untouched (the bug that makes vMLX load "
                    "zero experts). Located by parsing the source; a file whose function is "
                    "missing or has an unknown shape is reported and left alone. The original "
                    "is kept next to the file; --revert restores it byte for byte. With "
                    "--mlx-lm it patches the app's own mlx_lm instead, with the shipped "
                    "upstream diffs (patches/mlx_lm-0.32.2-*.diff).",
        epilog="examples:\n"
               "  scalefix patch-install /Applications/vMLX.app --dry-run   # show the diff\n"
               "  scalefix patch-install /Applications/vMLX.app\n"
               "  scalefix patch-install /Applications/vMLX.app --revert\n"
               "  scalefix patch-install ~/venvs/app/bin/python --hook      # + import scalefix.auto"
               " at start-up\n"
               "  scalefix patch-install /Applications/vMLX.app --mlx-lm --dry-run\n"
               "Exit 2 on refusal: TARGET missing, read-only install, unrecognised function, an "
               "mlx_lm file that is not 0.32.2's, a file changed since it was patched "
               "(--revert).")
    install.add_argument("target", metavar="TARGET",
                         help="app bundle, site-packages directory, or Python executable")
    install.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    install.add_argument("--revert", action="store_true", help="restore the originals")
    install.add_argument("--hook", action="store_true",
                         help="also add scalefix.pth to that interpreter (scalefix must be "
                              "installed there)")
    install.add_argument("--mlx-lm", action="store_true",
                         help="patch the app's own mlx_lm (0.32.2 exactly; give it with --revert "
                              "too) instead of jang_tools: "
                              "FP8 checkpoints of every model type, with weight_scale or "
                              "weight_scale_inv and an fp8 or compressed-tensors config, then "
                              "load as BF16 (the same bits as `scalefix rewrite`), and convert "
                              "keeps no stale FP8 quantization_config; no scalefix needed at "
                              "run time")
    install.set_defaults(run=_patch_install)

    run = commands.add_parser(
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
    run.add_argument("run_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    run.set_defaults(run=_run)

    demo = commands.add_parser(
        "demo", help="the trap, the diagnosis and the fixes on a generated checkpoint",
        description="Builds a small DeepSeek-V3-style FP8 checkpoint in a temporary directory "
                    "(no download), shows what a scale-unaware loader returns, a conversion "
                    "that went wrong, what `scalefix inspect` says about each, the runtime fix "
                    "(when MLX is installed), `scalefix rewrite` and `scalefix verify`.")
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
