"""``scalefix rewrite SRC``: a fixed copy, BF16 (``rewrite/``) or an MLX bundle (``--to mlx``,
``--to mlx-affine``: ``mlx/``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ScalefixError
from ..locate import locate
from ..mlx.module_form import AFFINE_BITS, AFFINE_GROUPS


def _choices(values) -> str:
    """(1, 2, 8) -> '1, 2 or 8'."""
    words = [str(v) for v in values]
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]


BITS = _choices(AFFINE_BITS)
GROUPS = _choices(sorted(AFFINE_GROUPS))


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


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
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
                    "With --to mlx or --to mlx-affine it writes an MLX bundle for mlx-lm "
                    "instead (see --to).",
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
    parser.add_argument("src", metavar="SRC",
                        help="file, shard directory, index.json, or cached hub id org/name[@rev]")
    parser.add_argument("--out", type=Path,
                        help="destination (default beside SRC: SRC-bf16, SRC-weight_scale_inv, "
                             "SRC-mlx-4bit-g32, ... after what is written; for a hub id or a "
                             "snapshot in the HF cache: ./NAME-bf16 ... in the working directory, "
                             "never inside the cache)")
    parser.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16",
                        help="dtype of dequantized weights (default bf16)")
    parser.add_argument("--max-shard-size", type=parse_size, default=5 * 10 ** 9,
                        metavar="SIZE", help="output shard size limit (default 5GB; "
                                             "ignored for a single-file SRC)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="threads reading and decoding in parallel (default: min(2, cores))")
    parser.add_argument("--rename-scales", choices=("weight_scale_inv", "weight_scale"),
                        help="keep FP8; only rename the scale tensors (data copied, not decoded)"
                             " and adapt quantization_config: weight_scale_inv is what vLLM < "
                             "0.29's FP8 Marlin path and quant_method fp8 expect")
    parser.add_argument("--to", choices=("dequant", "mlx", "mlx-affine"), default="dequant",
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
    parser.add_argument("--bits", type=int, default=None,
                        help=f"--to mlx-affine: bits of the re-quantized weights, {BITS} "
                             "(default 4; with --to mlx give them as --requantize BITS)")
    parser.add_argument("--group-size", type=int, default=None,
                        help=f"group size of the MLX affine re-quantization (--to mlx-affine, "
                             f"--to mlx --requantize): {GROUPS} (default 32: FP4 sources "
                             "carry one scale per 32 values, a larger group loses precision)")
    parser.add_argument("--include-fp8", action="store_true",
                        help="--to mlx-affine: re-quantize FP8 weights too (default: BF16; "
                             "with --to mlx, --requantize BITS does it for FP8 without a "
                             "native form)")
    parser.add_argument("--requantize", type=int, default=None, metavar="BITS",
                        help="--to mlx: re-quantize modules that have no lossless native form "
                             f"with mx.quantize at BITS ({BITS}; affine, --group-size; SQNR "
                             "reported) instead of writing them as exact BF16")
    parser.add_argument("--bf16-biases", action="store_true",
                        help="--to mlx: store the scales and biases of zero-point integer "
                             "modules (GPTQ, AWQ, asymmetric compressed-tensors) in BF16 instead "
                             "of float32: MLX then computes those layers in BF16 (faster, half "
                             "the scale memory) at the cost of exactness; the SQNR is reported")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished shards of an interrupted run (checked first)")
    parser.add_argument("--dry-run", action="store_true", help="plan only; write nothing")
    parser.add_argument("--no-space-check", dest="space_check", action="store_false",
                        help="write even when DST's filesystem reports too little free space "
                             "for the output (computed from the plan, --resume counting only "
                             "what is left): for filesystems that compress or deduplicate. "
                             "Running out anyway stops with exit 2, the finished shards kept "
                             "for --resume")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)
    return parser


def _mlx_target(args: argparse.Namespace):
    """The MlxSpec of --to mlx / --to mlx-affine; every misplaced option refused first."""
    if args.rename_scales:
        raise ScalefixError(f"--to {args.to} and --rename-scales exclude each other")
    import importlib.util
    if importlib.util.find_spec("mlx") is None:
        raise ScalefixError(f"--to {args.to} needs MLX: pip install 'scalefix[mlx]'")
    from ..mlx.bundle_plan import MlxSpec
    if args.to == "mlx":
        if args.bits is not None or args.include_fp8:
            raise ScalefixError("--to mlx takes --requantize BITS (for modules without a "
                                "lossless native form), not --bits / --include-fp8")
        return MlxSpec(args.requantize or 4, args.group_size or 32, native=True,
                       requantize=args.requantize is not None, bf16_biases=args.bf16_biases)
    if args.requantize is not None or args.bf16_biases:
        raise ScalefixError("--requantize and --bf16-biases go with --to mlx")
    return MlxSpec(args.bits or 4, args.group_size or 32, args.include_fp8)


def run(args: argparse.Namespace) -> int:
    from ..rewrite.run import Options, render_summary, rewrite, summary_json

    target = None
    if args.to in ("mlx", "mlx-affine"):
        target = _mlx_target(args)
    elif (args.include_fp8 or args.bits is not None or args.group_size is not None
          or args.requantize is not None or args.bf16_biases):
        raise ScalefixError("--bits and --include-fp8 go with --to mlx-affine, --group-size "
                            "with --to mlx-affine or --to mlx --requantize; --requantize and "
                            "--bf16-biases with --to mlx")
    options = Options(out=args.out, out_dtype=args.dtype, max_shard_bytes=args.max_shard_size,
                      workers=args.workers, resume=args.resume, dry_run=args.dry_run,
                      quiet=args.quiet or args.json, rename_scales=args.rename_scales,
                      target=target, space_check=args.space_check)
    summary = rewrite(locate(args.src), options)
    print(summary_json(summary) if args.json else render_summary(summary))
    return 0
