"""The integer and NVFP4 families' shared tables and checks (tests/families/*/: one file per
family runs them on its own kinds).

- ``FORMULA``: formula-built layouts no CPU writer produces (tests/support/int_families.py);
  ``CROSS``: the writer-side decoder each is cross-checked against (peer venvs);
- ``REAL``: real writers' checkpoints (tests/peers/artifacts.py) with their own BF16 oracle;
  ``CROSS_SHARD``: side tensors moved to another shard;
- ``family_of`` / ``kinds``: which family folder a kind belongs to.

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

from . import int_families as fam
from .int_families import SIDE_SUFFIXES, load_bundle

SCRIPTS = Path(__file__).resolve().parents[1] / "peers" / "scripts"
ACTIVATION_SUFFIXES = (".input_scale", ".input_global_scale")


def family_of(kind: str) -> str:
    """The folder under tests/families/ that a FORMULA / REAL / CROSS_SHARD kind belongs to."""
    if "gptq" in kind:
        return "gptq"
    if "awq" in kind:
        return "awq"
    if kind.startswith("modelopt"):
        return "modelopt"
    if "nvfp4" in kind:
        return "nvfp4"
    return "compressed_tensors"


def kinds(table, family: str) -> list[str]:
    return sorted(k for k in table if family_of(k) == family)


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


def decode_cross(root: Path) -> dict:
    """Every CROSS fixture built once under ``root`` and decoded by its peer, one process per
    script and peer (their imports take seconds). name -> (Built, decoded dir | None, error |
    None). The session fixture ``cross_decoded`` (tests/families/conftest.py) holds it."""
    from tests.peers.venvs import peer_python
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


# ---------------------------------------------------------------- the checks each family runs

def real_pair(kind: str, real_writer):
    """(kind, the real writer's checkpoint, its writer-decoded BF16 oracle)."""
    return kind, real_writer(kind), real_writer(f"{kind}-{REAL[kind][0]}")


def check_builder_matches_writers_decoder(name, cross_decoded):
    """The formula-built tensors, read by code of the writers' side (CROSS), give the oracle
    bits: layout (packing, nibble order, z - 1, g_idx) and formula agree."""
    b, got = cross(cross_decoded, name)
    assert_same_tensors(got, b.oracle, f"{name} via {CROSS[name][:2]}")


def check_writer_oracle(real):
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


def check_real_inspect(real, inspect_json):
    kind, path, _ = real
    check_inspect(inspect_json, path, expected_schemes(kind))


def check_real_rewrite(real, tmp_path, capsys):
    kind, path, oracle_path = real
    check_rewrite(path, load_bundle(oracle_path), tmp_path, capsys)


def check_scale_in_another_shard(kind, real_writer, inspect_json, tmp_path, capsys):
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


def family_tests(family: str, *parts: str) -> dict:
    """The shared checks above as one family's pytest fixtures and tests, for its test module
    to take in: ``globals().update(family_tests("gptq", "formula", "cross", "real"))``.

    ``parts``: ``formula`` (the builder's fixtures: inspect names the scheme, the rewrite is
    bit-exact), ``cross`` (the builder against the writer-side decoder, peer tier), ``real``
    (the real writer's checkpoints: its oracle, inspect, the bit-exact rewrite; peer tier),
    ``cross_shard`` (side tensors in another shard; peer tier). Each part is run on the
    family's kinds only, under the test names every family file shares."""
    unknown = set(parts) - {"formula", "cross", "real", "cross_shard"}
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}")
    found: dict = {}
    if "formula" in parts:
        @pytest.fixture(params=kinds(FORMULA, family))
        def built(request, tmp_path):
            return FORMULA[request.param](tmp_path / "src" / request.param)

        def test_formula_fixture_inspect_names_the_scheme(built, inspect_json):
            check_inspect(inspect_json, built.path, built.schemes)

        def test_formula_fixture_rewrite_is_bit_exact(built, tmp_path, capsys):
            check_rewrite(built.path, built.oracle, tmp_path, capsys)
        found.update(built=built, test_formula_fixture_inspect_names_the_scheme=(
            test_formula_fixture_inspect_names_the_scheme),
            test_formula_fixture_rewrite_is_bit_exact=test_formula_fixture_rewrite_is_bit_exact)
    if "cross" in parts:
        @pytest.mark.peers
        @pytest.mark.parametrize("name", kinds(CROSS, family))
        def test_builder_matches_the_writers_decoder(name, cross_decoded):
            check_builder_matches_writers_decoder(name, cross_decoded)
        found["test_builder_matches_the_writers_decoder"] = \
            test_builder_matches_the_writers_decoder
    if "real" in parts:
        @pytest.fixture(params=kinds(REAL, family))
        def real(request, real_writer):
            return real_pair(request.param, real_writer)

        @pytest.mark.peers
        def test_writer_oracle_is_float32_product_rounded_to_bf16_once(real):
            check_writer_oracle(real)

        @pytest.mark.peers
        def test_real_writer_inspect_names_the_scheme(real, inspect_json):
            check_real_inspect(real, inspect_json)

        @pytest.mark.peers
        def test_real_writer_rewrite_is_bit_exact_against_its_own_decoder(real, tmp_path,
                                                                          capsys):
            check_real_rewrite(real, tmp_path, capsys)
        found.update(
            real=real, test_writer_oracle_is_float32_product_rounded_to_bf16_once=(
                test_writer_oracle_is_float32_product_rounded_to_bf16_once),
            test_real_writer_inspect_names_the_scheme=test_real_writer_inspect_names_the_scheme,
            test_real_writer_rewrite_is_bit_exact_against_its_own_decoder=(
                test_real_writer_rewrite_is_bit_exact_against_its_own_decoder))
    if "cross_shard" in parts:
        @pytest.mark.peers
        @pytest.mark.parametrize("kind", kinds(CROSS_SHARD, family))
        def test_scale_in_another_shard(kind, real_writer, inspect_json, tmp_path, capsys):
            check_scale_in_another_shard(kind, real_writer, inspect_json, tmp_path, capsys)
        found["test_scale_in_another_shard"] = test_scale_in_another_shard
    return found
