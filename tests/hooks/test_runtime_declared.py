"""At load time, declared formats (issue 16 build point 4, issue 20): under ``import
scalefix.auto`` mlx-lm 0.32.2 loads, as written by the real writers,

- NVIDIA ModelOpt FP8, NVFP4 and MIXED_PRECISION with ``hf_quant_config.json`` beside
  config.json (before: ``KeyError: 'quant_method'``, mlx-lm read that file once the config hook
  had removed ``quantization_config``; or "Unsupported modelopt quant_algo: FP8"), also as
  older exports declare them, in ``hf_quant_config.json`` alone: exact BF16, logits
  bit-identical to the BF16 rewrite (there is no native form);
- AMD Quark MXFP4 (weights only, ``mxfp4``, ``mxfp4_fp8``) as native ``mxfp4`` layers (before:
  "Received 14 parameters not in model: ...weight_scale"), logits bit-identical to the
  ``--to mlx`` bundle;
- bitsandbytes NF4 / FP4 (with and without double quant) and LLM.int8 as lazy exact BF16
  through the scheme's ``lazy_decode``, logits bit-identical to the BF16 rewrite;
- compressed-tensors W8A16 channel (``pack-quantized``, 8 bits, ``strategy: channel``) as
  native affine layers, logits bit-identical to the ``--to mlx`` bundle.

Each load runs in its own interpreter (the hooks are process-wide)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlx_lm")

from scalefix.cli import main  # noqa: E402

from tests.support.family_checks import mlx_lm_load, same_bits  # noqa: E402

pytestmark = pytest.mark.peers


def _reference(src: Path, tmp: Path, to_mlx: bool):
    out = tmp / ("mlx" if to_mlx else "bf16")
    assert main(["rewrite", str(src), "--out", str(out), "--quiet",
                 *(["--to", "mlx"] if to_mlx else [])]) == 0
    return mlx_lm_load("plain", out, tmp / "reference.npy")


def _check(src: Path, tmp: Path, to_mlx: bool, layers):
    hooked, logits = mlx_lm_load("hook", src, tmp / "hook.npy")
    reference, want = _reference(src, tmp, to_mlx)
    assert hooked["layers"] == reference["layers"] == layers
    assert same_bits(logits, want)


def hf_quant_config_only(src: Path, dst: Path) -> Path:
    """A real export as older ModelOpt wrote it: the declaration in hf_quant_config.json
    alone, none in config.json."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.pop("quantization_config")
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("variant", ["fp8", "nvfp4", "mixed"])
@pytest.mark.parametrize("declared_in", ["both", "hf_quant_config.json"])
def test_modelopt_with_hf_quant_config_loads_as_exact_bf16(real_writer, tmp_path, variant,
                                                           declared_in):
    src = real_writer(f"llama-modelopt-{variant}")
    assert (src / "hf_quant_config.json").is_file()
    if declared_in != "both":
        src = hf_quant_config_only(src, tmp_path / "src")
    _check(src, tmp_path, to_mlx=False, layers=[])


@pytest.mark.parametrize("variant", ["mxfp4_weight_only", "mxfp4", "mxfp4_fp8"])
def test_quark_mxfp4_loads_as_native_mxfp4(real_writer, tmp_path, variant):
    _check(real_writer(f"llama-quark-{variant}"), tmp_path, to_mlx=True,
           layers=[["QuantizedLinear", "mxfp4", 4, 32]])


def test_quark_fp8_loads_as_exact_bf16(real_writer, tmp_path):
    _check(real_writer("llama-quark-fp8"), tmp_path, to_mlx=False, layers=[])


@pytest.mark.parametrize("variant", ["nf4", "fp4", "nf4-dq", "fp4-dq", "int8"])
def test_bitsandbytes_loads_as_lazy_exact_bf16(real_writer, tmp_path, variant):
    _check(real_writer(f"llama-bnb-{variant}"), tmp_path, to_mlx=False, layers=[])


def test_compressed_tensors_w8a16_channel_loads_natively(real_writer, tmp_path):
    _check(real_writer("llama-ct-w8a16-channel"), tmp_path, to_mlx=True,
           layers=[["QuantizedLinear", "affine", 8, 128]])


def test_the_gaps_without_scalefix(real_writer, tmp_path):
    """Why: plain mlx-lm 0.32.2 refuses each of these."""
    import subprocess
    import sys

    from tests.support.family_checks import CHILD
    for kind in ("llama-modelopt-fp8", "llama-quark-mxfp4", "llama-bnb-nf4"):
        proc = subprocess.run([sys.executable, "-c", CHILD, "plain", str(real_writer(kind)),
                               str(tmp_path / "x.npy")], capture_output=True, text=True)
        assert proc.returncode != 0, kind
