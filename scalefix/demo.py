"""``scalefix demo``: the trap, its diagnosis and the fix on a small generated checkpoint.

No download: a DeepSeek-V3-style FP8 checkpoint (128x128 block scales, F32 ``weight_scale_inv``,
a [576, 256] projection whose block count needs ceil division, one scale in another shard)
is built from random weights, then read the way scale-unaware tools read it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .diagnosis import build_report
from .diagnosis.render import render
from .formats import classify, open_bundle
from .formats.codecs import decode, encode_e4m3, f32_to_bf16
from .formats.dequant import load_scale
from .formats.jsonio import read_json
from .formats.tensor_data import read_raw
from .formats.writer import Entry, write_safetensors
from .rewrite.run import Options, render_summary, rewrite
from .verify.compare import render_verify, verify

HIDDEN, FFN, KV_A, VOCAB, LAYERS, BLOCK = 256, 512, 576, 512, 2, 128
SHOWN = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"


def _quantize_blocks(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FP8 codes and float32 block multipliers (amax / 448 per 128x128 block)."""
    rows, cols = -(-w.shape[0] // BLOCK), -(-w.shape[1] // BLOCK)
    scale = np.zeros((rows, cols), np.float32)
    codes = np.zeros(w.shape, np.uint8)
    for i in range(rows):
        for j in range(cols):
            tile = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]
            scale[i, j] = max(float(np.abs(tile).max()), 1e-12) / 448.0
            codes[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = encode_e4m3(
                tile / scale[i, j])
    return codes, scale


def build_demo_checkpoint(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the FP8 demo bundle to ``root``; return the original float32 weights."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    shards: list[list] = [[], []]
    truth: dict[str, np.ndarray] = {}

    def bf16(name, shape, shard, std=0.02, value=None):
        w = np.full(shape, value, np.float32) if value is not None else \
            rng.normal(0, std, shape).astype(np.float32)
        shards[shard].append((Entry(name, "BF16", shape), f32_to_bf16(w).tobytes()))

    def fp8(name, shape, shard, scale_shard=None):
        w = rng.normal(0, 0.02, shape).astype(np.float32)
        truth[name] = w
        codes, scale = _quantize_blocks(w)
        shards[shard].append((Entry(name, "F8_E4M3", shape), codes.tobytes()))
        target = shard if scale_shard is None else scale_shard
        shards[target].append((Entry(name + "_scale_inv", "F32", scale.shape), scale.tobytes()))

    bf16("model.embed_tokens.weight", (VOCAB, HIDDEN), 0)
    for layer in range(LAYERS):
        p, shard = f"model.layers.{layer}.", layer
        bf16(p + "input_layernorm.weight", (HIDDEN,), shard, value=1.0)
        bf16(p + "post_attention_layernorm.weight", (HIDDEN,), shard, value=1.0)
        fp8(p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN), shard)
        fp8(p + "self_attn.kv_a_proj_with_mqa.weight", (KV_A, HIDDEN), shard,
            scale_shard=1 if layer == 0 else None)
        fp8(p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN), shard)
        fp8(p + "mlp.gate_proj.weight", (FFN, HIDDEN), shard)
        fp8(p + "mlp.up_proj.weight", (FFN, HIDDEN), shard)
        fp8(p + "mlp.down_proj.weight", (HIDDEN, FFN), shard)
    bf16("model.norm.weight", (HIDDEN,), 1, value=1.0)
    bf16("lm_head.weight", (VOCAB, HIDDEN), 1)
    weight_map = {}
    for i, items in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(root / fname, items)
        weight_map.update({e.name: fname for e, _ in items})
    total = sum(e.nbytes for items in shards for e, _ in items)
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (root / "config.json").write_text(json.dumps({
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "torch_dtype": "bfloat16",
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                "quant_method": "fp8", "weight_block_size": [BLOCK, BLOCK]}},
        indent=2))
    return truth


def convert_without_scales(src: Path, dst: Path) -> None:
    """What a scale-unaware converter does: decode the FP8 bytes, drop the scales, save BF16."""
    dst.mkdir(parents=True, exist_ok=True)
    result = classify(open_bundle(src))
    items = []
    for name, info in result.bundle.tensors.items():
        if result.roles[name] == "scale":
            continue
        with open(info.file, "rb") as fh:
            fh.seek(info.offset)
            raw = np.frombuffer(fh.read(info.nbytes), np.uint8)
        if info.dtype == "F8_E4M3":
            raw = f32_to_bf16(decode(raw, "e4m3")).view(np.uint8)
        items.append((Entry(name, "BF16", info.shape), raw.tobytes()))
    write_safetensors(dst / "model.safetensors", items)
    config = read_json(src / "config.json", "config")
    config.pop("quantization_config")
    (dst / "config.json").write_text(json.dumps(config, indent=2))


def _stats(label: str, values: np.ndarray) -> str:
    v = values.astype(np.float32).ravel()
    return (f"  {label:<44} max |w| = {np.abs(v).max():9.4g}   first values "
            + " ".join(f"{x:+.4g}" for x in v[:4]))


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))


def _raw_view_of(src: Path) -> tuple[str, np.ndarray]:
    """What plain loaders hand back for the shown tensor: mx.load if MLX is here."""
    bundle = open_bundle(src)
    info = bundle.tensors[SHOWN]
    try:
        import mlx.core as mx
        array = mx.load(str(info.file))[SHOWN]
        as_np = np.array(array.astype(mx.float32) if array.dtype != mx.uint8 else array)
        return f"mx.load -> {array.dtype}", as_np
    except ImportError:
        with open(info.file, "rb") as fh:
            fh.seek(info.offset)
            raw = np.frombuffer(fh.read(info.nbytes), np.uint8).reshape(info.shape)
        return "FP8 read without its scale", decode(raw, "e4m3")


def _runtime_fix_view(src: Path) -> tuple[str, np.ndarray] | None:
    """The same mx.load call with scalefix's runtime fix applied (None without MLX)."""
    try:
        import mlx.core as mx
    except ImportError:
        return None
    from . import patch_all, unpatch_all
    patch_all()
    try:
        shard = open_bundle(src).tensors[SHOWN].file
        array = mx.load(str(shard))[SHOWN]
        return f"scalefix.auto + mx.load -> {array.dtype}", np.array(array.astype(mx.float32))
    finally:
        unpatch_all()


def run_demo(keep: bool = False) -> int:
    work = Path(tempfile.mkdtemp(prefix="scalefix-demo-"))
    try:
        src, naive = work / "dsv3-fp8", work / "dsv3-bf16-no-scales"
        _section("1. a DeepSeek-V3-style FP8 checkpoint (generated, no download)")
        truth = build_demo_checkpoint(src)
        print(f"  {src}: {len(truth)} FP8 weights with F32 weight_scale_inv (128x128 blocks),"
              "\n  one scale stored in the other shard")
        _section(f"2. the trap: read {SHOWN} without its scale")
        how, loaded = _raw_view_of(src)
        print(_stats("original weights", truth[SHOWN]))
        print(_stats(how, loaded))
        fixed_at_load = _runtime_fix_view(src)
        if fixed_at_load:
            print(_stats(*fixed_at_load))
        qw = classify(open_bundle(src)).quantized[SHOWN]
        scales = load_scale(qw)
        print(f"  The loader raised no error. The block scales ({scales.min():.2g} .. "
              f"{scales.max():.2g}) were not applied:\n  a model built from these values "
              "produces gibberish." + ("\n  With `import scalefix.auto` the same mx.load call "
                                       "returns the scaled BF16 weights." if fixed_at_load else ""))
        _section("3. a conversion that forgot the scales (what many converters write)")
        convert_without_scales(src, naive)
        print(f"  {naive}: BF16, quantization_config removed, looks like a normal model")
        _section(f"4. scalefix inspect {src.name}")
        print(render(build_report(src)))
        _section(f"5. scalefix inspect {naive.name}")
        print(render(build_report(naive)))
        fixed_dir = work / "dsv3-bf16-scalefix"
        _section(f"6. scalefix rewrite {src.name} --out {fixed_dir.name}")
        print(render_summary(rewrite(src, Options(out=fixed_dir, quiet=True))))
        tensors = open_bundle(fixed_dir).tensors
        fixed = (read_raw(tensors[SHOWN]).view(np.uint16).astype(np.uint32) << 16).view(
            np.float32).reshape(tensors[SHOWN].shape)
        print(_stats("rewritten BF16", fixed))
        err = np.abs(fixed - truth[SHOWN]).max() / np.abs(truth[SHOWN]).max()
        print(f"  max error vs the original weights: {err:.2%} of max |w| (FP8 E4M3 rounding)")
        _section(f"7. scalefix verify {src.name} {fixed_dir.name}")
        print(render_verify(verify(src, fixed_dir)))
        _section(f"8. scalefix verify {src.name} {naive.name}")
        bad = verify(src, naive)
        lines = render_verify(bad).splitlines()
        fails = [i for i, line in enumerate(lines) if line.startswith("  FAIL")]
        if len(fails) > 3:
            lines[fails[3]:fails[-1] + 1] = [f"  ... and {len(fails) - 3} more FAIL lines"]
        print("\n".join(lines))
        print("\n  `scalefix verify` exits 0 on the rewrite and 1 on the scale-less conversion.")
        print("\nNext: `scalefix inspect YOUR_MODEL` tells you which of these you have.")
        if keep:
            print(f"(kept {work})")
        return 0
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
