"""Checkpoints written by the real tools: llmcompressor ``model_free_ptq`` (FP8_BLOCK,
FP8_DYNAMIC: ``weight_scale`` BF16) and transformers ``FineGrainedFP8Config``
(``weight_scale_inv`` F32), on tiny random Llama and Qwen3 models built locally.

- ``inspect`` classifies them; scalefix's dequantization equals torch's bit for bit;
- the ``rewrite``, loaded by mlx-lm, gives logits bit-identical to the peers' own BF16
  dequantization (transformers ``FineGrainedFP8Config(dequantize=True)``, compressed-tensors
  ``CompressedTensorsDequantizer``) loaded the same way.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scalefix.formats import classify, open_bundle
from scalefix.formats.dequant import dequantize

from tests.support.fixtures import expand

pytestmark = pytest.mark.peers

ARCHS = ["llama", "qwen3"]
LINEARS = 7 * 2  # q k v o gate up down, 2 layers; lm_head and embeddings stay BF16
EXPECTED = {  # writer -> (scheme, naming, scale dtype, quant_method)
    "mfp-fp8-block": ("fp8-block", "weight_scale", "BF16", "compressed-tensors"),
    "mfp-fp8-dynamic": ("fp8-channel", "weight_scale", "BF16", "compressed-tensors"),
    "hf-fp8": ("fp8-block", "weight_scale_inv", "F32", "fp8"),
}
ORACLES = {"mfp-fp8-block": "mfp-fp8-block-ct-bf16", "mfp-fp8-dynamic": "mfp-fp8-dynamic-ct-bf16",
           "hf-fp8": "hf-fp8-hf-bf16"}


@pytest.fixture(params=[(a, w) for a in ARCHS for w in EXPECTED], ids=lambda p: f"{p[0]}-{p[1]}")
def artifact(request, real_writer):
    arch, writer = request.param
    return arch, writer, real_writer(f"{arch}-{writer}")


def test_inspect_classifies_real_writer_output(artifact, inspect_json):
    arch, writer, path = artifact
    scheme, naming, scale_dtype, method = EXPECTED[writer]
    code, report = inspect_json(path)
    assert code == 0
    assert len(report["quantized"]) == LINEARS
    assert {(g["scheme"], g["naming"], g["weight_dtype"], g["scale_dtype"])
            for g in report["groups"]} == {(scheme, naming, "F8_E4M3", scale_dtype)}
    if scheme == "fp8-block":
        assert {tuple(g["block"]) for g in report["groups"]} == {(128, 128)}
    assert report["config"]["quant_method"] == method
    assert report["orphan_scales"] == [] and report["fp8_without_scale"] == []
    roles = classify(open_bundle(path)).roles
    assert roles["lm_head.weight"] == roles["model.embed_tokens.weight"] == "plain"
    assert report["verdict"]["status"] == "quantized"


def test_dequantize_matches_torch_bit_for_bit(artifact):
    _, _, path = artifact
    tensors = {}
    for f in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    result = classify(open_bundle(path))
    for name, qw in result.quantized.items():
        q, s = tensors[name], tensors[qw.scale.name]
        ref = (q.to(torch.float32) * expand(s, q.shape, qw.geometry.block)).to(torch.bfloat16)
        ours = dequantize(qw)
        assert np.array_equal(ours, ref.view(torch.int16).numpy().view(np.uint16)), name


def _logits(path):
    import mlx.core as mx
    from mlx_lm import load
    model, _ = load(str(path))
    tokens = mx.array([[1001, 5, 17, 256, 999, 3, 42, 7]])
    out = model(tokens)
    mx.eval(out)
    return np.array(out.astype(mx.float32))


def test_rewrite_logits_equal_peer_dequantization_in_mlx_lm(artifact, real_writer, tmp_path):
    pytest.importorskip("mlx_lm")
    from scalefix.cli import main
    arch, writer, path = artifact
    oracle = real_writer(f"{arch}-{ORACLES[writer]}")
    dst = tmp_path / "bf16"
    assert main(["rewrite", str(path), "--out", str(dst), "--quiet"]) == 0
    ours, theirs = _logits(dst), _logits(oracle)
    assert np.isfinite(ours).all() and ours.std() > 0
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    assert main(["verify", str(path), str(oracle)]) == 0  # the peer's tensors, bit-exact
