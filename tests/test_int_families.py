"""Integer and NVFP4 families (issue 11): compressed-tensors pack-/int-/naive-quantized and
NVFP4, ModelOpt NVFP4, GPTQ v1, AWQ GEMM.

Fixtures come from the real writers where they run on CPU (llmcompressor / compressed-tensors
0.19 and 0.9.3 compressors, auto-round's GPTQ and AWQ packers: tests/peers/artifacts.py),
each with its writer's own decoder as the BF16 oracle; the layouts no CPU writer produces
are built from their formulas (tests/support/int_families.py) and cross-checked against independent
implementations (mlx-lm's AWQ transform, auto-round's GPTQ QuantLinear, compressed-tensors'
AutoAWQ / ModelOpt converters and old releases' decompressors).

Every fixture must be named by ``inspect`` (scheme strings of the issue), rewritten to BF16
bit-exactly against its oracle with every quantization side tensor and config dropped, and
pass ``verify``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from scalefix.cli import main

from tests.support import int_families as fam
from tests.support.int_families import SIDE_SUFFIXES, load_bundle

SCRIPTS = Path(__file__).parent / "peers" / "scripts"
ACTIVATION_SUFFIXES = (".input_scale", ".input_global_scale")


# ---------------------------------------------------------------- helpers

def bits_of(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


def assert_same_tensors(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), (what, sorted(set(got) ^ set(want))[:8])
    for name, ref in want.items():
        out = got[name]
        assert out.dtype == ref.dtype and out.shape == ref.shape, (what, name, out.dtype,
                                                                   ref.dtype, out.shape)
        diff = int((bits_of(out) != bits_of(ref)).sum())
        assert diff == 0, f"{what}: {name}: {diff} bytes differ"


def check_inspect(inspect_json, path: Path, schemes: dict[str, str]) -> None:
    """``schemes``: every quantized source tensor -> the scheme inspect must name."""
    code, report = inspect_json(path)
    assert code == 0
    assert report["verdict"]["status"] != "clean", report["verdict"]
    assert report["unsupported"] == [], report["unsupported"][:3]
    assert {q["weight"]: q["scheme"] for q in report["quantized"]} == schemes
    assert report["verdict"]["status"] == "quantized", report["verdict"]


def check_rewrite(src: Path, oracle: dict, tmp_path: Path, capsys) -> Path:
    dst = tmp_path / "bf16"
    assert main(["rewrite", str(src), "--out", str(dst), "--quiet"]) == 0
    got = load_bundle(dst)
    assert not [n for n in got if n.endswith(SIDE_SUFFIXES)]
    want = {k: v for k, v in oracle.items() if not k.endswith(ACTIVATION_SUFFIXES)}
    assert_same_tensors(got, want, str(src))
    config = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in config
    assert not (dst / "hf_quant_config.json").exists()
    capsys.readouterr()
    assert main(["verify", str(src), str(dst)]) == 0, capsys.readouterr().out
    return dst


# ---------------------------------------------------------------- the oracle decoders

def test_bit_packing_worked_by_hand():
    """Dense: code i at bit 3i across words; per word: 10 three-bit codes, 2 bits unused;
    AWQ: nibble k of a word holds column 0,2,4,6,1,3,5,7[k]."""
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 5]])
    low = sum(int(c) << (3 * i) for i, c in enumerate(codes[0, :10].tolist()))
    dense = [(low | (5 & 0b11) << 30), 5 >> 2]
    per_word = [low, 5]
    to_i32 = lambda ws: torch.tensor([[w - (1 << 32) if w >= 1 << 31 else w for w in ws]],
                                     dtype=torch.int32)
    assert torch.equal(fam.pack_bits(codes, 3, dense=True), to_i32(dense))
    assert torch.equal(fam.pack_bits(codes, 3, dense=False), to_i32(per_word))
    assert torch.equal(fam.unpack_bits(to_i32(dense), 3, 11, dense=True), codes)
    assert torch.equal(fam.unpack_bits(to_i32(per_word), 3, 11, dense=False), codes)
    row = torch.arange(8).unsqueeze(0)
    word = sum(c << (4 * k) for k, c in enumerate((0, 2, 4, 6, 1, 3, 5, 7)))
    assert torch.equal(fam.awq_pack(row), torch.tensor([[word]], dtype=torch.int32))
    assert torch.equal(fam.awq_unpack(fam.awq_pack(row)), row)


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_bit_packing_round_trips(bits, dense):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (5, 203), generator=gen)
    words = fam.pack_bits(codes, bits, dense)
    per = 32 // bits
    assert words.shape[-1] == (-(-203 * bits // 32) if dense else -(-203 // per))
    assert torch.equal(fam.unpack_bits(words, bits, 203, dense), codes)


# ---------------------------------------------------------------- formula-built layouts

FORMULA = {
    "modelopt-nvfp4": fam.modelopt_nvfp4,
    "gptq": lambda r: fam.gptq(r, actorder=False),
    "gptq-actorder": lambda r: fam.gptq(r, actorder=True),
    "awq": fam.awq,
    "ct-dense-int5": lambda r: fam.ct_legacy(r, 5, dense=True, version="0.19.0"),
    "ct-dense-int4-zp": lambda r: fam.ct_legacy(r, 4, dense=True, zp="packed",
                                                version="0.19.0"),
    "ct-perword-int3": lambda r: fam.ct_legacy(r, 3, dense=False),
    "ct-perword-int5": lambda r: fam.ct_legacy(r, 5, dense=False),
    "ct-perword-int6-zp": lambda r: fam.ct_legacy(r, 6, dense=False, zp="packed",
                                                  version="0.17.0"),
    "ct-perword-int4-int8zp-actorder": lambda r: fam.ct_legacy(r, 4, dense=False, zp="int8",
                                                               actorder=True),
}


@pytest.fixture(params=sorted(FORMULA))
def built(request, tmp_path):
    return FORMULA[request.param](tmp_path / "src" / request.param)


def test_formula_fixture_inspect_names_the_scheme(built, inspect_json):
    check_inspect(inspect_json, built.path, built.schemes)


def test_formula_fixture_rewrite_is_bit_exact(built, tmp_path, capsys):
    check_rewrite(built.path, built.oracle, tmp_path, capsys)


# Cross-checks of the builders and decoders against independent implementations.

def test_awq_builder_matches_mlx_lm_transform(tmp_path):
    """mlx-lm 0.32.2's own AutoAWQ repack (``_transform_awq_weights``), given float32 scales
    (its F16 biases would round -z*s), then ``mx.dequantize`` in float32: (q - z) * s is
    exact there, so one BF16 rounding gives the oracle."""
    mx = pytest.importorskip("mlx.core")
    utils = pytest.importorskip("mlx_lm.utils")
    b = fam.awq(tmp_path / "awq")
    t = load_bundle(b.path)
    weights = {k: mx.array(v.to(torch.float32).numpy() if v.is_floating_point() else v.numpy())
               for k, v in t.items()}
    out, quant = utils._transform_awq_weights(weights, b.config["quantization_config"])
    assert quant == {"group_size": 64, "bits": 4}
    for name, want in b.oracle.items():
        if not name.endswith(".weight") or name[: -len(".weight")] + ".qweight" not in t:
            continue
        p = name[: -len(".weight")]
        w = mx.dequantize(out[p + ".weight"], out[p + ".scales"], out[p + ".biases"],
                          group_size=64, bits=4)
        got = torch.from_numpy(__import__("numpy").array(w.astype(mx.float32)))
        assert torch.equal(bits_of(got.to(torch.bfloat16)), bits_of(want)), name


def test_modelopt_builder_matches_mlx_nvfp4(tmp_path):
    """MLX 0.32's nvfp4 mode reads ModelOpt's bytes as they are (codes as uint32 words, the
    E4M3 scale bytes) with global_scale G = weight_scale_2 * 448 * 6 (MLX divides G by 2688)."""
    mx = pytest.importorskip("mlx.core")
    import numpy as np
    b = fam.modelopt_nvfp4(tmp_path / "mo")
    t = load_bundle(b.path)
    for p in [k[: -len(".weight_scale_2")] for k in t if k.endswith(".weight_scale_2")]:
        packed = t[p + ".weight"].contiguous()
        words = mx.array(packed.view(torch.int32).numpy().view(np.uint32))
        scales = mx.array(t[p + ".weight_scale"].view(torch.uint8).numpy())
        g = mx.array((t[p + ".weight_scale_2"] * 2688.0).reshape(1).numpy())
        w = mx.dequantize(words, scales, mode="nvfp4", group_size=16, bits=4, global_scale=g,
                          dtype=mx.float32)
        got = torch.from_numpy(np.array(w)).to(torch.bfloat16)
        assert torch.equal(bits_of(got), bits_of(b.oracle[p + ".weight"])), p


# formula fixture -> (peer venv, script, mode): the writer-side decoder that reads it
CROSS = {
    # auto-round's GPTQ QuantLinear (its auto_gptq export packs with it), float32 scales
    "gptq": ("writers", "writer_decode_bf16.py", "gptq"),
    "gptq-actorder": ("writers", "writer_decode_bf16.py", "gptq"),
    # compressed-tensors 0.19's AutoAWQConverter, then its decompressor (float32 scales)
    "awq": ("writers", "writer_decode_bf16.py", "awq"),
    # compressed-tensors 0.19's ModelOptNvfp4Converter, then its NVFP4 decompressor
    "modelopt-nvfp4": ("writers", "writer_decode_bf16.py", "modelopt"),
    # each compressed-tensors layout through the release that wrote it
    "ct-dense-int5": ("writers", "ct_dequantize_any.py", None),                  # 0.19
    "ct-dense-int4-zp": ("writers", "ct_dequantize_any.py", None),               # 0.19
    "ct-perword-int6-zp": ("vllm", "ct_dequantize_any.py", None),                # 0.17
    "ct-perword-int5": ("ct-0.9", "ct09.py", "decode"),                          # 0.9.3
    "ct-perword-int4-int8zp-actorder": ("ct-0.9", "ct09.py", "decode"),          # 0.9.3
}


@pytest.fixture(scope="session")
def cross_decoded(tmp_path_factory):
    """Every CROSS fixture built once and decoded by its peer, one process per script and
    peer (their imports take seconds). name -> (Built, decoded dir | None, error | None)."""
    from tests.peers.venvs import peer_python
    root = tmp_path_factory.mktemp("cross")
    built = {n: FORMULA[n](root / "src" / n) for n in CROSS}
    result = {}
    for peer, script in sorted({(p, s) for p, s, _ in CROSS.values()}):
        names = [n for n, (p, s, _) in CROSS.items() if (p, s) == (peer, script)]
        try:
            python = peer_python(peer)
        except Exception as exc:  # pip failed: each test skips (fails on CI)
            result.update({n: (built[n], None, f"peer {peer} unavailable: {exc}")
                           for n in names})
            continue
        args = []
        for n in names:
            mode = CROSS[n][2]
            args += [built[n].path, root / "ref" / n] + ([mode] if mode else [])
        proc = subprocess.run([str(python), str(SCRIPTS / script), *map(str, args)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        result.update({n: (built[n], root / "ref" / n, None) for n in names})
    return result


def cross(cross_decoded, name):
    b, ref, error = cross_decoded[name]
    if error:
        if os.environ.get("CI"):
            pytest.fail(error)
        pytest.skip(error.splitlines()[0])
    return b, load_bundle(ref)


@pytest.mark.peers
@pytest.mark.parametrize("name", ["gptq", "gptq-actorder", "awq", "ct-dense-int5",
                                  "ct-dense-int4-zp", "ct-perword-int6-zp", "ct-perword-int5",
                                  "ct-perword-int4-int8zp-actorder"])
def test_builder_matches_the_writers_decoder(name, cross_decoded):
    """The formula-built tensors, read by code of the writers' side (CROSS), give the oracle
    bits: layout (packing, nibble order, z - 1, g_idx) and formula agree."""
    b, got = cross(cross_decoded, name)
    assert_same_tensors(got, b.oracle, f"{name} via {CROSS[name][:2]}")


@pytest.mark.peers
def test_modelopt_builder_matches_compressed_tensors_converter(cross_decoded):
    """compressed-tensors 0.19's ModelOptNvfp4Converter reads the formula-built ModelOpt
    tensors the same way (nibble order, scale layout, weight_scale_2 inverted), but it is no
    exact oracle for ModelOpt: weight_scale_2 is a 0-d tensor, so its 1/x global scale is
    one too, and PyTorch's promotion then forms the effective scale weight_scale / global in
    BF16 (a [1]-shaped global scale, as compressed-tensors writes its own, gives float32).
    Here: its output equals that BF16 arithmetic bit for bit, and differs from ModelOpt's own
    float32 formula on some elements (counted, not tolerated)."""
    b, got = cross(cross_decoded, "modelopt-nvfp4")
    t = load_bundle(b.path)
    differ = 0
    for p in [k[: -len(".weight_scale_2")] for k in t if k.endswith(".weight_scale_2")]:
        ws2 = t[p + ".weight_scale_2"]
        assert ws2.dim() == 0
        effective = t[p + ".weight_scale"].to(torch.bfloat16) / (1 / ws2)
        assert effective.dtype == torch.bfloat16  # 0-d float32 does not promote
        codes = fam.nvfp4_codes(t[p + ".weight"]).to(torch.bfloat16)
        want = codes * effective.repeat_interleave(16, dim=-1)
        assert torch.equal(bits_of(got[p + ".weight"]), bits_of(want)), p
        differ += int((got[p + ".weight"].view(torch.int16)
                       != b.oracle[p + ".weight"].view(torch.int16)).sum())
    assert differ > 0


# ---------------------------------------------------------------- real writers

def _linears(prefix="model.layers", layers=2):
    names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    return [f"{prefix}.{i}.{n}" for i in range(layers) for n in names]


# kind -> (oracle kind, quantized tensor suffix, scheme, modules, test-side decoder)
REAL = {
    "llama-ct-w4a16": ("ct-bf16", "weight_packed", "int4-group128", 2, "ct"),
    "qwen3-ct-w4a16": ("ct-bf16", "weight_packed", "int4-group128", 2, "ct"),
    "llama-ct-w4a16-g32": ("ct-bf16", "weight_packed", "int4-group32", 2, "ct"),
    "llama-ct-w4a16-asym": ("ct-bf16", "weight_packed", "int4-group128-zp", 2, "ct"),
    "llama-ct-w8a16": ("ct-bf16", "weight_packed", "int8-group128", 2, "ct"),
    "llama-ct-w8a16-channel": ("ct-bf16", "weight_packed", "int8-channel", 2, "ct"),
    "llama-ct-w3a16": ("ct-bf16", "weight_packed", "int3-group128", 2, "ct"),
    "llama-ct-w8a8": ("ct-bf16", "weight", "int8-channel", 2, "ct"),
    "ragged-ct-w8a8": ("ct-bf16", "weight", "int8-channel", 1, "ct"),
    "llama-ct-nvfp4a16": ("ct-bf16", "weight_packed", "nvfp4", 2, "ct-nvfp4"),
    "qwen3-ct-nvfp4a16": ("ct-bf16", "weight_packed", "nvfp4", 2, "ct-nvfp4"),
    "llama-ct-nvfp4": ("ref-bf16", "weight_packed", "nvfp4", 2, "ct-nvfp4"),
    "experts3d-ct-w4a16": ("ct-bf16", "weight_packed", "int4-group128", None, "ct"),
    "experts3d-ct-w4a16-asym": ("ct-bf16", "weight_packed", "int4-group128-zp", None, "ct"),
    "llama-ct09-w3a16": ("ref-bf16", "weight_packed", "int3-group128", 2, "ct-perword"),
    "llama-ct09-w5a16": ("ref-bf16", "weight_packed", "int5-group128", 2, "ct-perword"),
    "llama-ct09-w6a16": ("ref-bf16", "weight_packed", "int6-group128", 2, "ct-perword"),
    "llama-ct09-w4a16-asym": ("ref-bf16", "weight_packed", "int4-group128-zp", 2,
                              "ct-perword"),
    "llama-ct09-w4a16-actorder": ("ref-bf16", "weight_packed", "int4-group128-actorder", 2,
                                  "ct-perword"),
    "ragged-ct09-w4a16-channel": ("ref-bf16", "weight_packed", "int4-channel", 1,
                                  "ct-perword"),
    "llama-ct09-w8a8-naive": ("ref-bf16", "weight", "int8-channel", 2, "ct"),
    "llama-ar-gptq": ("ref-bf16", "qweight", "gptq-int4-group64", 2, "gptq"),
    "llama-ar-gptq-asym": ("ref-bf16", "qweight", "gptq-int4-group64", 2, "gptq"),
    "llama-ar-awq": ("ref-bf16", "qweight", "awq-int4-group64", 2, "awq"),
}
EXPERTS3D = ["model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"]


def expected_schemes(kind: str) -> dict[str, str]:
    _, suffix, scheme, layers, _ = REAL[kind]
    modules = EXPERTS3D if layers is None else _linears(layers=layers)
    return {f"{m}.{suffix}": scheme for m in modules}


@pytest.fixture(params=sorted(REAL))
def real(request, real_writer):
    kind = request.param
    return kind, real_writer(kind), real_writer(f"{kind}-{REAL[kind][0]}")


def decode_test_side(kind: str, src: dict, module: str) -> torch.Tensor:
    """The oracle formulas of tests/support/int_families.py, independent of scalefix and of the
    writers' code: every code times its (effective) scale in float32, BF16 once."""
    how = REAL[kind][4]
    if how == "gptq":
        return fam.gptq_decode(src[module + ".qweight"], src[module + ".qzeros"],
                               src[module + ".scales"], src[module + ".g_idx"])
    if how == "awq":
        return fam.awq_decode(src[module + ".qweight"], src[module + ".qzeros"],
                              src[module + ".scales"], 64)
    if how == "ct-nvfp4":
        return fam.nvfp4_ct_decode(src[module + ".weight_packed"], src[module + ".weight_scale"],
                                   src[module + ".weight_global_scale"])
    if module + ".weight" in src:  # int-/naive-quantized: I8 codes, no offset
        q, s = src[module + ".weight"], src[module + ".weight_scale"]
        return fam.bf16_once(q.to(torch.float32) * s.to(torch.float32))
    zp = src.get(module + ".weight_zero_point")
    bits = int(REAL[kind][2].split("-")[0].removeprefix("int"))
    return fam.ct_pack_decode(
        src[module + ".weight_packed"], src[module + ".weight_scale"],
        tuple(src[module + ".weight_shape"].tolist()), bits, zp,
        src.get(module + ".weight_g_idx"), dense=how != "ct-perword",
        zp_packed=zp is not None and zp.dtype == torch.int32)


@pytest.mark.peers
def test_writer_oracle_is_float32_product_rounded_to_bf16_once(real):
    """The writers' own decoders (compressed-tensors ``decompress`` in the scale dtype BF16,
    NVFP4 through its float32 effective scale weight_scale / global_scale; auto-round's GPTQ
    QuantLinear and compressed-tensors' AWQ path with float32 scales) equal the formula
    decode with one BF16 rounding, on every element: the decoders here are right, and
    bit-exactness against the writers is the issue's rounding rule."""
    kind, path, oracle_path = real
    src, oracle = load_bundle(path), load_bundle(oracle_path)
    for name in expected_schemes(kind):
        module = name.rsplit(".", 1)[0]
        got = decode_test_side(kind, src, module)
        assert torch.equal(bits_of(got), bits_of(oracle[module + ".weight"])), name


@pytest.mark.peers
def test_real_writer_inspect_names_the_scheme(real, inspect_json):
    kind, path, _ = real
    check_inspect(inspect_json, path, expected_schemes(kind))


@pytest.mark.peers
def test_real_writer_rewrite_is_bit_exact_against_its_own_decoder(real, tmp_path, capsys):
    kind, path, oracle_path = real
    check_rewrite(path, load_bundle(oracle_path), tmp_path, capsys)


@pytest.mark.peers
def test_rewrite_drops_auto_round_quantization_config_json(real_writer, tmp_path):
    """auto-round writes its quantization config twice: config.json and a side file
    quantization_config.json (quant_method gptq). Like hf_quant_config.json, the side file
    describes tensors the BF16 output no longer has; copied, it tells the next tool the
    checkpoint is GPTQ. (Beyond the issue's list; the same reasoning as ModelOpt's file.)"""
    src = real_writer("llama-ar-gptq")
    assert json.loads((src / "quantization_config.json").read_text())["quant_method"] == "gptq"
    assert main(["rewrite", str(src), "--out", str(tmp_path / "bf16"), "--quiet"]) == 0
    assert not (tmp_path / "bf16" / "quantization_config.json").exists()


CROSS_SHARD = {  # kind -> side tensors moved away from their weight
    "llama-ct-w4a16-asym": ["model.layers.0.self_attn.q_proj.weight_scale",
                            "model.layers.1.mlp.down_proj.weight_zero_point"],
    "llama-ct-nvfp4a16": ["model.layers.0.mlp.up_proj.weight_scale",
                          "model.layers.1.self_attn.o_proj.weight_global_scale"],
    "llama-ar-gptq": ["model.layers.0.self_attn.k_proj.scales",
                      "model.layers.1.mlp.gate_proj.qzeros",
                      "model.layers.1.mlp.gate_proj.g_idx"],
    "llama-ct09-w4a16-actorder": ["model.layers.0.mlp.down_proj.weight_scale",
                                  "model.layers.0.mlp.down_proj.weight_g_idx"],
}


@pytest.mark.peers
@pytest.mark.parametrize("kind", sorted(CROSS_SHARD))
def test_scale_in_another_shard(kind, real_writer, inspect_json, tmp_path, capsys):
    """The same tensors, two shards: the listed side tensors alone in the second."""
    src = tmp_path / "resharded"
    fam.reshard(real_writer(kind), src, set(CROSS_SHARD[kind]))
    check_inspect(inspect_json, src, expected_schemes(kind))
    _, report = inspect_json(src)
    scale_moved = {n.rsplit(".", 1)[0] for n in CROSS_SHARD[kind]
                   if n.endswith((".weight_scale", ".scales"))}
    crossing = {p["weight"].rsplit(".", 1)[0] for p in report["cross_shard_pairs"]}
    assert scale_moved and scale_moved <= crossing, report["cross_shard_pairs"]
    check_rewrite(src, load_bundle(real_writer(f"{kind}-{REAL[kind][0]}")), tmp_path, capsys)
